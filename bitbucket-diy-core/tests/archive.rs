//! Archive strategies: the conformance suite on all three, GNU tar compatibility, hostile
//! archives, permissions, large files, listing and cancellation.

// Helpers outside `#[test]` functions panic on broken fixtures too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/raw_tar.rs"]
mod raw_tar;
#[path = "common/small_disk.rs"]
mod small_disk;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::task::Poll;

use bitbucket_diy_core::archive_format::{BackupMetadata, FORMAT_VERSION, METADATA_PATH, ManifestSummary};
use bitbucket_diy_core::events::{Event, Phase, RecordedEvents};
use bitbucket_diy_core::strategy::archive::{NoArchive, TarGzArchive, TarZstdArchive};
use bitbucket_diy_core::strategy::conformance::archive as conformance;
use bitbucket_diy_core::strategy::{ArchiveError, ArchiveInfo, ArchiveStrategy, StepContext, WorkingFolder};
use raw_tar::RawTar;
use tar::EntryType;
use tokio_util::sync::CancellationToken;

fn context(working: &WorkingFolder, id: &str) -> (StepContext, RecordedEvents) {
    let events = RecordedEvents::new();
    let ctx =
        StepContext::new(id.parse().unwrap(), working.clone(), Arc::new(events.clone()), CancellationToken::new());
    (ctx, events)
}

fn metadata(id: &str) -> BackupMetadata {
    conformance::sample_metadata(id, jiff::Timestamp::now()).unwrap()
}

fn zstd_in(dir: &Path) -> Box<dyn ArchiveStrategy> {
    Box::new(TarZstdArchive::new(dir.join("archives"), 3, 2))
}

fn gzip_in(dir: &Path) -> Box<dyn ArchiveStrategy> {
    Box::new(TarGzArchive::new(dir.join("archives"), 6))
}

fn none_in(dir: &Path) -> Box<dyn ArchiveStrategy> {
    Box::new(NoArchive::new(conformance::working_folder(dir)))
}

// ---------------------------------------------------------------------------------------------
// The conformance suite, one test per check and strategy.

macro_rules! conformance_checks {
    ($module:ident, $make:path: $($check:ident),+ $(,)?) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $check() {
                    let scratch = tempfile::tempdir().unwrap();
                    let archive = $make(scratch.path());
                    let outcome = super::conformance::$check(archive.as_ref(), scratch.path()).await;
                    super::conformance::make_writable(scratch.path());
                    if let Err(failure) = outcome {
                        panic!("{failure}");
                    }
                }
            )+
        }
    };
}

macro_rules! all_conformance_checks {
    ($module:ident, $make:path) => {
        conformance_checks!($module, $make:
            roundtrip,
            symlinks_stored_not_followed,
            escaping_symlinks_are_refused,
            interrupted_write_leaves_no_archive,
            retention_keeps_newest,
            verify_detects_corruption,
            verify_detects_truncation,
        );
    };
}

all_conformance_checks!(tar_zstd_conformance, super::zstd_in);
all_conformance_checks!(tar_gz_conformance, super::gzip_in);
all_conformance_checks!(none_conformance, super::none_in);

/// A strategy that lies: verify always passes and extract writes nothing.
#[derive(Debug)]
struct CredulousArchive(TarZstdArchive);

#[async_trait::async_trait]
impl ArchiveStrategy for CredulousArchive {
    fn name(&self) -> &str {
        "credulous"
    }
    fn folder(&self) -> &Path {
        self.0.folder()
    }
    async fn write(
        &self,
        source: &WorkingFolder,
        metadata: &BackupMetadata,
        ctx: &StepContext,
    ) -> Result<ArchiveInfo, ArchiveError> {
        self.0.write(source, metadata, ctx).await
    }
    async fn list(&self) -> Result<Vec<ArchiveInfo>, ArchiveError> {
        self.0.list().await
    }
    async fn remove(&self, archive: &ArchiveInfo) -> Result<(), ArchiveError> {
        self.0.remove(archive).await
    }
    async fn verify(
        &self,
        archive: &ArchiveInfo,
        _ctx: &StepContext,
    ) -> Result<bitbucket_diy_core::strategy::VerifyReport, ArchiveError> {
        Ok(bitbucket_diy_core::strategy::VerifyReport::of(archive.path.clone(), nothing_in(archive)))
    }
    async fn extract(
        &self,
        archive: &ArchiveInfo,
        target: &Path,
        _ctx: &StepContext,
    ) -> Result<ManifestSummary, ArchiveError> {
        std::fs::create_dir_all(target).unwrap();
        Ok(nothing_in(archive))
    }
}

