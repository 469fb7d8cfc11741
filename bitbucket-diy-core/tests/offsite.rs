//! Offsite copies and encryption at rest, against a real S3 server (s3s over a folder) on
//! 127.0.0.1:0, in process: upload, list, retention, restore from the bucket on a fresh host,
//! upload-only, interrupted and corrupted uploads, damage in the bucket, age round trips and key
//! errors. Faults are injected in the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bitbucket_diy_core::config::RemoteConfig;
use bitbucket_diy_core::encryption::{Encryption, Identities, Recipients};
use bitbucket_diy_core::orchestrator::{BackupOrchestrator, RestoreRequest};
use bitbucket_diy_core::strategy::archive::remote::RemoteCredentials;
use bitbucket_diy_core::strategy::archive::{RemoteArchive, RemoteOptions, RemoteStore, TarZstdArchive};
use bitbucket_diy_core::strategy::conformance::archive as conformance;
use bitbucket_diy_core::strategy::{ArchiveError, ArchiveStrategy};
use bitbucket_diy_core::{BackupConfig, Error, ErrorKind};
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use support::Bench;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const ACCESS_KEY: &str = "bitbucket-diy-test";
const SECRET_KEY: &str = "test-secret-key-never-logged";
const BUCKET: &str = "backups";
const PREFIX: &str = "bitbucket/prod";

// ---------------------------------------------------------------------------------------------
// The server

/// What the server does wrong, on demand.
#[derive(Default)]
struct Faults {
    /// Every UploadPart answers 500 InternalError.
    fail_parts: AtomicBool,
    /// Flip a byte of each object right after CompleteMultipartUpload: storage that corrupts.
    corrupt_on_complete: AtomicBool,
    /// UploadPart waits for `release` (after signalling `part_arrived`), then fails.
    hold_parts: AtomicBool,
    part_arrived: Notify,
    release: Notify,
    parts_seen: AtomicUsize,
    aborts: AtomicUsize,
}

/// s3s-fs with faults.
struct FaultyS3 {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
    faults: Arc<Faults>,
}

#[async_trait::async_trait]
impl S3 for FaultyS3 {
    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }
    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        self.fs.get_object(req).await
    }
    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        self.fs.put_object(req).await
    }
    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }
    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }
    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }
    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        self.faults.parts_seen.fetch_add(1, Ordering::SeqCst);
        if self.faults.fail_parts.load(Ordering::SeqCst) {
            return Err(s3_error!(InternalError, "injected fault"));
        }
        if self.faults.hold_parts.load(Ordering::SeqCst) {
            self.faults.part_arrived.notify_one();
            self.faults.release.notified().await;
            return Err(s3_error!(InternalError, "injected fault after a hold"));
        }
        self.fs.upload_part(req).await
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let object = self.root.join(&req.input.bucket).join(&req.input.key);
        let done = self.fs.complete_multipart_upload(req).await?;
        if self.faults.corrupt_on_complete.load(Ordering::SeqCst) {
            flip_a_byte(&object);
        }
        Ok(done)
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.faults.aborts.fetch_add(1, Ordering::SeqCst);
        self.fs.abort_multipart_upload(req).await
    }
}

/// An S3 server on 127.0.0.1:0 storing into its own folder; stops with the test's runtime.
struct S3Server {
    _dir: tempfile::TempDir,
    root: PathBuf,
    endpoint: String,
    faults: Arc<Faults>,
}

impl S3Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s3");
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let faults = Arc::new(Faults::default());
        let s3 = FaultyS3 { fs: s3s_fs::FileSystem::new(&root).unwrap(), root: root.clone(), faults: faults.clone() };
        let mut builder = s3s::service::S3ServiceBuilder::new(s3);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                let connection = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone());
                let connection = connection.into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        });
        Self { _dir: dir, root, endpoint, faults }
    }

    fn config(&self) -> RemoteConfig {
        let toml = format!(
            r#"
url = "s3://{BUCKET}/{PREFIX}"
endpoint = "{}"
region = "us-east-1"
allow_http = true
max_retries = 1
retry_timeout = "2s"
"#,
            self.endpoint
        );
        toml::from_str(&toml).unwrap()
    }

    fn credentials() -> RemoteCredentials {
        RemoteCredentials {
            access_key_id: ACCESS_KEY.to_owned(),
            secret_access_key: SECRET_KEY.to_owned().into(),
            session_token: None,
        }
    }

    fn store(&self) -> RemoteStore {
        RemoteStore::from_config(&self.config(), Some(Self::credentials())).unwrap()
    }

    /// Object names stored under the prefix.
    fn objects(&self) -> Vec<String> {
        let dir = self.root.join(BUCKET).join(PREFIX);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    fn object_path(&self, name: &str) -> PathBuf {
        self.root.join(BUCKET).join(PREFIX).join(name)
    }

    /// Parts of multipart uploads never completed nor aborted.
    fn pending_uploads(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".upload_id-"))
            .collect()
    }

    fn assert_nothing_stored(&self) {
        let archives: Vec<_> = self.objects().into_iter().filter(|n| n.contains(".tar.zst")).collect();
        assert!(archives.is_empty(), "nothing under a final name in the bucket: {archives:?}");
        assert!(self.pending_uploads().is_empty(), "the upload was aborted: {:?}", self.pending_uploads());
    }
}

fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

fn remote_archive(server: &S3Server, local: &Path, options: RemoteOptions) -> RemoteArchive {
    RemoteArchive::new(server.store(), local.to_owned(), 3, 0, options)
}

fn options(change: impl FnOnce(&mut RemoteOptions)) -> RemoteOptions {
    let mut options = RemoteOptions::default();
    options.part_size = 5 << 20;
    change(&mut options);
    options
}

fn identity_file(dir: &Path, name: &str) -> (PathBuf, Recipients) {
    let identity = age::x25519::Identity::generate();
    let secret = age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_owned();
    let path = dir.join(name);
    std::fs::write(&path, format!("# test identity\n{secret}\n")).unwrap();
    let recipients = Recipients::parse([identity.to_public().to_string()], "test").unwrap();
    (path, recipients)
}

fn local_files(folder: &Path) -> Vec<String> {
    std::fs::read_dir(folder)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Upload, list, retention, restore

#[tokio::test]
async fn backups_upload_list_prune_and_restore_from_the_bucket_on_a_fresh_host() {
    let bench = Bench::new().await;
    let server = S3Server::start().await;
    let archive = remote_archive(&server, &bench.archives, options(|o| o.keep = Some(2)));
    let orchestrator = bench.orchestrator().archive(archive).with_options(|o| o.keep = 3).build().unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let report = orchestrator.backup(CancellationToken::new()).await.unwrap();
        assert!(report.archive.to_string_lossy().starts_with("s3://backups/bitbucket/prod/"), "{report:?}");
        ids.push(report.id);
    }

    let listed: Vec<_> = orchestrator.list_backups().await.unwrap().into_iter().map(|a| a.metadata.id).collect();
    assert_eq!(listed, vec![ids[2].clone(), ids[1].clone()], "the bucket keeps the newest two");
    let objects = server.objects();
    assert_eq!(objects.len(), 4, "two archives and their receipts: {objects:?}");
    // Ids made within one second share a prefix (`x`, `x-2`): compare whole names.
    let oldest = format!("{}.tar.zst", ids[0]);
    assert!(!objects.iter().any(|o| *o == oldest || *o == format!("{oldest}.json")), "{objects:?}");
    let local: Vec<_> = local_files(&bench.archives).into_iter().filter(|n| n.ends_with(".tar.zst")).collect();
    assert_eq!(local.len(), 3, "local copies follow archive.keep = 3: {local:?}");

    // A fresh host: its own working folder, no local archive folder, the bucket only.
    let fresh = tempfile::tempdir().unwrap();
    let restorer = BackupOrchestrator::builder(fresh.path().join("work"))
        .filesystem(bench.native())
        .archive(remote_archive(&server, &fresh.path().join("none"), options(|_| {})))
        .build()
        .unwrap();
    let verified = restorer.verify(ids[2].as_str(), false, CancellationToken::new()).await.unwrap();
    assert!(verified.verify.entries > 0);
    let restored = fresh.path().join("restored-home");
    let report = restorer
        .restore(&RestoreRequest::new(ids[2].as_str(), &restored, None), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.id, ids[2]);
    support::assert_home_restored(&bench.home, &restored);
    // Only the record of the verification above (a dotfile) is kept locally.
    let downloaded: Vec<_> =
        local_files(&fresh.path().join("none")).into_iter().filter(|n| !n.starts_with('.')).collect();
    assert!(downloaded.is_empty(), "a restore downloads nothing to disk: {downloaded:?}");
}

