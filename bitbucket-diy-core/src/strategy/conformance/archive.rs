//! Conformance checks for archive strategies, built-in or third-party.
//!
//! Each check takes the strategy under test and a scratch folder of its own, and returns
//! `Err(description)` when the strategy misbehaves. Conventions:
//!
//! - the check backs up [`working_folder`]`(scratch)`, i.e. `<scratch>/working`, which it fills
//!   with a Bitbucket-shaped sample tree (folders, empty folders, files of several sizes and
//!   modes, long and non-ASCII names, symlinks, a read-only folder, and state that must not be
//!   archived);
//! - it extracts into `<scratch>/restore…` and keeps other fixtures in `<scratch>/outside…`;
//! - the strategy keeps its archives anywhere else under `scratch` (e.g. `<scratch>/archives`),
//!   or, like `none`, in the working folder itself.
//!
//! [`run_all`] runs every check, each in a sub-folder of `scratch`, with a fresh strategy built
//! by `make(sub_folder)`:
//!
//! ```no_run
//! use bitbucket_diy_core::strategy::archive::TarZstdArchive;
//! use bitbucket_diy_core::strategy::conformance::archive::run_all;
//!
//! # async fn demo() -> Result<(), String> {
//! let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
//! run_all(|dir| Box::new(TarZstdArchive::new(dir.join("archives"), 3, 2)), scratch.path()).await
//! # }
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::TestResult;
use crate::archive_format::{BackupMetadata, EntryKind, FORMAT_VERSION, MANIFEST_PATH, Manifest, StrategyRecord};
use crate::backup_id::BackupId;
use crate::events::{Event, EventSink, Phase, RecordedEvents};
use crate::strategy::{ArchiveError, ArchiveInfo, ArchiveStrategy, StepContext, WorkingFolder};

/// Fails the check with a formatted message unless the condition holds.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

/// The working folder a check backs up: `<scratch>/working`.
pub fn working_folder(scratch: &Path) -> WorkingFolder {
    WorkingFolder::new(scratch.join("working"))
}

/// Metadata for a test backup `id` made at `created_at`, with placeholder strategy records.
pub fn sample_metadata(id: &str, created_at: jiff::Timestamp) -> Result<BackupMetadata, String> {
    let id: BackupId = id.parse().map_err(|e| format!("{e}"))?;
    Ok(BackupMetadata {
        format_version: FORMAT_VERSION,
        id,
        created_at,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        bitbucket_version: Some("9.4.0".to_owned()),
        instance_url: Some("https://bitbucket.example.com".to_owned()),
        zero_downtime: false,
        lock_window: Some(Duration::from_secs(42)),
        database: StrategyRecord { name: "conformance".to_owned(), ..StrategyRecord::default() },
        filesystem: StrategyRecord::default(),
        data_stores: vec![PathBuf::from("/srv/store1")],
    })
}

/// A context for one write, verify or extract of backup `id`, recording its events.
pub fn step_context(
    working: &WorkingFolder,
    id: &str,
    events: Arc<dyn EventSink>,
    cancel: CancellationToken,
) -> Result<StepContext, String> {
    let id: BackupId = id.parse().map_err(|e| format!("{e}"))?;
    Ok(StepContext::new(id, working.clone(), events, cancel))
}

fn recorded_context(working: &WorkingFolder, id: &str) -> Result<(StepContext, RecordedEvents), String> {
    let events = RecordedEvents::new();
    let ctx = step_context(working, id, Arc::new(events.clone()), CancellationToken::new())?;
    Ok((ctx, events))
}

/// Deterministic incompressible bytes (xorshift), so tests need no random-number crate.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The sample tree's modification time: old, so a restore that forgets mtimes is caught.
const SAMPLE_MTIME: i64 = 1_577_934_245; // 2020-01-02T03:04:05Z

/// Long path components (over tar's 100-byte name field).
fn long_name(c: char) -> String {
    std::iter::repeat_n(c, 120).collect()
}