fn nothing_in(archive: &ArchiveInfo) -> ManifestSummary {
    ManifestSummary { metadata: archive.metadata.clone(), entries: 0, files: 0, bytes: 0 }
}

#[tokio::test]
async fn conformance_suite_catches_a_strategy_that_skips_verification() {
    let scratch = tempfile::tempdir().unwrap();
    let outcome = conformance::run_all(
        |dir| Box::new(CredulousArchive(TarZstdArchive::new(dir.join("archives"), 1, 1))),
        scratch.path(),
    )
    .await;
    conformance::make_writable(scratch.path());
    let failures = outcome.expect_err("the suite passed a strategy whose verify and extract do nothing");
    for check in [
        "roundtrip",
        "symlinks_stored_not_followed",
        "escaping_symlinks_are_refused",
        "verify_detects_corruption",
        "verify_detects_truncation",
    ] {
        assert!(failures.lines().any(|l| l.starts_with(check)), "{check} did not fail:\n{failures}");
    }
    for check in ["interrupted_write_leaves_no_archive", "retention_keeps_newest"] {
        assert!(
            !failures.lines().any(|l| l.starts_with(check)),
            "{check} failed although write/list/remove work:\n{failures}"
        );
    }
}

#[tokio::test]
async fn run_all_passes_for_none() {
    let scratch = tempfile::tempdir().unwrap();
    let outcome = conformance::run_all(none_in, scratch.path()).await;
    conformance::make_writable(scratch.path());
    outcome.unwrap();
}

// ---------------------------------------------------------------------------------------------
// GNU tar reads our archives.

async fn gnu_tar_extracts_the_same_tree(archive: Box<dyn ArchiveStrategy>, scratch: &Path, tar_flags: &[&str]) {
    let working = conformance::working_folder(scratch);
    conformance::populate_sample_tree(&working).unwrap();
    let (ctx, _) = context(&working, "gnu-tar");
    let info = archive.write(&working, &metadata("gnu-tar"), &ctx).await.unwrap();
    let out = scratch.join("gnu-out");
    std::fs::create_dir(&out).unwrap();
    let status =
        Command::new("tar").args(tar_flags).arg(&info.path).arg("-C").arg(&out).status().expect("GNU tar is installed");
    assert!(status.success(), "tar {tar_flags:?} failed: {status}");
    conformance::compare_trees(working.root(), &out).unwrap();
    let metadata_json = std::fs::read(out.join(METADATA_PATH)).unwrap();
    let read: BackupMetadata = serde_json::from_slice(&metadata_json).unwrap();
    assert_eq!(read, info.metadata);
    assert!(!out.join(".bitbucket-diy/run.lock").exists(), "the state folder was archived");
    conformance::make_writable(scratch);
}

#[tokio::test]
async fn gnu_tar_reads_tar_zstd_archives() {
    let scratch = tempfile::tempdir().unwrap();
    gnu_tar_extracts_the_same_tree(zstd_in(scratch.path()), scratch.path(), &["--zstd", "-xf"]).await;
}

#[tokio::test]
async fn gnu_tar_reads_tar_gz_archives() {
    let scratch = tempfile::tempdir().unwrap();
    gnu_tar_extracts_the_same_tree(gzip_in(scratch.path()), scratch.path(), &["-xzf"]).await;
}

// ---------------------------------------------------------------------------------------------
// Hostile archives: refused by verify and by extract, nothing written outside the target.

#[derive(Clone, Copy, Debug)]
enum Expect {
    Unsafe,
    Corrupt,
    Mismatch,
    MissingManifest,
    UnsupportedFormat,
}

impl Expect {
    fn matches(self, error: &ArchiveError) -> bool {
        matches!(
            (self, error),
            (Expect::Unsafe, ArchiveError::UnsafeEntry { .. })
                | (Expect::Corrupt, ArchiveError::Corrupt { .. })
                | (Expect::Mismatch, ArchiveError::Mismatch { .. })
                | (Expect::MissingManifest, ArchiveError::MissingManifest { .. })
                | (Expect::UnsupportedFormat, ArchiveError::UnsupportedFormat { .. })
        )
    }
}

struct Hostile {
    scratch: tempfile::TempDir,
    metadata: BackupMetadata,
}

