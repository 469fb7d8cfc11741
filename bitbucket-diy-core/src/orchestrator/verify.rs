//! Checks on restored or extracted repositories: finding them, `git fsck`, and repointing forks.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::events::Phase;
use crate::orchestrator::BackupOrchestrator;
use crate::orchestrator::report::PhaseTimer;
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
    /// under the working folder and run `git fsck` on every repository.
    pub async fn verify(&self, name: &str, deep: bool, cancel: CancellationToken) -> Result<DeepVerifyReport, Error> {
        let timer = PhaseTimer::new(self.events.clone());
        let archive = self.archive.find(name).await?;
        let ctx = StepContext::new(archive.metadata.id.clone(), self.working.clone(), self.events.clone(), cancel.clone());
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
        let mut repositories = Vec::new();
        for root in [extracted.home_dir(), extracted.data_stores_dir()] {
            repoint_alternates(&root, &root).map_err(|e| Error::io("repointing forks in", &root, e))?;
            repositories.extend(find_repositories(&root));
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

/// Bare repositories below `root` (folders with `HEAD`, `objects/` and `refs/`), not descending
/// into a repository once found.
pub fn find_repositories(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut walker = walkdir::WalkDir::new(root).follow_links(false).into_iter();
    while let Some(entry) = walker.next() {
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_dir() {
            continue;
        }
        let dir = entry.path();
        if dir.join("HEAD").is_file() && dir.join("objects").is_dir() && dir.join("refs").is_dir() {
            found.push(dir.to_owned());
            walker.skip_current_dir();
        }
    }
    found.sort();
    found
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

/// Forks borrow objects through `objects/info/alternates`, which Bitbucket writes as absolute
/// paths into the home it ran on. After a restore into another folder those paths point at the
/// old home (wrong, or gone). Rewrite every alternate that names a repository by its id to the
/// same repository under `new_root`, when it exists there. Returns the files rewritten.
pub fn repoint_alternates(search: &Path, new_root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut rewritten = Vec::new();
    for repo in find_repositories(search) {
        let file = repo.join("objects/info/alternates");
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let mut changed = false;
        let lines: Vec<String> = text
            .lines()
            .map(|line| match relocate(line, new_root) {
                Some(new) if new != line => {
                    changed = true;
                    new
                }
                _ => line.to_owned(),
            })
            .collect();
        if changed {
            let tmp = file.with_extension("bitbucket-diy-tmp");
            std::fs::write(&tmp, lines.join("\n") + "\n")?;
            std::fs::rename(&tmp, &file)?;
            rewritten.push(file);
        }
    }
    Ok(rewritten)
}

/// `/old/home/shared/data/repositories/12/objects` → `<new_root>/shared/data/repositories/12/objects`
/// (and the data-store form `…/repositories/<hierarchy>/<id>/objects`), if that exists.
fn relocate(line: &str, new_root: &Path) -> Option<String> {
    let path = Path::new(line.trim());
    if !path.is_absolute() || path.starts_with(new_root) {
        return None;
    }
    let components: Vec<_> = path.components().collect();
    let at = components.iter().rposition(|c| c.as_os_str() == "repositories")?;
    // Try the longest tail that exists under the new root, starting at a `shared/` or `repositories/`.
    let starts = [at.checked_sub(2), Some(at)];
    starts.into_iter().flatten().find_map(|start| {
        let tail: PathBuf = components[start..].iter().collect();
        let candidate = new_root.join(tail);
        candidate.is_dir().then(|| candidate.display().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternates_follow_the_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("new-home");
        let parent = home.join("shared/data/repositories/1");
        let fork = home.join("shared/data/repositories/2");
        for repo in [&parent, &fork] {
            std::fs::create_dir_all(repo.join("objects/info")).unwrap();
            std::fs::create_dir_all(repo.join("refs")).unwrap();
            std::fs::write(repo.join("HEAD"), "ref: refs/heads/master\n").unwrap();
        }
        let old = "/var/atlassian/application-data/bitbucket/shared/data/repositories/1/objects";
        std::fs::write(fork.join("objects/info/alternates"), format!("{old}\n")).unwrap();
        let rewritten = repoint_alternates(&home, &home).unwrap();
        assert_eq!(rewritten.len(), 1);
        let text = std::fs::read_to_string(fork.join("objects/info/alternates")).unwrap();
        assert_eq!(text.trim(), parent.join("objects").display().to_string());
        // Already right: untouched.
        assert!(repoint_alternates(&home, &home).unwrap().is_empty());
    }
}
