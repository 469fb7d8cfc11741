//! The locked phase: lock, start, drain, consistent copies, progress — and the unlock that
//! follows on every path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;

use crate::client::{
    CancelToken, ClientError, Drained, InstanceState, MaintenanceClient, MaintenanceLock, UnlockToken,
};
use crate::error::Error;
use crate::events::{Event, EventSink, Phase};
use crate::orchestrator::BackupOrchestrator;
use crate::orchestrator::report::PhaseTimer;
use crate::strategy::{DeferredDump, StepContext, StepReport};

/// The database step's result inside the lock: a finished dump, or a snapshot to dump later.
#[derive(Debug)]
pub(crate) enum DatabaseCopy {
    Done(StepReport),
    Deferred(Box<dyn DeferredDump>),
}

/// What the consistent part of a backup produced.
#[derive(Debug)]
pub(crate) struct Consistent {
    pub database: DatabaseCopy,
    pub filesystem: StepReport,
    pub lock_window: Option<Duration>,
    pub drain_wait: Option<Duration>,
    pub at: jiff::Timestamp,
}

impl BackupOrchestrator {
    /// Lock, copy while drained, unlock. The unlock happens whatever the copy did.
    pub(crate) async fn run_locked(
        &self,
        client: &MaintenanceClient,
        ctx: &StepContext,
        timer: &PhaseTimer,
        events: &Arc<dyn EventSink>,
    ) -> Result<Consistent, Error> {
        let user_cancel = ctx.cancellation().clone();
        if user_cancel.is_cancelled() {
            return Err(Error::Cancelled { during: timer.current() });
        }
        let lock = match timer.run(Phase::Lock, client.lock()).await {
            Ok(lock) => lock,
            Err(e) => return Err(lock_failure(client, e).await),
        };
        events.emit(&Event::Locked { owner: lock.owner().to_string() });

        // Steps see `locked_cancel`: fired by the user, by the locked-phase watchdog, or by the
        // first failing step so its sibling stops instead of holding the lock for nothing.
        let locked_cancel = user_cancel.child_token();
        let locked_ctx =
            StepContext::new(ctx.backup_id().clone(), ctx.working().clone(), events.clone(), locked_cancel.clone());
        let timed_out = Arc::new(AtomicBool::new(false));
        let watchdog = tokio::spawn({
            let (cancel, timed_out, limit) = (locked_cancel.clone(), timed_out.clone(), self.options.locked_timeout);
            async move {
                tokio::time::sleep(limit).await;
                timed_out.store(true, Ordering::SeqCst);
                cancel.cancel();
            }
        });

        let mut cancel_token = None;
        let work = self.consistent_copies(client, lock.token(), &mut cancel_token, &locked_ctx, timer, events);
        let result = with_grace(work, &locked_cancel, self.options.cancel_grace, events).await;
        watchdog.abort();
        let result = result.map_err(|e| {
            if timed_out.load(Ordering::SeqCst) {
                Error::LockedTimeout { limit: self.options.locked_timeout }
            } else if user_cancel.is_cancelled() {
                Error::Cancelled { during: timer.current() }
            } else {
                e
            }
        });

        if result.is_err()
            && let Some(token) = &cancel_token
        {
            self.cancel_server_task(client, token, events).await;
        }
        let unlock = timer.run(Phase::Unlock, self.unlock(client, &lock, events)).await;
        let token = lock.into_token(); // handled here: the guard must not try again on drop
        match unlock {
            Ok(window) => {
                events.emit(&Event::Unlocked { lock_window: window });
                result.map(|c| Consistent { lock_window: Some(window), ..c })
            }
            Err(unlock_error) => Err(Error::LeftLocked {
                unlock_error: Box::new(unlock_error),
                cause: result.err().map(Box::new),
                unlock_command: client.unlock_command(&token),
            }),
        }
    }

    /// No lock: both steps promise atomic snapshots taken now.
    pub(crate) async fn run_zero_downtime(&self, ctx: &StepContext, timer: &PhaseTimer) -> Result<Consistent, Error> {
        let drained = Drained::zero_downtime();
        let at = jiff::Timestamp::now();
        let (database, filesystem) = self.copy_both(ctx, &drained, timer, || async {}).await?;
        Ok(Consistent { database, filesystem, lock_window: None, drain_wait: None, at })
    }

    async fn consistent_copies(
        &self,
        client: &MaintenanceClient,
        token: &UnlockToken,
        cancel_slot: &mut Option<CancelToken>,
        ctx: &StepContext,
        timer: &PhaseTimer,
        events: &Arc<dyn EventSink>,
    ) -> Result<Consistent, Error> {
        let task = timer.run(Phase::StartBackup, client.start_backup(token)).await?;
        *cancel_slot = Some(task.cancel_token);
        let drained = timer
            .run(Phase::Drain, client.wait_drained(token, &self.options.drain, ctx.cancellation(), |_| {}))
            .await?;
        events.emit(&Event::Drained { waited: drained.waited() });
        let at = jiff::Timestamp::now();

        // Bitbucket shows the client's share of progress; the first finished step is half of it.
        let finished = AtomicU8::new(0);
        let step_done = || async {
            if finished.fetch_add(1, Ordering::SeqCst) == 0 {
                report_progress(client, token, 50, events).await;
            }
        };
        let (database, filesystem) = self.copy_both(ctx, &drained, timer, step_done).await?;
        // 100 un-latches the database and filesystem. Losing it does not spoil a complete copy:
        // the unlock that follows ends the task either way.
        report_progress(client, token, 100, events).await;
        Ok(Consistent { database, filesystem, lock_window: None, drain_wait: Some(drained.waited()), at })
    }

