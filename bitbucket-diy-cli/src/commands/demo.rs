//! `demo`: the whole product in one command, against a simulated Bitbucket.

use std::path::PathBuf;
use std::sync::Arc;

use bitbucket_diy_core::demo::{self, DemoOptions, DemoReport, DemoRequest};
use bitbucket_diy_core::{Error, Result};

use crate::cli::DemoArgs;
use crate::commands::report;
use crate::progress::Renderer;
use crate::render;
use crate::signals::cancel_on_signals;
use crate::ui::Ui;

pub async fn run(ui: &Arc<Ui>, args: &DemoArgs) -> Result<()> {
    let (dir, temporary) = match &args.dir {
        Some(dir) => (std::path::absolute(dir).map_err(|e| io("resolving", dir.clone(), e))?, None),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("bitbucket-diy-demo-")
                .tempdir()
                .map_err(|e| io("creating a folder in", std::env::temp_dir(), e))?;
            (temp.path().to_owned(), Some(temp))
        }
    };
    let keep = args.keep || temporary.is_none();
    ui.set_label("demo");
    let renderer = Renderer::new(ui.clone());
    let signals = cancel_on_signals(ui.clone(), |n| match n {
        1 => "Cancelling: stopping the demo (its simulated Bitbucket is unlocked on the way)…".to_owned(),
        _ => "Still stopping the demo…".to_owned(),
    });
    let step_ui = ui.clone();
    let number = std::sync::atomic::AtomicU32::new(0);
    let on_stage = move |stage: demo::DemoStage| {
        let n = number.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        step_ui.info(&format!("[{n}/6] {}", stage.description()));
    };
    let outcome = demo::run(&DemoOptions::new(&dir), renderer.clone(), &on_stage, signals.token()).await;
    drop(signals);
    renderer.finish();

    let kept = match temporary {
        Some(temp) if keep => Some(temp.keep()),
        Some(temp) => {
            drop(temp); // removes the demo folder
            None
        }
        None => Some(dir.clone()),
    };
    let finished = outcome?;
    report(ui, &finished, || human(&finished, kept.as_deref()))
}

fn io(action: &'static str, path: PathBuf, source: std::io::Error) -> Error {
    Error::Io { action, path, source }
}

fn human(r: &DemoReport, kept: Option<&std::path::Path>) -> String {
    let backup = &r.backup;
    let lock_window = match (backup.lock_window, backup.drain_wait) {
        (Some(window), Some(drain)) => format!(
            "{}: users saw the maintenance page this long (waiting for the drain: {})",
            render::duration(window),
            render::duration(drain)
        ),
        (Some(window), None) => render::duration(window),
        _ => "none".to_owned(),
    };
    let rows = [
        ("Bitbucket", format!("{} (simulated; stopped)", r.simulator_url.trim_end_matches('/'))),
        (
            "home",
            format!("{} git repositories, {} files, {}", r.repositories, r.home_files, render::bytes(r.home_bytes)),
        ),
        ("backup", format!("{} ({})", file_name(&backup.archive), render::bytes(backup.archive_bytes))),
        ("lock window", lock_window),
        ("backup took", render::duration(backup.total)),
        (
            "verified",
            format!(
                "{} entries match the manifest; git fsck passed on {} repositories (test restore)",
                r.verify.verify.entries, r.verify.repositories
            ),
        ),
        (
            "restored",
            format!(
                "identical to the original home; git fsck passed on {} repositories; {} stale git locks removed",
                r.restored_repositories_checked,
                r.restore.git_locks_removed.len()
            ),
        ),
    ];
    let mut out = format!("bitbucket-diy demo: done in {}\n\n{}", render::duration(r.total), render::rows(&rows));
    out.push_str("\nWhat the backup asked Bitbucket (REST calls, in order):\n");
    out.push_str(&requests(&r.requests));
    match kept {
        Some(dir) => out.push_str(&format!(
            "\nEverything is in {}: bitbucket-home/, work/, archives/, restored-home/ and the configuration\n\
             the demo used, {}. Try: bitbucket-diy --config {} list\n",
            dir.display(),
            file_name(&r.config_file),
            r.config_file.display()
        )),
        None => out.push_str("\nThe demo folder was removed (keep it with --keep or --dir DIR).\n"),
    }
    out.push_str("Next: bitbucket-diy config init bitbucket-diy.toml, edit it, then bitbucket-diy config check.\n");
    out
}

/// One line per call; repeated polls are folded into one line with a count.
fn requests(requests: &[DemoRequest]) -> String {
    let mut lines: Vec<(String, usize)> = Vec::new();
    for r in requests {
        let line = format!("{:<6} {} → {}", r.method, r.path, r.status);
        match lines.last_mut() {
            Some((last, count)) if *last == line => *count += 1,
            _ => lines.push((line, 1)),
        }
    }
    lines
        .into_iter()
        .map(|(line, count)| if count > 1 { format!("  {line}  (×{count})\n") } else { format!("  {line}\n") })
        .collect()
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}
