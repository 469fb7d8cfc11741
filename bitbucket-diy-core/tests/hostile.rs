//! Hostile and malformed input: archives (fuzzed), manifests (fuzzed), server answers,
//! configurations, vars files and restore targets. Each is refused with a typed error that names
//! the problem, never a panic, and nothing is written where it must not be.
//!
//! The hand-built hostile archives (`..`, absolute paths, escaping symlinks, hard links, devices,
//! huge declared sizes, truncations, duplicates) are in `tests/archive.rs`; here random mutations
//! of a valid archive look for what a hand-written list misses. `PROPTEST_CASES` raises the number
//! of cases of each property (128 by default).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bitbucket_diy_core::archive_format::{BackupMetadata, Manifest, ManifestSummary};
use bitbucket_diy_core::client::{CancelToken, ClientError, DrainOptions, MaintenanceClient, UnlockToken};
use bitbucket_diy_core::config::InstanceType;
use bitbucket_diy_core::events::NoEvents;
use bitbucket_diy_core::orchestrator::{BackupOrchestrator, RestoreRequest};
use bitbucket_diy_core::strategy::archive::{NoArchive, TarZstdArchive};
use bitbucket_diy_core::strategy::conformance::archive as conformance;
use bitbucket_diy_core::strategy::database::PostgresDatabase;
use bitbucket_diy_core::strategy::filesystem::NativeCopy;
use bitbucket_diy_core::strategy::{ArchiveInfo, ArchiveStrategy, StepContext, WorkingFolder};
use bitbucket_diy_core::{BackupConfig, ErrorKind};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use support::common::postgres as pg;
use support::{Bench, PgDatabase};
use tokio_util::sync::CancellationToken;

// =============================================================================================
// Archives, fuzzed

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
}

fn runner() -> TestRunner {
    TestRunner::new(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })
}

/// One valid archive of the conformance sample tree (long names, symlinks, empty folders, modes),
/// its decompressed tar stream and where its source is.
struct Fixture {
    _dir: tempfile::TempDir,
    source: WorkingFolder,
    metadata: BackupMetadata,
    compressed: Vec<u8>,
    tar: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let source = conformance::working_folder(dir.path());
        conformance::populate_sample_tree(&source).unwrap();
        let metadata = conformance::sample_metadata("fuzz", jiff::Timestamp::now()).unwrap();
        let archive = TarZstdArchive::new(dir.path().join("archives"), 3, 1);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let info = runtime.block_on(archive.write(&source, &metadata, &context(&source))).unwrap();
        let compressed = std::fs::read(&info.path).unwrap();
        let tar = zstd::decode_all(&compressed[..]).unwrap();
        let headers = header_offsets(&tar).len();
        assert!(headers > 10, "the sample archive has {headers} entries");
        Fixture { _dir: dir, source, metadata, compressed, tar }
    })
}

fn context(working: &WorkingFolder) -> StepContext {
    StepContext::new("fuzz".parse().unwrap(), working.clone(), Arc::new(NoEvents), CancellationToken::new())
}

/// Where each entry's header block starts (GNU long-name blocks count as entries of their own).
fn header_offsets(tar: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|b| *b != 0) {
        offsets.push(at);
        // A forged size ends the walk: what follows is no longer where the header says.
        let Ok(size) = tar::Header::from_byte_slice(&tar[at..at + 512]).entry_size() else { break };
        match usize::try_from(size.div_ceil(512).saturating_mul(512)).ok().and_then(|n| at.checked_add(512 + n)) {
            Some(next) => at = next,
            None => break,
        }
    }
    offsets
}

/// A random change to bytes: of the compressed file, or of the tar stream inside it.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(Index),
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Overwrite(Index, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<Index>().prop_map(Damage::Truncate),
        (any::<Index>(), 1..=255u8).prop_map(|(at, mask)| Damage::Flip(at, mask)),
        (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..1024)).prop_map(|(at, b)| Damage::Insert(at, b)),
        (any::<Index>(), 1..4096usize).prop_map(|(at, len)| Damage::Delete(at, len)),
        (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..600)).prop_map(|(at, b)| Damage::Overwrite(at, b)),
    ]
}

fn apply(bytes: &[u8], damage: &Damage) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if bytes.is_empty() {
        return out;
    }
    match damage {
        Damage::Truncate(at) => out.truncate(at.index(bytes.len())),
        Damage::Flip(at, mask) => out[at.index(bytes.len())] ^= mask,
        Damage::Insert(at, extra) => {
            let at = at.index(bytes.len() + 1);
            out.splice(at..at, extra.iter().copied());
        }
        Damage::Delete(at, len) => {
            let at = at.index(bytes.len());
            out.drain(at..(at + len).min(bytes.len()));
        }
        Damage::Overwrite(at, with) => {
            let at = at.index(bytes.len());
            let end = (at + with.len()).min(bytes.len());
            out[at..end].copy_from_slice(&with[..end - at]);
        }
    }
    out
}

/// A forged header field, checksum recomputed: what a tampered or badly written archive holds.
#[derive(Debug, Clone)]
enum Forgery {
    Name(usize),
    LinkName(usize),
    Size(u64),
    Kind(u8),
    Mode(u32),
    Mtime(u64),
}

/// Names and link targets an attacker would try. `{OUTSIDE}` is the absolute path of a folder
/// beside the extraction target.
const HOSTILE_PATHS: &[&str] = &[
    "../escape.txt",
    "bitbucket-home/../../escape.txt",
    "bitbucket-home/a/../../../escape.txt",
    "{OUTSIDE}/absolute.txt",
    "/etc/bitbucket-diy-fuzz",
    "../outside/secret",
    "{OUTSIDE}/secret",
    ".bitbucket-diy/manifest.json",
    ".bitbucket-diy/backup.json",
    "bitbucket-home",
    "bitbucket-home/link",
    "bitbucket-db",
    "",
    ".",
    "..",
    "./bitbucket-home/x",
    "bitbucket-home//double",
    "bitbucket-home/\u{1b}[31m",
    "stray.txt",
];

fn forgery() -> impl Strategy<Value = (Index, Forgery)> {
    let field = prop_oneof![
        (0..HOSTILE_PATHS.len()).prop_map(Forgery::Name),
        (0..HOSTILE_PATHS.len()).prop_map(Forgery::LinkName),
        prop_oneof![Just(0u64), 1..4096u64, Just(1 << 33), Just(u64::MAX / 2), any::<u64>()].prop_map(Forgery::Size),
        prop_oneof![
            Just(b'0'),
            Just(b'1'),
            Just(b'2'),
            Just(b'3'),
            Just(b'4'),
            Just(b'5'),
            Just(b'6'),
            Just(b'7'),
            Just(b'x'),
            Just(b'g'),
            Just(b'L'),
            Just(b'K'),
            any::<u8>()
        ]
        .prop_map(Forgery::Kind),
        any::<u32>().prop_map(Forgery::Mode),
        any::<u64>().prop_map(Forgery::Mtime),
    ];
    (any::<Index>(), field)
}

