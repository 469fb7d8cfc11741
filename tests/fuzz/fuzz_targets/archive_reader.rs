//! Any bytes as a `.tar.zst` archive: `verify` and `extract` return (an error, or a tree checked
//! against its manifest), never panic, and never write outside the extraction target.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use bitbucket_diy_core::archive_format::BackupMetadata;
use bitbucket_diy_core::events::NoEvents;
use bitbucket_diy_core::strategy::archive::TarZstdArchive;
use bitbucket_diy_core::strategy::{ArchiveInfo, ArchiveStrategy, StepContext, WorkingFolder};
use libfuzzer_sys::fuzz_target;
use tokio_util::sync::CancellationToken;

/// The metadata `verify` and `extract` are handed (as `list` would read it from a valid archive).
fn metadata() -> BackupMetadata {
    serde_json::from_str(
        r#"{"format_version": 1, "id": "fuzz", "created_at": "2026-01-01T00:00:00Z", "tool_version": "fuzz",
            "database": {"name": "none"}, "filesystem": {"name": "native"}}"#,
    )
    .expect("valid metadata")
}

fuzz_target!(|data: &[u8]| {
    let sandbox = tempfile::tempdir().expect("a temporary folder");
    let folder = sandbox.path().join("archives");
    std::fs::create_dir(&folder).expect("the archive folder");
    let path = folder.join("fuzz.tar.zst");
    std::fs::write(&path, data).expect("the archive");
    let archive = TarZstdArchive::new(folder, 3, 1);
    let info = ArchiveInfo { metadata: metadata(), path, bytes: data.len() as u64 };
    let working = WorkingFolder::new(sandbox.path().join("working"));
    let ctx = StepContext::new("fuzz".parse().expect("id"), working, Arc::new(NoEvents), CancellationToken::new());
    let target = sandbox.path().join("target");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let _ = archive.verify(&info, &ctx).await;
        if archive.extract(&info, &target, &ctx).await.is_err() {
            assert!(!target.exists(), "a failed extraction left its target");
        }
    });
    for entry in std::fs::read_dir(sandbox.path()).expect("the sandbox").flatten() {
        let name = entry.file_name();
        assert!(
            ["archives", "target", "working"].iter().any(|n| Path::new(n) == Path::new(&name)),
            "written outside the target: {name:?}"
        );
    }
});
