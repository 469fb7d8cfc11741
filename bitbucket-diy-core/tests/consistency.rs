//! Consistency under live writes: backups of a home of real git repositories and a real
//! PostgreSQL database while a writer keeps committing to random repositories and recording each
//! new commit id in the database, the way Bitbucket records a push. Every backup is restored into
//! a new home and a new database, and checked: every commit the restored database names exists
//! in the restored repository (`git cat-file`), and every restored repository passes
//! `git fsck --full --strict`.
//!
//! The writer writes only while the simulated instance is unlocked, and the simulator reports
//! `DRAINED` only once the write in flight has finished, as Bitbucket finishes in-flight pushes
//! before it drains. A backup that copied the home before the lock would miss the latest commits:
//! `a_home_copied_before_the_lock_is_caught` runs exactly that procedure and proves the checker
//! catches it.
//!
//! `BITBUCKET_DIY_CONSISTENCY_RUNS` sets the number of backups (20 by default); for a long run:
//! `BITBUCKET_DIY_CONSISTENCY_RUNS=200 cargo test -p bitbucket-diy-core --test consistency -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bitbucket_diy_core::client::Drained;
use bitbucket_diy_core::config::InstanceType;
use bitbucket_diy_core::orchestrator::{BackupOrchestrator, RestoreRequest};
use bitbucket_diy_core::sample_home::{self, SampleHome, SampleHomeSpec};
use bitbucket_diy_core::simulator::SimulatorConfig;
use bitbucket_diy_core::strategy::database::PostgresDatabase;
use bitbucket_diy_core::strategy::filesystem::NativeCopy;
use bitbucket_diy_core::strategy::{
    FilesystemCapabilities, FilesystemStrategy, HomeTarget, RestoreContext, StepContext, StepReport, StrategyError,
};
use support::common::postgres as pg;
use support::{Bench, PgDatabase};
use tokio_util::sync::CancellationToken;

const DEFAULT_RUNS: usize = 20;

const SCHEMA: &str = "CREATE TABLE commits (
    id bigserial PRIMARY KEY,
    repo_id bigint NOT NULL,
    commit_id text NOT NULL UNIQUE,
    created timestamptz NOT NULL DEFAULT now()
);";

fn runs() -> usize {
    std::env::var("BITBUCKET_DIY_CONSISTENCY_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_RUNS)
}

// ---------------------------------------------------------------------------------------------
// The writer

/// One psql session fed on standard input; each statement is confirmed by an `\echo` marker, so
/// a write is known to be committed before the writer lets the drain proceed.
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    statements: u64,
}

