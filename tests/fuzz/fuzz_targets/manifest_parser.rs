//! Any bytes as a manifest or backup metadata: parsed into a typed error or a value that can be
//! used (compared, totalled, written back), never a panic.
#![no_main]

use bitbucket_diy_core::archive_format::{BackupMetadata, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = serde_json::from_slice::<Manifest>(data) {
        let _ = manifest.total_bytes();
        let _ = manifest.file_count();
        let _ = manifest.first_difference(&manifest.entries);
        let _ = manifest.first_difference(&manifest.entries[manifest.entries.len() / 2..]);
        let _ = serde_json::to_vec(&manifest).expect("a parsed manifest serializes");
    }
    let _ = serde_json::from_slice::<BackupMetadata>(data);
});
