//! `backup`.

use std::sync::Arc;
use std::time::Instant;

use bitbucket_diy_core::metrics::{RunMetrics, write_metrics};
use bitbucket_diy_core::orchestrator::{BackupOrchestrator, BackupReport};
use bitbucket_diy_core::{Error, ErrorKind, Result};

use crate::cli::{BackupArgs, GlobalArgs};
use crate::commands::{load_config, report};
use crate::progress::Renderer;
use crate::render;
use crate::secrets;
use crate::signals::cancel_on_signals;
use crate::ui::Ui;

pub async fn run(global: &GlobalArgs, ui: &Arc<Ui>, args: &BackupArgs) -> Result<()> {
    let start = Instant::now();
    let renderer = Renderer::new(ui.clone());
    let mut metrics_file = args.metrics_file.clone();
    let outcome = async {
        let loaded = load_config(global.config.as_deref(), ui)?;
        let config = &loaded.config;
        metrics_file = metrics_file.take().or_else(|| config.backup.metrics_file.clone());
        // Before the signal handlers: Ctrl-C at the password prompt simply ends the process.
        let password = secrets::bitbucket_password(
            &config.bitbucket.password,
            &config.bitbucket.user,
            config.bitbucket.url.as_str(),
        )?;
        let orchestrator =
            BackupOrchestrator::from_config(config)?.bitbucket_password(password)?.events(renderer.clone()).build()?;
        let signals = {
            let renderer = renderer.clone();
            cancel_on_signals(ui.clone(), move |n| {
                let seen = renderer.seen();
                match (n, seen.locking && !seen.unlocked) {
                    (1, true) => "Cancelling: stopping the copy and unlocking Bitbucket…".to_owned(),
                    (1, false) => "Cancelling: stopping the backup (Bitbucket is not locked)…".to_owned(),
                    (_, true) => "Still unlocking Bitbucket: waiting so that it is not left locked…".to_owned(),
                    (_, false) => "Still stopping the backup: waiting for its steps to end…".to_owned(),
                }
            })
        };
        orchestrator.backup(signals.token()).await
    }
    .await;
    renderer.finish();

    if let Some(path) = &metrics_file
        && let Err(e) = write_metrics(path, &RunMetrics::from_outcome(&outcome, start.elapsed()))
    {
        ui.warn(&format!("could not write the metrics file: {e}"));
    }
    match outcome {
        Ok(backup) => report(ui, &backup, || human(&backup)),
        Err(e) => {
            let seen = renderer.seen();
            if e.kind() == ErrorKind::Cancelled {
                ui.warn(if seen.locked && seen.unlocked {
                    "Bitbucket was unlocked; no backup was written"
                } else {
                    "Bitbucket was not locked; no backup was written"
                });
            } else if seen.unlocked && !matches!(e, Error::LeftLocked { .. }) {
                ui.info("Bitbucket was unlocked");
            }
            Err(e)
        }
    }
}

fn human(backup: &BackupReport) -> String {
    let mut rows = vec![("archive", format!("{} ({})", backup.archive.display(), render::bytes(backup.archive_bytes)))];
    rows.push((
        "lock window",
        match (backup.lock_window, backup.drain_wait) {
            (Some(window), Some(drain)) => {
                format!("{} (of which waiting for the drain: {})", render::duration(window), render::duration(drain))
            }
            (Some(window), None) => render::duration(window),
            _ => "none (zero-downtime)".to_owned(),
        },
    ));
    rows.push(("total", render::duration(backup.total)));
    let step = render::step;
    rows.push(("database", step(&backup.database)));
    rows.push(("home", step(&backup.filesystem)));
    if !backup.pruned.is_empty() {
        let names: Vec<String> = backup.pruned.iter().map(|p| p.display().to_string()).collect();
        rows.push(("pruned", names.join(", ")));
    }
    for warning in &backup.warnings {
        rows.push(("warning", warning.clone()));
    }
    format!("Backup {} complete\n{}", backup.id, render::rows(&rows))
}
