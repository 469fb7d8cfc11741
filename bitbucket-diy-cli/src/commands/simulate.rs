//! `simulate`: the simulator as a standalone server.

use std::sync::Arc;
use std::time::Duration;

use bitbucket_diy_core::simulator::{SimEventKind, Simulator, SimulatorConfig};
use bitbucket_diy_core::{Error, Result};
use serde::Serialize;

use crate::cli::SimulateArgs;
use crate::commands::stdout_error;
use crate::signals::cancel_on_signals;
use crate::ui::Ui;

#[derive(Debug, Serialize)]
struct Listening<'a> {
    url: String,
    user: &'a str,
    password: &'a str,
}

pub async fn run(ui: &Arc<Ui>, args: SimulateArgs) -> Result<()> {
    let mut config = SimulatorConfig::default()
        .with_bind(args.listen)
        .with_admin(&args.user, &args.password)
        .with_context_path(&args.context_path)
        .with_drain_delay(args.drain_delay)
        .with_version(&args.bitbucket_version);
    for fault in args.fault {
        config = config.with_fault(fault);
    }
    let sim = Simulator::start(config).await.map_err(|e| Error::Io {
        action: "listening on",
        path: args.listen.to_string().into(),
        source: e,
    })?;
    let url = sim.url().to_string();
    ui.set_label(url.trim_end_matches('/'));
    // The first line on stdout is the URL, so scripts can read it before the server stops.
    let listening = Listening { url: url.clone(), user: sim.user(), password: sim.password() };
    if ui.json_report() {
        ui.stdout(&serde_json::to_string(&listening).unwrap_or_default())
    } else {
        ui.stdout(&format!(
            "url       {url}\nuser      {}\npassword  {}\nA simulated Bitbucket (not a real one): press Ctrl-C to stop.",
            sim.user(),
            sim.password()
        ))
    }
    .map_err(stdout_error)?;

    let signals = cancel_on_signals(ui.clone(), |_| "Stopping the simulator…".to_owned());
    let stop = signals.token();
    let mut shown = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let events = sim.events();
        for event in events.iter().skip(shown) {
            ui.info(&describe(&event.kind));
        }
        shown = events.len();
        if stopping {
            break;
        }
    }
    sim.shutdown().await;
    Ok(())
}

fn describe(kind: &SimEventKind) -> String {
    match kind {
        SimEventKind::Request { method, path, status } => format!("{method} {path} → {status}"),
        SimEventKind::ConnectionDropped { method, path } => format!("{method} {path} → connection dropped (fault)"),
        SimEventKind::FaultTriggered { fault } => format!("fault triggered: {fault}"),
        SimEventKind::Locked { owner } => format!("locked for maintenance by {owner}"),
        SimEventKind::LockRefused => "lock refused: already locked".to_owned(),
        SimEventKind::BackupStarted => "backup task started: draining".to_owned(),
        SimEventKind::Drained => "db-state and scm-state DRAINED".to_owned(),
        SimEventKind::ProgressReported { percentage } => format!("client progress {percentage}%"),
        SimEventKind::BackupCancelled => "backup task cancelled".to_owned(),
        SimEventKind::TaskFinished { state } => format!("backup task {state}"),
        SimEventKind::Unlocked => "unlocked".to_owned(),
        other => format!("{other:?}"),
    }
}
