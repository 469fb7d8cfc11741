//! The filesystem strategies against real trees, real git repositories and real rsync.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] functions too

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bitbucket_diy_core::Event;
use bitbucket_diy_core::client::Drained;
use bitbucket_diy_core::config::{ConfigError, FilesystemType, InstanceType};
use bitbucket_diy_core::events::{Phase, Unit};
use bitbucket_diy_core::sample_home::{SampleHome, SampleHomeSpec, commit_to_repo, compare_trees, fsck_all, generate};
use bitbucket_diy_core::strategy::conformance::filesystem as conformance;
use bitbucket_diy_core::strategy::filesystem::{
    CommandFilesystem, Excludes, NativeCopy, RsyncCopy, relink_fork_alternates, remove_stale_git_locks,
};
use bitbucket_diy_core::strategy::{FilesystemStrategy, HomeTarget, StrategyError};
use common::*;

fn native(home: &Path, separate_database: bool) -> NativeCopy {
    NativeCopy::from_config(&fs_config(FilesystemType::Native, home), separate_database, InstanceType::Bitbucket)
        .unwrap()
}

fn rsync(home: &Path, separate_database: bool) -> RsyncCopy {
    RsyncCopy::from_config(&fs_config(FilesystemType::Rsync, home), separate_database, InstanceType::Bitbucket).unwrap()
}

/// Rewritten by every restore to point into the restored home.
fn is_alternates(relative: &Path) -> bool {
    relative.ends_with("objects/info/alternates")
}

