//! Restoring one backup into a new home and a new database.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::ConfigError;
use crate::error::{Error, ErrorKind};
use crate::events::{Event, Phase};
use crate::orchestrator::BackupOrchestrator;
use crate::orchestrator::locked::join_results;
use crate::orchestrator::report::{PhaseTimer, RestoreReport};
use crate::strategy::filesystem::git_locks::remove_stale_git_locks;
use crate::strategy::{
    DatabaseExtracted, DatabaseTarget, HomeTarget, RestoreContext, StepContext, StrategyError, Verification,
    WorkingFolder,
};

/// What to restore where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreRequest {
    /// Backup id, archive file name or path.
    pub archive: String,
    /// The new home: absent, or an empty folder.
    pub home: PathBuf,
    /// The new database's name (required unless the database lives in the home).
    pub database: Option<String>,
    /// Original data-store path → new path (unmapped stores go back to their original path).
    pub data_stores: BTreeMap<PathBuf, PathBuf>,
}

impl RestoreRequest {
    /// Restore `archive` into `home` and `database`.
    pub fn new(archive: impl Into<String>, home: impl Into<PathBuf>, database: Option<String>) -> Self {
        Self { archive: archive.into(), home: home.into(), database, data_stores: BTreeMap::new() }
    }
}

impl BackupOrchestrator {
    /// Restore a backup into a **new** home and a **new** database. Targets are checked before
    /// anything is extracted; a failed restore removes what it wrote into the home.
    pub async fn restore(&self, request: &RestoreRequest, cancel: CancellationToken) -> Result<RestoreReport, Error> {
        let start = Instant::now();
        let timer = PhaseTimer::new(self.events.clone());
        if !request.home.is_absolute() {
            return Err(ConfigError::invalid(
                "restore home",
                format!("{} must be an absolute path", request.home.display()),
            )
            .into());
        }
        let archive = self.archive.find(&request.archive).await?;
        self.check_backup_matches(&archive.metadata)?;

        let home_target = HomeTarget { home: request.home.clone(), data_stores: request.data_stores.clone() };
        let database_target = self.database_target(request)?;
        self.filesystem.check_restore_target(&home_target).await.map_err(Error::Filesystem)?;
        if let Some(target) = &database_target {
            self.database.check_restore_target(target).await.map_err(Error::Database)?;
        }

        let home_existed = request.home.exists();
        let parent = request.home.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
        // Next to the new home: on the same filesystem, so the home can be moved, not copied.
        let scratch = tempfile::Builder::new()
            .prefix(".bitbucket-diy-restore-")
            .tempdir_in(parent)
            .map_err(|e| Error::io("creating a restore folder in", parent, e))?;
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("protecting", scratch.path(), e))?;