impl Hostile {
    fn new() -> Self {
        let scratch = tempfile::tempdir().unwrap();
        std::fs::create_dir(scratch.path().join("outside")).unwrap();
        std::fs::write(scratch.path().join("outside/secret"), b"secret").unwrap();
        Self { scratch, metadata: metadata("hostile") }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.scratch.path().join(rel)
    }

    fn tar(&self) -> RawTar {
        RawTar::with_metadata(&self.metadata)
    }

    /// Writes `tar` as both formats; verify and extract each must fail as expected, leave the
    /// target absent, the `canaries` absent and the outside secret untouched.
    async fn refused(&self, tar: &RawTar, on_verify: Expect, on_extract: Expect, canaries: &[PathBuf]) {
        let folder = self.path("archives");
        let zstd = TarZstdArchive::new(folder.clone(), 3, 1);
        let gzip = TarGzArchive::new(folder.clone(), 6);
        let archives: [(&dyn ArchiveStrategy, PathBuf); 2] =
            [(&zstd, folder.join("hostile.tar.zst")), (&gzip, folder.join("hostile.tar.gz"))];
        for (archive, path) in archives {
            if path.extension().is_some_and(|e| e == "zst") {
                tar.write_zstd(&path)
            } else {
                tar.write_gzip(&path)
            }
            let info =
                ArchiveInfo { metadata: self.metadata.clone(), bytes: std::fs::metadata(&path).unwrap().len(), path };
            let working = WorkingFolder::new(self.path("working"));
            let (ctx, _) = context(&working, "hostile");
            let verified = archive.verify(&info, &ctx).await;
            match &verified {
                Err(e) if on_verify.matches(e) => eprintln!("{}: verify: {e}", archive.name()),
                other => panic!("{}: verify returned {other:?}, expected {on_verify:?}", archive.name()),
            }
            let target = self.path("restore");
            let extracted = archive.extract(&info, &target, &ctx).await;
            match &extracted {
                Err(e) if on_extract.matches(e) => eprintln!("{}: extract: {e}", archive.name()),
                other => panic!("{}: extract returned {other:?}, expected {on_extract:?}", archive.name()),
            }
            assert!(!target.exists(), "{}: the refused extraction left {}", archive.name(), target.display());
            for canary in canaries {
                assert!(
                    std::fs::symlink_metadata(canary).is_err(),
                    "{}: {} was written",
                    archive.name(),
                    canary.display()
                );
            }
            assert_eq!(std::fs::read(self.path("outside/secret")).unwrap(), b"secret");
            assert_eq!(std::fs::read_dir(self.path("outside")).unwrap().count(), 1, "something was written outside");
        }
    }
}

#[tokio::test]
async fn entry_with_dotdot_is_refused() {
    let hostile = Hostile::new();
    let mut tar = hostile.tar();
    tar.folder("bitbucket-home").file("bitbucket-home/../../canary", b"pwned").manifest(&hostile.metadata).end();
    hostile.refused(&tar, Expect::Unsafe, Expect::Unsafe, &[hostile.path("canary")]).await;
}

#[tokio::test]
async fn entry_with_absolute_path_is_refused() {
    let hostile = Hostile::new();
    let canary = hostile.path("outside/canary");
    let mut tar = hostile.tar();
    tar.file(canary.to_str().unwrap(), b"pwned").manifest(&hostile.metadata).end();
    hostile.refused(&tar, Expect::Unsafe, Expect::Unsafe, &[canary]).await;
}

#[tokio::test]
async fn absolute_symlink_then_file_through_it_is_refused() {
    let hostile = Hostile::new();
    let outside = hostile.path("outside");
    let mut tar = hostile.tar();
    tar.folder("bitbucket-home")
        .symlink("bitbucket-home/escape", outside.to_str().unwrap())
        .file("bitbucket-home/escape/canary", b"pwned")
        .manifest(&hostile.metadata)
        .end();
    hostile.refused(&tar, Expect::Unsafe, Expect::Unsafe, &[outside.join("canary")]).await;
}

#[tokio::test]
async fn climbing_symlink_then_file_through_it_is_refused() {
    let hostile = Hostile::new();
    let mut tar = hostile.tar();
    tar.folder("bitbucket-home")
        .symlink("bitbucket-home/escape", "../../outside")
        .file("bitbucket-home/escape/canary", b"pwned")
        .manifest(&hostile.metadata)
        .end();
    hostile.refused(&tar, Expect::Unsafe, Expect::Unsafe, &[hostile.path("outside/canary")]).await;
}

