//! The demo a new user runs first (`bitbucket-diy demo`): everything the product does, against a
//! simulated Bitbucket, with nothing to install but git.
//!
//! In one folder it starts a [`Simulator`] (with a small, realistic drain delay), generates a
//! home of real git repositories with Bitbucket's layout and the internal database inside it,
//! writes the configuration such an installation would use (database `none`, the `native` copy,
//! `tar-zstd` archives), then runs a full backup, a deep verification of the archive (test
//! restore and `git fsck`), a restore into a fresh folder, `git fsck` of every restored
//! repository, and a comparison of the restored home with the original.
//!
//! ```no_run
//! # async fn run() -> Result<(), bitbucket_diy_core::Error> {
//! use std::sync::Arc;
//! use bitbucket_diy_core::demo::{self, DemoOptions};
//! use bitbucket_diy_core::events::NoEvents;
//! use tokio_util::sync::CancellationToken;
//!
//! let dir = tempfile::tempdir().map_err(|e| bitbucket_diy_core::Error::Io {
//!     action: "creating", path: "/tmp".into(), source: e })?;
//! let report = demo::run(&DemoOptions::new(dir.path()), Arc::new(NoEvents), &|_| {}, CancellationToken::new()).await?;
//! println!("lock window {:?}", report.backup.lock_window);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{BackupConfig, ConfigError, InstanceType};
use crate::error::Error;
use crate::events::EventSink;
use crate::orchestrator::{BackupOrchestrator, BackupReport, DeepVerifyReport, RestoreReport, RestoreRequest};
use crate::sample_home::{self, SampleHomeError, SampleHomeSpec};
use crate::simulator::{SimEventKind, Simulator, SimulatorConfig};
use crate::strategy::filesystem::Excludes;
use crate::strategy::filesystem::git_locks::find_bare_repositories;
use crate::strategy::{ArchiveError, StrategyError};

/// Name of the configuration file the demo writes into its folder.
pub const DEMO_CONFIG_FILE: &str = "bitbucket-diy.toml";

/// How the demo runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DemoOptions {
    /// The folder everything goes into (created if missing; must be empty).
    pub dir: PathBuf,
    /// The home to generate.
    pub spec: SampleHomeSpec,
    /// How long the simulated instance takes to drain once the backup starts.
    pub drain_delay: Duration,
}

impl DemoOptions {
    /// The demo home ([`SampleHomeSpec::demo`], a few MB) and a half-second drain, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), spec: SampleHomeSpec::demo(), drain_delay: Duration::from_millis(500) }
    }
}

/// The demo's steps, announced as they begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DemoStage {
    /// Starting the simulated Bitbucket.
    StartSimulator,
    /// Generating the home of real git repositories.
    GenerateHome,
    /// The backup: prepare, lock, drain, copy, unlock, archive.
    Backup,
    /// Deep verification of the archive.
    Verify,
    /// Restoring into a fresh folder.
    Restore,
    /// `git fsck` of the restored repositories and comparison with the original home.
    CheckRestore,
}

impl DemoStage {
    /// What the step does, for humans.
    pub fn description(self) -> &'static str {
        match self {
            DemoStage::StartSimulator => "starting a simulated Bitbucket",
            DemoStage::GenerateHome => "generating a Bitbucket home of real git repositories",
            DemoStage::Backup => "backing it up",
            DemoStage::Verify => "verifying the archive (test restore and git fsck)",
            DemoStage::Restore => "restoring it into a fresh folder",
            DemoStage::CheckRestore => "checking the restored home (git fsck, comparison with the original)",
        }
    }
}

/// One REST call the simulated Bitbucket answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DemoRequest {
    /// Since the simulator started.
    #[serde(with = "crate::serde_duration")]
    pub at: Duration,
    /// HTTP method.
    pub method: String,
    /// Path, without the query string (where tokens travel).
    pub path: String,
    /// Status sent.
    pub status: u16,
}

/// What the demo did.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// The demo folder.
    pub dir: PathBuf,
    /// The configuration the demo used (its Bitbucket is gone once the demo ends).
    pub config_file: PathBuf,
    /// The simulated instance's URL.
    pub simulator_url: String,
    /// The generated home.
    pub home: PathBuf,
    /// Bytes of files in the generated home.
    pub home_bytes: u64,
    /// Files in the generated home.
    pub home_files: u64,
    /// Git repositories in the generated home.
    pub repositories: usize,
    /// The backup.
    pub backup: BackupReport,
    /// The deep verification of its archive.
    pub verify: DeepVerifyReport,
    /// The restore.
    pub restore: RestoreReport,
    /// Restored repositories that passed `git fsck`.
    pub restored_repositories_checked: usize,
    /// How long the simulated Bitbucket itself saw the lock held.
    #[serde(with = "option_secs")]
    pub server_lock_window: Option<Duration>,
    /// The REST calls the backup made, in order.
    pub requests: Vec<DemoRequest>,
    /// The whole demo.
    #[serde(with = "crate::serde_duration")]
    pub total: Duration,
}

