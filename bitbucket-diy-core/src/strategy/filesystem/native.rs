//! `native`: pure-Rust incremental copy of the home and data stores (the default; needs no rsync).
//!
//! What it promises, pass after pass into the working folder:
//!
//! - the copy equals the source minus the excludes: new and changed files copied, files that
//!   disappeared or became excluded deleted (rsync's `--delete --delete-excluded`);
//! - permissions, owners (when run as root), modification times, symlinks (as symlinks, never
//!   followed) and empty folders are kept; sockets and FIFOs are skipped with a warning;
//! - **no stale copy survives the final pass**: a file whose size and mtime match its copy is
//!   trusted only if it was not written since shortly before the last completed pass started
//!   (see [`crate::strategy::filesystem::pass_state`]); otherwise its content is compared.
//!   rsync's quick check misses a file rewritten at the same size in the same second; this does
//!   not;
//! - each file is written under a temporary name in its destination folder, then renamed: an
//!   interrupted pass never leaves a truncated file under a real name (and the next pass removes
//!   its temporary files). The copy is flushed with one `syncfs` per pass before the pass is
//!   recorded, rather than one fsync per file (tens of thousands of fsyncs would dominate the
//!   locked window);
//! - large files are cloned (FICLONE) where the filesystem shares extents (btrfs, XFS), copied
//!   in the kernel (`copy_file_range`) elsewhere.
//!
//! Hard links to immutable git pack files (a cheap snapshot of packs that never change) are not
//! made: the copy would then share inodes with the live home, so a later `chmod` or a tool that
//! rewrites in place would alter the backup, and archives would need hard-link support to keep
//! the saving. Plain copies are simpler to trust; the incremental pass already skips unchanged
//! packs.
//!
//! Restore refuses a target that exists and is not empty (dotfiles count) or is a file. The
//! extracted backup is a temporary folder the orchestrator deletes, so its content is *moved*
//! into the target when both are on one filesystem (instant), and copied otherwise (EXDEV). A
//! source that is a working folder in use (it holds pass records) is always copied, never moved.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;

use crate::client::Drained;
use crate::config::{ConfigError, FilesystemConfig, InstanceType};
use crate::events::{Phase, Unit};
use crate::strategy::filesystem::alternates::relink_fork_alternates;
use crate::strategy::filesystem::pass_state::PassLog;
use crate::strategy::filesystem::target::{all_targets, data_store_plan, ensure_empty_target, mapped_targets};
use crate::strategy::filesystem::{CopyJob, Excludes, copy_jobs, validate_copy_config};
use crate::strategy::{
    FilesystemCapabilities, FilesystemStrategy, HomeTarget, RestoreContext, StepContext, StepReport, StrategyError,
};

mod mirror;

use mirror::{Counters, Mirror};

/// The `native` filesystem strategy.
#[derive(Debug, Clone)]
pub struct NativeCopy {
    jobs: Vec<CopyJob>,
    threads: usize,
}

impl NativeCopy {
    /// Build from `[filesystem]`. `separate_database` is true when a database strategy other than
    /// `none` dumps the database, so the internal database files in the home are left out.
    pub fn from_config(
        cfg: &FilesystemConfig,
        separate_database: bool,
        instance: InstanceType,
    ) -> Result<Self, ConfigError> {
        validate_copy_config(cfg, instance)?;
        let threads = match cfg.threads {
            Some(0) => {
                return Err(ConfigError::invalid("filesystem.threads", "must be at least 1"));
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
        };
        Ok(Self { jobs: copy_jobs(cfg, separate_database, instance), threads })
    }

    /// Copy threads used.
    pub fn threads(&self) -> usize {
        self.threads
    }

    async fn copy_pass(&self, ctx: &StepContext, phase: Phase) -> Result<StepReport, StrategyError> {
        let started = Instant::now();
        let counters = Arc::new(Counters::default());
        let skipped = Arc::new(Mutex::new(Vec::new()));
        let reflink = Arc::new(AtomicBool::new(true));
        let working = ctx.working().clone();
        let jobs = self.jobs.clone();
        let threads = self.threads;
        let cancel = ctx.cancellation().clone();
        let task = {
            let (counters, skipped, reflink) = (counters.clone(), skipped.clone(), reflink.clone());
            tokio::task::spawn_blocking(move || {
                let pool = thread_pool(threads, working.root())?;
                let passes = PassLog::new(&working.state_dir());
                for job in &jobs {
                    let dest = job.destination(&working);
                    let pass_started = SystemTime::now();
                    let mirror = Mirror {
                        excludes: &job.excludes,
                        trusted_before: passes.trusted_before(&dest),
                        cancel: &cancel,
                        counters: &counters,
                        preserve_owner: is_root(),
                        reflink: &reflink,
                        skipped: &skipped,
                    };
                    pool.install(|| mirror.run(&job.source, &dest))?;
                    sync_filesystem(&dest)?;
                    passes.record_completed(&dest, pass_started, "native")?;
                }
                Ok::<(), StrategyError>(())
            })
        };
        report_progress_until_done(ctx, phase, &counters, task).await?;

        let skipped = skipped.lock().map(|s| s.clone()).unwrap_or_default();
        if !skipped.is_empty() {
            let list: Vec<String> = skipped.iter().take(5).map(|p| p.display().to_string()).collect();
            ctx.warn(format!(
                "skipped {} socket(s), FIFO(s) or device(s) that cannot be backed up: {}",
                skipped.len(),
                list.join(", ")
            ));
        }
        let reflinked = if reflink.load(Ordering::Relaxed) { "yes" } else { "no" };
        Ok(report_from(&counters, started)
            .note("threads", self.threads.to_string())
            .note("reflink", reflinked)
            .note("change_detection", "size+mtime, content when written after the previous pass began"))
    }
}

#[async_trait]
impl FilesystemStrategy for NativeCopy {
    fn name(&self) -> &str {
        "native"
    }