#[tokio::test]
async fn symlink_climbing_through_another_symlink_is_refused() {
    // `up -> ..` is harmless alone, but `up/../..` resolves through it to outside the target.
    let hostile = Hostile::new();
    let mut tar = hostile.tar();
    tar.folder("bitbucket-home")
        .folder("bitbucket-home/a")
        .symlink("bitbucket-home/a/up", "..")
        .symlink("bitbucket-home/a/escape", "up/../../..")
        .manifest(&hostile.metadata)
        .end();
    hostile.refused(&tar, Expect::Unsafe, Expect::Unsafe, &[]).await;
}

#[tokio::test]
async fn file_through_an_inside_symlink_is_refused() {
    let hostile = Hostile::new();
    let mut tar = hostile.tar();
    tar.folder("bitbucket-db")
        .folder("bitbucket-home")
        .symlink("bitbucket-home/db", "../bitbucket-db")
        .file("bitbucket-home/db/injected.sql", b"DROP TABLE repo;")
        .manifest(&hostile.metadata)
        .end();
    hostile.refused(&tar, Expect::Unsafe, Expect::Unsafe, &[]).await;
}

#[tokio::test]
async fn hardlink_is_refused() {
    let hostile = Hostile::new();
    let secret = hostile.path("outside/secret");
    let mut tar = hostile.tar();
    tar.folder("bitbucket-home");
    tar.raw(b"bitbucket-home/hl", EntryType::Link, b"", None, Some(secret.to_str().unwrap().as_bytes()));
    tar.manifest(&hostile.metadata).end();
    hostile.refused(&tar, Expect::Unsafe, Expect::Unsafe, &[]).await;
}

#[tokio::test]
async fn fifo_and_device_entries_are_refused() {
    for kind in [EntryType::Fifo, EntryType::Char, EntryType::Block] {
        let hostile = Hostile::new();
        let mut tar = hostile.tar();
        tar.folder("bitbucket-home");
        tar.raw(b"bitbucket-home/special", kind, b"", None, None);
        tar.manifest(&hostile.metadata).end();
        hostile.refused(&tar, Expect::Unsafe, Expect::Unsafe, &[]).await;
    }
}

#[tokio::test]
async fn truncated_file_entry_is_refused() {
    let hostile = Hostile::new();
    let mut tar = hostile.tar();
    tar.folder("bitbucket-home");
    tar.raw(b"bitbucket-home/cut.bin", EntryType::Regular, &[7u8; 100], Some(1000), None);
    hostile.refused(&tar, Expect::Corrupt, Expect::Unsafe, &[]).await;
}

#[tokio::test]
async fn huge_declared_size_is_refused_without_filling_the_disk() {
    let hostile = Hostile::new();
    let mut tar = hostile.tar();
    tar.folder("bitbucket-home");
    tar.raw(b"bitbucket-home/huge.bin", EntryType::Regular, &[1u8; 4096], Some(1 << 40), None);
    tar.end();
    hostile.refused(&tar, Expect::Corrupt, Expect::Unsafe, &[]).await;
}

#[tokio::test]
async fn content_differing_from_the_manifest_is_refused() {
    let hostile = Hostile::new();
    let mut tar = hostile.tar();
    tar.folder("bitbucket-home").file("bitbucket-home/repo.pack", b"original content");
    tar.manifest.last_mut().unwrap().sha256 = Some(raw_tar::sha256(b"originaL content"));
    tar.manifest(&hostile.metadata).end();
    hostile.refused(&tar, Expect::Mismatch, Expect::Mismatch, &[]).await;
}

#[tokio::test]
async fn entry_missing_from_the_manifest_is_refused() {
    let hostile = Hostile::new();
    let mut tar = hostile.tar();
    tar.folder("bitbucket-home").file("bitbucket-home/a", b"a").file("bitbucket-home/smuggled", b"b");
    tar.manifest.pop();
    tar.manifest(&hostile.metadata).end();
    hostile.refused(&tar, Expect::Mismatch, Expect::Mismatch, &[]).await;
}

#[tokio::test]
async fn archive_without_manifest_is_refused() {
    let hostile = Hostile::new();
    let mut tar = hostile.tar();
    tar.folder("bitbucket-home").file("bitbucket-home/a", b"a").end();
    hostile.refused(&tar, Expect::MissingManifest, Expect::MissingManifest, &[]).await;
}