fn forge(tar: &[u8], headers: &[usize], (which, forgery): &(Index, Forgery), outside: &Path) -> Vec<u8> {
    let mut out = tar.to_vec();
    let at = headers[which.index(headers.len())];
    let mut header = tar::Header::new_old();
    header.as_mut_bytes().copy_from_slice(&out[at..at + 512]);
    let path = |i: usize| HOSTILE_PATHS[i].replace("{OUTSIDE}", &outside.display().to_string()).into_bytes();
    let set_bytes = |slot: &mut [u8], value: &[u8]| {
        slot.fill(0);
        let n = value.len().min(slot.len());
        slot[..n].copy_from_slice(&value[..n]);
    };
    match forgery {
        Forgery::Name(i) => set_bytes(&mut header.as_old_mut().name, &path(*i)),
        Forgery::LinkName(i) => set_bytes(&mut header.as_old_mut().linkname, &path(*i)),
        Forgery::Size(size) => header.set_size(*size),
        Forgery::Kind(kind) => header.as_old_mut().linkflag[0] = *kind,
        Forgery::Mode(mode) => header.set_mode(*mode),
        Forgery::Mtime(mtime) => header.set_mtime(*mtime),
    }
    header.set_cksum();
    out[at..at + 512].copy_from_slice(header.as_bytes());
    out
}

/// How much of the tree a successful extraction must reproduce.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fidelity {
    /// Everything: content, kinds, link targets, modes and mtimes.
    Exact,
    /// Paths, kinds, content and link targets: a forged header with a valid checksum can change
    /// modes and mtimes, which the manifest does not record.
    Content,
}

/// Verify and extract `bytes` as a `.tar.zst` archive in a fresh sandbox: never a panic; a success
/// reproduces the source; a failure leaves the target absent; nothing appears outside the target.
fn check_archive(runtime: &tokio::runtime::Runtime, bytes: &[u8], fidelity: Fidelity) -> Result<bool, TestCaseError> {
    let fx = fixture();
    let sandbox = tempfile::tempdir().unwrap();
    let outside = sandbox.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    check_archive_in(runtime, bytes, fidelity, sandbox.path(), &outside, fx)
}

fn check_archive_in(
    runtime: &tokio::runtime::Runtime,
    bytes: &[u8],
    fidelity: Fidelity,
    sandbox: &Path,
    outside: &Path,
    fx: &Fixture,
) -> Result<bool, TestCaseError> {
    let folder = sandbox.join("archives");
    std::fs::create_dir(&folder).unwrap();
    let path = folder.join("fuzz.tar.zst");
    std::fs::write(&path, bytes).unwrap();
    let archive = TarZstdArchive::new(folder.clone(), 3, 1);
    let info = ArchiveInfo { metadata: fx.metadata.clone(), path: path.clone(), bytes: bytes.len() as u64 };
    let working = WorkingFolder::new(sandbox.join("working"));
    let target = sandbox.join("target");
    let (verified, extracted) = runtime.block_on(async {
        let ctx = context(&working);
        // Spawned, so a panic is reported as such rather than unwinding through the runner.
        let verified = tokio::spawn({
            let (archive, info, ctx) = (archive.clone(), info.clone(), ctx.clone());
            async move { archive.verify(&info, &ctx).await.map(drop) }
        })
        .await;
        let extracted = tokio::spawn({
            let (archive, info, target) = (archive.clone(), info.clone(), target.clone());
            async move { archive.extract(&info, &target, &ctx).await.map(drop) }
        })
        .await;
        (verified, extracted)
    });
    let verified = verified.map_err(|e| TestCaseError::fail(format!("verify panicked: {e}")))?;
    let extracted = extracted.map_err(|e| TestCaseError::fail(format!("extract panicked: {e}")))?;

    match &extracted {
        Ok(()) => {
            match fidelity {
                Fidelity::Exact => conformance::compare_trees(fx.source.root(), &target),
                Fidelity::Content => same_content(fx.source.root(), &target),
            }
            .map_err(|e| TestCaseError::fail(format!("extract succeeded with a different tree: {e}")))?;
            prop_assert!(verified.is_ok(), "extract succeeded but verify failed: {verified:?}");
        }
        Err(e) => {
            prop_assert!(!target.exists(), "a failed extraction ({e}) left {}", target.display());
        }
    }
    // Nothing but the archive, the canary and the target (and what the context may create).
    let mut stray = Vec::new();
    for entry in walkdir::WalkDir::new(sandbox).min_depth(1).into_iter().filter_map(Result::ok) {
        let p = entry.path();
        let allowed = p == folder
            || p == path
            || p == outside
            || p == outside.join("secret")
            || p.starts_with(&target)
            || p.starts_with(working.root());
        if !allowed {
            stray.push(p.display().to_string());
        }
    }
    prop_assert!(stray.is_empty(), "written outside the target: {stray:?}");
    prop_assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret".to_vec());
    prop_assert!(std::fs::symlink_metadata("/etc/bitbucket-diy-fuzz").is_err(), "wrote an absolute path");
    if let Some(parent) = sandbox.parent() {
        prop_assert!(std::fs::symlink_metadata(parent.join("escape.txt")).is_err(), "wrote above the sandbox");
    }
    Ok(extracted.is_ok())
}

/// How the cases of a property ended, printed so a run shows both outcomes were exercised.
#[derive(Default)]
struct Tally {
    extracted: std::sync::atomic::AtomicUsize,
    refused: std::sync::atomic::AtomicUsize,
}