fn tiny(dir: &Path) -> SampleHome {
    generate(&dir.join("home"), &SampleHomeSpec::tiny()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Conformance

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_passes_the_conformance_suite() {
    let scratch = tempfile::tempdir().unwrap();
    conformance::run_all(&|home: &Path| Box::new(native(home, true)) as Box<dyn FilesystemStrategy>, scratch.path())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsync_passes_the_conformance_suite() {
    let scratch = tempfile::tempdir().unwrap();
    conformance::run_all(&|home: &Path| Box::new(rsync(home, true)) as Box<dyn FilesystemStrategy>, scratch.path())
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The stale copy rsync's quick check leaves behind

/// Rewrite `file` with same-size content and put its old mtime back: two pushes within one
/// second, as rsync's quick check sees them.
fn rewrite_same_size_same_mtime(file: &Path, content: &[u8]) {
    let before = std::fs::metadata(file).unwrap();
    assert_eq!(before.len(), content.len() as u64);
    std::fs::write(file, content).unwrap();
    filetime::set_file_mtime(file, filetime::FileTime::from_last_modification_time(&before)).unwrap();
    let after = std::fs::metadata(file).unwrap();
    assert_eq!((after.len(), after.mtime(), after.mtime_nsec()), (before.len(), before.mtime(), before.mtime_nsec()));
}

#[tokio::test]
async fn plain_rsync_keeps_a_stale_ref_that_native_and_our_rsync_copy() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let old = "1111111111111111111111111111111111111111\n";
    let new = "2222222222222222222222222222222222222222\n";
    let reference = write(&home, "shared/data/repositories/1/refs/heads/main", old.as_bytes());

    // Plain `rsync -a --delete`, as the reference scripts run it, twice.
    let plain = dir.path().join("plain");
    let run_plain = || {
        let status = std::process::Command::new("rsync")
            .args(["-a", "--delete"])
            .arg(format!("{}/", home.display()))
            .arg(format!("{}/", plain.display()))
            .status()
            .unwrap();
        assert!(status.success());
    };
    run_plain();
    let (native_ctx, _) = step_ctx(&dir.path().join("work-native"));
    let (rsync_ctx, _) = step_ctx(&dir.path().join("work-rsync"));
    let native = native(&home, true);
    let ours = rsync(&home, true);
    native.prepare(&native_ctx).await.unwrap();
    ours.prepare(&rsync_ctx).await.unwrap();

    rewrite_same_size_same_mtime(&reference, new.as_bytes());

    run_plain();
    let relative = "shared/data/repositories/1/refs/heads/main";
    assert_eq!(std::fs::read_to_string(plain.join(relative)).unwrap(), old, "the scenario must reproduce rsync's miss");

    let report = native.backup(&native_ctx, &Drained::for_testing()).await.unwrap();
    assert_eq!(std::fs::read_to_string(native_ctx.working().home_dir().join(relative)).unwrap(), new);
    assert_eq!(report.files, 1, "{report:?}");

    let report = ours.backup(&rsync_ctx, &Drained::for_testing()).await.unwrap();
    assert_eq!(std::fs::read_to_string(rsync_ctx.working().home_dir().join(relative)).unwrap(), new);
    assert_eq!(report.notes["recopied_same_size_same_second"], "1", "{report:?}");
}

#[tokio::test]
async fn recently_written_files_are_compared_not_copied_again() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    for n in 0..20 {
        write(&home, &format!("shared/data/f{n}"), b"content");
    }
    // Old files: written long before any pass.
    for entry in std::fs::read_dir(home.join("shared/data")).unwrap() {
        let path = entry.unwrap().path();
        filetime::set_file_mtime(&path, filetime::FileTime::from_unix_time(1_600_000_000, 0)).unwrap();
    }
    let (ctx, _) = step_ctx(&dir.path().join("work"));
    let strategy = native(&home, true);
    strategy.prepare(&ctx).await.unwrap();
    // ctime of these files is "now": they are compared (equal) rather than trusted, until they
    // are clearly older than a completed pass's start.
    let report = strategy.backup(&ctx, &Drained::for_testing()).await.unwrap();
    assert_eq!((report.files, report.unchanged), (0, 20), "{report:?}");
}

// ---------------------------------------------------------------------------------------------
// Excludes

#[tokio::test]
async fn internal_database_is_kept_unless_a_separate_database_strategy_dumps_it() {
    let dir = tempfile::tempdir().unwrap();
    let sample = tiny(dir.path());
    let db = "shared/data/db.mv.db";
    assert!(sample.root.join(db).is_file());

    let (kept, _) = step_ctx(&dir.path().join("kept"));
    native(&sample.root, false).backup(&kept, &Drained::for_testing()).await.unwrap();
    assert!(kept.working().home_dir().join(db).is_file(), "database `none`: the internal database is the database");

    let (left, _) = step_ctx(&dir.path().join("left"));
    native(&sample.root, true).backup(&left, &Drained::for_testing()).await.unwrap();
    assert!(!left.working().home_dir().join(db).exists());
    assert!(left.working().home_dir().join("shared/data/attachments").is_dir());

    let (by_rsync, _) = step_ctx(&dir.path().join("rsync"));
    rsync(&sample.root, true).backup(&by_rsync, &Drained::for_testing()).await.unwrap();
    assert!(!by_rsync.working().home_dir().join(db).exists());
    let (by_rsync_kept, _) = step_ctx(&dir.path().join("rsync-kept"));
    rsync(&sample.root, false).backup(&by_rsync_kept, &Drained::for_testing()).await.unwrap();
    assert!(by_rsync_kept.working().home_dir().join(db).is_file());
}

#[tokio::test]
async fn repository_excludes_apply_to_the_home_and_data_stores() {
    let dir = tempfile::tempdir().unwrap();
    let sample = tiny(dir.path());
    let store = dir.path().join("store");
    write(&store, "repositories/00/02/2/HEAD", b"ref: refs/heads/main\n");
    write(&store, "repositories/00/05/5/HEAD", b"ref: refs/heads/main\n");
    for kind in [FilesystemType::Native, FilesystemType::Rsync] {
        let mut cfg = fs_config(kind, &sample.root);
        cfg.exclude_repos = vec![2];
        cfg.data_stores = vec![store.clone()];
        cfg.exclude = vec!["/shared/config/".to_owned()];
        let strategy: Box<dyn FilesystemStrategy> = match kind {
            FilesystemType::Native => Box::new(NativeCopy::from_config(&cfg, true, InstanceType::Bitbucket).unwrap()),
            _ => Box::new(RsyncCopy::from_config(&cfg, true, InstanceType::Bitbucket).unwrap()),
        };
        let (ctx, _) = step_ctx(&dir.path().join(format!("work-{kind:?}")));
        strategy.backup(&ctx, &Drained::for_testing()).await.unwrap();
        let home_copy = ctx.working().home_dir();
        assert!(!home_copy.join("shared/data/repositories/2").exists(), "{kind:?}");
        assert!(home_copy.join("shared/data/repositories/1/HEAD").is_file(), "{kind:?}");
        assert!(!home_copy.join("shared/config").exists(), "{kind:?}: user exclude");
        let store_copy = ctx.working().data_store_dir(&store);
        assert!(!store_copy.join("repositories/00/02/2").exists(), "{kind:?}");
        assert!(store_copy.join("repositories/00/05/5/HEAD").is_file(), "{kind:?}");
    }
}

#[test]
fn mesh_refuses_repository_excludes_and_bad_patterns_are_named() {
    let mut cfg = fs_config(FilesystemType::Native, Path::new("/var/mesh"));
    cfg.exclude_repos = vec![3];
    let err = NativeCopy::from_config(&cfg, false, InstanceType::Mesh).unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { ref key, .. } if key == "filesystem.exclude_repos"), "{err}");
    let mut cfg = fs_config(FilesystemType::Rsync, Path::new("/var/home"));
    cfg.exclude = vec!["[abc]".to_owned()];
    let err = RsyncCopy::from_config(&cfg, false, InstanceType::Bitbucket).unwrap_err().to_string();
    assert!(err.contains("filesystem.exclude") && err.contains("[abc]"), "{err}");
}

