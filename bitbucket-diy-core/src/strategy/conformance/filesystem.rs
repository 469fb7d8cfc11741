//! Conformance checks for filesystem strategies that copy the home into the working folder
//! (`native`, `rsync`, or a third-party one).
//!
//! Each check takes a strategy configured with `home` as its home (a sample home from
//! [`crate::sample_home::generate`], which the check changes) and a `scratch` folder of its
//! own, and returns `Err(description)` when the strategy misbehaves. [`run_all`] builds a fresh
//! sample home per check.
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! use bitbucket_diy_core::config::{FilesystemConfig, InstanceType};
//! use bitbucket_diy_core::strategy::FilesystemStrategy;
//! use bitbucket_diy_core::strategy::conformance::filesystem::run_all;
//! use bitbucket_diy_core::strategy::filesystem::NativeCopy;
//!
//! let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
//! run_all(
//!     &|home: &std::path::Path| {
//!         let cfg: FilesystemConfig = toml::from_str(&format!("home = {:?}", home)).unwrap();
//!         Box::new(NativeCopy::from_config(&cfg, true, InstanceType::Bitbucket).unwrap()) as Box<dyn FilesystemStrategy>
//!     },
//!     scratch.path(),
//! )
//! .await
//! # }
//! ```

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::archive_format::{BackupMetadata, FORMAT_VERSION, StrategyRecord};
use crate::backup_id::BackupId;
use crate::client::Drained;
use crate::config::InstanceType;
use crate::events::NoEvents;
use crate::sample_home::{SampleHome, SampleHomeSpec, commit_to_repo, compare_trees, fsck_all, generate};
use crate::strategy::conformance::TestResult;
use crate::strategy::filesystem::Excludes;
use crate::strategy::{FilesystemStrategy, HomeTarget, RestoreContext, StepContext, StrategyError, WorkingFolder};

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn backup_id() -> Result<BackupId, String> {
    "conformance-test".parse().map_err(err("backup id"))
}

fn step_context(scratch: &Path) -> Result<StepContext, String> {
    Ok(StepContext::new(backup_id()?, working(scratch), Arc::new(NoEvents), CancellationToken::new()))
}

fn working(scratch: &Path) -> WorkingFolder {
    WorkingFolder::new(scratch.join("work"))
}

fn restore_context(scratch: &Path, fs: &dyn FilesystemStrategy) -> Result<RestoreContext, String> {
    let metadata = BackupMetadata {
        format_version: FORMAT_VERSION,
        id: backup_id()?,
        created_at: jiff::Timestamp::now(),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        bitbucket_version: None,
        instance_url: None,
        zero_downtime: false,
        lock_window: None,
        database: StrategyRecord::default(),
        filesystem: StrategyRecord { name: fs.name().to_owned(), notes: Default::default() },
        data_stores: Vec::new(),
    };
    Ok(RestoreContext::new(working(scratch), metadata, Arc::new(NoEvents), CancellationToken::new()))
}

/// Paths any home copy leaves out (the internal database too: whether it is copied depends on
/// the database strategy, which these checks do not know).
fn left_out() -> Excludes {
    Excludes::for_home(InstanceType::Bitbucket, true, &[], &[])
}

fn excluded(relative: &Path) -> bool {
    // Ask with is_dir = true and false: the trees compared hold the same entry types.
    let ex = left_out();
    ex.is_excluded(relative, true) || ex.is_excluded(relative, false)
}

async fn prepare_and_backup(fs: &dyn FilesystemStrategy, ctx: &StepContext) -> TestResult {
    fs.prepare(ctx).await.map_err(err("prepare"))?;
    fs.backup(ctx, &Drained::for_testing()).await.map_err(err("backup")).map(|_| ())
}