/// Fills `working` with the sample tree; returns nothing but an error message.
pub fn populate_sample_tree(working: &WorkingFolder) -> Result<(), String> {
    let root = working.root();
    let err = |what: &str, e: std::io::Error| format!("building the sample tree ({what}): {e}");
    let file = |rel: &str, content: &[u8], mode: u32| -> Result<(), String> {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| err(rel, e))?;
        }
        fs::write(&path, content).map_err(|e| err(rel, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(|e| err(rel, e))
    };
    let folder = |rel: &str| fs::create_dir_all(root.join(rel)).map_err(|e| err(rel, e));
    let symlink = |target: &str, rel: &str| -> Result<(), String> {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| err(rel, e))?;
        }
        std::os::unix::fs::symlink(target, &path).map_err(|e| err(rel, e))
    };

    let dump: Vec<u8> =
        (0..4000).flat_map(|i| format!("INSERT INTO repo VALUES ({i}, 'r{i}');\n").into_bytes()).collect();
    file("bitbucket-db/dump.sql", &dump, 0o644)?;
    file("bitbucket-home/shared/bitbucket.properties", b"jdbc.url=jdbc:postgresql://db/bitbucket\n", 0o600)?;
    let repo = "bitbucket-home/shared/data/repositories/1";
    file(&format!("{repo}/objects/pack/pack-1.pack"), &pseudo_random_bytes(1, 3 << 20), 0o444)?;
    file(&format!("{repo}/hooks/pre-receive"), b"#!/bin/sh\nexit 0\n", 0o755)?;
    file(&format!("{repo}/HEAD"), b"ref: refs/heads/master\n", 0o644)?;
    folder(&format!("{repo}/refs/heads"))?;
    file("bitbucket-home/empty.txt", b"", 0o644)?;
    file("bitbucket-home/unicodé-名前.txt", "ünïcödé\n".as_bytes(), 0o644)?;
    file(&format!("bitbucket-home/{}/{}.txt", long_name('d'), long_name('f')), b"long path\n", 0o644)?;
    file("bitbucket-home/read-only/note.txt", b"read-only folder\n", 0o444)?;
    symlink("../shared/bitbucket.properties", "bitbucket-home/links/to-file")?;
    symlink("../shared", "bitbucket-home/links/to-folder")?;
    symlink("../missing", "bitbucket-home/links/dangling")?;
    symlink(&format!("../{}", long_name('d')), "bitbucket-home/links/long-target")?;
    file("bitbucket-data-stores/srv/store1/repositories/2/HEAD", b"ref: refs/heads/main\n", 0o644)?;
    // Not archived: bitbucket-diy's state folder and anything beside the three folders.
    file(".bitbucket-diy/run.lock", b"4242\n", 0o600)?;
    file("stray.txt", b"not part of a backup\n", 0o644)?;

    set_sample_times(root)?;
    fs::set_permissions(root.join("bitbucket-home/read-only"), fs::Permissions::from_mode(0o555))
        .map_err(|e| err("read-only", e))
}

/// Gives every entry of the archived folders the sample mtime, folders last (deepest first).
fn set_sample_times(root: &Path) -> Result<(), String> {
    let time = filetime::FileTime::from_unix_time(SAMPLE_MTIME, 0);
    for folder in [WorkingFolder::DATABASE, WorkingFolder::HOME, WorkingFolder::DATA_STORES] {
        let top = root.join(folder);
        if !top.exists() {
            continue;
        }
        for item in walkdir::WalkDir::new(&top).follow_links(false).contents_first(true) {
            let item = item.map_err(|e| format!("setting sample times: {e}"))?;
            filetime::set_symlink_file_times(item.path(), time, time)
                .map_err(|e| format!("setting sample times on {}: {e}", item.path().display()))?;
        }
    }
    Ok(())
}

/// Makes every folder below `path` writable again (read-only sample folders would otherwise
/// stop the temporary folder's cleanup when tests do not run as root).
pub fn make_writable(path: &Path) {
    for item in walkdir::WalkDir::new(path).follow_links(false).into_iter().flatten() {
        if item.file_type().is_dir() {
            let _ = fs::set_permissions(item.path(), fs::Permissions::from_mode(0o755));
        }
    }
}