impl Tally {
    fn count(&self, extracted: Result<bool, TestCaseError>) -> Result<(), TestCaseError> {
        let slot = if extracted? { &self.extracted } else { &self.refused };
        slot.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn report(&self, property: &str) {
        let (ok, refused) = (self.extracted.relaxed(), self.refused.relaxed());
        eprintln!("{property}: {} cases: {ok} extracted identical to the source, {refused} refused", ok + refused);
        assert!(refused > 0, "{property}: no case was refused; the mutations are not reaching the reader");
    }
}

trait Relaxed {
    fn relaxed(&self) -> usize;
}

impl Relaxed for std::sync::atomic::AtomicUsize {
    fn relaxed(&self) -> usize {
        self.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The archived folders hold the same paths, kinds, content and link targets.
fn same_content(source: &Path, restored: &Path) -> Result<(), String> {
    let strip = |root: &Path| -> Result<Vec<(String, String)>, String> {
        Ok(conformance::tree_snapshot(root)?
            .into_iter()
            .map(|(path, node)| {
                let text = match node {
                    conformance::TreeNode::Folder { .. } => "folder".to_owned(),
                    conformance::TreeNode::File { size, sha256, .. } => format!("file {size} {sha256}"),
                    conformance::TreeNode::Symlink { target, .. } => format!("symlink {target}"),
                };
                (path, text)
            })
            .collect())
    };
    let (a, b) = (strip(source)?, strip(restored)?);
    if a == b { Ok(()) } else { Err(format!("{} entries in the source, {} restored, or differing", a.len(), b.len())) }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn the_unchanged_fixture_round_trips() {
    // The properties below mean something only if the undamaged archive passes the same check.
    assert!(check_archive(&runtime(), &fixture().compressed, Fidelity::Exact).unwrap());
    let recompressed = zstd::encode_all(&fixture().tar[..], 3).unwrap();
    assert!(check_archive(&runtime(), &recompressed, Fidelity::Exact).unwrap());
}

#[test]
fn damaged_compressed_archives_are_refused_or_exact() {
    let (runtime, tally) = (runtime(), Tally::default());
    runner()
        .run(&proptest::collection::vec(damage(), 1..4), |damages| {
            let bytes = damages.iter().fold(fixture().compressed.clone(), |b, d| apply(&b, d));
            tally.count(check_archive(&runtime, &bytes, Fidelity::Exact))
        })
        .unwrap();
    tally.report("damaged compressed archives");
}

#[test]
fn damaged_tar_streams_are_refused_or_exact() {
    let (runtime, tally) = (runtime(), Tally::default());
    runner()
        .run(&proptest::collection::vec(damage(), 1..3), |damages| {
            let tar = damages.iter().fold(fixture().tar.clone(), |b, d| apply(&b, d));
            let bytes = zstd::encode_all(&tar[..], 1).unwrap();
            // A raw change may hit a mode or mtime field and fix the checksum by chance: rare, and
            // within what the manifest promises.
            tally.count(check_archive(&runtime, &bytes, Fidelity::Content))
        })
        .unwrap();
    tally.report("damaged tar streams");
}

#[test]
fn forged_tar_headers_are_refused_or_harmless() {
    let (runtime, tally) = (runtime(), Tally::default());
    runner()
        .run(&proptest::collection::vec(forgery(), 1..3), |forgeries| {
            let fx = fixture();
            let sandbox = tempfile::tempdir().unwrap();
            let outside = sandbox.path().join("outside");
            std::fs::create_dir(&outside).unwrap();
            std::fs::write(outside.join("secret"), b"secret").unwrap();
            let mut tar = fx.tar.clone();
            for forgery in &forgeries {
                let headers = header_offsets(&tar);
                if headers.is_empty() {
                    break;
                }
                tar = forge(&tar, &headers, forgery, &outside);
            }
            let bytes = zstd::encode_all(&tar[..], 1).unwrap();
            tally.count(check_archive_in(&runtime, &bytes, Fidelity::Content, sandbox.path(), &outside, fx))
        })
        .unwrap();
    tally.report("forged tar headers");
}

// =============================================================================================
// Manifests, fuzzed

fn sample_manifest() -> (Manifest, Vec<u8>) {
    let fx = fixture();
    let runtime = runtime();
    let folder = fx.source.root().parent().unwrap().join("archives");
    let archive = TarZstdArchive::new(folder, 3, 1);
    let info = runtime.block_on(archive.list()).unwrap().remove(0);
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("restore");
    runtime.block_on(archive.extract(&info, &target, &context(&fx.source))).unwrap();
    let manifest = bitbucket_diy_core::strategy::conformance::archive::extracted_manifest(&target).unwrap();
    let json = serde_json::to_vec_pretty(&manifest).unwrap();
    (manifest, json)
}

/// Parse as the readers do, then use what was parsed: no panic, whatever the bytes.
fn parse_and_use(bytes: &[u8], reference: &Manifest) {
    if let Ok(parsed) = serde_json::from_slice::<Manifest>(bytes) {
        let _ = parsed.total_bytes();
        let _ = parsed.file_count();
        let _ = parsed.first_difference(&reference.entries);
        let _ = reference.first_difference(&parsed.entries);
        let _ = serde_json::to_vec(&parsed).unwrap();
    }
    let _ = serde_json::from_slice::<BackupMetadata>(bytes);
}

#[test]
fn arbitrary_bytes_never_panic_the_manifest_parser() {
    let (reference, _) = sample_manifest();
    runner()
        .run(&proptest::collection::vec(any::<u8>(), 0..4096), |bytes| {
            parse_and_use(&bytes, &reference);
            Ok(())
        })
        .unwrap();
}

#[test]
fn damaged_manifests_never_panic_the_parser() {
    let (reference, json) = sample_manifest();
    runner()
        .run(&proptest::collection::vec(damage(), 1..4), |damages| {
            let bytes = damages.iter().fold(json.clone(), |b, d| apply(&b, d));
            parse_and_use(&bytes, &reference);
            Ok(())
        })
        .unwrap();
}

#[test]
fn manifests_with_forged_numbers_never_panic() {
    let (reference, json) = sample_manifest();
    let text = String::from_utf8(json).unwrap();
    let numbers = prop_oneof![
        Just("18446744073709551615".to_owned()),
        Just("-1".to_owned()),
        Just("1e400".to_owned()),
        Just("0.5".to_owned()),
        Just("99999999999999999999999".to_owned()),
        any::<u64>().prop_map(|n| n.to_string()),
    ];
    runner()
        .run(&(numbers, any::<Index>()), |(number, which)| {
            let sizes: Vec<_> = text.match_indices("\"size\": ").collect();
            let (at, key) = sizes[which.index(sizes.len())];
            let start = at + key.len();
            let end = start + text[start..].find([',', '\n', '}']).unwrap();
            let forged = format!("{}{number}{}", &text[..start], &text[end..]);
            // Every size at once, too: the total must not overflow.
            let all = text
                .lines()
                .map(|l| {
                    if l.trim_start().starts_with("\"size\": ") { format!("\"size\": {number},") } else { l.to_owned() }
                })
                .collect::<Vec<_>>()
                .join("\n");
            parse_and_use(forged.as_bytes(), &reference);
            parse_and_use(all.as_bytes(), &reference);
            Ok(())
        })
        .unwrap();
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    for depth in [200, 10_000, 100_000] {
        let bytes = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(serde_json::from_slice::<Manifest>(bytes.as_bytes()).is_err());
        let nested = format!("{{\"metadata\": {}{}, \"entries\": []}}", "{\"a\":".repeat(depth), "}".repeat(depth));
        assert!(serde_json::from_slice::<Manifest>(nested.as_bytes()).is_err());
    }
}

/// A `none` backup's manifest is read from disk before anything is checked: a forged one (sizes
/// that overflow a sum) is an error from list, verify and extract, never a panic.
#[tokio::test]
async fn a_forged_manifest_in_a_none_backup_is_refused_without_panic() {
    let scratch = tempfile::tempdir().unwrap();
    let working = conformance::working_folder(scratch.path());
    conformance::populate_sample_tree(&working).unwrap();
    let archive = NoArchive::new(working.clone());
    let metadata = conformance::sample_metadata("forged", jiff::Timestamp::now()).unwrap();
    let info = archive.write(&working, &metadata, &context(&working)).await.unwrap();
    let manifest_path = working.state_dir().join("manifest.json");
    let mut manifest: Manifest = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    for entry in manifest.entries.iter_mut().filter(|e| e.sha256.is_some()) {
        entry.size = u64::MAX;
    }
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    let listed = archive.list().await.expect("list survives a forged manifest");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].bytes, u64::MAX, "the claimed total saturates");
    let err = archive.verify(&info, &context(&working)).await.unwrap_err();
    assert!(err.to_string().contains("bytes"), "{err}");
    let target = scratch.path().join("target");
    let err = archive.extract(&info, &target, &context(&working)).await.unwrap_err();
    assert!(matches!(err, bitbucket_diy_core::ArchiveError::Mismatch { .. }), "{err}");
    assert!(!target.exists());
}

// =============================================================================================
// Server answers

/// A server that answers every request with whatever the test sets: raw bytes, so answers can be
/// malformed at the HTTP level too.
struct HostileServer {
    url: String,
    reply: Arc<Mutex<Reply>>,
}

#[derive(Clone)]
enum Reply {
    Raw(Vec<u8>),
    /// A chunked JSON body that never ends.
    Endless,
}

impl HostileServer {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/bitbucket", listener.local_addr().unwrap());
        let reply = Arc::new(Mutex::new(Reply::Raw(Vec::new())));
        std::thread::spawn({
            let reply = reply.clone();
            move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let reply = reply.lock().unwrap().clone();
                    std::thread::spawn(move || {
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                            head.push(byte[0]);
                        }
                        match reply {
                            Reply::Raw(bytes) => {
                                let _ = stream.write_all(&bytes);
                            }
                            Reply::Endless => {
                                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                                            Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
                                let _ = stream.write_all(head.as_bytes());
                                let _ = stream.write_all(b"1\r\n[\r\n");
                                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
                                while stream.write_all(chunk.as_bytes()).is_ok() {}
                            }
                        }
                    });
                }
            }
        });
        Self { url, reply }
    }

    fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    fn client(&self) -> MaintenanceClient {
        MaintenanceClient::builder(&self.url)
            .credentials("admin", "Hostile-Pw-0sel")
            .request_timeout(Duration::from_secs(5))
            .retries(1, Duration::from_millis(1))
            .build()
            .unwrap()
    }
}