/// Prepare, change the home (a new commit, a new, a changed and a deleted file, an empty
/// folder), back up, restore into a new folder: the working copy and the restored home must
/// equal the home (excluded paths aside), every restored repository must pass `git fsck`, and
/// no restored fork may borrow objects from the original home.
pub async fn roundtrip(fs: &dyn FilesystemStrategy, home: &Path, scratch: &Path) -> TestResult {
    let ctx = step_context(scratch)?;
    fs.prepare(&ctx).await.map_err(err("prepare"))?;

    let repos = SampleHome::repositories_dir(home);
    let first = first_repository(home)?;
    commit_to_repo(&first, "written between prepare and backup").map_err(err("committing"))?;
    let attachments = home.join("shared/data/attachments");
    std::fs::create_dir_all(attachments.join("new-empty-folder")).map_err(err("creating a folder"))?;
    std::fs::write(attachments.join("new-after-prepare.txt"), b"new").map_err(err("writing"))?;
    append(&home.join("shared/bitbucket.properties"), b"feature.changed=true\n")?;
    let deleted = any_file_below(&attachments)?;
    std::fs::remove_file(&deleted).map_err(err("deleting"))?;

    fs.backup(&ctx, &Drained::for_testing()).await.map_err(err("backup"))?;
    compare_trees(home, &ctx.working().home_dir(), excluded)
        .map_err(|e| format!("working copy differs from the home:\n{e}"))?;

    let target = scratch.join("restored").join("home");
    let restore = restore_context(scratch, fs)?;
    fs.check_restore_target(&HomeTarget::new(&target)).await.map_err(err("check_restore_target on a new folder"))?;
    fs.restore(&restore, &HomeTarget::new(&target)).await.map_err(err("restore"))?;
    // Fork alternates are rewritten to point into the restored home: checked below.
    let excluded_or_alternates = |p: &Path| excluded(p) || p.ends_with("objects/info/alternates");
    compare_trees(home, &target, excluded_or_alternates)
        .map_err(|e| format!("restored home differs from the home:\n{e}"))?;

    let checked = fsck_all(&target).map_err(|e| format!("git fsck of the restored home: {e}"))?;
    let expected = std::fs::read_dir(&repos).map_err(err("listing repositories"))?.count();
    if checked != expected {
        return Err(format!("git fsck checked {checked} restored repositories, the home has {expected}"));
    }
    for repo in crate::strategy::filesystem::git_locks::find_bare_repositories(&target).map_err(err("listing"))? {
        let alternates = repo.join("objects/info/alternates");
        if let Ok(text) = std::fs::read_to_string(&alternates) {
            if text.lines().any(|l| Path::new(l.trim()).starts_with(home)) {
                return Err(format!("{} still borrows objects from the original home: {text}", alternates.display()));
            }
            if let Some(missing) = text.lines().find(|l| !repo.join("objects").join(l.trim()).is_dir()) {
                return Err(format!("{} names {missing}, which is not a folder", alternates.display()));
            }
        }
    }
    Ok(())
}

/// Files and whole repositories deleted after the previous pass disappear from the copy.
pub async fn deletions_propagate(fs: &dyn FilesystemStrategy, home: &Path, scratch: &Path) -> TestResult {
    let ctx = step_context(scratch)?;
    fs.prepare(&ctx).await.map_err(err("prepare"))?;
    let repo = first_repository(home)?;
    let relative_repo = repo.strip_prefix(home).map_err(err("path"))?.to_owned();
    std::fs::remove_dir_all(&repo).map_err(err("deleting a repository"))?;
    let plugin = any_file_below(&home.join("shared/plugins/installed-plugins"))?;
    let relative_plugin = plugin.strip_prefix(home).map_err(err("path"))?.to_owned();
    std::fs::remove_file(&plugin).map_err(err("deleting a plugin"))?;
    fs.backup(&ctx, &Drained::for_testing()).await.map_err(err("backup"))?;
    let copy = ctx.working().home_dir();
    for gone in [&relative_repo, &relative_plugin] {
        if copy.join(gone).symlink_metadata().is_ok() {
            return Err(format!("{} was deleted from the home but is still in the copy", gone.display()));
        }
    }
    compare_trees(home, &copy, excluded).map_err(|e| format!("copy differs after deletions:\n{e}"))
}