#[test]
fn is_excluded_agrees_with_rsync() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = [
        "caches/a",
        "shared/caches/b",
        "export/x",
        "log/l.log",
        "plugins/.osgi-cache/c",
        "plugins/installed/p.jar",
        "tmp",
        "shared/tmp/keep",
        ".lock",
        "shared/.lock",
        "shared/x/.lock",
        "search/data/i",
        "shared/search/data/j",
        "shared/search/state",
        "shared/export/e",
        "data/db.h2.db",
        "shared/data/db.mv.db",
        "shared/data/dbx",
        "shared/data/repositories/7/HEAD",
        "shared/data/repositories/70/HEAD",
        "shared/data/repositories/17/HEAD",
        "deep/er/file.tmp",
        "file.tmpx",
        "one/sub/foo",
        "sub/foo",
        "xsub/foo",
        "abc",
        "ab/c",
        "a/b/c/z",
        "a/z",
        "repositories/00/07/7/HEAD",
        "repositories/7/HEAD",
    ];
    for f in files {
        write(&src, f, b"x");
    }
    std::fs::create_dir_all(src.join("plugins/.empty-cache")).unwrap();
    std::fs::create_dir_all(src.join("caches-not")).unwrap();
    let extra: Vec<String> =
        ["*.tmp", "sub/foo", "/a*c", "a/**/z", "/repositories/*/*/7/"].iter().map(|s| s.to_string()).collect();
    let excludes = Excludes::for_home(InstanceType::Bitbucket, true, &extra, &[7]);

    let dst = dir.path().join("dst");
    let status = std::process::Command::new("rsync")
        .arg("-a")
        .args(excludes.rsync_args())
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dst.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let by_rsync: BTreeSet<PathBuf> = list_tree(&dst).into_iter().collect();
    let by_us: BTreeSet<PathBuf> =
        list_tree(&src).into_iter().filter(|rel| !excludes.is_excluded(rel, src.join(rel).is_dir())).collect();
    assert_eq!(by_us, by_rsync);
    assert!(
        !by_us.contains(Path::new("shared/data/repositories/7"))
            && by_us.contains(Path::new("shared/data/repositories/70"))
    );
}

// ---------------------------------------------------------------------------------------------
// What a copy keeps