fn http(status: &str, content_type: &str, body: &[u8]) -> Reply {
    let mut bytes = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    Reply::Raw(bytes)
}

fn json(status: &str, body: &str) -> Reply {
    http(status, "application/json;charset=UTF-8", body.as_bytes())
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Debug, Clone, Copy)]
enum Call {
    Properties,
    Status,
    Lock,
    Start,
    State,
    Drain,
    Progress,
    Cancel,
    Unlock,
}

/// What came back: `Ok` with a short description, or the error.
async fn call(client: &MaintenanceClient, call: Call) -> Result<String, ClientError> {
    let token = UnlockToken::new(TOKEN);
    match call {
        Call::Properties => client.application_properties().await.map(|p| p.version),
        Call::Status => client.status().await.map(|s| s.state.to_string()),
        Call::Lock => client.lock().await.map(|l| l.into_token().expose_secret().len().to_string()),
        Call::Start => client.start_backup(&token).await.map(|t| t.id.unwrap_or_default()),
        Call::State => client.maintenance_state(&token).await.map(|s| format!("{} {}", s.db_state, s.scm_state)),
        Call::Drain => {
            let options =
                DrainOptions { poll_interval: Duration::from_millis(10), timeout: Duration::from_millis(300) };
            client.wait_drained(&token, &options, &CancellationToken::new(), |_| {}).await.map(|_| "drained".into())
        }
        Call::Progress => client.report_progress(&token, 50).await.map(|()| "reported".into()),
        Call::Cancel => client.cancel_backup(&CancelToken::new(TOKEN)).await.map(|()| "cancelled".into()),
        Call::Unlock => client.unlock(&token).await.map(|()| "unlocked".into()),
    }
}