/// Symlinks are copied and restored as symlinks, never followed (a link to a folder outside
/// the home must not pull that folder in).
pub async fn symlinks_not_followed(fs: &dyn FilesystemStrategy, home: &Path, scratch: &Path) -> TestResult {
    let outside = scratch.join("outside");
    std::fs::create_dir_all(&outside).map_err(err("creating"))?;
    std::fs::write(outside.join("secret.txt"), b"outside the home").map_err(err("writing"))?;
    let links = [
        ("shared/data/link-to-folder", outside.clone()),
        ("shared/data/link-to-file", outside.join("secret.txt")),
        ("shared/data/dangling-link", scratch.join("does-not-exist")),
        ("shared/data/relative-link", PathBuf::from("../bitbucket.properties")),
    ];
    for (link, target) in &links {
        std::os::unix::fs::symlink(target, home.join(link)).map_err(err("creating a symlink"))?;
    }
    let ctx = step_context(scratch)?;
    prepare_and_backup(fs, &ctx).await?;
    let target = scratch.join("restored-home");
    fs.restore(&restore_context(scratch, fs)?, &HomeTarget::new(&target)).await.map_err(err("restore"))?;
    for root in [ctx.working().home_dir(), target] {
        for (link, expected) in &links {
            let path = root.join(link);
            let meta = path.symlink_metadata().map_err(|e| format!("{}: {e}", path.display()))?;
            if !meta.file_type().is_symlink() {
                return Err(format!("{} is not a symlink: it was followed", path.display()));
            }
            let found = std::fs::read_link(&path).map_err(err("reading the link"))?;
            if &found != expected {
                return Err(format!(
                    "{} points to {}, expected {}",
                    path.display(),
                    found.display(),
                    expected.display()
                ));
            }
        }
    }
    Ok(())
}

/// A loose ref rewritten at the same size with its old mtime put back (what two pushes within
/// one second look like to rsync's quick check) is copied again by the consistent pass.
pub async fn same_size_same_second_rewrite_is_copied(
    fs: &dyn FilesystemStrategy,
    home: &Path,
    scratch: &Path,
) -> TestResult {
    let repo = first_repository(home)?;
    let ref_file = repo.join("refs/heads/same-second");
    let main = crate::sample_home::commit_to_repo(&repo, "first value of the ref").map_err(err("committing"))?;
    std::fs::write(&ref_file, format!("{main}\n")).map_err(err("writing the ref"))?;
    let ctx = step_context(scratch)?;
    fs.prepare(&ctx).await.map_err(err("prepare"))?;

    let meta = std::fs::metadata(&ref_file).map_err(err("stat"))?;
    let newer = crate::sample_home::commit_to_repo(&repo, "second value of the ref").map_err(err("committing"))?;
    let second = newer;
    std::fs::write(&ref_file, format!("{second}\n")).map_err(err("rewriting the ref"))?;
    filetime::set_file_mtime(&ref_file, filetime::FileTime::from_last_modification_time(&meta))
        .map_err(err("restoring the mtime"))?;
    let after = std::fs::metadata(&ref_file).map_err(err("stat"))?;
    if (after.len(), after.mtime(), after.mtime_nsec()) != (meta.len(), meta.mtime(), meta.mtime_nsec()) {
        return Err("could not reproduce the same size and mtime".to_owned());
    }

    fs.backup(&ctx, &Drained::for_testing()).await.map_err(err("backup"))?;
    let relative = ref_file.strip_prefix(home).map_err(err("path"))?;
    let copied = std::fs::read_to_string(ctx.working().home_dir().join(relative)).map_err(err("reading the copy"))?;
    if copied.trim() != second {
        return Err(format!("stale copy of {}: holds {}, the home holds {second}", relative.display(), copied.trim()));
    }
    Ok(())
}

/// Caches, logs, temporary files, plugin caches, exports, lock files and search data stay out
/// of the copy; app jars and the search state are kept.
pub async fn excluded_paths_left_out(fs: &dyn FilesystemStrategy, home: &Path, scratch: &Path) -> TestResult {
    let ctx = step_context(scratch)?;
    prepare_and_backup(fs, &ctx).await?;
    let copy = ctx.working().home_dir();
    let must_be_absent = [
        "caches",
        "log",
        "tmp",
        ".lock",
        "plugins/.osgi-cache",
        "export",
        "shared/export",
        "shared/search/data",
        "shared/.lock",
    ];
    for path in must_be_absent {
        if home.join(path).symlink_metadata().is_ok() && copy.join(path).symlink_metadata().is_ok() {
            return Err(format!("{path} is excluded but was copied"));
        }
    }
    for path in ["shared/plugins/installed-plugins", "shared/search/state.json", "shared/bitbucket.properties"] {
        if home.join(path).exists() && !copy.join(path).exists() {
            return Err(format!("{path} must be copied but is missing"));
        }
    }
    Ok(())
}