    fn capabilities(&self) -> FilesystemCapabilities {
        FilesystemCapabilities::new(true, false)
    }

    async fn check(&self) -> Result<(), StrategyError> {
        check_sources(&self.jobs)
    }

    async fn prepare(&self, ctx: &StepContext) -> Result<(), StrategyError> {
        self.copy_pass(ctx, Phase::PrepareFilesystem).await.map(|_| ())
    }

    async fn backup(&self, ctx: &StepContext, _drained: &Drained) -> Result<StepReport, StrategyError> {
        self.copy_pass(ctx, Phase::BackupFilesystem).await
    }

    async fn check_restore_target(&self, target: &HomeTarget) -> Result<(), StrategyError> {
        mapped_targets(target).iter().try_for_each(|t| ensure_empty_target(t))
    }

    async fn restore(&self, ctx: &RestoreContext, target: &HomeTarget) -> Result<StepReport, StrategyError> {
        restore_natively(ctx, target, self.threads).await
    }
}

/// Restore the extracted home and data stores into `target` (moving when allowed, copying
/// otherwise), then relink fork alternates. Shared with strategies that only differ in how they
/// back up.
pub(crate) async fn restore_natively(
    ctx: &RestoreContext,
    target: &HomeTarget,
    threads: usize,
) -> Result<StepReport, StrategyError> {
    let started = Instant::now();
    let targets = all_targets(ctx, target);
    for t in &targets {
        ensure_empty_target(t)?;
    }
    let mut plan = vec![(ctx.source().home_dir(), target.home.clone())];
    let stores = data_store_plan(ctx, target);
    plan.extend(stores.iter().map(|(_, source, restored)| (source.clone(), restored.clone())));
    for (source, _) in &plan {
        if !source.is_dir() {
            return Err(StrategyError::Incompatible {
                strategy: "native".to_owned(),
                reason: format!("the backup holds no {} folder", source.display()),
            });
        }
    }
    let may_move = !PassLog::is_in_use(ctx.source().root());
    let counters = Arc::new(Counters::default());
    let cancel = ctx.cancellation().clone();
    let home = target.home.clone();
    let store_pairs: Vec<(PathBuf, PathBuf)> = stores.iter().map(|(o, _, r)| (o.clone(), r.clone())).collect();
    let task_counters = counters.clone();
    let task = tokio::task::spawn_blocking(move || {
        let pool = thread_pool(threads, &home)?;
        let mut moved_any = false;
        for (source, dest) in &plan {
            moved_any |= restore_tree(source, dest, may_move, &pool, &cancel, &task_counters)?;
        }
        let relinked = relink_fork_alternates(&home, &store_pairs)
            .map_err(|e| StrategyError::io("relinking fork alternates in", &home, e))?;
        Ok::<_, StrategyError>((moved_any, relinked.len()))
    });
    let (moved, relinked) = task.await.map_err(join_error)??;
    Ok(report_from(&counters, started)
        .note("method", if moved { "move" } else { "copy" })
        .note("alternates_relinked", relinked.to_string()))
}

/// Restore one tree. Returns whether anything was moved rather than copied.
fn restore_tree(
    source: &Path,
    dest: &Path,
    may_move: bool,
    pool: &rayon::ThreadPool,
    cancel: &tokio_util::sync::CancellationToken,
    counters: &Counters,
) -> Result<bool, StrategyError> {
    let none = Excludes::default();
    let reflink = AtomicBool::new(true);
    let skipped = Mutex::new(Vec::new());
    let mirror = Mirror {
        excludes: &none,
        trusted_before: None,
        cancel,
        counters,
        preserve_owner: is_root(),
        reflink: &reflink,
        skipped: &skipped,
    };
    if !may_move {
        pool.install(|| mirror.run(source, dest))?;
        return Ok(false);
    }
    count_tree(source, counters);
    if !dest.exists() {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StrategyError::io("creating", parent, e))?;
        }
        match std::fs::rename(source, dest) {
            Ok(()) => return Ok(true),
            Err(e) if is_cross_device(&e) => {}
            Err(e) => return Err(StrategyError::io("moving the restored home into", dest, e)),
        }
        pool.install(|| mirror.run(source, dest))?;
        return Ok(false);
    }
    // An existing empty folder (often a mount point): move the children, keep the folder.
    let mut moved = false;
    let entries = std::fs::read_dir(source).map_err(|e| StrategyError::io("reading folder", source, e))?;
    for entry in entries {
        if cancel.is_cancelled() {
            return Err(StrategyError::Cancelled);
        }
        let entry = entry.map_err(|e| StrategyError::io("reading folder", source, e))?;
        let name = entry.file_name();
        match std::fs::rename(entry.path(), dest.join(&name)) {
            Ok(()) => moved = true,
            Err(e) if is_cross_device(&e) => pool.install(|| mirror.copy_new_entry(source, dest, &name))?,
            Err(e) => return Err(StrategyError::io("moving into", dest.join(&name), e)),
        }
    }
    apply_root_metadata(source, dest)?;
    Ok(moved)
}