/// One entry of a tree, as a restore must reproduce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeNode {
    /// A folder: permission bits and mtime (seconds).
    Folder {
        /// Permission bits.
        mode: u32,
        /// Modification time, seconds.
        mtime: i64,
    },
    /// A regular file: permission bits, mtime, size and SHA-256.
    File {
        /// Permission bits.
        mode: u32,
        /// Modification time, seconds.
        mtime: i64,
        /// Size in bytes.
        size: u64,
        /// Hex SHA-256 of the content.
        sha256: String,
    },
    /// A symlink and its target.
    Symlink {
        /// The stored target.
        target: String,
        /// Modification time, seconds.
        mtime: i64,
    },
}

/// Every entry of the archived folders (`bitbucket-db`, `bitbucket-home`,
/// `bitbucket-data-stores`) below `root`, by relative path. Symlinks are not followed.
pub fn tree_snapshot(root: &Path) -> Result<BTreeMap<String, TreeNode>, String> {
    let mut nodes = BTreeMap::new();
    for folder in [WorkingFolder::DATABASE, WorkingFolder::HOME, WorkingFolder::DATA_STORES] {
        let top = root.join(folder);
        if fs::symlink_metadata(&top).is_err() {
            continue;
        }
        for item in walkdir::WalkDir::new(&top).follow_links(false).follow_root_links(false) {
            let item = item.map_err(|e| format!("reading {}: {e}", top.display()))?;
            let path = item.path();
            let rel = path.strip_prefix(root).map_err(|e| e.to_string())?.to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            let mode = meta.mode() & 0o1777;
            let node = if meta.is_dir() {
                TreeNode::Folder { mode, mtime: meta.mtime() }
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
                TreeNode::Symlink { target: target.to_string_lossy().into_owned(), mtime: meta.mtime() }
            } else {
                TreeNode::File { mode, mtime: meta.mtime(), size: meta.len(), sha256: sha256_of(path)? }
            };
            nodes.insert(rel, node);
        }
    }
    Ok(nodes)
}

