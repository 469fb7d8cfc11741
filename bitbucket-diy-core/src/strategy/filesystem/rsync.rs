//! `rsync`: the same job through rsync, with the reference scripts' flags made right.
//!
//! Each pass runs `rsync -a --delete --delete-excluded --stats <excludes> SRC/ DEST/` for the
//! home and each data store (the trailing slashes copy the folder's *content* into the
//! destination, and make the destination take the source's attributes). The pass before the
//! lock copies almost everything; the locked pass only the change. Restore runs `rsync -a` into
//! the new, empty target.
//!
//! # The same-size, same-second gap
//!
//! rsync's quick check skips a file whose size and modification time (to the second on most
//! setups) match the copy. A file rewritten at the same size within the same second as the
//! previous pass copied it is therefore left stale, and git's loose refs are exactly such files:
//! 41 bytes, rewritten on every push. This is why `native`, which has no such gap, is the
//! default.
//!
//! `--checksum` on the locked pass would close the gap by reading every file of the home on
//! both sides while Bitbucket is locked: minutes to hours on a large home, and rsync cannot limit
//! it to small files. We close it instead with what `native` uses (see
//! [`crate::strategy::filesystem::pass_state`]): after the main rsync, a quick stat walk lists
//! the files rsync may have skipped wrongly (same size and mtime as the copy, but written since
//! shortly before the previous completed pass began) and a second
//! `rsync -a --ignore-times --files-from=…` copies just those. That costs a stat of each file
//! and a copy of the few files written during the previous pass. When no previous pass is
//! recorded for a copy that already holds files, the main pass uses `--checksum` once.
//!
//! Missing rsync is reported as [`StrategyError::ToolMissing`] with the package to install.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;

use crate::client::Drained;
use crate::config::{ConfigError, FilesystemConfig, InstanceType};
use crate::events::{Phase, Unit};
use crate::strategy::filesystem::alternates::relink_fork_alternates;
use crate::strategy::filesystem::native::check_sources;
use crate::strategy::filesystem::pass_state::{PassLog, write_atomically};
use crate::strategy::filesystem::target::{all_targets, data_store_plan, ensure_empty_target, mapped_targets};
use crate::strategy::filesystem::{CopyJob, Excludes, copy_jobs, validate_copy_config};
use crate::strategy::{
    ChildCommand, FilesystemCapabilities, FilesystemStrategy, HomeTarget, RestoreContext, StepContext, StepReport,
    StrategyError,
};

const INSTALL_HINT: &str = "install it with `apt-get install rsync` (Debian, Ubuntu) or `dnf install rsync` (RHEL)";

/// The `rsync` filesystem strategy.
#[derive(Debug, Clone)]
pub struct RsyncCopy {
    jobs: Vec<CopyJob>,
    options: Vec<String>,
    program: PathBuf,
}

impl RsyncCopy {
    /// Build from `[filesystem]` (`rsync_options` are added to every rsync call).
    /// `separate_database` is true when a database strategy other than `none` dumps the
    /// database, so the internal database files in the home are left out.
    pub fn from_config(
        cfg: &FilesystemConfig,
        separate_database: bool,
        instance: InstanceType,
    ) -> Result<Self, ConfigError> {
        validate_copy_config(cfg, instance)?;
        for option in &cfg.rsync_options {
            if !option.starts_with('-') {
                return Err(ConfigError::invalid(
                    "filesystem.rsync_options",
                    format!("`{option}` is not an option; paths are chosen by bitbucket-diy"),
                ));
            }
        }
        Ok(Self {
            jobs: copy_jobs(cfg, separate_database, instance),
            options: cfg.rsync_options.clone(),
            program: PathBuf::from("rsync"),
        })
    }

    /// Use this rsync binary instead of the one on `PATH`.
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    fn rsync(&self) -> ChildCommand {
        ChildCommand::new(&self.program).install_hint(INSTALL_HINT)
    }