const JSON_CALLS: [Call; 5] = [Call::Properties, Call::Status, Call::Lock, Call::Start, Call::State];
const ALL_CALLS: [Call; 9] = [
    Call::Properties,
    Call::Status,
    Call::Lock,
    Call::Start,
    Call::State,
    Call::Drain,
    Call::Progress,
    Call::Cancel,
    Call::Unlock,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_server_answers_are_typed_errors() {
    let server = HostileServer::start();
    let client = server.client();
    let login_page: &[u8] = b"<!DOCTYPE html><html><head><title>Log in</title></head><body><form></form></body></html>";
    let nested = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let huge_string = format!("{{\"version\": \"{}\"}}", "8".repeat(2 << 20));
    let long_token = format!("{{\"unlockToken\": \"{}\"}}", "a".repeat(10_000));
    let echo = format!("{{\"errors\":[{{\"message\":\"token {TOKEN} is stale; password Hostile-Pw-0sel\"}}]}}");
    use ErrorKind as K;
    let mut cases: Vec<(String, Call, Reply, Result<&str, ErrorKind>)> = Vec::new();
    for c in JSON_CALLS {
        let invalid = Err(K::InvalidResponse);
        cases.extend([
            (format!("{c:?}: empty 200"), c, json("200 OK", ""), invalid),
            (format!("{c:?}: {{}}"), c, json("200 OK", "{}"), invalid),
            (format!("{c:?}: null"), c, json("200 OK", "null"), invalid),
            (format!("{c:?}: []"), c, json("200 OK", "[]"), invalid),
            (format!("{c:?}: a string"), c, json("200 OK", "\"ok\""), invalid),
            (format!("{c:?}: a number"), c, json("200 OK", "42"), invalid),
            (format!("{c:?}: truncated"), c, json("200 OK", "{\"version\": \"8."), invalid),
            (format!("{c:?}: invalid UTF-8"), c, http("200 OK", "application/json", b"{\"a\": \"\xff\xfe\"}"), invalid),
            (format!("{c:?}: 50 000 nested arrays"), c, json("200 OK", &nested), invalid),
            (format!("{c:?}: 2 MiB answer"), c, json("200 OK", &huge_string), invalid),
            (format!("{c:?}: endless answer"), c, Reply::Endless, invalid),
            (format!("{c:?}: login page as JSON"), c, http("200 OK", "application/json", login_page), Err(K::NotFound)),
            (format!("{c:?}: login page"), c, http("200 OK", "text/html", login_page), Err(K::NotFound)),
            (format!("{c:?}: redirect elsewhere"), c, {
                let mut r = b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere.invalid/login\r\n".to_vec();
                r.extend_from_slice(b"Content-Length: 0\r\nConnection: close\r\n\r\n");
                Reply::Raw(r)
            }, Err(K::NotFound)),
            (format!("{c:?}: 500 HTML"), c, http("500 Internal Server Error", "text/html", login_page), Err(K::Server)),
            (format!("{c:?}: not HTTP"), c, Reply::Raw(b"HELLO THERE\r\n\r\n".to_vec()), Err(K::Transport)),
            (format!("{c:?}: body shorter than declared"), c, Reply::Raw(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"a\":".to_vec(),
            ), Err(K::Transport)),
            (format!("{c:?}: nothing at all"), c, Reply::Raw(Vec::new()), Err(K::Transport)),
        ]);
    }
    cases.extend([
        (
            "version of the wrong type".into(),
            Call::Properties,
            json("200 OK", "{\"version\": 8}"),
            Err(K::InvalidResponse),
        ),
        (
            "unknown instance state".into(),
            Call::Status,
            json("200 OK", "{\"state\": \"FROBNICATING\"}"),
            Ok("FROBNICATING"),
        ),
        ("state of the wrong type".into(), Call::Status, json("200 OK", "{\"state\": 5}"), Err(K::InvalidResponse)),
        (
            "unlock token a number".into(),
            Call::Lock,
            json("202 Accepted", "{\"unlockToken\": 123}"),
            Err(K::InvalidResponse),
        ),
        (
            "unlock token null".into(),
            Call::Lock,
            json("202 Accepted", "{\"unlockToken\": null}"),
            Err(K::InvalidResponse),
        ),
        (
            "unlock token with shell code".into(),
            Call::Lock,
            json("202 Accepted", "{\"unlockToken\": \"abc'; rm -rf / #\"}"),
            Err(K::InvalidResponse),
        ),
        ("unlock token 10 000 long".into(), Call::Lock, json("202 Accepted", &long_token), Err(K::InvalidResponse)),
        (
            "owner not an object".into(),
            Call::Lock,
            json("202 Accepted", "{\"unlockToken\": \"ab\", \"owner\": 7}"),
            Err(K::InvalidResponse),
        ),
        ("lock refused with garbage".into(), Call::Lock, json("409 Conflict", "<<<>>>"), Err(K::AlreadyLocked)),
        ("cancel token missing".into(), Call::Start, json("202 Accepted", "{\"id\": 1}"), Err(K::InvalidResponse)),
        (
            "percentage out of range".into(),
            Call::Start,
            json("202 Accepted", "{\"cancelToken\": \"ab\", \"progress\": {\"percentage\": 1000}}"),
            Err(K::InvalidResponse),
        ),
        (
            "unknown drain states".into(),
            Call::State,
            json("200 OK", "{\"db-state\": \"EXPLODED\", \"scm-state\": \"\"}"),
            Ok("EXPLODED "),
        ),
        (
            "task in an unknown state".into(),
            Call::Drain,
            json(
                "200 OK",
                "{\"task\": {\"state\": \"WEIRD\"}, \"db-state\": \"DRAINING\", \"scm-state\": \"DRAINING\"}",
            ),
            Err(K::DrainFailed),
        ),
        (
            "drained, but no task".into(),
            Call::Drain,
            json("200 OK", "{\"db-state\": \"DRAINED\", \"scm-state\": \"DRAINED\"}"),
            Err(K::DrainFailed),
        ),
        (
            "running, one state unknown".into(),
            Call::Drain,
            json(
                "200 OK",
                "{\"task\": {\"state\": \"RUNNING\"}, \"db-state\": \"EXPLODED\", \"scm-state\": \"DRAINED\"}",
            ),
            Err(K::Timeout),
        ),
        ("progress: garbage 202".into(), Call::Progress, json("202 Accepted", "%%%"), Ok("reported")),
        ("cancel: garbage 200".into(), Call::Cancel, json("200 OK", "%%%"), Ok("cancelled")),
        ("unlock: garbage 202".into(), Call::Unlock, json("202 Accepted", "%%%"), Ok("unlocked")),
        ("unlock: login page".into(), Call::Unlock, http("200 OK", "text/html", login_page), Err(K::NotFound)),
        ("unlock: 409 echoing the secrets".into(), Call::Unlock, json("409 Conflict", &echo), Err(K::InvalidToken)),
        ("cancel: 400 echoing the secrets".into(), Call::Cancel, json("400 Bad Request", &echo), Err(K::InvalidToken)),
        ("unlock: endless answer".into(), Call::Unlock, Reply::Endless, Err(K::InvalidResponse)),
    ]);
    for c in ALL_CALLS {
        cases.push((
            format!("{c:?}: 401 HTML"),
            c,
            http("401 Unauthorized", "text/html", login_page),
            Err(K::Unauthorized),
        ));
    }

    let mut problems = Vec::new();
    for (name, c, reply, expected) in &cases {
        server.set(reply.clone());
        let outcome = tokio::spawn({
            let client = client.clone();
            let c = *c;
            async move { call(&client, c).await }
        })
        .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                problems.push(format!("{name}: panicked: {e}"));
                continue;
            }
        };
        match (expected, &outcome) {
            (Ok(wanted), Ok(got)) if got == wanted => {}
            (Err(kind), Err(e)) if e.kind() == *kind => {
                let text = format!("{e} {e:?}");
                if text.contains(TOKEN) || text.contains("Hostile-Pw-0sel") {
                    problems.push(format!("{name}: the error shows a secret: {text}"));
                }
            }
            _ => problems.push(format!("{name}: expected {expected:?}, got {outcome:?}")),
        }
    }
    eprintln!("hostile answers: {} cases, {} as expected", cases.len(), cases.len() - problems.len());
    assert!(problems.is_empty(), "{} hostile answers mishandled:\n{}", problems.len(), problems.join("\n"));
}

// =============================================================================================
// Configuration

const VALID: &str = r#"
[bitbucket]
url = "https://bitbucket.example.com/bitbucket"
user = "backup"
password_env = "BB_PASS"

[database]
type = "postgresql"
host = "db.example.com"
database = "bitbucket"

[filesystem]
home = "/var/atlassian/application-data/bitbucket"

[archive]
folder = "/backup/archives"
keep = 7

[backup]
working_folder = "/backup/work"
"#;

fn load(text: &str, env: &[(&str, &str)]) -> Result<(), String> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    BackupConfig::from_toml_with_env(text, "hostile.toml", env).map(drop).map_err(|e| e.to_string())
}