/// Hex SHA-256 of a file's content.
pub fn sha256_of(path: &Path) -> Result<String, String> {
    let mut file = fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| format!("reading {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The archived folders of `restored` equal those of `source`: same entries, kinds, content,
/// symlink targets, modes and mtimes.
pub fn compare_trees(source: &Path, restored: &Path) -> TestResult {
    let expected = tree_snapshot(source)?;
    let actual = tree_snapshot(restored)?;
    for (path, node) in &expected {
        match actual.get(path) {
            None => return Err(format!("{path} is missing from the restored tree")),
            Some(found) if found != node => {
                return Err(format!("{path} differs after restore: expected {node:?}, found {found:?}"));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = actual.keys().find(|k| !expected.contains_key(*k)) {
        return Err(format!("{extra} appears in the restored tree but not in the source"));
    }
    ensure!(!expected.is_empty(), "the source tree at {} is empty", source.display());
    Ok(())
}

fn display_error(e: &ArchiveError) -> String {
    format!("{e} ({e:?})")
}

/// Whether `folder` is absent or empty.
fn absent_or_empty(folder: &Path) -> bool {
    match fs::read_dir(folder) {
        Ok(mut items) => items.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Names (up to two levels deep) in `folder` that look like leftovers of an unfinished write.
fn leftovers(folder: &Path, id: &str) -> Vec<String> {
    walkdir::WalkDir::new(folder)
        .min_depth(1)
        .max_depth(2)
        .into_iter()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".partial") || name.starts_with(id))
        .collect()
}

/// Write, list, find, verify and extract the sample tree; the restore equals the source;
/// state outside the three folders is not archived; a non-empty target is refused untouched.
pub async fn roundtrip(archive: &dyn ArchiveStrategy, scratch: &Path) -> TestResult {
    let working = working_folder(scratch);
    populate_sample_tree(&working)?;
    let id = "conformance-roundtrip";
    let metadata = sample_metadata(id, jiff::Timestamp::now())?;
    let (ctx, events) = recorded_context(&working, id)?;

    let info = archive.write(&working, &metadata, &ctx).await.map_err(|e| format!("write: {}", display_error(&e)))?;
    ensure!(info.metadata == metadata, "write returned metadata {:?}, expected {metadata:?}", info.metadata);
    ensure!(fs::symlink_metadata(&info.path).is_ok(), "write returned {} which does not exist", info.path.display());
    let archive_progress = events
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Progress { phase: Phase::Archive, total: Some(_), .. }))
        .count();
    ensure!(archive_progress > 0, "write reported no Phase::Archive progress with a total");

    let listed = archive.list().await.map_err(|e| format!("list: {}", display_error(&e)))?;
    ensure!(listed.contains(&info), "list() does not contain the archive just written: {listed:?}");
    let found = archive.find(id).await.map_err(|e| format!("find({id}): {}", display_error(&e)))?;
    ensure!(found.path == info.path, "find({id}) returned {}, expected {}", found.path.display(), info.path.display());
    match archive.find("no-such-backup").await {
        Err(ArchiveError::NotFound { .. }) => {}
        other => {
            return Err(format!("find(\"no-such-backup\") returned {other:?}, expected NotFound"));
        }
    }

    let report = archive.verify(&info, &ctx).await.map_err(|e| format!("verify: {}", display_error(&e)))?;
    let summary = &report.manifest;
    ensure!(summary.metadata == metadata, "the manifest's metadata differs from what was written");
    let source = tree_snapshot(working.root())?;
    let source_bytes: u64 =
        source.values().map(|node| if let TreeNode::File { size, .. } = node { *size } else { 0 }).sum();
    ensure!(
        report.entries == source.len() as u64 && summary.entries == report.entries,
        "verify counted {} entries (summary: {}), the source has {}",
        report.entries,
        summary.entries,
        source.len()
    );
    ensure!(
        report.bytes == source_bytes && summary.bytes == report.bytes,
        "verify hashed {} bytes (summary: {}), the source has {source_bytes}",
        report.bytes,
        summary.bytes
    );

    let target = scratch.join("restore");
    let extracted =
        archive.extract(&info, &target, &ctx).await.map_err(|e| format!("extract: {}", display_error(&e)))?;
    ensure!(&extracted == summary, "extract returned a summary different from verify's");
    let manifest = extracted_manifest(&target)?;
    ensure!(manifest.metadata == metadata, "the extracted manifest's metadata differs from what was written");
    ensure!(
        manifest.entries.len() == source.len(),
        "the manifest lists {} entries, the source has {}",
        manifest.entries.len(),
        source.len()
    );
    for entry in &manifest.entries {
        ensure!(
            !entry.path.starts_with(WorkingFolder::STATE) && entry.path != "stray.txt",
            "{} was archived; only bitbucket-db, bitbucket-home and bitbucket-data-stores may be",
            entry.path
        );
        match (source.get(&entry.path), entry.kind) {
            (Some(TreeNode::File { size, sha256, .. }), EntryKind::File) => {
                ensure!(
                    entry.size == *size && entry.sha256.as_deref() == Some(sha256.as_str()),
                    "manifest entry {} has size {} sha256 {:?}; the file has {size} and {sha256}",
                    entry.path,
                    entry.size,
                    entry.sha256
                );
            }
            (Some(TreeNode::Folder { .. }), EntryKind::Dir) => {}
            (Some(TreeNode::Symlink { target, .. }), EntryKind::Symlink) => {
                ensure!(
                    entry.link.as_deref() == Some(target.as_str()),
                    "manifest entry {} has link {:?}, expected {target}",
                    entry.path,
                    entry.link
                );
            }
            (node, kind) => {
                return Err(format!("manifest entry {} is a {kind:?}; the source has {node:?}", entry.path));
            }
        }
    }
    compare_trees(working.root(), &target)?;
    ensure!(!target.join(".bitbucket-diy/run.lock").exists(), "the working folder's state folder was restored");
    ensure!(!target.join("stray.txt").exists(), "a file outside the three backed-up folders was restored");

    let occupied = scratch.join("restore-occupied");
    fs::create_dir_all(&occupied).map_err(|e| e.to_string())?;
    fs::write(occupied.join("keep.txt"), b"keep").map_err(|e| e.to_string())?;
    ensure!(archive.extract(&info, &occupied, &ctx).await.is_err(), "extract into a non-empty folder succeeded");
    let names: Vec<_> = fs::read_dir(&occupied).map_err(|e| e.to_string())?.flatten().map(|e| e.file_name()).collect();
    ensure!(names == [std::ffi::OsString::from("keep.txt")], "extract into a non-empty folder changed it: {names:?}");

    make_writable(scratch);
    Ok(())
}

/// The manifest an extraction wrote into `target`, read whole.
pub fn extracted_manifest(target: &Path) -> Result<Manifest, String> {
    let path = target.join(MANIFEST_PATH);
    let json = fs::read(&path).map_err(|e| format!("the extraction wrote no manifest at {}: {e}", path.display()))?;
    serde_json::from_slice(&json).map_err(|e| format!("the extracted manifest {} is invalid: {e}", path.display()))
}

/// Symlinks (to a file, to a folder, dangling) come back as the same symlinks: not followed on
/// write (nothing archived below a folder link), not replaced by copies on extract.
pub async fn symlinks_stored_not_followed(archive: &dyn ArchiveStrategy, scratch: &Path) -> TestResult {
    let working = working_folder(scratch);
    populate_sample_tree(&working)?;
    let id = "conformance-symlinks";
    let (ctx, _events) = recorded_context(&working, id)?;
    let metadata = sample_metadata(id, jiff::Timestamp::now())?;
    let info = archive.write(&working, &metadata, &ctx).await.map_err(|e| format!("write: {}", display_error(&e)))?;
    archive.verify(&info, &ctx).await.map_err(|e| format!("verify: {}", display_error(&e)))?;
    let target = scratch.join("restore");
    archive.extract(&info, &target, &ctx).await.map_err(|e| format!("extract: {}", display_error(&e)))?;
    let manifest = extracted_manifest(&target)?;
    let links = [
        ("bitbucket-home/links/to-file", "../shared/bitbucket.properties"),
        ("bitbucket-home/links/to-folder", "../shared"),
        ("bitbucket-home/links/dangling", "../missing"),
    ];
    for (path, target) in links {
        let entry = manifest.entries.iter().find(|e| e.path == path);
        ensure!(
            entry.is_some_and(|e| e.kind == EntryKind::Symlink
                && e.link.as_deref() == Some(target)
                && e.sha256.is_none()),
            "the manifest records {path} as {entry:?}, expected a symlink to {target}"
        );
    }
    let below_link = manifest.entries.iter().find(|e| e.path.starts_with("bitbucket-home/links/to-folder/"));
    ensure!(below_link.is_none(), "the folder symlink was followed: {below_link:?} was archived");

    for (path, expected) in links {
        let restored = target.join(path);
        let meta = fs::symlink_metadata(&restored).map_err(|e| format!("{path} was not restored: {e}"))?;
        ensure!(meta.file_type().is_symlink(), "{path} was restored as a {:?}, not a symlink", meta.file_type());
        let link = fs::read_link(&restored).map_err(|e| e.to_string())?;
        ensure!(link == Path::new(expected), "{path} points to {}, expected {expected}", link.display());
    }
    make_writable(scratch);
    Ok(())
}

/// A symlink pointing outside the tree (absolute, or climbing out with `..`) may be stored, but
/// `verify` and `extract` refuse it as an unsafe entry, and nothing is written outside the target.
pub async fn escaping_symlinks_are_refused(archive: &dyn ArchiveStrategy, scratch: &Path) -> TestResult {
    let working = working_folder(scratch);
    let outside = scratch.join("outside");
    fs::create_dir_all(&outside).map_err(|e| e.to_string())?;
    fs::write(outside.join("secret.txt"), b"secret").map_err(|e| e.to_string())?;
    let home = working.home_dir();
    fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    fs::write(home.join("ok.txt"), b"ok").map_err(|e| e.to_string())?;
    for (name, link) in [("absolute", outside.to_string_lossy().into_owned()), ("climbing", "../../outside".to_owned())]
    {
        let _ = fs::remove_file(home.join("escape"));
        std::os::unix::fs::symlink(&link, home.join("escape")).map_err(|e| e.to_string())?;
        let id = format!("conformance-escape-{name}");
        let (ctx, _events) = recorded_context(&working, &id)?;
        let metadata = sample_metadata(&id, jiff::Timestamp::now())?;
        // Refusing at write time is conformant too.
        let Ok(info) = archive.write(&working, &metadata, &ctx).await else {
            continue;
        };
        match archive.verify(&info, &ctx).await {
            Err(ArchiveError::UnsafeEntry { .. }) => {}
            other => {
                return Err(format!(
                    "verify of a backup with a symlink to {link} returned {other:?}, expected UnsafeEntry"
                ));
            }
        }
        let target = scratch.join(format!("restore-{name}"));
        match archive.extract(&info, &target, &ctx).await {
            Err(ArchiveError::UnsafeEntry { .. }) => {}
            other => {
                return Err(format!(
                    "extract of a backup with a symlink to {link} returned {other:?}, expected UnsafeEntry"
                ));
            }
        }
        ensure!(absent_or_empty(&target), "the refused extraction left files in {}", target.display());
        let outside_names: Vec<_> =
            fs::read_dir(&outside).map_err(|e| e.to_string())?.flatten().map(|e| e.file_name()).collect();
        ensure!(outside_names.len() == 1, "something was written outside the target: {outside_names:?}");
        ensure!(
            fs::read(outside.join("secret.txt")).map_err(|e| e.to_string())? == b"secret",
            "a file outside the target changed"
        );
        if let Ok(all) = archive.list().await {
            for listed in all.iter().filter(|a| a.metadata.id.as_str() == id) {
                let _ = archive.remove(listed).await;
            }
        }
    }
    Ok(())
}

/// Cancels the token when the first Phase::Archive progress with bytes done arrives.
struct CancelOnProgress {
    token: CancellationToken,
    seen: std::sync::atomic::AtomicBool,
}

impl EventSink for CancelOnProgress {
    fn emit(&self, event: &Event) {
        if let Event::Progress { phase: Phase::Archive, done, .. } = event
            && *done > 0
        {
            self.seen.store(true, std::sync::atomic::Ordering::SeqCst);
            self.token.cancel();
        }
    }
}

/// A write cancelled before it starts, or while it streams, returns `Cancelled`, is not listed,
/// and leaves no file behind (no temporary file, nothing under the final name); a new write of
/// the same backup then succeeds.
pub async fn interrupted_write_leaves_no_archive(archive: &dyn ArchiveStrategy, scratch: &Path) -> TestResult {
    let working = working_folder(scratch);
    populate_sample_tree(&working)?;
    fs::write(working.home_dir().join("big.bin"), pseudo_random_bytes(7, 24 << 20)).map_err(|e| e.to_string())?;
    let id = "conformance-interrupted";
    let metadata = sample_metadata(id, jiff::Timestamp::now())?;

    let check_nothing_left = |what: &str, listed: &[ArchiveInfo]| -> TestResult {
        ensure!(!listed.iter().any(|a| a.metadata.id.as_str() == id), "after {what}, list() shows the backup");
        let left = leftovers(archive.folder(), id);
        ensure!(left.is_empty(), "after {what}, files were left in {}: {left:?}", archive.folder().display());
        Ok(())
    };

    let cancelled = CancellationToken::new();
    cancelled.cancel();
    let ctx = step_context(&working, id, Arc::new(RecordedEvents::new()), cancelled)?;
    match archive.write(&working, &metadata, &ctx).await {
        Err(ArchiveError::Cancelled) => {}
        other => {
            return Err(format!("a write with the run already cancelled returned {other:?}, expected Cancelled"));
        }
    }
    check_nothing_left("a cancelled write", &archive.list().await.map_err(|e| display_error(&e))?)?;

    let token = CancellationToken::new();
    let sink = Arc::new(CancelOnProgress { token: token.clone(), seen: false.into() });
    let ctx = step_context(&working, id, sink.clone(), token)?;
    let outcome = archive.write(&working, &metadata, &ctx).await;
    ensure!(
        sink.seen.load(std::sync::atomic::Ordering::SeqCst),
        "write reported no Phase::Archive progress with bytes done, so it could not be interrupted ({outcome:?})"
    );
    match outcome {
        Err(ArchiveError::Cancelled) => {}
        other => {
            return Err(format!("a write cancelled while streaming returned {other:?}, expected Cancelled"));
        }
    }
    check_nothing_left("a write cancelled while streaming", &archive.list().await.map_err(|e| display_error(&e))?)?;

    let (ctx, _events) = recorded_context(&working, id)?;
    let info = archive
        .write(&working, &metadata, &ctx)
        .await
        .map_err(|e| format!("writing again after the interrupted write: {}", display_error(&e)))?;
    archive.verify(&info, &ctx).await.map_err(|e| format!("verify after rewriting: {}", display_error(&e)))?;
    make_writable(scratch);
    Ok(())
}

/// Three backups an hour apart: `list` is newest first; `prune(2)` removes exactly what is
/// listed after the newest two (the trait's provided `prune`), and `prune(0)` removes nothing.
pub async fn retention_keeps_newest(archive: &dyn ArchiveStrategy, scratch: &Path) -> TestResult {
    let working = working_folder(scratch);
    fs::create_dir_all(working.home_dir()).map_err(|e| e.to_string())?;
    let now = jiff::Timestamp::now();
    let mut written = Vec::new();
    for (i, hours_ago) in [(1, 2), (2, 1), (3, 0)] {
        fs::write(working.home_dir().join("generation.txt"), format!("{i}\n")).map_err(|e| e.to_string())?;
        let id = format!("conformance-retention-{i}");
        let created = now.checked_sub(jiff::SignedDuration::from_hours(hours_ago)).map_err(|e| e.to_string())?;
        let (ctx, _events) = recorded_context(&working, &id)?;
        let info = archive
            .write(&working, &sample_metadata(&id, created)?, &ctx)
            .await
            .map_err(|e| format!("write {id}: {}", display_error(&e)))?;
        written.push(info);
    }
    let listed = archive.list().await.map_err(|e| display_error(&e))?;
    ensure!(!listed.is_empty(), "list() is empty after three writes");
    ensure!(
        listed[0].metadata.id.as_str() == "conformance-retention-3",
        "list() does not start with the newest backup: {listed:?}"
    );
    ensure!(
        listed.windows(2).all(|w| w[0].metadata.created_at >= w[1].metadata.created_at),
        "list() is not newest first: {:?}",
        listed.iter().map(|a| a.metadata.id.to_string()).collect::<Vec<_>>()
    );
    ensure!(archive.prune(0).await.map_err(|e| display_error(&e))?.is_empty(), "prune(0) removed archives");
    let removed = archive.prune(2).await.map_err(|e| format!("prune(2): {}", display_error(&e)))?;
    let expected_removed: Vec<_> = listed.iter().skip(2).cloned().collect();
    ensure!(removed == expected_removed, "prune(2) removed {removed:?}, expected {expected_removed:?}");
    let after = archive.list().await.map_err(|e| display_error(&e))?;
    let expected_kept: Vec<_> = listed.iter().take(2).cloned().collect();
    ensure!(after == expected_kept, "after prune(2) list() is {after:?}, expected {expected_kept:?}");
    for gone in &removed {
        ensure!(!gone.path.exists(), "{} still exists after prune", gone.path.display());
    }
    ensure!(after.iter().any(|a| a.path == written[2].path), "prune removed the newest backup");
    Ok(())
}

/// Flips one byte of the stored backup (in the middle of an archive file, or of the largest
/// file of a backup kept as a folder): `verify` fails with `Corrupt` or `Mismatch`, and
/// `extract` fails without leaving files in its target.
pub async fn verify_detects_corruption(archive: &dyn ArchiveStrategy, scratch: &Path) -> TestResult {
    damaged_backup_is_refused(archive, scratch, "corruption", Damage::FlipByte).await
}

/// Cuts the stored backup short (an archive file to 60% of its size; a backup kept as a folder
/// loses a file): `verify` and `extract` fail, and the extraction target is left empty.
pub async fn verify_detects_truncation(archive: &dyn ArchiveStrategy, scratch: &Path) -> TestResult {
    damaged_backup_is_refused(archive, scratch, "truncation", Damage::Truncate).await
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    FlipByte,
    Truncate,
}

async fn damaged_backup_is_refused(
    archive: &dyn ArchiveStrategy,
    scratch: &Path,
    name: &str,
    damage: Damage,
) -> TestResult {
    let working = working_folder(scratch);
    populate_sample_tree(&working)?;
    let id = format!("conformance-{name}");
    let (ctx, _events) = recorded_context(&working, &id)?;
    let info = archive
        .write(&working, &sample_metadata(&id, jiff::Timestamp::now())?, &ctx)
        .await
        .map_err(|e| format!("write: {}", display_error(&e)))?;
    archive.verify(&info, &ctx).await.map_err(|e| format!("verify before damage: {}", display_error(&e)))?;

    let victim = if info.path.is_file() { info.path.clone() } else { largest_file(working.root())? };
    let len = fs::metadata(&victim).map_err(|e| e.to_string())?.len();
    match damage {
        Damage::FlipByte => {
            let mut file = fs::OpenOptions::new().read(true).write(true).open(&victim).map_err(|e| e.to_string())?;
            let mut byte = [0u8; 1];
            file.seek(SeekFrom::Start(len / 2)).map_err(|e| e.to_string())?;
            file.read_exact(&mut byte).map_err(|e| e.to_string())?;
            byte[0] ^= 0xff;
            file.seek(SeekFrom::Start(len / 2)).map_err(|e| e.to_string())?;
            file.write_all(&byte).map_err(|e| e.to_string())?;
        }
        Damage::Truncate if info.path.is_file() => {
            fs::OpenOptions::new()
                .write(true)
                .open(&victim)
                .and_then(|f| f.set_len(len * 6 / 10))
                .map_err(|e| e.to_string())?;
        }
        Damage::Truncate => fs::remove_file(&victim).map_err(|e| e.to_string())?,
    }

    match archive.verify(&info, &ctx).await {
        Err(ArchiveError::Corrupt { .. } | ArchiveError::Mismatch { .. } | ArchiveError::MissingManifest { .. }) => {}
        other => {
            return Err(format!("verify after {name} of {} returned {other:?}", victim.display()));
        }
    }
    let target = scratch.join("restore");
    match archive.extract(&info, &target, &ctx).await {
        Err(
            ArchiveError::Corrupt { .. }
            | ArchiveError::Mismatch { .. }
            | ArchiveError::MissingManifest { .. }
            | ArchiveError::UnsafeEntry { .. },
        ) => {}
        other => return Err(format!("extract after {name} returned {other:?}")),
    }
    ensure!(absent_or_empty(&target), "the failed extraction left files in {}", target.display());
    make_writable(scratch);
    Ok(())
}

fn largest_file(root: &Path) -> Result<PathBuf, String> {
    tree_snapshot(root)?
        .into_iter()
        .filter_map(|(rel, node)| match node {
            TreeNode::File { size, .. } => Some((size, rel)),
            _ => None,
        })
        .max()
        .map(|(_, rel)| root.join(rel))
        .ok_or_else(|| "the sample tree has no file".to_owned())
}

/// Runs every check, each in `<scratch>/<check name>` with a strategy from `make`; returns every
/// failure, one per line.
pub async fn run_all(make: impl Fn(&Path) -> Box<dyn ArchiveStrategy>, scratch: &Path) -> TestResult {
    let mut failures = Vec::new();
    macro_rules! check {
        ($name:ident) => {{
            let dir = scratch.join(stringify!($name));
            let outcome = match fs::create_dir_all(&dir) {
                Ok(()) => {
                    let archive = make(&dir);
                    $name(archive.as_ref(), &dir).await
                }
                Err(e) => Err(format!("creating {}: {e}", dir.display())),
            };
            if let Err(message) = outcome {
                failures.push(format!("{}: {message}", stringify!($name)));
            }
        }};
    }
    check!(roundtrip);
    check!(symlinks_stored_not_followed);
    check!(escaping_symlinks_are_refused);
    check!(interrupted_write_leaves_no_archive);
    check!(retention_keeps_newest);
    check!(verify_detects_corruption);
    check!(verify_detects_truncation);
    if failures.is_empty() { Ok(()) } else { Err(failures.join("\n")) }
}
