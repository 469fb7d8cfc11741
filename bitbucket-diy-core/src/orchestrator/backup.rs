//! One backup run, from the run lock to retention.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::archive_format::{BackupMetadata, FORMAT_VERSION, StrategyRecord};
use crate::backup_id::BackupId;
use crate::client::MaintenanceClient;
use crate::error::{Error, ErrorKind};
use crate::events::{Event, EventSink, Phase};
use crate::orchestrator::hooks::HookEnv;
use crate::orchestrator::locked::{Consistent, DatabaseCopy, join_results};
use crate::orchestrator::report::{BackupReport, PhaseTimer};
use crate::orchestrator::{BackupOrchestrator, HookPoint, RunLock};
use crate::strategy::{StepContext, WorkingFolder};

/// The oldest Bitbucket with zero-downtime backups.
const ZERO_DOWNTIME_MIN_VERSION: (u32, u32) = (4, 8);

/// The `none` archive strategy's completion marker, removed at the start of every run so a
/// working folder being rewritten is never listed as a backup.
const COMPLETION_MARKER: &str = "backup.json";

impl BackupOrchestrator {
    /// Take one backup. `cancel` (Ctrl-C, SIGTERM, a Python KeyboardInterrupt) stops the run;
    /// the instance is unlocked whatever happens.
    pub async fn backup(&self, cancel: CancellationToken) -> Result<BackupReport, Error> {
        let warnings = Arc::new(WarningLog::new(self.events.clone()));
        let events: Arc<dyn EventSink> = warnings.clone();
        let _run_lock = RunLock::acquire(&self.working)?;
        let mut hook_env =
            HookEnv { working_folder: self.working.root().to_owned(), status: "running", ..HookEnv::default() };

        let outcome = self.run_backup(&cancel, &events, &mut hook_env).await;
        match &outcome {
            Ok(_) => hook_env.status = "success",
            Err(e) => {
                hook_env.status = "failure";
                hook_env.error_kind = Some(e.kind().as_str().to_owned());
                hook_env.error = Some(redacted_message(e));
                self.hook_warning(HookPoint::OnFailure, &hook_env, &events).await;
            }
        }
        self.hook_warning(HookPoint::Finally, &hook_env, &events).await;
        outcome.map(|mut report| {
            report.warnings = warnings.take();
            report
        })
    }