/// Run the demo in `options.dir`. `events` receives the backup's, verification's and restore's
/// events; `on_stage` is told when each step begins.
pub async fn run(
    options: &DemoOptions,
    events: Arc<dyn EventSink>,
    on_stage: &(dyn Fn(DemoStage) + Send + Sync),
    cancel: CancellationToken,
) -> Result<DemoReport, Error> {
    let start = Instant::now();
    let dir = prepare_dir(&options.dir)?;
    let stage = |s: DemoStage| -> Result<(), Error> {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled { during: None });
        }
        on_stage(s);
        Ok(())
    };

    stage(DemoStage::StartSimulator)?;
    let sim = Simulator::start(
        SimulatorConfig::default().with_context_path("/bitbucket").with_drain_delay(options.drain_delay),
    )
    .await
    .map_err(|e| Error::io("starting the simulated Bitbucket on", "127.0.0.1", e))?;

    stage(DemoStage::GenerateHome)?;
    let home = dir.join("bitbucket-home");
    let (repositories, home_files, home_bytes) = {
        let (home, spec) = (home.clone(), options.spec.clone());
        tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let generated = sample_home::generate(&home, &spec).map_err(sample_home_error)?;
            let (files, bytes) = tree_size(&home)?;
            Ok((generated.repositories.len(), files, bytes))
        })
        .await
        .map_err(join_error)??
    };

    let config_file = dir.join(DEMO_CONFIG_FILE);
    let config = write_config(&config_file, &sim, &home, &dir)?;
    let password = SecretString::from(sim.password().to_owned());
    let orchestrator =
        BackupOrchestrator::from_config(&config)?.bitbucket_password(password)?.events(events).build()?;

    stage(DemoStage::Backup)?;
    let backup = orchestrator.backup(cancel.clone()).await?;
    let requests = sim
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            SimEventKind::Request { method, path, status } => Some(DemoRequest { at: e.at, method, path, status }),
            _ => None,
        })
        .collect();
    let server_lock_window = sim.lock_window();

    stage(DemoStage::Verify)?;
    let verify = orchestrator.verify(backup.id.as_str(), true, cancel.clone()).await?;

    stage(DemoStage::Restore)?;
    let restored = dir.join("restored-home");
    let restore =
        orchestrator.restore(&RestoreRequest::new(backup.id.as_str(), &restored, None), cancel.clone()).await?;

    stage(DemoStage::CheckRestore)?;
    let restored_repositories_checked = check_restored(&home, &restored, &backup, &cancel).await?;
    sim.shutdown().await;

    Ok(DemoReport {
        dir,
        config_file,
        simulator_url: orchestrator.client()?.base_url().to_string(),
        home,
        home_bytes,
        home_files,
        repositories,
        backup,
        verify,
        restore,
        restored_repositories_checked,
        server_lock_window,
        requests,
        total: start.elapsed(),
    })
}

/// Create `dir` if needed and refuse one that holds anything: the demo never mixes its files
/// with someone else's.
fn prepare_dir(dir: &Path) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let dir = dir.canonicalize().map_err(|e| Error::io("resolving", dir, e))?;
    let mut entries = std::fs::read_dir(&dir).map_err(|e| Error::io("reading", &dir, e))?;
    if entries.next().is_some() {
        return Err(ConfigError::invalid(
            "demo folder",
            format!("{} is not empty: give an empty or new folder", dir.display()),
        )
        .into());
    }
    Ok(dir)
}

/// The configuration an installation like the demo's would use, written for the user to read.
/// The password is not in it: the simulated instance's is handed to the orchestrator directly.
fn write_config(path: &Path, sim: &Simulator, home: &Path, dir: &Path) -> Result<BackupConfig, Error> {
    let quote = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let text = format!(
        "# Written by `bitbucket-diy demo`. Its Bitbucket was a simulator that stopped with the demo;\n\
         # the folders below stay as long as the demo folder does.\n\n\
         [bitbucket]\nurl = {url}\nuser = {user}\n\n\
         [database]\n# Evaluation installs keep their database inside the home (shared/data/db.*).\ntype = \"none\"\n\n\
         [filesystem]\ntype = \"native\"\nhome = {home}\n\n\
         [archive]\ntype = \"tar-zstd\"\nfolder = {archives}\nkeep = 3\n\n\
         [backup]\nworking_folder = {work}\npoll_interval = \"100ms\"\n",
        url = toml::Value::String(sim.url().to_string()),
        user = toml::Value::String(sim.user().to_owned()),
        home = quote(home),
        archives = quote(&dir.join("archives")),
        work = quote(&dir.join("work")),
    );
    std::fs::write(path, &text).map_err(|e| Error::io("writing", path, e))?;
    Ok(BackupConfig::from_toml_with_env(&text, &path.display().to_string(), [])?.config)
}