impl Session {
    fn open(database: &str) -> Self {
        let mut child = Command::new("psql")
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", pg::HOST, "-p", "5432", "-U", pg::SUPERUSER])
            .args(["-d", database])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("psql runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { child, stdin, stdout, statements: 0 }
    }

    /// Run `sql` (autocommit) and wait until psql has done it.
    fn execute(&mut self, sql: &str) -> Result<(), String> {
        self.statements += 1;
        let marker = format!("--done {}--", self.statements);
        writeln!(self.stdin, "{sql}\n\\echo {marker}").and_then(|()| self.stdin.flush()).map_err(|e| e.to_string())?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err(format!("psql ended before confirming: {sql}"));
            }
            if line.trim() == marker {
                return Ok(());
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Commits to random repositories and records each commit in the database, while the instance
/// is unlocked.
struct Writer {
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Writer {
    fn start(bench: Arc<Bench>, repositories: Vec<(u64, PathBuf)>, database: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let mut session = Session::open(database);
        let thread = std::thread::spawn({
            let (stop, writes) = (stop.clone(), writes.clone());
            move || {
                let outcome = (|| -> Result<(), String> {
                    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
                    while !stop.load(Ordering::SeqCst) {
                        // Maintenance mode refuses writes; a write in flight holds the drain back.
                        let Some(write) = bench.sim.begin_write() else {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        };
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let (id, repo) = &repositories[(seed % repositories.len() as u64) as usize];
                        let commit = sample_home::commit_to_repo(repo, "live write").map_err(|e| e.to_string())?;
                        session
                            .execute(&format!("INSERT INTO commits (repo_id, commit_id) VALUES ({id}, '{commit}');"))?;
                        drop(write);
                        writes.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(())
                })();
                if let Err(e) = &outcome {
                    eprintln!("the writer stopped: {e}");
                }
                outcome
            }
        });
        Self { stop, writes, thread: Some(thread) }
    }

    fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Wait (within reason) until `more` writes happened after `since`.
    async fn wait_for(&self, since: u64, more: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.writes() < since + more {
            assert!(
                !self.thread.as_ref().is_some_and(|t| t.is_finished()),
                "the writer stopped (see its message above)"
            );
            assert!(Instant::now() < deadline, "the writer made no progress in 60 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the writer thread panicked").expect("the writer failed");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// The checker

/// What one restored backup holds.
#[derive(Debug)]
struct Checked {
    /// Commits the restored database names (all found in the restored repositories).
    commits: usize,
    /// Repositories that passed `git fsck`.
    repositories: usize,
}

/// Every commit the restored database names must be in the restored repository it names; every
/// restored repository must pass `git fsck`.
fn check_restored(home: &Path, database: &str) -> Result<Checked, String> {
    let rows = pg::psql(database, "SELECT repo_id, commit_id FROM commits ORDER BY id;");
    let mut by_repo: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for line in rows.lines().filter(|l| !l.is_empty()) {
        let (repo, commit) = line.split_once('|').ok_or_else(|| format!("unexpected row `{line}`"))?;
        by_repo
            .entry(repo.parse().map_err(|_| format!("bad repo id in `{line}`"))?)
            .or_default()
            .push(commit.to_owned());
    }
    let mut missing = Vec::new();
    let mut commits = 0;
    for (repo_id, ids) in &by_repo {
        let repo = SampleHome::repositories_dir(home).join(repo_id.to_string());
        commits += ids.len();
        let mut child = Command::new("git")
            .args(["-c", "safe.directory=*"])
            .arg(format!("--git-dir={}", repo.display()))
            .args(["cat-file", "--batch-check"])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let input = ids.join("\n") + "\n";
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        writer.join().unwrap().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("git cat-file failed in {}: {}", repo.display(), String::from_utf8_lossy(&out.stderr)));
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if !line.ends_with(|c: char| c.is_ascii_digit()) || !line.contains(" commit ") {
                missing.push(format!("repository {repo_id}: {line}"));
            }
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "{} of {commits} commits named by the restored database are missing from the restored home:\n  {}",
            missing.len(),
            missing.iter().take(10).cloned().collect::<Vec<_>>().join("\n  ")
        ));
    }
    let repositories = sample_home::fsck_all(home)?;
    Ok(Checked { commits, repositories })
}

// ---------------------------------------------------------------------------------------------
// The set-up

struct Rig {
    bench: Arc<Bench>,
    database: PgDatabase,
    repositories: Vec<(u64, PathBuf)>,
}

impl Rig {
    async fn new(test: &str) -> Self {
        // No stale lock files: the writer commits to every repository (the restore's lock cleanup
        // is tested with the orchestrator).
        let spec = SampleHomeSpec { repositories: 6, stale_locks: false, ..SampleHomeSpec::tiny() };
        let bench = Bench::with(spec, SimulatorConfig::default()).await;
        let repositories = bitbucket_diy_core::strategy::filesystem::git_locks::find_bare_repositories(&bench.home)
            .unwrap()
            .into_iter()
            .map(|path| (path.file_name().unwrap().to_string_lossy().parse::<u64>().unwrap(), path))
            .collect();
        let database = PgDatabase::create(test, SCHEMA);
        Self { bench: Arc::new(bench), database, repositories }
    }

    fn native(&self) -> NativeCopy {
        NativeCopy::from_config(&self.bench.filesystem_config(), true, InstanceType::Bitbucket).unwrap()
    }

    fn orchestrator(&self, filesystem: impl FilesystemStrategy + 'static) -> BackupOrchestrator {
        self.bench
            .orchestrator()
            .database(PostgresDatabase::from_config(&self.database.config()).unwrap())
            .filesystem(filesystem)
            .build()
            .unwrap()
    }

    /// Restore `id` into a new home and a new database, check it, then remove both.
    async fn restore_and_check(
        &self,
        orchestrator: &BackupOrchestrator,
        id: &str,
        n: usize,
    ) -> Result<Checked, String> {
        let home = self.bench.dir.path().join(format!("restored-{n}"));
        let database = self.database.another_name("consistency", &format!("restored_{n}"));
        let request = RestoreRequest::new(id, &home, Some(database.clone()));
        orchestrator.restore(&request, CancellationToken::new()).await.map_err(|e| format!("restore failed: {e}"))?;
        let checked = tokio::task::spawn_blocking({
            let (home, database) = (home.clone(), database.clone());
            move || check_restored(&home, &database)
        })
        .await
        .unwrap();
        pg::psql("postgres", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE);", pg::ident(&database)));
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(home)).await.unwrap().unwrap();
        checked
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_under_live_writes_restore_consistently() {
    let rig = Arc::new(Rig::new("consistency_live").await);
    let orchestrator = Arc::new(rig.orchestrator(rig.native()));
    let writer = Writer::start(rig.bench.clone(), rig.repositories.clone(), &rig.database.name);
    let runs = runs();
    let started = Instant::now();
    // Each backup is restored and checked while the next one runs (two at most at a time).
    let checking = Arc::new(tokio::sync::Semaphore::new(2));
    let mut checks = tokio::task::JoinSet::new();
    for n in 1..=runs {
        // A write before every run, so each prepare pass copies a home that moved on.
        writer.wait_for(writer.writes(), 1).await;
        let report = orchestrator.backup(CancellationToken::new()).await.unwrap_or_else(|e| panic!("backup {n}: {e}"));
        assert!(!rig.bench.sim.is_locked(), "backup {n} left the instance locked");
        let permit = checking.clone().acquire_owned().await.unwrap();
        let (rig, orchestrator, writes) = (rig.clone(), orchestrator.clone(), writer.writes());
        checks.spawn(async move {
            let checked = rig.restore_and_check(&orchestrator, report.id.as_str(), n).await;
            let archive = report.archive.clone();
            tokio::task::spawn_blocking(move || std::fs::remove_file(archive)).await.unwrap().unwrap();
            drop(permit);
            (n, writes, checked)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = checks.join_next().await {
        results.push(joined.unwrap());
    }
    let writes = writer.writes();
    writer.finish();
    results.sort_by_key(|(n, ..)| *n);

    let mut failures = Vec::new();
    let (mut commits_checked, mut last_commits) = (0usize, 0usize);
    for (n, writes_then, checked) in results {
        match checked {
            Ok(checked) => {
                eprintln!(
                    "backup {n}/{runs}: {} commits named by the restored database, all in the restored home; \
                     {} repositories pass git fsck ({writes_then} writes so far)",
                    checked.commits, checked.repositories
                );
                if checked.repositories != rig.repositories.len() {
                    failures.push(format!("backup {n}: {} repositories restored", checked.repositories));
                }
                if checked.commits <= last_commits {
                    failures.push(format!("backup {n} holds no newer commit than the one before"));
                }
                last_commits = checked.commits;
                commits_checked += checked.commits;
            }
            Err(e) => failures.push(format!("backup {n}: {e}")),
        }
    }
    eprintln!(
        "consistency: {runs} backups under live writes, {} restored consistently; {writes} writes; \
         {commits_checked} commit references checked; {:.0?}",
        runs - failures.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "inconsistent restores:\n{}", failures.join("\n"));
}

/// A filesystem strategy that copies the home before the lock only, while writes go on: the
/// procedure the lock and drain exist to prevent.
#[derive(Debug)]
struct CopyBeforeLockOnly {
    inner: NativeCopy,
    writes: Arc<AtomicU64>,
}

#[async_trait]
impl FilesystemStrategy for CopyBeforeLockOnly {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> FilesystemCapabilities {
        self.inner.capabilities()
    }

    async fn prepare(&self, ctx: &StepContext) -> Result<(), StrategyError> {
        self.inner.prepare(ctx).await?;
        // Writes land after the copy and before the lock: the database will name their commits.
        let copied_at = self.writes.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.writes.load(Ordering::SeqCst) < copied_at + 2 {
            if Instant::now() > deadline {
                return Err(StrategyError::Custom { strategy: "test".into(), message: "no writes for 60 s".into() });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    async fn backup(&self, _ctx: &StepContext, _drained: &Drained) -> Result<StepReport, StrategyError> {
        Ok(StepReport::default())
    }

    async fn check_restore_target(&self, target: &HomeTarget) -> Result<(), StrategyError> {
        self.inner.check_restore_target(target).await
    }

    async fn restore(&self, ctx: &RestoreContext, target: &HomeTarget) -> Result<StepReport, StrategyError> {
        self.inner.restore(ctx, target).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_home_copied_before_the_lock_is_caught() {
    let rig = Rig::new("consistency_caught").await;
    let writer = Writer::start(rig.bench.clone(), rig.repositories.clone(), &rig.database.name);
    let orchestrator = rig.orchestrator(CopyBeforeLockOnly { inner: rig.native(), writes: writer.writes.clone() });
    writer.wait_for(0, 3).await;
    let report = orchestrator.backup(CancellationToken::new()).await.unwrap();
    let checked = rig.restore_and_check(&orchestrator, report.id.as_str(), 1).await;
    writer.finish();
    let err = checked.expect_err("a home copied before the lock must fail the check");
    assert!(err.contains("missing from the restored home"), "{err}");
    eprintln!("the checker caught the inconsistent procedure: {}", err.lines().next().unwrap_or_default());
}
