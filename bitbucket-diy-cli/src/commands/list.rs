//! `list`.

use std::sync::Arc;

use bitbucket_diy_core::Result;
use bitbucket_diy_core::verify_log::ListedBackup;

use crate::cli::GlobalArgs;
use crate::commands::{Needs, load_config, offline_orchestrator, report};
use crate::progress::Renderer;
use crate::render;
use crate::ui::Ui;

pub async fn run(global: &GlobalArgs, ui: &Arc<Ui>) -> Result<()> {
    let loaded = load_config(global.config.as_deref(), ui)?;
    let orchestrator = offline_orchestrator(&loaded.config, Renderer::new(ui.clone()), Needs::Nothing)?;
    let backups = orchestrator.list_with_verification().await?;
    let folder = orchestrator.archive().folder().display().to_string();
    report(ui, &backups, || table(&backups, &folder, jiff::Timestamp::now()))
}

fn table(backups: &[ListedBackup], folder: &str, now: jiff::Timestamp) -> String {
    if backups.is_empty() {
        return format!("No backups in {folder}.\n");
    }
    let header = ["ID", "CREATED (UTC)", "AGE", "SIZE", "LOCK WINDOW", "VERIFIED"].map(str::to_owned);
    let rows: Vec<[String; 6]> = backups
        .iter()
        .map(|b| {
            let m = &b.archive.metadata;
            let verified = match &b.verification {
                None => "never".to_owned(),
                Some(v) if v.ok => {
                    format!("{}, {} ago", if v.deep { "deep" } else { "yes" }, render::age(v.verified_at, now))
                }
                Some(v) => format!("FAILED {} ago", render::age(v.verified_at, now)),
            };
            [
                m.id.to_string(),
                render::timestamp(m.created_at),
                render::age(m.created_at, now),
                render::bytes(b.archive.bytes),
                m.lock_window.map_or_else(|| "-".to_owned(), render::duration),
                verified,
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 6]| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&header);
    for row in &rows {
        out.push_str(&line(row));
    }
    out.push_str(&format!("{} backup(s) in {folder}\n", backups.len()));
    out
}