#[tokio::test]
async fn permissions_mtimes_symlinks_and_empty_folders_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let script = write(&home, "shared/bin/run.sh", b"#!/bin/sh\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o750)).unwrap();
    let secret = write(&home, "shared/secret.key", b"k");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir_all(home.join("shared/empty/nested-empty")).unwrap();
    std::fs::set_permissions(home.join("shared/empty"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("../secret.key", home.join("shared/bin/key-link")).unwrap();
    let old = filetime::FileTime::from_unix_time(1_500_000_000, 123_456_789);
    filetime::set_file_mtime(&script, old).unwrap();
    filetime::set_symlink_file_times(home.join("shared/bin/key-link"), old, old).unwrap();
    filetime::set_file_mtime(home.join("shared/empty"), old).unwrap();

    let (ctx, _) = step_ctx(&dir.path().join("work"));
    native(&home, true).backup(&ctx, &Drained::for_testing()).await.unwrap();
    let copy = ctx.working().home_dir();
    compare_trees(&home, &copy, |_| false).unwrap();
    for path in ["shared/bin/run.sh", "shared/bin/key-link", "shared/empty"] {
        let (a, b) =
            (std::fs::symlink_metadata(home.join(path)).unwrap(), std::fs::symlink_metadata(copy.join(path)).unwrap());
        assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()), "{path}");
        assert_eq!((a.uid(), a.gid()), (b.uid(), b.gid()), "{path}");
    }
    assert!(std::fs::symlink_metadata(copy.join("shared/bin/key-link")).unwrap().file_type().is_symlink());
    assert!(copy.join("shared/empty/nested-empty").is_dir());
}

#[tokio::test]
async fn leftover_temporary_files_and_excluded_copies_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    write(&home, "shared/a.txt", b"a");
    let (ctx, _) = step_ctx(&dir.path().join("work"));
    let copy = ctx.working().home_dir();
    // What an interrupted pass and an older exclude list leave behind.
    write(&copy, "shared/.a.txt.bbdiy-0011223344.tmp", b"half");
    write(&copy, "caches/old-index", b"cache");
    let report = native(&home, true).backup(&ctx, &Drained::for_testing()).await.unwrap();
    assert_eq!(list_tree(&copy), vec![PathBuf::from("shared"), PathBuf::from("shared/a.txt")]);
    assert_eq!(report.removed, 2, "{report:?}");
}

#[tokio::test]
async fn progress_is_reported_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let sample = tiny(dir.path());
    let (ctx, events) = step_ctx(&dir.path().join("work"));
    let strategy = native(&sample.root, true);
    strategy.prepare(&ctx).await.unwrap();
    let report = strategy.backup(&ctx, &Drained::for_testing()).await.unwrap();
    let last = |phase: Phase| {
        events.events().iter().rev().find_map(|e| match e {
            Event::Progress { phase: p, done, unit: Unit::Bytes, .. } if *p == phase => Some(*done),
            _ => None,
        })
    };
    assert!(last(Phase::PrepareFilesystem).unwrap() > 0);
    assert_eq!(last(Phase::BackupFilesystem), Some(report.bytes));
}

#[tokio::test]
async fn cancellation_stops_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let sample = tiny(dir.path());
    let (ctx, _) = step_ctx(&dir.path().join("work"));
    ctx.cancellation().cancel();
    let err = native(&sample.root, true).backup(&ctx, &Drained::for_testing()).await.unwrap_err();
    assert!(matches!(err, StrategyError::Cancelled), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Failures name the path

/// Root ignores permission bits, so a chmod cannot make a copy fail here. The immutable
/// attribute (`chattr +i`) stops root too: the copy's folder refuses the new file.
#[tokio::test]
async fn a_copy_that_cannot_be_written_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let file = write(&home, "shared/data/attachments/a.bin", b"first");
    let (ctx, _) = step_ctx(&dir.path().join("work"));
    let strategy = native(&home, true);
    strategy.prepare(&ctx).await.unwrap();
    std::fs::write(&file, b"second version").unwrap();
    let frozen = ctx.working().home_dir().join("shared/data/attachments");
    let _guard = Immutable::set(&frozen);
    let err = strategy.backup(&ctx, &Drained::for_testing()).await.unwrap_err();
    let StrategyError::Io { ref path, .. } = err else { panic!("expected Io, got {err:?}") };
    assert!(path.starts_with(&frozen), "{err}");
    assert!(err.to_string().contains("attachments"), "{err}");
    drop(_guard);
    // Nothing half-written under the real name.
    assert_eq!(std::fs::read(frozen.join("a.bin")).unwrap(), b"first");
}

#[tokio::test]
async fn a_working_folder_that_is_a_file_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    write(&home, "shared/x", b"x");
    let work = dir.path().join("work");
    std::fs::write(&work, b"a file").unwrap();
    let (ctx, _) = step_ctx(&work);
    let err = native(&home, true).backup(&ctx, &Drained::for_testing()).await.unwrap_err();
    assert!(matches!(err, StrategyError::Io { ref path, .. } if path.starts_with(&work)), "{err}");
}