#[tokio::test]
async fn plain_tar_without_metadata_is_refused() {
    let hostile = Hostile::new();
    let mut tar = RawTar::empty();
    tar.folder("bitbucket-home").file("bitbucket-home/a", b"a").end();
    hostile.refused(&tar, Expect::MissingManifest, Expect::MissingManifest, &[]).await;
}

#[tokio::test]
async fn newer_format_version_is_refused() {
    let mut hostile = Hostile::new();
    hostile.metadata.format_version = FORMAT_VERSION + 1;
    let mut tar = hostile.tar();
    tar.folder("bitbucket-home").manifest(&hostile.metadata).end();
    hostile.refused(&tar, Expect::UnsupportedFormat, Expect::UnsupportedFormat, &[]).await;
}

#[tokio::test]
async fn entry_after_the_manifest_is_refused() {
    let hostile = Hostile::new();
    let mut tar = hostile.tar();
    tar.folder("bitbucket-home").manifest(&hostile.metadata).file("bitbucket-home/late", b"late").end();
    hostile.refused(&tar, Expect::Corrupt, Expect::Corrupt, &[]).await;
}

#[tokio::test]
async fn entry_in_the_reserved_state_folder_is_refused() {
    let hostile = Hostile::new();
    let mut tar = hostile.tar();
    tar.file(".bitbucket-diy/backup.json.evil", b"{}").manifest(&hostile.metadata).end();
    hostile.refused(&tar, Expect::Unsafe, Expect::Unsafe, &[]).await;
}

#[tokio::test]
async fn duplicate_entry_is_refused() {
    let hostile = Hostile::new();
    let mut tar = hostile.tar();
    tar.folder("bitbucket-home").file("bitbucket-home/a", b"first").file("bitbucket-home/a", b"second");
    tar.manifest(&hostile.metadata).end();
    hostile.refused(&tar, Expect::Unsafe, Expect::Unsafe, &[]).await;
}

/// Readers check the writer's order with only the chain of open folders (flat memory); an archive
/// in any other order is refused, even with a manifest that lists it so.
#[tokio::test]
async fn entries_out_of_the_writers_order_are_refused() {
    let hostile = Hostile::new();
    let mut unsorted = hostile.tar();
    unsorted.folder("bitbucket-home").file("bitbucket-home/b", b"b").file("bitbucket-home/a", b"a");
    unsorted.manifest(&hostile.metadata).end();
    hostile.refused(&unsorted, Expect::Unsafe, Expect::Unsafe, &[]).await;

    let mut orphan = hostile.tar();
    orphan.folder("bitbucket-home").file("bitbucket-home/repo/HEAD", b"ref: refs/heads/main\n");
    orphan.manifest(&hostile.metadata).end();
    hostile.refused(&orphan, Expect::Unsafe, Expect::Unsafe, &[]).await;

    let mut home_first = hostile.tar();
    home_first.folder("bitbucket-home").folder("bitbucket-db");
    home_first.manifest(&hostile.metadata).end();
    hostile.refused(&home_first, Expect::Unsafe, Expect::Unsafe, &[]).await;
}

