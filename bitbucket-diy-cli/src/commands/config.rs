//! `config init`, `config check`, `config import-vars`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use bitbucket_diy_core::config::{ConfigError, EXAMPLE_CONFIG};
use bitbucket_diy_core::migrate::import_vars;
use bitbucket_diy_core::orchestrator::BackupOrchestrator;
use bitbucket_diy_core::{Error, Result};
use serde::Serialize;

use crate::cli::{ConfigCommand, GlobalArgs};
use crate::commands::{load_config, report, stdout_error};
use crate::progress::Renderer;
use crate::secrets;
use crate::ui::Ui;

pub async fn run(global: &GlobalArgs, ui: &Arc<Ui>, command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Init { file: None, .. } => ui.stdout(EXAMPLE_CONFIG).map_err(stdout_error),
        ConfigCommand::Init { file: Some(file), force } => {
            write_new_file(&file, EXAMPLE_CONFIG, force)?;
            ui.info(&format!(
                "wrote {}: edit it, then run `bitbucket-diy --config {} config check`",
                file.display(),
                file.display()
            ));
            Ok(())
        }
        ConfigCommand::Check => check(global, ui).await,
        ConfigCommand::ImportVars { file } => import(ui, &file),
    }
}

/// Write `text` to `path` under a temporary name, then rename: refused when `path` exists unless
/// `force`. Owner-only, since a configuration may come to hold a password.
fn write_new_file(path: &Path, text: &str, force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(crate::commands::invalid(
            "config init",
            format!("{} exists already: pass --force to overwrite it", path.display()),
        ));
    }
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let io = |action: &'static str, p: &Path, e: std::io::Error| Error::Io { action, path: p.to_owned(), source: e };
    std::fs::create_dir_all(folder).map_err(|e| io("creating", folder, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".bitbucket-diy-config-")
        .tempfile_in(folder)
        .map_err(|e| io("creating a file in", folder, e))?;
    tmp.write_all(text.as_bytes()).map_err(|e| io("writing", tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| io("syncing", tmp.path(), e))?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("setting permissions of", tmp.path(), e))?;
    tmp.persist(path).map_err(|e| io("writing", path, e.error))?;
    Ok(())
}

#[derive(Debug, Serialize)]
struct Checked {
    file: String,
    warnings: Vec<String>,
    checks: Vec<String>,
}

async fn check(global: &GlobalArgs, ui: &Arc<Ui>) -> Result<()> {
    let loaded = load_config(global.config.as_deref(), ui)?;
    let config = &loaded.config;
    let file = loaded.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let password =
        secrets::bitbucket_password(&config.bitbucket.password, &config.bitbucket.user, config.bitbucket.url.as_str())?;
    let orchestrator = BackupOrchestrator::from_config(config)?
        .bitbucket_password(password)?
        .events(Renderer::new(ui.clone()))
        .build()?;
    let mut checks = vec![format!("{file}: valid")];
    let mut failed = None;
    let mut lines = String::new();
    for probe in orchestrator.check_all().await {
        match probe.outcome {
            Ok(found) => checks.push(format!("{}: {found}", probe.subject)),
            Err(e) => {
                lines.push_str(&format!("FAILED  {}: {e}\n", probe.subject));
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(first) = failed {
        // Every probe is shown, so that one broken setting does not hide the next; the first
        // failure decides the exit code (and is the error object with --json).
        if !ui.json_report() {
            let passed: String = checks.iter().map(|c| format!("ok  {c}\n")).collect();
            ui.stdout(&format!("{passed}{lines}")).map_err(stdout_error)?;
        }
        return Err(first);
    }
    checks.push("Bitbucket password: found (checked only by a lock; nothing was locked)".to_owned());
    let checked = Checked { file, warnings: loaded.warnings.clone(), checks };
    report(ui, &checked, || {
        let mut out: String = checked.checks.iter().map(|c| format!("ok  {c}\n")).collect();
        for warning in &checked.warnings {
            out.push_str(&format!("warning  {warning}\n"));
        }
        out
    })
}

#[derive(Debug, Serialize)]
struct Imported {
    toml: String,
    warnings: Vec<ImportedWarning>,
}

#[derive(Debug, Serialize)]
struct ImportedWarning {
    line: usize,
    variable: String,
    message: String,
}

fn import(ui: &Ui, file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ConfigError::Unreadable { path: file.to_owned(), reason: e.to_string() })?;
    let result = import_vars(&text);
    if ui.json_report() {
        let imported = Imported {
            toml: result.toml,
            warnings: result
                .warnings
                .into_iter()
                .map(|w| ImportedWarning { line: w.line, variable: w.variable, message: w.message })
                .collect(),
        };
        return ui.stdout_json(&imported).map_err(stdout_error);
    }
    for warning in &result.warnings {
        ui.warn(&format!("{}: {warning}", file.display()));
    }
    ui.stdout(&result.toml).map_err(stdout_error)
}