/// `git fsck` every restored repository and compare the restored home with the original (minus
/// what backups leave out, the stale git locks a restore removes and the forks' alternates it
/// repoints). Returns how many repositories were checked.
async fn check_restored(
    original: &Path,
    restored: &Path,
    backup: &BackupReport,
    cancel: &CancellationToken,
) -> Result<usize, Error> {
    let (a, b) = (original.to_owned(), restored.to_owned());
    let repositories = tokio::task::spawn_blocking(move || -> Result<Vec<PathBuf>, Error> {
        let excludes = Excludes::for_home(InstanceType::Bitbucket, false, &[], &[]);
        sample_home::compare_trees(&a, &b, |relative: &Path| {
            excludes.is_excluded(relative, a.join(relative).is_dir())
                || is_git_lock(relative)
                || relative.ends_with("objects/info/alternates")
        })
        .map_err(|reason| {
            Error::Archive(ArchiveError::Mismatch {
                archive: PathBuf::from(&b),
                entry: "restored home".to_owned(),
                reason: format!("differs from the original: {reason}"),
            })
        })?;
        find_bare_repositories(&b).map_err(|e| Error::io("listing repositories in", &b, e))
    })
    .await
    .map_err(join_error)??;
    for repo in &repositories {
        crate::orchestrator::fsck_repository(repo, cancel).await.map_err(|e| {
            Error::Archive(ArchiveError::Mismatch {
                archive: backup.archive.clone(),
                entry: repo.display().to_string(),
                reason: format!("git fsck of the restored repository failed: {e}"),
            })
        })?;
    }
    Ok(repositories.len())
}

fn is_git_lock(relative: &Path) -> bool {
    let in_repository = relative.components().any(|c| c.as_os_str() == "repositories");
    let name = relative.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    in_repository && (name.ends_with(".lock") || name == "gc.pid")
}

fn tree_size(root: &Path) -> Result<(u64, u64), Error> {
    let (mut files, mut bytes) = (0, 0);
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(|e| Error::io("walking", root, std::io::Error::other(e)))?;
        if entry.file_type().is_file() {
            files += 1;
            bytes += entry.metadata().map_err(|e| Error::io("reading", entry.path(), e.into()))?.len();
        }
    }
    Ok((files, bytes))
}

fn sample_home_error(e: SampleHomeError) -> Error {
    match e {
        SampleHomeError::GitMissing => Error::Filesystem(StrategyError::ToolMissing {
            tool: "git".to_owned(),
            hint: "the demo generates real git repositories: install git (apt-get install git)".to_owned(),
        }),
        other => Error::Filesystem(StrategyError::Custom { strategy: "demo".to_owned(), message: other.to_string() }),
    }
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::io("running a background task for", "the demo", std::io::Error::other(e))
}

mod option_secs {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::RecordedEvents;

    #[tokio::test]
    async fn demo_backs_up_restores_and_checks_a_real_home() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = DemoOptions::new(dir.path().join("demo"));
        options.spec = SampleHomeSpec::tiny();
        options.drain_delay = Duration::from_millis(50);
        let stages = std::sync::Mutex::new(Vec::new());
        let events = RecordedEvents::new();
        let report =
            run(&options, Arc::new(events.clone()), &|s| stages.lock().unwrap().push(s), CancellationToken::new())
                .await
                .unwrap();
        assert_eq!(stages.lock().unwrap().len(), 6);
        assert!(report.backup.lock_window.is_some());
        assert!(report.backup.archive.is_file());
        assert_eq!(report.restored_repositories_checked, report.repositories);
        assert!(report.verify.repositories >= report.repositories);
        assert!(report.requests.iter().any(|r| r.method == "DELETE" && r.path.ends_with("/mvc/maintenance/lock")));
        assert!(report.config_file.is_file());
        assert!(!events.events().is_empty());
        let log =
            crate::verify_log::VerifyLog::load(&report.dir.join("archives").join(crate::verify_log::VERIFY_LOG_FILE));
        let record = log.get(report.backup.id.as_str()).expect("the deep verification is recorded");
        assert!(record.ok && record.deep && record.repositories == report.verify.repositories, "{record:?}");
    }

    #[tokio::test]
    async fn a_folder_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("precious"), "x").unwrap();
        let err =
            run(&DemoOptions::new(dir.path()), Arc::new(crate::events::NoEvents), &|_| {}, CancellationToken::new())
                .await
                .unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        assert!(dir.path().join("precious").exists());
    }
}
