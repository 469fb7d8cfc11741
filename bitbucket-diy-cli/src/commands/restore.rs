//! `restore`.

use std::sync::Arc;

use bitbucket_diy_core::orchestrator::{RestoreReport, RestoreRequest};
use bitbucket_diy_core::{Error, Result};

use crate::cli::{GlobalArgs, RestoreArgs};
use crate::commands::{Needs, load_config, offline_orchestrator, report};
use crate::progress::Renderer;
use crate::render;
use crate::signals::cancel_on_signals;
use crate::ui::Ui;

pub async fn run(global: &GlobalArgs, ui: &Arc<Ui>, args: RestoreArgs) -> Result<()> {
    let loaded = load_config(global.config.as_deref(), ui)?;
    let renderer = Renderer::new(ui.clone());
    let orchestrator = offline_orchestrator(&loaded.config, renderer.clone(), Needs::Database)?;
    // Relative paths are the user's working directory's, as in any command.
    let home = std::path::absolute(&args.home).map_err(|e| Error::Io {
        action: "resolving",
        path: args.home.clone(),
        source: e,
    })?;
    let mut request = RestoreRequest::new(args.archive, home, args.database);
    request.data_stores = args.data_store.into_iter().collect();

    let signals = cancel_on_signals(ui.clone(), |n| match n {
        1 => "Cancelling: stopping the restore and removing what it wrote…".to_owned(),
        _ => "Still stopping the restore: waiting for its steps to end and clean up…".to_owned(),
    });
    let outcome = orchestrator.restore(&request, signals.token()).await;
    drop(signals);
    renderer.finish();
    let restored = outcome?;
    report(ui, &restored, || human(&restored))
}

fn human(restored: &RestoreReport) -> String {
    let mut rows = vec![
        ("from", restored.archive.display().to_string()),
        ("home", format!("{} ({})", restored.home.display(), render::step(&restored.filesystem_step))),
    ];
    if let Some(database) = &restored.database {
        rows.push(("database", format!("{database} ({})", render::step(&restored.database_step))));
    }
    rows.push(("git locks removed", restored.git_locks_removed.len().to_string()));
    rows.push(("total", render::duration(restored.total)));
    format!(
        "Backup {} restored\n{}Point a Bitbucket at the new home (and database), check it, then switch users over.\n",
        restored.id,
        render::rows(&rows)
    )
}