    async fn copy_pass(&self, ctx: &StepContext, phase: Phase) -> Result<StepReport, StrategyError> {
        let started = Instant::now();
        let passes = PassLog::new(&ctx.working().state_dir());
        let mut report = StepReport::default();
        let mut caught_up = 0u64;
        for job in &self.jobs {
            let dest = job.destination(ctx.working());
            std::fs::create_dir_all(&dest).map_err(|e| StrategyError::io("creating", &dest, e))?;
            let pass_started = SystemTime::now();
            let trusted_before = passes.trusted_before(&dest);
            let holds_files = std::fs::read_dir(&dest).map(|mut d| d.next().is_some()).unwrap_or(false);
            let mut cmd = self
                .rsync()
                .args(["-a", "--delete", "--delete-excluded", "--stats"])
                .args(job.excludes.rsync_args())
                .args(&self.options);
            if trusted_before.is_none() && holds_files {
                cmd = cmd.arg("--checksum");
            }
            let out = cmd.arg(with_slash(&job.source)).arg(with_slash(&dest)).run(ctx.cancellation()).await?;
            add_stats(&mut report, &out.stdout_text());
            if let Some(trusted) = trusted_before {
                caught_up += self.catch_up(ctx, job, &dest, trusted).await?;
            }
            passes.record_completed(&dest, pass_started, "rsync")?;
            ctx.progress(phase, report.bytes, None, Unit::Bytes);
        }
        report.files += caught_up;
        report.elapsed = started.elapsed();
        Ok(report
            .note("rsync", "-a --delete --delete-excluded")
            .note("recopied_same_size_same_second", caught_up.to_string()))
    }

    /// Copy again the files the quick check may have skipped wrongly. Returns how many.
    async fn catch_up(
        &self,
        ctx: &StepContext,
        job: &CopyJob,
        dest: &Path,
        trusted_before: SystemTime,
    ) -> Result<u64, StrategyError> {
        let (source, excludes, dest_owned) = (job.source.clone(), job.excludes.clone(), dest.to_owned());
        let suspects = tokio::task::spawn_blocking(move || suspects(&source, &dest_owned, &excludes, trusted_before))
            .await
            .map_err(|e| StrategyError::Custom { strategy: "rsync".to_owned(), message: e.to_string() })??;
        if suspects.is_empty() {
            return Ok(0);
        }
        let list = ctx.working().state_dir().join("rsync-recopy.list");
        let mut bytes = Vec::new();
        for path in &suspects {
            bytes.extend_from_slice(path.as_os_str().as_bytes());
            bytes.push(0);
        }
        write_atomically(&list, &bytes)?;
        let result = self
            .rsync()
            .args(["-a", "--ignore-times", "--from0"])
            .arg(format!("--files-from={}", list.display()))
            .args(&self.options)
            .arg(with_slash(&job.source))
            .arg(with_slash(dest))
            .run(ctx.cancellation())
            .await;
        let _ = std::fs::remove_file(&list);
        result?;
        Ok(suspects.len() as u64)
    }
}

/// Regular files (relative to `source`) whose copy matches on size and mtime but which were
/// written since `trusted_before`.
fn suspects(
    source: &Path,
    dest: &Path,
    excludes: &Excludes,
    trusted_before: SystemTime,
) -> Result<Vec<PathBuf>, StrategyError> {
    let trusted_secs = trusted_before.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let mut found = Vec::new();
    let mut walk = walkdir::WalkDir::new(source).follow_links(false).min_depth(1).into_iter();
    while let Some(entry) = walk.next() {
        let entry = match entry {
            Ok(entry) => entry,
            // Vanished while we walk: nothing to recopy.
            Err(e) if e.io_error().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) => {
                continue;
            }
            Err(e) => {
                return Err(StrategyError::io("reading", source, std::io::Error::other(e)));
            }
        };
        let Ok(relative) = entry.path().strip_prefix(source) else {
            continue;
        };
        let is_dir = entry.file_type().is_dir();
        if excludes.excludes_entry(relative, is_dir) {
            if is_dir {
                walk.skip_current_dir();
            }
            continue;
        }
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.mtime().max(meta.ctime()) < trusted_secs {
            continue;
        }
        let copy = dest.join(relative);
        let quick_check_passes = std::fs::symlink_metadata(&copy)
            .is_ok_and(|c| c.is_file() && c.len() == meta.len() && c.mtime() == meta.mtime());
        if quick_check_passes {
            found.push(relative.to_owned());
        }
    }
    Ok(found)
}