#[tokio::test]
async fn flipped_byte_in_compressed_stream_is_detected() {
    for make in [zstd_in as fn(&Path) -> Box<dyn ArchiveStrategy>, gzip_in] {
        let scratch = tempfile::tempdir().unwrap();
        let archive = make(scratch.path());
        let working = conformance::working_folder(scratch.path());
        std::fs::create_dir_all(working.home_dir()).unwrap();
        std::fs::write(working.home_dir().join("data.bin"), conformance::pseudo_random_bytes(3, 1 << 20)).unwrap();
        let (ctx, _) = context(&working, "flip");
        let info = archive.write(&working, &metadata("flip"), &ctx).await.unwrap();
        // Every tenth byte, one at a time: each flip must be caught.
        let original = std::fs::read(&info.path).unwrap();
        for offset in (original.len() / 10..original.len() - 8).step_by(original.len() / 10) {
            let mut damaged = original.clone();
            damaged[offset] ^= 0x01;
            std::fs::write(&info.path, &damaged).unwrap();
            match archive.verify(&info, &ctx).await {
                Err(
                    ArchiveError::Corrupt { .. } | ArchiveError::Mismatch { .. } | ArchiveError::MissingManifest { .. },
                ) => {}
                other => panic!("{}: a flipped bit at {offset} gave {other:?}", archive.name()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Files, permissions, listing, cancellation.

#[tokio::test]
async fn archive_folder_and_files_are_owner_only() {
    let scratch = tempfile::tempdir().unwrap();
    let folder = scratch.path().join("new/archives");
    let archive = TarZstdArchive::new(folder.clone(), 3, 1);
    let working = conformance::working_folder(scratch.path());
    std::fs::create_dir_all(working.home_dir()).unwrap();
    std::fs::write(working.home_dir().join("x"), b"x").unwrap();
    let (ctx, _) = context(&working, "perms");
    let info = archive.write(&working, &metadata("perms"), &ctx).await.unwrap();
    assert_eq!(info.path, folder.join("perms.tar.zst"));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&folder), 0o700, "archive folder");
    assert_eq!(mode(&info.path), 0o600, "archive file");
    let gz = TarGzArchive::new(folder.clone(), 1).write(&working, &metadata("perms"), &ctx).await.unwrap();
    assert_eq!(mode(&gz.path), 0o600, "gzip archive file");
}

#[tokio::test]
async fn existing_archive_is_never_overwritten() {
    let scratch = tempfile::tempdir().unwrap();
    let archive = zstd_in(scratch.path());
    let working = conformance::working_folder(scratch.path());
    std::fs::create_dir_all(working.home_dir()).unwrap();
    std::fs::write(working.home_dir().join("x"), b"first").unwrap();
    let (ctx, _) = context(&working, "twice");
    let first = archive.write(&working, &metadata("twice"), &ctx).await.unwrap();
    std::fs::write(working.home_dir().join("x"), b"second").unwrap();
    match archive.write(&working, &metadata("twice"), &ctx).await {
        Err(ArchiveError::AlreadyExists { path }) => assert_eq!(path, first.path),
        other => panic!("second write returned {other:?}"),
    }
    archive.verify(&first, &ctx).await.unwrap();
    let target = scratch.path().join("restore");
    archive.extract(&first, &target, &ctx).await.unwrap();
    let manifest = conformance::extracted_manifest(&target).unwrap();
    assert_eq!(manifest.entries.last().unwrap().sha256, Some(raw_tar::sha256(b"first")));
    let leftovers: Vec<_> = std::fs::read_dir(archive.folder()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[tokio::test]
async fn large_incompressible_file_roundtrips_with_sparse_progress() {
    let scratch = tempfile::tempdir().unwrap();
    let archive = zstd_in(scratch.path());
    let working = conformance::working_folder(scratch.path());
    std::fs::create_dir_all(working.home_dir()).unwrap();
    let size = 50 << 20;
    std::fs::write(working.home_dir().join("big.bin"), conformance::pseudo_random_bytes(11, size)).unwrap();
    let (ctx, events) = context(&working, "large");
    let info = archive.write(&working, &metadata("large"), &ctx).await.unwrap();
    assert!(info.bytes > size as u64 * 99 / 100, "incompressible data shrank to {} bytes", info.bytes);

    let progress: Vec<(u64, Option<u64>)> = events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Progress { phase: Phase::Archive, done, total, .. } => Some((done, total)),
            _ => None,
        })
        .collect();
    // At most one report per MiB (plus start and end), never one per buffer.
    assert!(progress.len() <= 52, "{} progress events for 50 MiB", progress.len());
    assert_eq!(progress.last().copied(), Some((size as u64, Some(size as u64))));
    assert!(progress.windows(2).all(|w| w[0].0 <= w[1].0), "progress went backwards");

    archive.verify(&info, &ctx).await.unwrap();
    let target = scratch.path().join("restore");
    archive.extract(&info, &target, &ctx).await.unwrap();
    conformance::compare_trees(working.root(), &target).unwrap();
}

#[tokio::test]
async fn list_shows_complete_archives_only_newest_first() {
    let scratch = tempfile::tempdir().unwrap();
    let archive = zstd_in(scratch.path());
    let working = conformance::working_folder(scratch.path());
    std::fs::create_dir_all(working.home_dir()).unwrap();
    std::fs::write(working.home_dir().join("x"), b"x").unwrap();
    let at = jiff::Timestamp::now();
    let (ctx, _) = context(&working, "same-second");
    let first = archive.write(&working, &conformance::sample_metadata("same-second", at).unwrap(), &ctx).await.unwrap();
    let second =
        archive.write(&working, &conformance::sample_metadata("same-second-2", at).unwrap(), &ctx).await.unwrap();
    let folder = archive.folder();
    std::fs::copy(&first.path, folder.join(".same-second-3.tar.zst.abc.partial")).unwrap();
    std::fs::write(folder.join("garbage.tar.zst"), b"not zstd at all").unwrap();
    std::fs::write(folder.join("notes.txt"), b"hello").unwrap();
    RawTar::empty().file("bitbucket-home/a", b"a").end().write_zstd(&folder.join("foreign.tar.zst"));

    let listed = archive.list().await.unwrap();
    assert_eq!(listed, vec![second.clone(), first.clone()], "same creation time: the later name first");

    // Only the first entry is read: a large archive cut short well after it is still listed
    // (verify is what tells it apart).
    std::fs::write(working.home_dir().join("big.bin"), conformance::pseudo_random_bytes(9, 4 << 20)).unwrap();
    let big = archive.write(&working, &conformance::sample_metadata("big", at).unwrap(), &ctx).await.unwrap();
    let bytes = std::fs::read(&big.path).unwrap();
    std::fs::write(&big.path, &bytes[..bytes.len() / 2]).unwrap();
    let listed = archive.list().await.unwrap();
    let cut = listed.iter().find(|a| a.metadata.id.as_str() == "big").expect("the cut archive is listed");
    assert!(matches!(archive.verify(cut, &ctx).await, Err(ArchiveError::Corrupt { .. })));
}

#[tokio::test]
async fn list_of_a_missing_folder_is_empty() {
    let scratch = tempfile::tempdir().unwrap();
    let archive = TarZstdArchive::new(scratch.path().join("not-yet"), 3, 1);
    assert!(archive.list().await.unwrap().is_empty());
    assert!(!scratch.path().join("not-yet").exists(), "list created the folder");
}

#[test]
fn dropping_a_write_in_progress_leaves_no_archive() {
    let scratch = tempfile::tempdir().unwrap();
    let folder = scratch.path().join("archives");
    let working = conformance::working_folder(scratch.path());
    std::fs::create_dir_all(working.home_dir()).unwrap();
    std::fs::write(working.home_dir().join("big.bin"), conformance::pseudo_random_bytes(5, 16 << 20)).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let archive = TarZstdArchive::new(folder.clone(), 3, 1);
        let (ctx, _) = context(&working, "dropped");
        let md = metadata("dropped");
        let mut write = std::pin::pin!(archive.write(&working, &md, &ctx));
        let first_poll = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
        assert!(first_poll.is_pending(), "a 16 MiB write finished on its first poll");
    });
    // Dropping the runtime waits for the blocking job, which sees the cancellation.
    drop(runtime);
    let left: Vec<_> =
        std::fs::read_dir(&folder).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "an abandoned write left {left:?}");
}

