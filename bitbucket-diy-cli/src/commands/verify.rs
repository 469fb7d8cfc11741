//! `verify`.

use std::sync::Arc;

use bitbucket_diy_core::Result;
use bitbucket_diy_core::orchestrator::DeepVerifyReport;

use crate::cli::{GlobalArgs, VerifyArgs};
use crate::commands::{Needs, load_config, offline_orchestrator, report};
use crate::progress::Renderer;
use crate::render;
use crate::signals::cancel_on_signals;
use crate::ui::Ui;

pub async fn run(global: &GlobalArgs, ui: &Arc<Ui>, args: &VerifyArgs) -> Result<()> {
    let loaded = load_config(global.config.as_deref(), ui)?;
    let renderer = Renderer::new(ui.clone());
    let orchestrator = offline_orchestrator(&loaded.config, renderer.clone(), Needs::Nothing)?;
    let name = match &args.archive {
        Some(name) => name.clone(),
        None => match orchestrator.list_backups().await?.into_iter().next() {
            Some(newest) => newest.metadata.id.to_string(),
            None => {
                return Err(crate::commands::invalid(
                    "--latest",
                    format!("there is no backup in {} to verify", orchestrator.archive().folder().display()),
                ));
            }
        },
    };
    let signals = cancel_on_signals(ui.clone(), |n| match n {
        1 => "Cancelling: stopping the verification…".to_owned(),
        _ => "Still stopping the verification: removing its temporary folder…".to_owned(),
    });
    let outcome = orchestrator.verify(&name, args.deep, signals.token()).await;
    drop(signals);
    renderer.finish();
    let verified = outcome?;
    report(ui, &verified, || human(&name, &verified, args.deep))
}

fn human(name: &str, verified: &DeepVerifyReport, deep: bool) -> String {
    let mut rows = vec![
        ("archive", verified.verify.path.display().to_string()),
        (
            "manifest",
            format!(
                "{} entries, {} of content: every checksum matches",
                verified.verify.entries,
                render::bytes(verified.verify.bytes)
            ),
        ),
    ];
    if deep {
        rows.push(("git fsck", format!("{} repositories passed (test restore)", verified.repositories)));
    }
    format!("Backup {name} verified{}\n{}", if deep { " (deep)" } else { "" }, render::rows(&rows))
}