#[tokio::test]
async fn a_missing_home_is_named_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-home");
    let err = native(&missing, true).check().await.unwrap_err();
    assert!(matches!(err, StrategyError::Io { ref path, .. } if *path == missing), "{err}");
}

#[tokio::test]
async fn missing_rsync_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let strategy = rsync(dir.path(), true).with_program("/nonexistent/bin/rsync");
    let err = strategy.check().await.unwrap_err();
    match err {
        StrategyError::ToolMissing { ref hint, .. } => {
            assert!(hint.contains("apt-get install rsync"), "{hint}")
        }
        other => panic!("expected ToolMissing, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Restore

#[tokio::test]
async fn restore_refuses_dotfile_only_and_file_targets_for_every_strategy() {
    let dir = tempfile::tempdir().unwrap();
    let dotfiles = dir.path().join("dotfiles");
    write(&dotfiles, ".profile", b"x");
    let file = write(dir.path(), "file-target", b"x");
    let mut cfg = fs_config(FilesystemType::Command, dir.path());
    cfg.backup_command = Some("true".to_owned());
    cfg.restore_command = Some("touch \"$BITBUCKET_DIY_TARGET_HOME/written\"".to_owned());
    let strategies: Vec<Box<dyn FilesystemStrategy>> = vec![
        Box::new(native(dir.path(), true)),
        Box::new(rsync(dir.path(), true)),
        Box::new(CommandFilesystem::from_config(&cfg, true, InstanceType::Bitbucket).unwrap()),
    ];
    for strategy in &strategies {
        for target in [&dotfiles, &file] {
            let err = strategy.check_restore_target(&HomeTarget::new(target)).await.unwrap_err();
            assert!(matches!(err, StrategyError::TargetNotEmpty { .. }), "{}: {err}", strategy.name());
            let ctx = restore_ctx(dir.path(), strategy.name(), Vec::new());
            let err = strategy.restore(&ctx, &HomeTarget::new(target)).await.unwrap_err();
            assert!(matches!(err, StrategyError::TargetNotEmpty { .. }), "{}: {err}", strategy.name());
        }
        assert_eq!(list_tree(&dotfiles), vec![PathBuf::from(".profile")], "{}", strategy.name());
    }
}

#[tokio::test]
async fn restore_moves_an_extracted_backup_and_the_fork_survives_losing_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let sample = tiny(dir.path());
    let fork = sample.fork().unwrap().clone();
    let (ctx, _) = step_ctx(&dir.path().join("work"));
    let strategy = native(&sample.root, true);
    strategy.prepare(&ctx).await.unwrap();
    commit_to_repo(&fork.path, "after prepare").unwrap();
    strategy.backup(&ctx, &Drained::for_testing()).await.unwrap();

    // What an archive extraction looks like: the working folder's content without our state.
    let extracted = dir.path().join("extracted");
    std::fs::create_dir_all(&extracted).unwrap();
    std::fs::rename(ctx.working().home_dir(), extracted.join("bitbucket-home")).unwrap();
    let expected = dir.path().join("expected");
    let copy = native(&extracted.join("bitbucket-home"), false);
    copy.backup(&step_ctx(&expected).0, &Drained::for_testing()).await.unwrap();

    let target = dir.path().join("restored").join("home");
    let report =
        strategy.restore(&restore_ctx(&extracted, "native", Vec::new()), &HomeTarget::new(&target)).await.unwrap();
    assert_eq!(report.notes["method"], "move", "{report:?}");
    assert_eq!(report.notes["alternates_relinked"], "1", "{report:?}");
    compare_trees(&expected.join("bitbucket-home"), &target, is_alternates).unwrap();

    // The original home goes away: the restored fork must not need it.
    std::fs::rename(&sample.root, dir.path().join("original-gone")).unwrap();
    let checked = fsck_all(&target).unwrap();
    assert_eq!(checked, sample.repositories.len());
    let alternates =
        std::fs::read_to_string(target.join(format!("shared/data/repositories/{}/objects/info/alternates", fork.id)))
            .unwrap();
    assert!(Path::new(alternates.trim()).starts_with(&target), "{alternates}");
}

#[tokio::test]
async fn restore_copies_from_a_working_folder_in_use_and_into_an_empty_mount_point() {
    let dir = tempfile::tempdir().unwrap();
    let sample = tiny(dir.path());
    let (ctx, _) = step_ctx(&dir.path().join("work"));
    let strategy = native(&sample.root, true);
    strategy.backup(&ctx, &Drained::for_testing()).await.unwrap();
    let target = dir.path().join("mount-point");
    std::fs::create_dir_all(&target).unwrap();
    let report = strategy
        .restore(&restore_ctx(ctx.working().root(), "native", Vec::new()), &HomeTarget::new(&target))
        .await
        .unwrap();
    assert_eq!(report.notes["method"], "copy");
    assert!(ctx.working().home_dir().join("shared/bitbucket.properties").is_file(), "the working copy must stay");
    compare_trees(&ctx.working().home_dir(), &target, is_alternates).unwrap();
}

#[tokio::test]
async fn data_stores_restore_to_their_mapping_or_their_original_path() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    write(&home, "shared/bitbucket.properties", b"x");
    let mapped_store = dir.path().join("store-a");
    let unmapped_store = dir.path().join("store-b");
    write(&mapped_store, "repositories/00/01/1/HEAD", b"a");
    write(&unmapped_store, "repositories/00/02/2/HEAD", b"b");
    for kind in [FilesystemType::Native, FilesystemType::Rsync] {
        let mut cfg = fs_config(kind, &home);
        cfg.data_stores = vec![mapped_store.clone(), unmapped_store.clone()];
        let strategy: Box<dyn FilesystemStrategy> = match kind {
            FilesystemType::Native => Box::new(NativeCopy::from_config(&cfg, true, InstanceType::Bitbucket).unwrap()),
            _ => Box::new(RsyncCopy::from_config(&cfg, true, InstanceType::Bitbucket).unwrap()),
        };
        let (ctx, _) = step_ctx(&dir.path().join(format!("work-{kind:?}")));
        strategy.backup(&ctx, &Drained::for_testing()).await.unwrap();
        let restore = restore_ctx(ctx.working().root(), strategy.name(), cfg.data_stores.clone());
        let mut target = HomeTarget::new(dir.path().join(format!("restored-{kind:?}")));
        let new_store = dir.path().join(format!("new-store-{kind:?}"));
        target.data_stores.insert(mapped_store.clone(), new_store.clone());

        // The unmapped store goes back to its original path, which is not empty: refused.
        let err = strategy.restore(&restore, &target).await.unwrap_err();
        assert!(matches!(err, StrategyError::TargetNotEmpty { ref target, .. } if target.contains("store-b")), "{err}");
        assert!(!target.home.exists() && !new_store.exists(), "nothing may be written before the checks pass");

        let moved_away = dir.path().join(format!("store-b-old-{kind:?}"));
        std::fs::rename(&unmapped_store, &moved_away).unwrap();
        strategy.restore(&restore, &target).await.unwrap();
        assert_eq!(std::fs::read(new_store.join("repositories/00/01/1/HEAD")).unwrap(), b"a");
        assert_eq!(std::fs::read(unmapped_store.join("repositories/00/02/2/HEAD")).unwrap(), b"b");
        assert!(target.home.join("shared/bitbucket.properties").is_file());
        std::fs::remove_dir_all(&unmapped_store).unwrap();
        std::fs::rename(&moved_away, &unmapped_store).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Git

#[test]
fn the_sample_home_is_real_git_and_small() {
    let dir = tempfile::tempdir().unwrap();
    let sample = tiny(dir.path());
    assert_eq!(fsck_all(&sample.root).unwrap(), sample.repositories.len());
    assert_eq!(sample.repositories.len(), 4);
    let size: u64 =
        walkdir::WalkDir::new(&sample.root).into_iter().filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    assert!(size < 2 * 1024 * 1024, "tiny home is {size} bytes");
    let fork = sample.fork().unwrap();
    let alternates = std::fs::read_to_string(fork.path.join("objects/info/alternates")).unwrap();
    assert_eq!(alternates.trim(), sample.repository(1).unwrap().join("objects").to_str().unwrap());
    let config = std::fs::read_to_string(sample.repository(2).unwrap().join("repository-config")).unwrap();
    assert!(
        config.contains("[bitbucket]") && config.contains("hierarchy") && config.contains("repository = repository-2")
    );
    assert!(sample.repository(2).unwrap().join("packed-refs").is_file());
    assert!(sample.repository(1).unwrap().join("refs/heads/main").is_file());
    assert!(sample.repository(1).unwrap().join("stash-packed-refs").is_file());
}

#[test]
fn commit_to_repo_moves_the_default_branch() {
    let dir = tempfile::tempdir().unwrap();
    let sample = tiny(dir.path());
    // Repository 2 holds the stale locks: git refuses to commit there, as it should.
    assert!(commit_to_repo(sample.repository(2).unwrap(), "blocked").is_err());
    let repo = sample.repository(3).unwrap();
    let id = commit_to_repo(repo, "one more").unwrap();
    let head = std::process::Command::new("git").arg("-C").arg(repo).args(["rev-parse", "main"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), id);
    assert_eq!(fsck_all(&sample.root).unwrap(), 4);
}

#[test]
fn git_lock_cleanup_removes_the_locks_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let sample = tiny(dir.path());
    assert!(!sample.stale_locks.is_empty());
    // Look-alikes that must stay: not lock files, or outside a repository's lock places.
    let keep = [
        write(&sample.root, "shared/data/attachments/upload.lock", b"x"),
        write(sample.repository(1).unwrap(), "objects/pack/pack-0.keep", b"x"),
        write(sample.repository(1).unwrap(), "stash-refs/pull-requests/1/to.locked", b"x"),
        write(sample.repository(1).unwrap(), "hooks/pre-receive.lock.sample", b"x"),
    ];
    let before: BTreeSet<PathBuf> = list_tree(&sample.root).into_iter().collect();
    let removed: BTreeSet<PathBuf> = remove_stale_git_locks(&sample.root).unwrap().into_iter().collect();
    let expected: BTreeSet<PathBuf> = sample.stale_locks.iter().cloned().collect();
    assert_eq!(removed, expected);
    let after: BTreeSet<PathBuf> = list_tree(&sample.root).into_iter().collect();
    let gone: BTreeSet<PathBuf> = before.difference(&after).map(|p| sample.root.join(p)).collect();
    assert_eq!(gone, expected, "only the lock files may disappear");
    assert!(keep.iter().all(|p| p.exists()));
    assert!(remove_stale_git_locks(&sample.root).unwrap().is_empty());
    assert_eq!(fsck_all(&sample.root).unwrap(), 4);
}

#[test]
fn relinking_leaves_unknown_alternates_alone() {
    let dir = tempfile::tempdir().unwrap();
    let sample = tiny(dir.path());
    // The sample's own alternates already point into this home: nothing to rewrite.
    assert!(relink_fork_alternates(&sample.root, &[]).unwrap().is_empty());
    let fork = sample.fork().unwrap();
    let file = fork.path.join("objects/info/alternates");
    std::fs::write(&file, "/somewhere/else/objects\n").unwrap();
    assert!(relink_fork_alternates(&sample.root, &[]).unwrap().is_empty());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "/somewhere/else/objects\n");
}

