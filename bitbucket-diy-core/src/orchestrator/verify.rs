//! Verification of archives: the manifest check, and with `deep` a test restore and `git fsck`.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::events::{Event, Phase};
use crate::orchestrator::BackupOrchestrator;
use crate::orchestrator::report::PhaseTimer;
use crate::strategy::filesystem::git_locks::find_bare_repositories;
use crate::strategy::filesystem::relink_fork_alternates;
use crate::strategy::{ArchiveError, ChildCommand, StepContext, StrategyError, VerifyReport, WorkingFolder};

/// What a deep verification found.
#[derive(Debug, Clone, Serialize)]
pub struct DeepVerifyReport {
    /// The manifest check.
    pub verify: VerifyReport,
    /// Repositories that passed `git fsck` (all of them, or the check fails).
    pub repositories: usize,
}

impl BackupOrchestrator {
    /// Check an archive against its manifest. With `deep`, also extract it into a temporary folder
    /// under the working folder and run `git fsck` on every repository. The outcome is recorded
    /// in the verification log (see [`crate::verify_log`]) that `list` reads.
    pub async fn verify(&self, name: &str, deep: bool, cancel: CancellationToken) -> Result<DeepVerifyReport, Error> {
        let archive = self.archive.find(name).await?;
        let outcome = self.verify_archive(archive.clone(), deep, cancel).await;
        if let Err(e) = self.record_verification(&archive, &outcome, deep).await {
            self.events.emit(&Event::Warning { message: format!("could not record the verification: {e}") });
        }
        outcome
    }

    async fn verify_archive(
        &self,
        archive: crate::strategy::ArchiveInfo,
        deep: bool,
        cancel: CancellationToken,
    ) -> Result<DeepVerifyReport, Error> {
        let timer = PhaseTimer::new(self.events.clone());
        let ctx =
            StepContext::new(archive.metadata.id.clone(), self.working.clone(), self.events.clone(), cancel.clone());
        let verify = timer.run(Phase::Verify, self.archive.verify(&archive, &ctx)).await?;
        if !deep {
            return Ok(DeepVerifyReport { verify, repositories: 0 });
        }
        crate::orchestrator::run_lock::create_private_dir(&self.working.state_dir())?;
        let scratch = tempfile::Builder::new()
            .prefix("verify-")
            .tempdir_in(self.working.state_dir())
            .map_err(|e| Error::io("creating a folder in", self.working.state_dir(), e))?;
        timer.run(Phase::Extract, self.archive.extract(&archive, scratch.path(), &ctx)).await?;
        let extracted = WorkingFolder::new(scratch.path());
        // Forks point at the live home's objects: point them into the extraction, or fsck
        // would check the live instance instead of the backup.
        let stores: Vec<(PathBuf, PathBuf)> =
            archive.metadata.data_stores.iter().map(|s| (s.clone(), extracted.data_store_dir(s))).collect();
        let home = extracted.home_dir();
        relink_fork_alternates(&home, &stores).map_err(|e| Error::io("relinking forks in", &home, e))?;
        let mut repositories = Vec::new();
        for root in [home, extracted.data_stores_dir()] {
            if root.exists() {
                repositories
                    .extend(find_bare_repositories(&root).map_err(|e| Error::io("listing repositories in", &root, e))?);
            }
        }
        for repo in &repositories {
            fsck_repository(repo, &cancel).await.map_err(|e| {
                Error::Archive(ArchiveError::Mismatch {
                    archive: archive.path.clone(),
                    entry: repo.strip_prefix(scratch.path()).unwrap_or(repo).display().to_string(),
                    reason: format!("git fsck failed: {e}"),
                })
            })?;
        }
        Ok(DeepVerifyReport { verify, repositories: repositories.len() })
    }
}

/// `git fsck --full` on one bare repository.
pub async fn fsck_repository(repo: &Path, cancel: &CancellationToken) -> Result<(), StrategyError> {
    ChildCommand::new("git")
        // Repositories belong to Bitbucket's user; we may run as another (root, backup user).
        .args(["-c", "safe.directory=*"])
        .arg(format!("--git-dir={}", repo.display()))
        .args(["fsck", "--full", "--no-progress", "--no-dangling"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .install_hint("install git (apt-get install git)")
        .run(cancel)
        .await
        .map(drop)
}