    async fn run_backup(
        &self,
        cancel: &CancellationToken,
        events: &Arc<dyn EventSink>,
        hook_env: &mut HookEnv,
    ) -> Result<BackupReport, Error> {
        let started_at = jiff::Timestamp::now();
        let start = Instant::now();
        let timer = PhaseTimer::new(events.clone());
        remove_completion_marker(&self.working)?;
        self.refuse_unsafe_zero_downtime()?;
        let client = self.client()?;
        let bitbucket_version = client.application_properties().await?.version;
        if self.options.zero_downtime {
            check_zero_downtime_version(&bitbucket_version)?;
        }
        let id = self.unused_backup_id(started_at).await?;
        hook_env.backup_id = Some(id.clone());
        let ctx = StepContext::new(id.clone(), self.working.clone(), events.clone(), cancel.clone());

        self.prepare(&ctx, &timer).await.map_err(|e| cancelled_during(e, cancel, &timer))?;
        if cancel.is_cancelled() {
            return Err(Error::Cancelled { during: timer.current() });
        }
        timer.run(Phase::Hook, self.hooks.run(HookPoint::BeforeLock, hook_env)).await?;

        let consistent = if self.options.zero_downtime {
            self.run_zero_downtime(&ctx, &timer).await.map_err(|e| cancelled_during(e, cancel, &timer))?
        } else {
            self.run_locked(client, &ctx, &timer, events).await?
        };
        hook_env.lock_window = consistent.lock_window;
        self.hook_warning(HookPoint::AfterUnlock, hook_env, events).await;
        let database = match consistent.database {
            DatabaseCopy::Done(report) => report,
            DatabaseCopy::Deferred(snapshot) => timer
                .run(Phase::DumpDatabase, snapshot.finish(&ctx))
                .await
                .map_err(|e| cancelled_during(Error::Database(e), cancel, &timer))?,
        };
        let consistent = Consistent { database: DatabaseCopy::Done(database.clone()), ..consistent };

        let metadata = self.metadata(&id, client, bitbucket_version, &consistent);
        let archive = timer
            .run(Phase::Archive, self.archive.write(&self.working, &metadata, &ctx))
            .await
            .map_err(|e| cancelled_during(e.into(), cancel, &timer))?;
        events.emit(&Event::ArchiveWritten { path: archive.path.clone(), bytes: archive.bytes });
        hook_env.archive = Some(archive.path.clone());

        let pruned = timer.run(Phase::Retention, self.archive.prune(self.options.keep)).await?;
        for old in &pruned {
            events.emit(&Event::ArchivePruned { path: old.path.clone() });
        }
        if let Err(e) = self.forget_verifications(&pruned).await {
            events.emit(&Event::Warning { message: format!("could not update the verification log: {e}") });
        }
        self.hook_warning(HookPoint::AfterArchive, hook_env, events).await;

        Ok(BackupReport {
            id,
            archive: archive.path,
            archive_bytes: archive.bytes,
            lock_window: consistent.lock_window,
            drain_wait: consistent.drain_wait,
            total: start.elapsed(),
            phases: timer.timings(),
            database,
            filesystem: consistent.filesystem,
            zero_downtime: self.options.zero_downtime,
            pruned: pruned.into_iter().map(|a| a.path).collect(),
            warnings: Vec::new(),
            started_at,
            finished_at: jiff::Timestamp::now(),
        })
    }

    /// Database and filesystem preparation, in parallel, while the instance runs.
    async fn prepare(&self, ctx: &StepContext, timer: &PhaseTimer) -> Result<(), Error> {
        // A child token, so the first failure stops the sibling without cancelling the run.
        let step_ctx = StepContext::new(
            ctx.backup_id().clone(),
            ctx.working().clone(),
            ctx.events().clone(),
            ctx.cancellation().child_token(),
        );
        let stop = step_ctx.cancellation();
        let database = async {
            let r = timer.run(Phase::PrepareDatabase, self.database.prepare(&step_ctx)).await.map_err(Error::Database);
            if r.is_err() {
                stop.cancel();
            }
            r
        };
        let filesystem = async {
            let r = timer
                .run(Phase::PrepareFilesystem, self.filesystem.prepare(&step_ctx))
                .await
                .map_err(Error::Filesystem);
            if r.is_err() {
                stop.cancel();
            }
            r
        };
        let (database, filesystem) = tokio::join!(database, filesystem);
        join_results(database, filesystem).map(drop)
    }

    /// Zero-downtime needs a filesystem snapshot and a database captured at the same instant.
    fn refuse_unsafe_zero_downtime(&self) -> Result<(), Error> {
        if !self.options.zero_downtime {
            return Ok(());
        }
        let fs = self.filesystem.capabilities();
        let db = self.database.capabilities();
        let reason = if !fs.atomic_snapshot {
            format!(
                "the `{}` filesystem strategy does not take atomic snapshots (use `command` with atomic_snapshot = true, e.g. ZFS or LVM)",
                self.filesystem.name()
            )
        } else if !(db.covered_by_filesystem || db.atomic_snapshot) {
            format!(
                "the `{}` database strategy is not captured at the snapshot's instant (use `none` with the database on the snapshotted volume, or a `command` with atomic_snapshot = true)",
                self.database.name()
            )
        } else {
            return Ok(());
        };
        Err(Error::ZeroDowntimeRefused { reason })
    }