/// A restore target holding only a dotfile, or a file, is refused before anything is written;
/// a new or empty folder is accepted.
pub async fn refuses_non_empty_target(fs: &dyn FilesystemStrategy, home: &Path, scratch: &Path) -> TestResult {
    let ctx = step_context(scratch)?;
    prepare_and_backup(fs, &ctx).await?;
    let _ = home;
    let dotfile_only = scratch.join("dotfile-only");
    std::fs::create_dir_all(&dotfile_only).map_err(err("creating"))?;
    std::fs::write(dotfile_only.join(".bashrc"), b"# mine").map_err(err("writing"))?;
    let a_file = scratch.join("a-file");
    std::fs::write(&a_file, b"not a folder").map_err(err("writing"))?;
    let empty = scratch.join("empty");
    std::fs::create_dir_all(&empty).map_err(err("creating"))?;

    for bad in [&dotfile_only, &a_file] {
        match fs.check_restore_target(&HomeTarget::new(bad)).await {
            Err(StrategyError::TargetNotEmpty { .. }) => {}
            other => {
                return Err(format!(
                    "check_restore_target({}) returned {other:?}, expected TargetNotEmpty",
                    bad.display()
                ));
            }
        }
        match fs.restore(&restore_context(scratch, fs)?, &HomeTarget::new(bad)).await {
            Err(StrategyError::TargetNotEmpty { .. }) => {}
            other => {
                return Err(format!("restore into {} returned {other:?}, expected TargetNotEmpty", bad.display()));
            }
        }
    }
    let left: Vec<_> = std::fs::read_dir(&dotfile_only)
        .map_err(err("listing"))?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    if left.len() != 1 {
        return Err(format!("the refused target was written to: it now holds {left:?}"));
    }
    if std::fs::read(&a_file).map_err(err("reading"))? != b"not a folder" {
        return Err("the refused file target was changed".to_owned());
    }
    fs.check_restore_target(&HomeTarget::new(&empty)).await.map_err(err("an empty folder was refused"))?;
    fs.check_restore_target(&HomeTarget::new(scratch.join("new"))).await.map_err(err("a new folder was refused"))?;
    Ok(())
}

type Check = for<'a> fn(
    &'a dyn FilesystemStrategy,
    &'a Path,
    &'a Path,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = TestResult> + Send + 'a>>;

/// Every check above, each on a fresh [`SampleHomeSpec::tiny`] home below `scratch`, with the
/// strategy `make` builds for that home. Returns every failure.
pub async fn run_all(make: &(dyn Fn(&Path) -> Box<dyn FilesystemStrategy> + Sync), scratch: &Path) -> TestResult {
    let checks: [(&str, Check); 6] = [
        ("roundtrip", |f, h, s| Box::pin(roundtrip(f, h, s))),
        ("deletions_propagate", |f, h, s| Box::pin(deletions_propagate(f, h, s))),
        ("symlinks_not_followed", |f, h, s| Box::pin(symlinks_not_followed(f, h, s))),
        ("same_size_same_second_rewrite_is_copied", |f, h, s| {
            Box::pin(same_size_same_second_rewrite_is_copied(f, h, s))
        }),
        ("excluded_paths_left_out", |f, h, s| Box::pin(excluded_paths_left_out(f, h, s))),
        ("refuses_non_empty_target", |f, h, s| Box::pin(refuses_non_empty_target(f, h, s))),
    ];
    let mut failures = Vec::new();
    for (name, check) in checks {
        let dir = scratch.join(name);
        let home = dir.join("home");
        let generated = {
            let home = home.clone();
            tokio::task::spawn_blocking(move || generate(&home, &SampleHomeSpec::tiny())).await
        };
        match generated {
            Ok(Ok(sample)) => {
                let fs = make(&sample.root);
                if let Err(e) = check(fs.as_ref(), &sample.root, &dir).await {
                    failures.push(format!("{name}: {e}"));
                }
            }
            Ok(Err(e)) => failures.push(format!("{name}: generating the sample home: {e}")),
            Err(e) => failures.push(format!("{name}: generating the sample home: {e}")),
        }
    }
    if failures.is_empty() { Ok(()) } else { Err(failures.join("\n\n")) }
}

fn first_repository(home: &Path) -> Result<PathBuf, String> {
    let repo = SampleHome::repositories_dir(home).join("1");
    if repo.join("HEAD").is_file() {
        Ok(repo)
    } else {
        Err(format!("{} is not a sample home (no repository 1)", home.display()))
    }
}

fn any_file_below(dir: &Path) -> Result<PathBuf, String> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .ok_or_else(|| format!("no file below {}", dir.display()))
}

fn append(path: &Path, bytes: &[u8]) -> TestResult {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).map_err(err("opening"))?;
    file.write_all(bytes).map_err(err("appending"))
}