        let result =
            self.restore_from(&archive, scratch.path(), &home_target, database_target.as_ref(), &timer, &cancel).await;
        match result {
            Ok((database_step, filesystem_step, git_locks_removed)) => Ok(RestoreReport {
                id: archive.metadata.id,
                archive: archive.path,
                home: request.home.clone(),
                database: database_target.map(|t| t.database),
                database_step,
                filesystem_step,
                git_locks_removed,
                phases: timer.timings(),
                total: start.elapsed(),
            }),
            Err(e) => {
                self.undo_home(&request.home, home_existed);
                let e = if cancel.is_cancelled() && e.kind() == ErrorKind::Cancelled {
                    Error::Cancelled { during: timer.current() }
                } else {
                    e
                };
                // Nothing was written to the database unless its restore began. A database the
                // step created is dropped by the step itself; one that existed (empty) is not.
                if let Some(target) = database_target.as_ref().filter(|_| timer.has_started(Phase::RestoreDatabase)) {
                    self.events.emit(&Event::Warning {
                        message: format!(
                            "restore failed; database {} may hold a partial restore if it existed before: \
                             check it is gone (or empty) before trying again",
                            target.database
                        ),
                    });
                }
                Err(e)
            }
        }
    }

    async fn restore_from(
        &self,
        archive: &crate::strategy::ArchiveInfo,
        scratch: &Path,
        home: &HomeTarget,
        database: Option<&DatabaseTarget>,
        timer: &PhaseTimer,
        cancel: &CancellationToken,
    ) -> Result<(crate::strategy::StepReport, crate::strategy::StepReport, Vec<PathBuf>), Error> {
        let extracted = WorkingFolder::new(scratch);
        let steps_cancel = cancel.child_token();
        let ctx =
            StepContext::new(archive.metadata.id.clone(), extracted.clone(), self.events.clone(), steps_cancel.clone());
        // The database restore starts as soon as its folder is out of the archive, while the home
        // still is being extracted, when the strategy waits for the whole archive to check out
        // before it reports success (`DatabaseStrategy::restores_while_extracting`).
        let early = database.is_some() && self.database.restores_while_extracting();
        let (database_ready, database_extracted) = oneshot::channel::<()>();
        let (verified, verification) = watch::channel(Verification::Pending);
        let rctx = RestoreContext::new(extracted, archive.metadata.clone(), self.events.clone(), steps_cancel.clone())
            .while_extracting(verification);

        let home_side = async {
            let on_database: DatabaseExtracted = Box::new(move || {
                let _ = database_ready.send(());
            });
            let extract = self.archive.extract_database_first(archive, scratch, &ctx, on_database);
            let manifest = timer.run(Phase::Extract, extract).await;
            verified.send_replace(if manifest.is_ok() { Verification::Verified } else { Verification::Failed });
            let manifest = manifest.inspect_err(|_| steps_cancel.cancel())?;
            let home_step = timer
                .run(Phase::RestoreFilesystem, self.filesystem.restore(&rctx, home))
                .await
                .map_err(Error::Filesystem)
                .inspect_err(|_| steps_cancel.cancel())?;
            Ok((manifest, home_step))
        };
        let db = async {
            let Some(target) = database else {
                return Ok(crate::strategy::StepReport::default().note("database", "restored with the home"));
            };
            let ready = if early { database_extracted.await.is_ok() } else { rctx.source_verified().await.is_ok() };
            if !ready {
                // The extraction failed; its error is the one reported.
                return Err(Error::Database(StrategyError::Cancelled));
            }
            timer
                .run(Phase::RestoreDatabase, self.database.restore(&rctx, target))
                .await
                .map_err(Error::Database)
                .inspect_err(|_| steps_cancel.cancel())
        };
        let (db, home_side) = tokio::join!(db, home_side);
        let (database_step, (manifest, filesystem_step)) = join_results(db, home_side)?;

        let mut roots = vec![home.home.clone()];
        for original in &manifest.metadata.data_stores {
            roots.push(home.data_stores.get(original).cloned().unwrap_or_else(|| original.clone()));
        }
        let removed = timer
            .run(Phase::CleanGitLocks, async {
                tokio::task::spawn_blocking(move || clean_repositories(&roots))
                    .await
                    .map_err(|e| Error::io("cleaning git locks", "", std::io::Error::other(e)))?
            })
            .await?;
        Ok((database_step, filesystem_step, removed))
    }

    /// A backup made by one database strategy cannot be restored by another.
    fn check_backup_matches(&self, metadata: &crate::archive_format::BackupMetadata) -> Result<(), Error> {
        let ours = self.database.name();
        let theirs = metadata.database.name.as_str();
        let both_in_home = self.database.capabilities().covered_by_filesystem && theirs == "none";
        if ours == theirs || both_in_home {
            return Ok(());
        }
        Err(Error::Database(StrategyError::Incompatible {
            strategy: ours.to_owned(),
            reason: format!("backup {} was made by the `{theirs}` database strategy", metadata.id),
        }))
    }

    fn database_target(&self, request: &RestoreRequest) -> Result<Option<DatabaseTarget>, Error> {
        if self.database.capabilities().covered_by_filesystem {
            return Ok(None);
        }
        match &request.database {
            Some(name) if !name.trim().is_empty() => Ok(Some(DatabaseTarget { database: name.clone() })),
            _ => Err(ConfigError::Missing {
                key: "restore database".to_owned(),
                hint: format!(
                    "the `{}` strategy restores into a new database: name it (--database NAME)",
                    self.database.name()
                ),
            }
            .into()),
        }
    }

    /// Leave the target as we found it: absent, or empty.
    fn undo_home(&self, home: &Path, existed: bool) {
        let outcome = if existed {
            std::fs::read_dir(home).and_then(|entries| {
                for entry in entries {
                    let path = entry?.path();
                    if path.is_dir() && !path.is_symlink() {
                        std::fs::remove_dir_all(&path)?;
                    } else {
                        std::fs::remove_file(&path)?;
                    }
                }
                Ok(())
            })
        } else {
            match std::fs::remove_dir_all(home) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        };
        if let Err(e) = outcome {
            self.events.emit(&Event::Warning {
                message: format!(
                    "restore failed and {} could not be cleaned up ({e}): remove it by hand",
                    home.display()
                ),
            });
        }
    }
}

/// Git lock files copied from live repositories are stale in a restored home.
fn clean_repositories(roots: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut removed = Vec::new();
    for root in roots.iter().filter(|r| r.exists()) {
        removed.extend(remove_stale_git_locks(root).map_err(|e| Error::io("removing stale git locks in", root, e))?);
    }
    Ok(removed)
}