#[tokio::test]
async fn upload_only_leaves_no_local_archive() {
    let bench = Bench::new().await;
    let server = S3Server::start().await;
    let archive = remote_archive(&server, &bench.archives, options(|o| o.keep_local = false));
    let orchestrator = bench.orchestrator().archive(archive).build().unwrap();
    let report = orchestrator.backup(CancellationToken::new()).await.unwrap();
    assert!(!bench.archives.exists(), "nothing written locally: {:?}", local_files(&bench.archives));
    let name = format!("{}.tar.zst", report.id);
    assert_eq!(server.objects(), vec![name.clone(), format!("{name}.json")]);
    let stored = std::fs::metadata(server.object_path(&name)).unwrap().len();
    assert_eq!(stored, report.archive_bytes);
    assert_eq!(orchestrator.list_backups().await.unwrap().len(), 1);
}

#[tokio::test]
async fn remote_archives_pass_the_conformance_checks_that_apply() {
    let server = S3Server::start().await;
    let scratch = tempfile::tempdir().unwrap();
    // `roundtrip` expects `ArchiveInfo::path` to be a local file; the orchestrator tests above
    // cover the remote round trip.
    for (check, dir) in [("symlinks", "b"), ("escaping", "c"), ("interrupted", "d")] {
        let dir = scratch.path().join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let archive = remote_archive(&server, &dir.join("archives"), options(|_| {}));
        let outcome = match check {
            "symlinks" => conformance::symlinks_stored_not_followed(&archive, &dir).await,
            "escaping" => conformance::escaping_symlinks_are_refused(&archive, &dir).await,
            _ => conformance::interrupted_write_leaves_no_archive(&archive, &dir).await,
        };
        conformance::make_writable(&dir);
        outcome.unwrap_or_else(|e| panic!("{check}: {e}"));
        // Each check writes its own ids; clean the bucket for the next one.
        for info in archive.list().await.unwrap() {
            archive.remove(&info).await.unwrap();
        }
    }
    assert!(server.pending_uploads().is_empty(), "interrupted uploads were aborted: {:?}", server.pending_uploads());
}

#[tokio::test]
async fn remote_retention_follows_its_own_keep() {
    let server = S3Server::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let archive = remote_archive(&server, &scratch.path().join("archives"), options(|o| o.keep_local = false));
    conformance::retention_keeps_newest(&archive, scratch.path()).await.unwrap();
    assert_eq!(server.objects().len(), 4, "two archives with receipts remain: {:?}", server.objects());
}

// ---------------------------------------------------------------------------------------------
// Nothing half-written is listed

#[tokio::test]
async fn a_failing_upload_leaves_no_object_and_no_backup() {
    let bench = Bench::new().await;
    let server = S3Server::start().await;
    server.faults.fail_parts.store(true, Ordering::SeqCst);
    let archive = remote_archive(&server, &bench.archives, options(|_| {}));
    let orchestrator = bench.orchestrator().archive(archive).build().unwrap();
    let err = orchestrator.backup(CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Archive, "{err}");
    assert!(err.to_string().contains("s3://backups/bitbucket/prod/"), "the error names the object: {err}");
    assert!(server.faults.parts_seen.load(Ordering::SeqCst) >= 2, "the part was retried");
    assert!(server.faults.aborts.load(Ordering::SeqCst) >= 1, "the upload was aborted");
    server.assert_nothing_stored();
    assert!(orchestrator.list_backups().await.unwrap().is_empty());
    assert!(
        local_files(&bench.archives).iter().all(|n| n.starts_with('.')) && local_files(&bench.archives).is_empty(),
        "no local copy either: {:?}",
        local_files(&bench.archives)
    );
    assert!(!bench.sim.is_locked());
}

#[tokio::test]
async fn a_cancelled_upload_is_aborted_and_leaves_nothing() {
    let bench = Bench::new().await;
    let server = S3Server::start().await;
    server.faults.hold_parts.store(true, Ordering::SeqCst);
    let archive = remote_archive(&server, &bench.archives, options(|_| {}));
    let orchestrator = bench.orchestrator().archive(archive).build().unwrap();
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        let faults = server.faults.clone();
        tokio::spawn(async move {
            faults.part_arrived.notified().await;
            cancel.cancel();
            // Let the held request go only once the write has given up.
            tokio::time::sleep(Duration::from_millis(200)).await;
            faults.release.notify_waiters();
        })
    };
    let err = orchestrator.backup(cancel).await.unwrap_err();
    canceller.await.unwrap();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(server.faults.aborts.load(Ordering::SeqCst) >= 1, "the upload was aborted");
    // The held part request ends after the abort; give it a moment to finish failing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.assert_nothing_stored();
    assert!(orchestrator.list_backups().await.unwrap().is_empty());
    assert!(local_files(&bench.archives).is_empty(), "{:?}", local_files(&bench.archives));
}