#[test]
fn bad_configurations_are_refused_naming_the_key() {
    assert!(load(VALID, &[]).is_ok(), "the base configuration must load: {:?}", load(VALID, &[]));
    let replace = |from: &str, to: &str| {
        assert!(VALID.contains(from), "{from}");
        VALID.replacen(from, to, 1)
    };
    // (case, configuration text, environment, what the error must name)
    type Case<'a> = (&'a str, String, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: Vec<Case> = vec![
        // Unknown keys and sections.
        (
            "unknown key in [bitbucket]",
            replace("user = \"backup\"", "user = \"backup\"\nusr = \"x\""),
            &[],
            &["usr", "line 5"],
        ),
        ("unknown key in [database]", replace("host = ", "hots = \"x\"\nhost = "), &[], &["hots"]),
        ("unknown key in [filesystem]", replace("[filesystem]", "[filesystem]\nhom = \"/x\""), &[], &["hom"]),
        ("unknown key in [archive]", replace("keep = 7", "keep = 7\nkepp = 3"), &[], &["kepp"]),
        (
            "unknown key in [backup]",
            replace("working_folder", "workng_folder = \"/x\"\nworking_folder"),
            &[],
            &["workng_folder"],
        ),
        ("unknown section", format!("{VALID}\n[bitbuckett]\nurl = \"x\"\n"), &[], &["bitbuckett"]),
        ("unknown database type", replace("type = \"postgresql\"", "type = \"oracle\""), &[], &["oracle"]),
        ("unknown archive type", replace("keep = 7", "keep = 7\ntype = \"zip\""), &[], &["zip"]),
        // Wrong types.
        ("url a number", replace("url = \"https://bitbucket.example.com/bitbucket\"", "url = 5"), &[], &["url"]),
        ("port a word", replace("host = ", "port = \"fifty\"\nhost = "), &[], &["port"]),
        ("keep negative", replace("keep = 7", "keep = -1"), &[], &["keep"]),
        ("keep a word", replace("keep = 7", "keep = \"seven\""), &[], &["keep"]),
        ("exclude not a list", replace("[filesystem]", "[filesystem]\nexclude = \"/x\""), &[], &["exclude"]),
        ("duration not a duration", format!("{VALID}drain_timeout = \"five minutes\"\n"), &[], &["drain_timeout"]),
        (
            "boolean a string",
            replace("user = \"backup\"", "user = \"backup\"\ninsecure_skip_tls_verify = \"yes\""),
            &[],
            &["insecure_skip_tls_verify"],
        ),
        // Missing required values.
        ("url missing", replace("url = \"https://bitbucket.example.com/bitbucket\"\n", ""), &[], &["url"]),
        ("user missing", replace("user = \"backup\"\n", ""), &[], &["user"]),
        ("home missing", replace("home = \"/var/atlassian/application-data/bitbucket\"\n", ""), &[], &["home"]),
        ("working folder missing", replace("working_folder = \"/backup/work\"\n", ""), &[], &["working_folder"]),
        ("archive folder missing", replace("folder = \"/backup/archives\"\n", ""), &[], &["archive.folder"]),
        ("[bitbucket] missing", VALID.replace("[bitbucket]", "[nothing]"), &[], &["nothing"]),
        // Values present but wrong.
        (
            "url not http",
            replace("https://bitbucket.example.com", "ftp://bitbucket.example.com"),
            &[],
            &["bitbucket.url"],
        ),
        (
            "url with credentials",
            replace("https://bitbucket", "https://u:p@bitbucket"),
            &[],
            &["bitbucket.url", "credentials"],
        ),
        ("relative home", replace("home = \"/var", "home = \"var"), &[], &["filesystem.home"]),
        (
            "relative working folder",
            replace("working_folder = \"/backup/work\"", "working_folder = \"work\""),
            &[],
            &["working_folder"],
        ),
        (
            "working folder inside the home",
            replace("/backup/work", "/var/atlassian/application-data/bitbucket/w"),
            &[],
            &["working_folder"],
        ),
        ("id prefix with a space", format!("{VALID}id_prefix = \"my backups\"\n"), &[], &["id_prefix"]),
        ("zero poll interval", format!("{VALID}poll_interval = \"0s\"\n"), &[], &["poll_interval"]),
        ("compression level out of range", replace("keep = 7", "keep = 7\nlevel = 99"), &[], &["archive.level"]),
        (
            "two password sources",
            replace("password_env = \"BB_PASS\"", "password_env = \"A\"\npassword_file = \"/p\""),
            &[],
            &["password"],
        ),
        ("zero database jobs", replace("host = ", "jobs = 0\nhost = "), &[], &["jobs"]),
        (
            "rsync options for native",
            replace("[filesystem]", "[filesystem]\nrsync_options = [\"-z\"]"),
            &[],
            &["rsync_options"],
        ),
        // Environment overrides.
        (
            "override of the wrong type",
            VALID.to_owned(),
            &[("BITBUCKET_DIY_ARCHIVE_KEEP", "many")],
            &["BITBUCKET_DIY_ARCHIVE_KEEP"],
        ),
        (
            "override naming a section",
            VALID.to_owned(),
            &[("BITBUCKET_DIY_ARCHIVE_", "x")],
            &["BITBUCKET_DIY_ARCHIVE_"],
        ),
        (
            "password a number",
            replace("password_env = \"BB_PASS\"", "password = 31415926"),
            &[],
            &["bitbucket.password"],
        ),
        (
            "database password a list",
            replace("host = ", "password = [\"a\", \"b\"]\nhost = "),
            &[],
            &["database.password", "not shown"],
        ),
        (
            "malformed line holding a password",
            replace("password_env = \"BB_PASS\"", "password = \"hunter2\" x"),
            &[],
            &["line 5", "not shown"],
        ),
        (
            "override of an unknown key",
            VALID.to_owned(),
            &[("BITBUCKET_DIY_BACKUP_NOPE", "1")],
            &["BITBUCKET_DIY_BACKUP_NOPE"],
        ),
        // Not TOML at all.
        ("shell code instead of TOML", "BITBUCKET_URL=$(curl evil)\n".to_owned(), &[], &["hostile.toml", "line 1"]),
        ("binary garbage", "\u{0}\u{1}\u{2}[[[".to_owned(), &[], &["hostile.toml"]),
    ];
    let mut problems = Vec::new();
    for (name, text, env, mentions) in &cases {
        match load(text, env) {
            Ok(()) => problems.push(format!("{name}: accepted")),
            Err(message) => {
                if message.contains("hunter2") || message.contains("31415926") {
                    problems.push(format!("{name}: the error shows the password: {message}"));
                }
                for mention in *mentions {
                    if !message.contains(mention) {
                        problems.push(format!("{name}: the error does not name `{mention}`: {message}"));
                    }
                }
            }
        }
    }
    // The JSON form (Python dicts) is as strict.
    let json_cases = [
        (
            r#"{"bitbucket":{"url":"http://h","user":"a","pasword":"x"},"filesystem":{"home":"/h"},"backup":{"working_folder":"/w"}}"#,
            "pasword",
        ),
        (
            r#"{"bitbucket":{"url":"http://h","user":7},"filesystem":{"home":"/h"},"backup":{"working_folder":"/w"}}"#,
            "integer",
        ),
        (r#"{"bitbucket":{"user":"a"},"filesystem":{"home":"/h"},"backup":{"working_folder":"/w"}}"#, "url"),
    ];
    for (json, mention) in json_cases {
        match BackupConfig::from_json_str(json) {
            Ok(_) => problems.push(format!("JSON {json}: accepted")),
            Err(e) if !e.to_string().contains(mention) => problems.push(format!("JSON: `{mention}` not named: {e}")),
            Err(_) => {}
        }
    }
    eprintln!(
        "bad configurations: {} cases, {} refused as expected",
        cases.len() + 3,
        cases.len() + 3 - problems.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_vars_file_with_shell_code_is_read_never_run() {
    let scratch = tempfile::tempdir().unwrap();
    let canary = |n: u32| scratch.path().join(format!("canary-{n}"));
    let vars = format!(
        "#!/bin/bash\n\
         touch {c0}\n\
         INSTANCE_NAME=bitbucket\n\
         BITBUCKET_URL=$(touch {c1}; echo http://evil)\n\
         BITBUCKET_BACKUP_USER=`touch {c2}`\n\
         BITBUCKET_BACKUP_PASS=\"$(cat /etc/shadow > {c3})\"\n\
         BITBUCKET_HOME=/var/atlassian/application-data/bitbucket; touch {c4}\n\
         eval \"touch {c5}\"\n\
         source <(echo touch {c6})\n\
         BITBUCKET_BACKUP_ROOT=/backup && touch {c7}\n\
         BACKUP_DISK_TYPE=rsync\n\
         export PGPASSWORD=$(touch {c8})\n\
         BITBUCKET_DB=bitbucket`touch {c9}`\n",
        c0 = canary(0).display(),
        c1 = canary(1).display(),
        c2 = canary(2).display(),
        c3 = canary(3).display(),
        c4 = canary(4).display(),
        c5 = canary(5).display(),
        c6 = canary(6).display(),
        c7 = canary(7).display(),
        c8 = canary(8).display(),
        c9 = canary(9).display(),
    );
    let result = bitbucket_diy_core::migrate::import_vars(&vars);
    for n in 0..10 {
        assert!(!canary(n).exists(), "canary {n} exists: the vars file was executed");
    }
    let warned: Vec<&str> = result.warnings.iter().map(|w| w.variable.as_str()).collect();
    for variable in ["BITBUCKET_URL", "BITBUCKET_BACKUP_USER", "BITBUCKET_BACKUP_PASS", "PGPASSWORD", "BITBUCKET_DB"] {
        assert!(warned.contains(&variable), "no warning names {variable}: {:?}", result.warnings);
    }
    assert!(!result.toml.contains("touch") && !result.toml.contains("evil"), "shell code copied:\n{}", result.toml);
    assert!(!result.toml.contains("/etc/shadow"), "{}", result.toml);
}

// =============================================================================================
// Restore targets

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_unsafe_targets_and_writes_nothing() {
    let bench = Bench::new().await;
    let db = PgDatabase::create(
        "hostile_restore",
        "CREATE TABLE repository (id int PRIMARY KEY); INSERT INTO repository VALUES (1);",
    );
    let native = NativeCopy::from_config(&bench.filesystem_config(), true, InstanceType::Bitbucket).unwrap();
    let orchestrator: BackupOrchestrator = bench
        .orchestrator()
        .database(PostgresDatabase::from_config(&db.config()).unwrap())
        .filesystem(native)
        .build()
        .unwrap();
    let id = orchestrator.backup(CancellationToken::new()).await.unwrap().id.to_string();
    let root = bench.dir.path().join("targets");
    std::fs::create_dir(&root).unwrap();

    // An existing database with a table in it.
    let occupied_db = db.another_name("hostile_restore", "occupied");
    pg::psql("postgres", &format!("CREATE DATABASE {};", pg::ident(&occupied_db)));
    pg::psql(&occupied_db, "CREATE TABLE precious (note text); INSERT INTO precious VALUES ('keep me');");
    let fresh_db = || Some(db.another_name("hostile_restore", "fresh"));

    type Prepare = Box<dyn Fn(&Path)>;
    let nothing: Prepare = Box::new(|_| {});
    // (case, home, how to prepare it, database, the error's kind, what it must name)
    type Case = (&'static str, PathBuf, Prepare, Option<String>, ErrorKind, &'static str);
    let cases: Vec<Case> = vec![
        (
            "home holding a file",
            root.join("home-file"),
            Box::new(|p| {
                std::fs::create_dir(p).unwrap();
                std::fs::write(p.join("bitbucket.properties"), "x").unwrap();
            }),
            fresh_db(),
            ErrorKind::RestoreTarget,
            "not empty",
        ),
        (
            "home holding only a dotfile",
            root.join("home-dotfile"),
            Box::new(|p| {
                std::fs::create_dir(p).unwrap();
                std::fs::write(p.join(".bash_history"), "x").unwrap();
            }),
            fresh_db(),
            ErrorKind::RestoreTarget,
            ".bash_history",
        ),
        (
            "home holding an empty folder",
            root.join("home-folder"),
            Box::new(|p| std::fs::create_dir_all(p.join("shared")).unwrap()),
            fresh_db(),
            ErrorKind::RestoreTarget,
            "shared",
        ),
        (
            "home that is a file",
            root.join("home-is-a-file"),
            Box::new(|p| std::fs::write(p, "x").unwrap()),
            fresh_db(),
            ErrorKind::RestoreTarget,
            "is a file",
        ),
        (
            "home that is a symlink to a full folder",
            root.join("home-link"),
            Box::new(|p| {
                let full = p.with_file_name("full");
                std::fs::create_dir_all(full.join("data")).unwrap();
                std::os::unix::fs::symlink(&full, p).unwrap();
            }),
            fresh_db(),
            ErrorKind::RestoreTarget,
            "not empty",
        ),
        (
            "home below a file",
            root.join("a-file/home"),
            Box::new(|p| std::fs::write(p.parent().unwrap(), "x").unwrap()),
            fresh_db(),
            ErrorKind::Io,
            "a-file",
        ),
        ("relative home", PathBuf::from("relative/home"), Box::new(|_| {}), fresh_db(), ErrorKind::Config, "absolute"),
        ("no database name", root.join("home-no-db"), Box::new(|_| {}), None, ErrorKind::Config, "restore database"),
        (
            "database holding a table",
            root.join("home-occupied-db"),
            Box::new(|_| {}),
            Some(occupied_db.clone()),
            ErrorKind::RestoreTarget,
            "precious",
        ),
        (
            "database template1",
            root.join("home-template"),
            Box::new(|_| {}),
            Some("template1".into()),
            ErrorKind::Config,
            "template1",
        ),
        ("database name too long", root.join("home-long"), nothing, Some("d".repeat(64)), ErrorKind::Config, "63"),
    ];

    let mut problems = Vec::new();
    for (name, home, prepare, database, kind, mention) in &cases {
        prepare(home);
        let before = snapshot(&root);
        let request = RestoreRequest::new(id.as_str(), home, database.clone());
        match orchestrator.restore(&request, CancellationToken::new()).await {
            Ok(_) => problems.push(format!("{name}: restored")),
            Err(e) => {
                if e.kind() != *kind {
                    problems.push(format!("{name}: expected {kind}, got {}: {e}", e.kind()));
                }
                if !e.to_string().contains(mention) {
                    problems.push(format!("{name}: the error does not name `{mention}`: {e}"));
                }
            }
        }
        if snapshot(&root) != before {
            problems.push(format!("{name}: the targets changed"));
        }
        if let Some(database) = database.as_ref().filter(|d| d.len() < 64 && !d.contains('"')) {
            let exists = pg::psql(
                "postgres",
                &format!("SELECT count(*) FROM pg_database WHERE datname = {};", pg::literal(database)),
            );
            let expected = if *database == occupied_db || database == "template1" { "1" } else { "0" };
            if exists.trim() != expected {
                problems.push(format!("{name}: database {database} was created or dropped"));
            }
        }
    }
    assert_eq!(
        pg::psql(&occupied_db, "SELECT note FROM precious;").trim(),
        "keep me",
        "the occupied database was changed"
    );
    // A name holding SQL is a name: quoted everywhere, never run.
    let victim = db.cleanup.database(format!("bbdiy_victim_{}", std::process::id()));
    pg::psql("postgres", &format!("CREATE DATABASE {};", pg::ident(&victim)));
    let sql_name = db.cleanup.database(format!("x\"; DROP DATABASE {victim}; --"));
    let request = RestoreRequest::new(id.as_str(), root.join("home-sql"), Some(sql_name.clone()));
    orchestrator.restore(&request, CancellationToken::new()).await.unwrap();
    let named =
        pg::psql("postgres", &format!("SELECT count(*) FROM pg_database WHERE datname = {};", pg::literal(&sql_name)));
    assert_eq!(named.trim(), "1", "the database is created under the name given");
    let victims =
        pg::psql("postgres", &format!("SELECT count(*) FROM pg_database WHERE datname = {};", pg::literal(&victim)));
    assert_eq!(victims.trim(), "1", "SQL in the name was run");
    eprintln!("restore targets: {} cases, {} refused as expected", cases.len(), cases.len() - problems.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every path below `root` with its kind and size: what a refused restore must leave as it was
/// (restore folders next to the home included).
fn snapshot(root: &Path) -> Vec<(PathBuf, String)> {
    let mut all: Vec<(PathBuf, String)> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| {
            let meta = e.path().symlink_metadata().unwrap();
            (e.path().to_owned(), format!("{:?} {}", meta.file_type(), if meta.is_file() { meta.len() } else { 0 }))
        })
        .collect();
    all.sort();
    all
}

/// The tar+zstd archive, whose extraction stops right after the database folder until the early
/// database restore into `target` has finished: so the damage found later in the archive strikes
/// a database that is completely restored.
#[derive(Debug)]
struct PauseAfterDatabase {
    inner: TarZstdArchive,
    target: String,
}

#[async_trait::async_trait]
impl ArchiveStrategy for PauseAfterDatabase {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn folder(&self) -> &Path {
        self.inner.folder()
    }

    async fn write(
        &self,
        source: &WorkingFolder,
        metadata: &BackupMetadata,
        ctx: &StepContext,
    ) -> Result<ArchiveInfo, bitbucket_diy_core::strategy::ArchiveError> {
        self.inner.write(source, metadata, ctx).await
    }

    async fn list(&self) -> Result<Vec<ArchiveInfo>, bitbucket_diy_core::strategy::ArchiveError> {
        self.inner.list().await
    }

    async fn remove(&self, archive: &ArchiveInfo) -> Result<(), bitbucket_diy_core::strategy::ArchiveError> {
        self.inner.remove(archive).await
    }

    async fn verify(
        &self,
        archive: &ArchiveInfo,
        ctx: &StepContext,
    ) -> Result<bitbucket_diy_core::strategy::VerifyReport, bitbucket_diy_core::strategy::ArchiveError> {
        self.inner.verify(archive, ctx).await
    }

    async fn extract(
        &self,
        archive: &ArchiveInfo,
        target: &Path,
        ctx: &StepContext,
    ) -> Result<ManifestSummary, bitbucket_diy_core::strategy::ArchiveError> {
        self.inner.extract(archive, target, ctx).await
    }

    async fn extract_database_first(
        &self,
        archive: &ArchiveInfo,
        target: &Path,
        ctx: &StepContext,
        database_extracted: bitbucket_diy_core::strategy::DatabaseExtracted,
    ) -> Result<ManifestSummary, bitbucket_diy_core::strategy::ArchiveError> {
        let database = self.target.clone();
        let pause = Box::new(move || {
            database_extracted();
            // Runs on the extraction's thread: the home waits until the database is restored. A
            // restore that did not start before the extraction ended would never get here.
            pg::wait_until("the database restore to load the rows", || {
                rows_of(&database, "repository").as_deref() == Some("1")
            });
            pg::wait_until("pg_restore to end", || support::processes_mentioning("pg_restore", &database).is_empty());
        });
        self.inner.extract_database_first(archive, target, ctx, pause).await
    }
}

/// `SELECT count(*)` of `table` in `database`; `None` while either does not exist.
fn rows_of(database: &str, table: &str) -> Option<String> {
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-At", "-h", pg::HOST, "-p", "5432", "-U", pg::SUPERUSER, "-d", database])
        .args(["-c", &format!("SELECT count(*) FROM {}", pg::ident(table))])
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Flips one byte of the last home file in the archive (recompressed): damage found by its digest
/// at the very end of an extraction, long after the database folder.
fn damage_last_home_file(archive: &Path) -> String {
    let mut tar = zstd::decode_all(&std::fs::read(archive).unwrap()[..]).unwrap();
    let mut last = None;
    for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if entry.header().entry_type().is_file() && entry.size() > 0 && path.starts_with("bitbucket-home/") {
            last = Some((path, entry.raw_file_position()));
        }
    }
    let (path, at) = last.expect("the archive holds home files");
    tar[usize::try_from(at).unwrap()] ^= 0xff;
    std::fs::write(archive, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_found_after_the_early_database_restore_drops_that_database() {
    let bench = Bench::new().await;
    let db = PgDatabase::create(
        "hostile_late_damage",
        "CREATE TABLE repository (id int PRIMARY KEY); INSERT INTO repository VALUES (1);",
    );
    let target = db.another_name("hostile_late_damage", "restored");
    let events = bitbucket_diy_core::events::RecordedEvents::new();
    let orchestrator: BackupOrchestrator = bench
        .orchestrator()
        .events(Arc::new(events.clone()))
        .database(PostgresDatabase::from_config(&db.config()).unwrap())
        .archive(PauseAfterDatabase {
            inner: TarZstdArchive::new(bench.archives.clone(), 3, 0),
            target: target.clone(),
        })
        .build()
        .unwrap();
    let report = orchestrator.backup(CancellationToken::new()).await.unwrap();
    let damaged = damage_last_home_file(&report.archive);

    let home = bench.dir.path().join("restored-home");
    let request = RestoreRequest::new(report.id.as_str(), &home, Some(target.clone()));
    let error = orchestrator.restore(&request, CancellationToken::new()).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Archive, "{error}");
    let file = damaged.rsplit('/').next().unwrap();
    assert!(error.to_string().contains(file), "the error does not name {file}: {error}");
    assert!(!home.exists(), "the failed restore left {}", home.display());
    let leftovers: Vec<_> = std::fs::read_dir(bench.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".bitbucket-diy-restore-"))
        .collect();
    assert!(leftovers.is_empty(), "restore folders left: {leftovers:?}");
    let exists =
        pg::psql("postgres", &format!("SELECT count(*) FROM pg_database WHERE datname = {};", pg::literal(&target)));
    assert_eq!(exists.trim(), "0", "the database restored from a damaged archive was kept");
    let warned = events
        .events()
        .into_iter()
        .any(|e| matches!(e, bitbucket_diy_core::events::Event::Warning { message } if message.contains(&target)));
    assert!(warned, "no warning about the database the failed restore had begun");
}