#[tokio::test]
async fn none_is_listed_only_while_its_marker_exists() {
    let scratch = tempfile::tempdir().unwrap();
    let working = conformance::working_folder(scratch.path());
    conformance::populate_sample_tree(&working).unwrap();
    let archive = NoArchive::new(working.clone());
    assert_eq!(archive.folder(), working.root());
    assert!(archive.list().await.unwrap().is_empty(), "listed before any write");

    let (ctx, _) = context(&working, "none-marker");
    let info = archive.write(&working, &metadata("none-marker"), &ctx).await.unwrap();
    assert_eq!(info.path, working.root());
    assert_eq!(archive.list().await.unwrap(), vec![info.clone()]);
    let marker = working.root().join(METADATA_PATH);
    assert_eq!(std::fs::metadata(&marker).unwrap().permissions().mode() & 0o777, 0o600);

    // What the orchestrator does at the start of a run.
    std::fs::remove_file(&marker).unwrap();
    assert!(archive.list().await.unwrap().is_empty(), "listed without its marker");

    let other = WorkingFolder::new(scratch.path().join("elsewhere"));
    assert!(matches!(archive.write(&other, &metadata("none-other"), &ctx).await, Err(ArchiveError::Custom { .. })));
    conformance::make_writable(scratch.path());
}

#[tokio::test]
async fn none_refuses_to_extract_into_its_own_tree() {
    let scratch = tempfile::tempdir().unwrap();
    let working = conformance::working_folder(scratch.path());
    std::fs::create_dir_all(working.home_dir()).unwrap();
    std::fs::write(working.home_dir().join("x"), b"x").unwrap();
    let archive = NoArchive::new(working.clone());
    let (ctx, _) = context(&working, "none-self");
    let info = archive.write(&working, &metadata("none-self"), &ctx).await.unwrap();
    let inside = working.home_dir().join("restore");
    assert!(archive.extract(&info, &inside, &ctx).await.is_err());
    assert!(!inside.exists());
}