/// The restored home folder takes the backed-up one's owner and mode, as when it is created.
fn apply_root_metadata(source: &Path, dest: &Path) -> Result<(), StrategyError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(source).map_err(|e| StrategyError::io("reading", source, e))?;
    if is_root() {
        std::os::unix::fs::chown(dest, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| StrategyError::io("setting the owner of", dest, e))?;
    }
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| StrategyError::io("setting the mode of", dest, e))
}

fn count_tree(root: &Path, counters: &Counters) {
    for entry in walkdir::WalkDir::new(root).into_iter().filter_map(Result::ok) {
        if !entry.file_type().is_dir() {
            counters.files.fetch_add(1, Ordering::Relaxed);
            if let Ok(meta) = entry.metadata() {
                counters.bytes.fetch_add(meta.len(), Ordering::Relaxed);
            }
        }
    }
}

fn is_cross_device(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::CrossesDevices || e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error())
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn thread_pool(threads: usize, near: &Path) -> Result<rayon::ThreadPool, StrategyError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("bbdiy-copy-{i}"))
        .build()
        .map_err(|e| StrategyError::io("starting copy threads for", near, std::io::Error::other(e)))
}

/// Flush the filesystem holding `path` (one call instead of an fsync per file).
fn sync_filesystem(path: &Path) -> Result<(), StrategyError> {
    let dir = std::fs::File::open(path).map_err(|e| StrategyError::io("opening", path, e))?;
    rustix::fs::syncfs(&dir).map_err(|e| StrategyError::io("flushing", path, e.into()))
}

pub(crate) fn check_sources(jobs: &[CopyJob]) -> Result<(), StrategyError> {
    for job in jobs {
        let meta = std::fs::metadata(&job.source).map_err(|e| StrategyError::io("reading", &job.source, e))?;
        if !meta.is_dir() {
            return Err(StrategyError::io("reading", &job.source, std::io::Error::other("not a folder")));
        }
        std::fs::read_dir(&job.source).map_err(|e| StrategyError::io("listing", &job.source, e))?;
    }
    Ok(())
}

fn report_from(counters: &Counters, started: Instant) -> StepReport {
    StepReport {
        bytes: counters.bytes.load(Ordering::Relaxed),
        files: counters.files.load(Ordering::Relaxed),
        unchanged: counters.unchanged.load(Ordering::Relaxed),
        removed: counters.removed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        notes: Default::default(),
    }
}

fn join_error(e: tokio::task::JoinError) -> StrategyError {
    StrategyError::Custom { strategy: "native".to_owned(), message: format!("copy task failed: {e}") }
}

/// Await the blocking copy, emitting byte progress every quarter second meanwhile.
async fn report_progress_until_done(
    ctx: &StepContext,
    phase: Phase,
    counters: &Counters,
    mut task: tokio::task::JoinHandle<Result<(), StrategyError>>,
) -> Result<(), StrategyError> {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    let result = loop {
        tokio::select! {
            joined = &mut task => break joined.map_err(join_error)?,
            _ = tick.tick() => ctx.progress(phase, counters.bytes.load(Ordering::Relaxed), None, Unit::Bytes),
        }
    };
    ctx.progress(phase, counters.bytes.load(Ordering::Relaxed), None, Unit::Bytes);
    result
}
