//! Ctrl-C and SIGTERM: cancel the run (the core stops its steps and unlocks Bitbucket), and never
//! exit early while it does.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::ui::Ui;

/// Listens for SIGINT and SIGTERM until dropped.
pub struct SignalGuard {
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SignalGuard {
    /// The token the first signal cancels.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// From now on SIGINT and SIGTERM cancel the returned token instead of killing the process.
/// `message(n)` is printed for the n-th signal (1 for the first): what is being stopped, then
/// that we are still at it.
pub fn cancel_on_signals(ui: Arc<Ui>, message: impl Fn(u32) -> String + Send + 'static) -> SignalGuard {
    let cancel = CancellationToken::new();
    // Installed now, before any work starts: a signal in between must not kill the process.
    let (interrupt, terminate) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
    let (mut interrupt, mut terminate) = match (interrupt, terminate) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            ui.warn(&format!("cannot handle Ctrl-C and SIGTERM ({e}): they would stop the process at once"));
            return SignalGuard { cancel, task: None };
        }
    };
    let token = cancel.clone();
    let task = tokio::spawn(async move {
        let mut count = 0;
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            count += 1;
            ui.warn(&message(count));
            token.cancel();
        }
    });
    SignalGuard { cancel, task: Some(task) }
}