/// Cancels its token at the first progress of `phase` with bytes done.
struct CancelAt {
    phase: Phase,
    token: CancellationToken,
}

impl bitbucket_diy_core::EventSink for CancelAt {
    fn emit(&self, event: &Event) {
        if let Event::Progress { phase, done, .. } = event
            && *phase == self.phase
            && *done > 0
        {
            self.token.cancel();
        }
    }
}

#[tokio::test]
async fn cancelled_verify_and_extract_stop_and_leave_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let working = conformance::working_folder(scratch.path());
    std::fs::create_dir_all(working.home_dir()).unwrap();
    for i in 0..4 {
        let data = conformance::pseudo_random_bytes(20 + i, 8 << 20);
        std::fs::write(working.home_dir().join(format!("pack-{i}")), data).unwrap();
    }
    for make in [zstd_in as fn(&Path) -> Box<dyn ArchiveStrategy>, gzip_in, none_in] {
        let archive = make(scratch.path());
        let (ctx, _) = context(&working, "cancel-read");
        let info = match archive.find("cancel-read").await {
            Ok(info) => info,
            Err(_) => archive.write(&working, &metadata("cancel-read"), &ctx).await.unwrap(),
        };
        for (phase, target) in [(Phase::Verify, None), (Phase::Extract, Some(scratch.path().join("restore")))] {
            let token = CancellationToken::new();
            let sink = Arc::new(CancelAt { phase, token: token.clone() });
            let ctx = StepContext::new("cancel-read".parse().unwrap(), working.clone(), sink, token);
            let outcome = match &target {
                None => archive.verify(&info, &ctx).await.map(|_| ()),
                Some(target) => archive.extract(&info, target, &ctx).await.map(|_| ()),
            };
            assert!(matches!(outcome, Err(ArchiveError::Cancelled)), "{} {phase}: {outcome:?}", archive.name());
            if let Some(target) = target {
                assert!(!target.exists(), "{}: a cancelled extraction left {}", archive.name(), target.display());
            }
        }
    }
}

#[tokio::test]
async fn empty_working_folder_is_archived_with_a_warning() {
    let scratch = tempfile::tempdir().unwrap();
    let working = conformance::working_folder(scratch.path());
    std::fs::create_dir_all(working.root()).unwrap();
    let archive = zstd_in(scratch.path());
    let (ctx, events) = context(&working, "empty");
    let info = archive.write(&working, &metadata("empty"), &ctx).await.unwrap();
    let warned =
        events.events().iter().any(|e| matches!(e, Event::Warning { message } if message.contains("has no content")));
    assert!(warned, "no warning for an empty backup: {:?}", events.events());
    let report = archive.verify(&info, &ctx).await.unwrap();
    assert_eq!((report.entries, report.manifest.entries), (0, 0));
}

#[tokio::test]
async fn extraction_onto_a_full_disk_fails_naming_it_and_leaves_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let archive = zstd_in(scratch.path());
    let working = conformance::working_folder(scratch.path());
    std::fs::create_dir_all(working.database_dir()).unwrap();
    std::fs::write(working.database_dir().join("dump.sql"), b"CREATE TABLE t (id int);\n").unwrap();
    for i in 0..40 {
        let dir = working.home_dir().join(format!("shared/data/attachments/{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("blob.bin"), conformance::pseudo_random_bytes(i, 100 << 10)).unwrap();
    }
    let (ctx, _) = context(&working, "full-disk");
    let info = archive.write(&working, &metadata("full-disk"), &ctx).await.unwrap();

    // 4 MB of content onto a 1 MiB disk: the writer fails part-way.
    let disk = scratch.path().join("small");
    let _mounted = small_disk::SmallDisk::mount(&disk, 1 << 20);
    let target = disk.join("restore");
    let called = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = called.clone();
    let error = archive
        .extract_database_first(
            &info,
            &target,
            &ctx,
            Box::new(move || flag.store(true, std::sync::atomic::Ordering::SeqCst)),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("No space left"), "{error}");
    assert!(called.load(std::sync::atomic::Ordering::SeqCst), "the database folder came first and was complete");
    assert!(!target.exists(), "the half-extracted target was left behind");
}