    /// `<prefix><UTC time>`, with `-2`, `-3`… when a backup of that name exists already.
    async fn unused_backup_id(&self, at: jiff::Timestamp) -> Result<BackupId, Error> {
        let base = BackupId::generate(&self.options.id_prefix, at)?;
        let taken: Vec<BackupId> = self.archive.list().await?.into_iter().map(|a| a.metadata.id).collect();
        let mut id = base.clone();
        let mut n = 2;
        while taken.contains(&id) {
            id = base.with_suffix(n);
            n += 1;
        }
        Ok(id)
    }

    fn metadata(&self, id: &BackupId, client: &MaintenanceClient, version: String, c: &Consistent) -> BackupMetadata {
        BackupMetadata {
            format_version: FORMAT_VERSION,
            id: id.clone(),
            created_at: c.at,
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            bitbucket_version: Some(version),
            instance_url: Some(client.base_url().to_string()),
            zero_downtime: self.options.zero_downtime,
            lock_window: c.lock_window,
            database: match &c.database {
                DatabaseCopy::Done(report) => StrategyRecord::from_report(self.database.name(), report),
                DatabaseCopy::Deferred(_) => {
                    StrategyRecord { name: self.database.name().to_owned(), ..Default::default() }
                }
            },
            filesystem: StrategyRecord::from_report(self.filesystem.name(), &c.filesystem),
            data_stores: self.options.data_stores.clone(),
        }
    }

    /// Run late hooks; their failure is a warning, not a failed backup.
    async fn hook_warning(&self, point: HookPoint, env: &HookEnv, events: &Arc<dyn EventSink>) {
        if let Err(e) = self.hooks.run(point, env).await {
            events.emit(&Event::Warning { message: e.to_string() });
        }
    }
}

fn remove_completion_marker(working: &WorkingFolder) -> Result<(), Error> {
    let marker = working.state_dir().join(COMPLETION_MARKER);
    match std::fs::remove_file(&marker) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", marker, e)),
    }
}

fn check_zero_downtime_version(version: &str) -> Result<(), Error> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) if (major, minor) >= ZERO_DOWNTIME_MIN_VERSION => Ok(()),
        (Some(Ok(_)), Some(Ok(_))) => Err(Error::ZeroDowntimeRefused {
            reason: format!("Bitbucket {version} is older than 4.8, the first with zero-downtime backups"),
        }),
        _ => Err(Error::ZeroDowntimeRefused { reason: format!("cannot read Bitbucket's version `{version}`") }),
    }
}

/// A step's cancellation error, when the run itself was cancelled, says which phase was stopped.
fn cancelled_during(e: Error, cancel: &CancellationToken, timer: &PhaseTimer) -> Error {
    if cancel.is_cancelled() && e.kind() == ErrorKind::Cancelled {
        Error::Cancelled { during: timer.current() }
    } else {
        e
    }
}

/// The message a hook may see: a left-locked error's message holds the unlock token.
fn redacted_message(e: &Error) -> String {
    match e {
        Error::LeftLocked { unlock_error, .. } => {
            format!(
                "Bitbucket is still locked: unlocking failed ({unlock_error}); see the run's output for the unlock command"
            )
        }
        other => other.to_string(),
    }
}

/// Forwards events and keeps the warnings for the report.
struct WarningLog {
    inner: Arc<dyn EventSink>,
    warnings: Mutex<Vec<String>>,
}

impl WarningLog {
    fn new(inner: Arc<dyn EventSink>) -> Self {
        Self { inner, warnings: Mutex::default() }
    }

    fn take(&self) -> Vec<String> {
        self.warnings.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default()
    }
}

impl EventSink for WarningLog {
    fn emit(&self, event: &Event) {
        if let Event::Warning { message } = event
            && let Ok(mut w) = self.warnings.lock()
        {
            w.push(message.clone());
        }
        self.inner.emit(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_downtime_needs_4_8() {
        assert!(check_zero_downtime_version("8.19.0").is_ok());
        assert!(check_zero_downtime_version("4.8.0").is_ok());
        assert!(check_zero_downtime_version("4.7.2").is_err());
        assert!(check_zero_downtime_version("banana").is_err());
    }
}