/// `path/`: rsync copies the folder's content, not the folder into itself.
fn with_slash(path: &Path) -> String {
    let text = path.to_string_lossy();
    if text.ends_with('/') { text.into_owned() } else { format!("{text}/") }
}

/// Fold rsync's `--stats` into the report (thousands separators vary by locale and version).
fn add_stats(report: &mut StepReport, stats: &str) {
    let number = |line: &str| -> u64 {
        let value = line.split_once(':').map_or("", |(_, v)| v);
        let digits: String =
            value.trim().chars().take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.').collect();
        digits.chars().filter(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0)
    };
    let regular = |line: &str| -> u64 {
        line.split_once("reg:")
            .map(|(_, rest)| {
                rest.trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == ',')
                    .filter(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|d| d.parse().ok())
            .unwrap_or(0)
    };
    let mut total_regular = 0;
    let mut transferred = 0;
    for line in stats.lines() {
        let line = line.trim();
        if line.starts_with("Number of regular files transferred:") {
            transferred = number(line);
        } else if line.starts_with("Total transferred file size:") {
            report.bytes += number(line);
        } else if line.starts_with("Number of deleted files:") {
            report.removed += number(line);
        } else if line.starts_with("Number of files:") {
            total_regular = regular(line);
        }
    }
    report.files += transferred;
    report.unchanged += total_regular.saturating_sub(transferred);
}

#[async_trait]
impl FilesystemStrategy for RsyncCopy {
    fn name(&self) -> &str {
        "rsync"
    }

    fn capabilities(&self) -> FilesystemCapabilities {
        FilesystemCapabilities::new(true, false)
    }

    async fn check(&self) -> Result<(), StrategyError> {
        self.rsync().arg("--version").run(&tokio_util::sync::CancellationToken::new()).await?;
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
        let started = Instant::now();
        for t in all_targets(ctx, target) {
            ensure_empty_target(&t)?;
        }
        let stores = data_store_plan(ctx, target);
        let mut plan = vec![(ctx.source().home_dir(), target.home.clone())];
        plan.extend(stores.iter().map(|(_, source, restored)| (source.clone(), restored.clone())));
        let mut report = StepReport::default();
        for (source, dest) in &plan {
            if !source.is_dir() {
                return Err(StrategyError::Incompatible {
                    strategy: "rsync".to_owned(),
                    reason: format!("the backup holds no {} folder", source.display()),
                });
            }
            std::fs::create_dir_all(dest).map_err(|e| StrategyError::io("creating", dest, e))?;
            let out = self
                .rsync()
                .args(["-a", "--stats"])
                .args(&self.options)
                .arg(with_slash(source))
                .arg(with_slash(dest))
                .run(ctx.cancellation())
                .await?;
            add_stats(&mut report, &out.stdout_text());
        }
        let home = target.home.clone();
        let pairs: Vec<(PathBuf, PathBuf)> = stores.into_iter().map(|(o, _, r)| (o, r)).collect();
        let relinked = tokio::task::spawn_blocking(move || relink_fork_alternates(&home, &pairs))
            .await
            .map_err(|e| StrategyError::Custom { strategy: "rsync".to_owned(), message: e.to_string() })?
            .map_err(|e| StrategyError::io("relinking fork alternates in", &target.home, e))?;
        report.elapsed = started.elapsed();
        Ok(report.note("alternates_relinked", relinked.len().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_read() {
        let stats = "\nNumber of files: 1,234 (reg: 1,000, dir: 234)\nNumber of created files: 3\n\
                     Number of deleted files: 2 (reg: 2)\nNumber of regular files transferred: 10\n\
                     Total file size: 99,999 bytes\nTotal transferred file size: 12,345 bytes\n";
        let mut report = StepReport::default();
        add_stats(&mut report, stats);
        assert_eq!((report.files, report.unchanged, report.removed, report.bytes), (10, 990, 2, 12_345));
    }

    #[test]
    fn trailing_slashes() {
        assert_eq!(with_slash(Path::new("/a/b")), "/a/b/");
        assert_eq!(with_slash(Path::new("/a/b/")), "/a/b/");
    }
}