// ---------------------------------------------------------------------------------------------
// command

fn env_dump(path: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test]
async fn command_strategy_passes_the_documented_variables() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let dump =
        |name: &str| format!("env | grep '^BITBUCKET_DIY_' > {}/{name}.env; echo snapshot-{name}", out.display());
    let mut cfg = fs_config(FilesystemType::Command, &home);
    cfg.data_stores = vec![PathBuf::from("/srv/store-a"), PathBuf::from("/srv/store-b")];
    cfg.prepare_command = Some(dump("prepare"));
    cfg.backup_command = Some(dump("backup"));
    cfg.restore_command = Some(dump("restore"));
    cfg.atomic_snapshot = true;
    let strategy = CommandFilesystem::from_config(&cfg, true, InstanceType::Bitbucket).unwrap();
    assert!(strategy.capabilities().atomic_snapshot && strategy.capabilities().incremental);

    let (ctx, _) = step_ctx(&dir.path().join("work"));
    strategy.prepare(&ctx).await.unwrap();
    let report = strategy.backup(&ctx, &Drained::for_testing()).await.unwrap();
    assert_eq!(report.notes["command_output"], "snapshot-backup");
    let prepare = env_dump(&out.join("prepare.env"));
    let backup = env_dump(&out.join("backup.env"));
    assert_eq!(prepare["BITBUCKET_DIY_PHASE"], "prepare");
    assert_eq!(backup["BITBUCKET_DIY_PHASE"], "backup");
    assert_eq!(backup["BITBUCKET_DIY_BACKUP_ID"], "test-backup");
    assert_eq!(backup["BITBUCKET_DIY_HOME"], home.to_str().unwrap());
    assert_eq!(backup["BITBUCKET_DIY_DATA_STORES"], "/srv/store-a:/srv/store-b");
    assert_eq!(backup["BITBUCKET_DIY_WORKING_FOLDER"], ctx.working().root().to_str().unwrap());
    assert_eq!(backup["BITBUCKET_DIY_HOME_COPY"], ctx.working().home_dir().to_str().unwrap());
    assert!(!backup.contains_key("BITBUCKET_DIY_TARGET_HOME"));

    let source = dir.path().join("extracted");
    std::fs::create_dir_all(&source).unwrap();
    let restore = restore_ctx(&source, "command", cfg.data_stores.clone());
    let mut target = HomeTarget::new(dir.path().join("new-home"));
    target.data_stores.insert(PathBuf::from("/srv/store-a"), dir.path().join("new-a"));
    let err = strategy.restore(&restore, &target).await;
    // store-b goes back to /srv/store-b, which is absent here: allowed.
    err.unwrap();
    let restored = env_dump(&out.join("restore.env"));
    assert_eq!(restored["BITBUCKET_DIY_PHASE"], "restore");
    assert_eq!(restored["BITBUCKET_DIY_TARGET_HOME"], dir.path().join("new-home").to_str().unwrap());
    assert_eq!(
        restored["BITBUCKET_DIY_TARGET_DATA_STORES"],
        format!("{}:/srv/store-b", dir.path().join("new-a").display())
    );
    assert_eq!(restored["BITBUCKET_DIY_WORKING_FOLDER"], source.to_str().unwrap());
}