#[tokio::test]
async fn an_upload_corrupted_in_the_store_is_caught_and_removed() {
    let bench = Bench::new().await;
    let server = S3Server::start().await;
    server.faults.corrupt_on_complete.store(true, Ordering::SeqCst);
    let archive = remote_archive(&server, &bench.archives, options(|_| {}));
    let orchestrator = bench.orchestrator().archive(archive).build().unwrap();
    let err = orchestrator.backup(CancellationToken::new()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Archive(ArchiveError::Mismatch { reason, .. }) if reason.contains("checksum mismatch")),
        "{err:?}"
    );
    assert!(server.objects().is_empty(), "the bad object was deleted: {:?}", server.objects());
    assert!(orchestrator.list_backups().await.unwrap().is_empty());
}

#[tokio::test]
async fn damage_in_the_bucket_fails_verify_and_restore_with_a_checksum_mismatch() {
    let bench = Bench::new().await;
    let server = S3Server::start().await;
    let archive = remote_archive(&server, &bench.archives, options(|o| o.keep_local = false));
    let orchestrator = bench.orchestrator().archive(archive).build().unwrap();
    let report = orchestrator.backup(CancellationToken::new()).await.unwrap();
    orchestrator.verify(report.id.as_str(), false, CancellationToken::new()).await.unwrap();

    flip_a_byte(&server.object_path(&format!("{}.tar.zst", report.id)));
    let err = orchestrator.verify(report.id.as_str(), false, CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Archive, "{err}");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    let target = bench.dir.path().join("restored");
    let err = orchestrator
        .restore(&RestoreRequest::new(report.id.as_str(), &target, None), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert!(!target.exists() || local_files(&target).is_empty(), "the failed restore left nothing");
}

// ---------------------------------------------------------------------------------------------
// Encryption

#[tokio::test]
async fn encrypted_upload_only_round_trips_and_never_holds_plaintext() {
    let bench = Bench::new().await;
    let server = S3Server::start().await;
    let (identity, recipients) = identity_file(bench.dir.path(), "key.txt");
    // The backup host has only the public key.
    let archive = remote_archive(&server, &bench.archives, options(|o| o.keep_local = false))
        .encrypted(Arc::new(Encryption::to(recipients)));
    let orchestrator = bench.orchestrator().archive(archive).build().unwrap();
    let report = orchestrator.backup(CancellationToken::new()).await.unwrap();
    let name = format!("{}.tar.zst.age", report.id);
    assert!(report.archive.to_string_lossy().ends_with(&name), "{}", report.archive.display());
    assert!(!bench.archives.exists(), "upload-only: nothing written locally");
    let stored = std::fs::read(server.object_path(&name)).unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1\n"), "an age file");
    assert!(zstd::stream::decode_all(&stored[..]).is_err(), "the stored object is not readable as plain zstd");
    assert!(!contains(&stored, b"bitbucket-home"), "no tar header in clear");

    // Listing and retention need no key.
    assert_eq!(orchestrator.list_backups().await.unwrap()[0].metadata.id, report.id);
    let err = orchestrator.verify(report.id.as_str(), false, CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("no identity was given"), "{err}");

    let restore_host = remote_archive(&server, &bench.dir.path().join("unused"), options(|_| {}))
        .encrypted(Arc::new(Encryption::with_identities_only(Identities::from_file(&identity).unwrap())));
    let fresh = tempfile::tempdir().unwrap();
    let restorer = BackupOrchestrator::builder(fresh.path().join("work"))
        .filesystem(bench.native())
        .archive(restore_host)
        .build()
        .unwrap();
    let restored = fresh.path().join("home");
    restorer
        .restore(&RestoreRequest::new(report.id.as_str(), &restored, None), CancellationToken::new())
        .await
        .unwrap();
    support::assert_home_restored(&bench.home, &restored);
}

#[tokio::test]
async fn a_wrong_identity_says_no_matching_key() {
    let bench = Bench::new().await;
    let server = S3Server::start().await;
    let (_right, recipients) = identity_file(bench.dir.path(), "right.txt");
    let (wrong, _) = identity_file(bench.dir.path(), "wrong.txt");
    let archive = remote_archive(&server, &bench.archives, options(|_| {}))
        .encrypted(Arc::new(Encryption::to(recipients).identities(Identities::from_file(&wrong).unwrap())));
    let orchestrator = bench.orchestrator().archive(archive).build().unwrap();
    let report = orchestrator.backup(CancellationToken::new()).await.unwrap();
    let err = orchestrator.verify(report.id.as_str(), false, CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, Error::Archive(ArchiveError::Decryption { .. })), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Archive);
    assert!(err.to_string().contains("no matching key") && err.to_string().contains("wrong.txt"), "{err}");
    let target = bench.dir.path().join("restored");
    let err = orchestrator
        .restore(&RestoreRequest::new(report.id.as_str(), &target, None), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no matching key"), "{err}");
    // The local copy is encrypted too.
    let local = bench.archives.join(format!("{}.tar.zst.age", report.id));
    assert!(std::fs::read(&local).unwrap().starts_with(b"age-encryption.org/v1\n"));
}

#[tokio::test]
async fn local_encrypted_archives_pass_the_conformance_suite() {
    let scratch = tempfile::tempdir().unwrap();
    let (identity, recipients) = identity_file(scratch.path(), "key.txt");
    let encryption = Arc::new(Encryption::to(recipients).identities(Identities::from_file(&identity).unwrap()));
    let suite = scratch.path().join("suite");
    std::fs::create_dir_all(&suite).unwrap();
    let outcome = conformance::run_all(
        |dir| Box::new(TarZstdArchive::new(dir.join("archives"), 3, 0).encrypted(encryption.clone())),
        &suite,
    )
    .await;
    conformance::make_writable(&suite);
    outcome.unwrap();
}

#[tokio::test]
async fn local_encrypted_archives_list_without_a_key_and_read_only_with_one() {
    let scratch = tempfile::tempdir().unwrap();
    let (identity, recipients) = identity_file(scratch.path(), "key.txt");
    let working = conformance::working_folder(&scratch.path().join("work"));
    conformance::populate_sample_tree(&working).unwrap();
    let folder = scratch.path().join("archives");
    let writer = TarZstdArchive::new(folder.clone(), 3, 0).encrypted(Arc::new(Encryption::to(recipients)));
    let metadata = conformance::sample_metadata("enc-1", jiff::Timestamp::now()).unwrap();
    let ctx = conformance::step_context(
        &working,
        "enc-1",
        Arc::new(bitbucket_diy_core::events::RecordedEvents::new()),
        CancellationToken::new(),
    )
    .unwrap();
    let info = writer.write(&working, &metadata, &ctx).await.unwrap();
    assert!(info.path.ends_with("enc-1.tar.zst.age"));
    assert!(folder.join("enc-1.tar.zst.age.json").is_file(), "the receipt is beside it");
    assert_eq!(writer.list().await.unwrap(), vec![info.clone()], "listed from the receipt, without a key");
    let err = writer.verify(&info, &ctx).await.unwrap_err();
    assert!(matches!(err, ArchiveError::KeyMissing { .. }), "{err:?}");

    // `age -d` and GNU tar read it without bitbucket-diy.
    let identity_text = std::fs::read_to_string(&identity).unwrap();
    let key: age::x25519::Identity = identity_text.lines().nth(1).unwrap().parse().unwrap();
    let plain = age::decrypt(&key, &std::fs::read(&info.path).unwrap()).unwrap();
    let tar = zstd::stream::decode_all(&plain[..]).unwrap();
    assert!(contains(&tar, b".bitbucket-diy/manifest.json"));

    let reader = TarZstdArchive::new(folder, 3, 0)
        .encrypted(Arc::new(Encryption::with_identities_only(Identities::from_file(&identity).unwrap())));
    let report = reader.verify(&info, &ctx).await.unwrap();
    assert!(report.entries > 0);
    // A host that can only read refuses to write a backup it could not encrypt.
    let metadata = conformance::sample_metadata("enc-2", jiff::Timestamp::now()).unwrap();
    let err = reader.write(&working, &metadata, &ctx).await.unwrap_err();
    assert!(matches!(&err, ArchiveError::KeyMissing { reason, .. } if reason.contains("recipients")), "{err:?}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[tokio::test]
async fn the_configuration_builds_an_encrypted_remote_archive() {
    let bench = Bench::new().await;
    let server = S3Server::start().await;
    let (identity, _) = identity_file(bench.dir.path(), "key.txt");
    let recipients_file = bench.dir.path().join("recipients.txt");
    std::fs::write(&recipients_file, format!("# backup key\n{}\n", recipients_line(&identity))).unwrap();
    let text = format!(
        r#"
[bitbucket]
url = "{url}"
user = "{user}"
password = "{password}"

[filesystem]
home = "{home}"

[archive]
keep = 2

[archive.remote]
url = "s3://{BUCKET}/{PREFIX}"
endpoint = "{endpoint}"
allow_http = true
keep_local = false
part_size_mib = 5
max_retries = 1

[archive.encryption]
recipients_file = "{recipients}"

[backup]
working_folder = "{working}"
poll_interval = "20ms"
"#,
        url = bench.sim.url(),
        user = bench.sim.user(),
        password = bench.sim.password(),
        home = bench.home.display(),
        endpoint = server.endpoint,
        recipients = recipients_file.display(),
        working = bench.working.display(),
    );
    let loaded = BackupConfig::from_toml_with_env(&text, "offsite.toml", Vec::new()).unwrap();
    let backup_host = BackupOrchestrator::from_config(&loaded.config)
        .unwrap()
        .remote_credentials(S3Server::credentials())
        .unwrap()
        .build()
        .unwrap();
    let report = backup_host.backup(CancellationToken::new()).await.unwrap();
    assert!(report.archive.to_string_lossy().ends_with(".tar.zst.age"), "{}", report.archive.display());
    assert!(!bench.archives.exists());

    let restore_host = BackupOrchestrator::from_config(&loaded.config)
        .unwrap()
        .remote_credentials(S3Server::credentials())
        .unwrap()
        .identity_file(&identity)
        .unwrap()
        .build()
        .unwrap();
    let verified = restore_host.verify(report.id.as_str(), false, CancellationToken::new()).await.unwrap();
    assert!(verified.verify.bytes > 0);

    // Overrides reach the nested tables.
    let env = vec![("BITBUCKET_DIY_ARCHIVE_REMOTE_KEEP".to_owned(), "5".to_owned())];
    let overridden = BackupConfig::from_toml_with_env(&text, "offsite.toml", env).unwrap();
    assert_eq!(overridden.config.archive.remote.as_ref().unwrap().keep, Some(5));
}

fn recipients_line(identity: &Path) -> String {
    let text = std::fs::read_to_string(identity).unwrap();
    let key: age::x25519::Identity = text.lines().nth(1).unwrap().parse().unwrap();
    key.to_public().to_string()
}

#[test]
fn configuration_mistakes_are_named() {
    let base = |archive: &str| {
        format!(
            "[bitbucket]\nurl = \"http://127.0.0.1:7990\"\nuser = \"a\"\npassword_env = \"X\"\n\
             [filesystem]\nhome = \"/h\"\n[archive]\nfolder = \"/a\"\n{archive}\n[backup]\nworking_folder = \"/w\"\n"
        )
    };
    let load = |archive: &str| BackupConfig::from_toml_with_env(&base(archive), "t.toml", Vec::new());
    let err = |archive: &str| load(archive).unwrap_err().to_string();

    let e = err("[archive.remote]\nurl = \"s3://b/p\"\noptions = { aws_secret_access_key = \"x\" }");
    assert!(e.contains("options.aws_secret_access_key") && !e.contains("\"x\""), "{e}");
    let e = err("[archive.remote]\nurl = \"s3://b/p\"\npart_size_mib = 1");
    assert!(e.contains("part_size_mib"), "{e}");
    let e = err("[archive.remote]\nurl = \"s3://b/p\"\nbucket = \"typo\"");
    assert!(e.contains("bucket"), "{e}");
    let e = err("[archive.encryption]\nrecipients = [\"age1nope\"]");
    assert!(e.contains("archive.encryption.recipients"), "{e}");
    let e = err("[archive.encryption]\n");
    assert!(e.contains("archive.encryption.recipients"), "{e}");

    // Upload-only needs no local folder.
    let text = base("[archive.remote]\nurl = \"s3://b/p\"\nkeep_local = false").replace("folder = \"/a\"\n", "");
    let config = BackupConfig::from_toml_with_env(&text, "t.toml", Vec::new()).unwrap().config;
    assert!(config.archive.folder.is_none());
    // An unsupported URL is refused when the store is built.
    let mut remote = config.archive.remote.clone().unwrap();
    remote.url = "ftp://example.invalid/x".parse().unwrap();
    let e = RemoteStore::from_config(&remote, None).unwrap_err().to_string();
    assert!(e.contains("archive.remote.url"), "{e}");
    // Credentials never show in Debug.
    let credentials = S3Server::credentials();
    assert!(!format!("{credentials:?}").contains(SECRET_KEY));
}