    /// The consistent database dump and home copy, in parallel. The first failure cancels the
    /// other step, and both are awaited: no step may still be writing when we unlock or return.
    async fn copy_both<F, Fut>(
        &self,
        ctx: &StepContext,
        drained: &Drained,
        timer: &PhaseTimer,
        step_done: F,
    ) -> Result<(DatabaseCopy, StepReport), Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()>,
    {
        let cancel = ctx.cancellation();
        let database = async {
            let step = async {
                match self.database.export_snapshot(ctx, drained).await? {
                    Some(snapshot) => Ok(DatabaseCopy::Deferred(snapshot)),
                    None => self.database.backup(ctx, drained).await.map(DatabaseCopy::Done),
                }
            };
            let r = timer.run(Phase::BackupDatabase, step).await.map_err(Error::Database);
            finish_step(r, cancel, &step_done).await
        };
        let filesystem = async {
            let r = timer
                .run(Phase::BackupFilesystem, self.filesystem.backup(ctx, drained))
                .await
                .map_err(Error::Filesystem);
            finish_step(r, cancel, &step_done).await
        };
        let (database, filesystem) = tokio::join!(database, filesystem);
        join_results(database, filesystem)
    }

    async fn unlock(
        &self,
        client: &MaintenanceClient,
        lock: &MaintenanceLock,
        events: &Arc<dyn EventSink>,
    ) -> Result<Duration, ClientError> {
        let token = lock.token();
        let attempt = std::sync::atomic::AtomicU32::new(1);
        let outcome = (|| client.unlock(token))
            .retry(self.retry_policy(self.options.unlock_attempts))
            .when(|e| !matches!(e, ClientError::InvalidToken { .. }))
            .notify(|e, _| {
                let n = attempt.fetch_add(1, Ordering::SeqCst) + 1;
                events.emit(&Event::Retrying { what: "unlock".to_owned(), attempt: n, reason: e.to_string() });
            })
            .await;
        match outcome {
            Ok(()) => Ok(lock.locked_at().elapsed()),
            // A rejected token may mean a human already unlocked by hand: believe /status.
            Err(e @ ClientError::InvalidToken { .. }) => match client.status().await {
                Ok(status) if status.state != InstanceState::Maintenance => {
                    events.emit(&Event::Warning {
                        message: format!(
                            "unlock token rejected ({e}), but Bitbucket reports {}: it is unlocked",
                            status.state
                        ),
                    });
                    Ok(lock.locked_at().elapsed())
                }
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn cancel_server_task(&self, client: &MaintenanceClient, token: &CancelToken, events: &Arc<dyn EventSink>) {
        let outcome =
            (|| client.cancel_backup(token)).retry(self.retry_policy(3)).when(ClientError::is_retryable).await;
        if let Err(e) = outcome {
            events.emit(&Event::Warning {
                message: format!("could not cancel Bitbucket's backup task ({e}); unlocking ends it"),
            });
        }
    }

    fn retry_policy(&self, attempts: u32) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.options.unlock_retry_delay)
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(attempts.saturating_sub(1) as usize)
            .with_jitter()
    }
}

/// A lock request whose answer was lost or unreadable may have locked Bitbucket all the same,
/// with a token we never saw (it is never retried, see the client): ask `/status` before calling
/// it a plain failure, so the instance is never left locked without a word.
async fn lock_failure(client: &MaintenanceClient, error: ClientError) -> Error {
    use crate::error::ErrorKind;
    let outcome_unknown =
        matches!(error.kind(), ErrorKind::Transport | ErrorKind::Timeout | ErrorKind::InvalidResponse);
    if !outcome_unknown {
        return error.into();
    }
    match client.status().await {
        Ok(status) if status.state == InstanceState::Maintenance => Error::LockTokenLost { cause: Box::new(error) },
        _ => error.into(),
    }
}

async fn report_progress(client: &MaintenanceClient, token: &UnlockToken, percentage: u8, events: &Arc<dyn EventSink>) {
    match client.report_progress(token, percentage).await {
        Ok(()) => events.emit(&Event::ProgressReported { percentage }),
        Err(e) => events.emit(&Event::Warning {
            message: format!("could not report progress {percentage}% to Bitbucket ({e}); carrying on"),
        }),
    }
}

async fn finish_step<T, F, Fut>(result: Result<T, Error>, cancel: &CancellationToken, step_done: &F) -> Result<T, Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    match &result {
        Ok(_) => step_done().await,
        Err(_) => cancel.cancel(),
    }
    result
}

/// Both results, or the more telling error: a real failure beats the cancellation it caused.
pub(crate) fn join_results<A, B>(a: Result<A, Error>, b: Result<B, Error>) -> Result<(A, B), Error> {
    use crate::error::ErrorKind;
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(e), Err(f)) => Err(if e.kind() == ErrorKind::Cancelled { f } else { e }),
    }
}

/// Run `work`; once `cancel` fires, give it `grace` to stop (steps kill their children and
/// return), then give up on it so the caller can unlock.
async fn with_grace<T>(
    work: impl Future<Output = Result<T, Error>>,
    cancel: &CancellationToken,
    grace: Duration,
    events: &Arc<dyn EventSink>,
) -> Result<T, Error> {
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => result,
        () = cancel.cancelled() => match tokio::time::timeout(grace, &mut work).await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(Error::Cancelled { during: None }),
            Err(_) => {
                events.emit(&Event::Warning {
                    message: format!("steps did not stop within {grace:?} of the cancellation; unlocking anyway"),
                });
                Err(Error::Cancelled { during: None })
            }
        },
    }
}