#[tokio::test]
async fn command_strategy_failures_and_missing_settings_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fs_config(FilesystemType::Command, dir.path());
    let err = CommandFilesystem::from_config(&cfg, true, InstanceType::Bitbucket).unwrap_err();
    assert!(matches!(err, ConfigError::Missing { ref key, .. } if key == "filesystem.backup_command"), "{err}");
    cfg.backup_command = Some("echo 'snapshot pool/home failed: no space' >&2; exit 4".to_owned());
    cfg.restore_command = Some("true".to_owned());
    let strategy = CommandFilesystem::from_config(&cfg, true, InstanceType::Bitbucket).unwrap();
    assert!(!strategy.capabilities().incremental && !strategy.capabilities().atomic_snapshot);
    let (ctx, _) = step_ctx(&dir.path().join("work"));
    let err = strategy.backup(&ctx, &Drained::for_testing()).await.unwrap_err().to_string();
    assert!(err.contains("exit code 4") && err.contains("no space"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pass_copies_only_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let sample = tiny(dir.path());
    let (ctx, _) = step_ctx(&dir.path().join("work"));
    let strategy = native(&sample.root, true);
    let first = strategy.backup(&ctx, &Drained::for_testing()).await.unwrap();
    assert!(first.files > 20 && first.unchanged == 0, "{first:?}");
    commit_to_repo(sample.repository(3).unwrap(), "one change").unwrap();
    let second = strategy.backup(&ctx, &Drained::for_testing()).await.unwrap();
    assert!(second.files >= 4 && second.files < first.files, "{second:?}");
    assert!(second.unchanged > 0, "{second:?}");
    compare_trees(&sample.root, &ctx.working().home_dir(), |p| {
        Excludes::for_home(InstanceType::Bitbucket, true, &[], &[]).is_excluded(p, sample.root.join(p).is_dir())
    })
    .unwrap();
}
