//! Times the archive step alone on an existing working folder, for profiling:
//!
//! ```text
//! cargo run --release -p bitbucket-diy-core --features testing --example archive_bench -- WORKING_FOLDER ARCHIVE_FOLDER [LEVEL [THREADS]]
//! ```
//!
//! With `EXTRACT_TO=<empty or missing folder>` it then times the extraction of that archive too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use bitbucket_diy_core::events::NoEvents;
use bitbucket_diy_core::strategy::archive::TarZstdArchive;
use bitbucket_diy_core::strategy::conformance::archive::sample_metadata;
use bitbucket_diy_core::strategy::{ArchiveStrategy, StepContext, WorkingFolder};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let working = WorkingFolder::new(&args[0]);
    let level = args.get(2).map_or(3, |l| l.parse().unwrap());
    let threads = args.get(3).map_or(0, |t| t.parse().unwrap());
    let archive = TarZstdArchive::new(args[1].clone().into(), level, threads);
    let id = format!("bench-{}", std::process::id());
    let metadata = sample_metadata(&id, jiff::Timestamp::now()).unwrap();
    let ctx = StepContext::new(id.parse().unwrap(), working.clone(), Arc::new(NoEvents), CancellationToken::new());
    let start = Instant::now();
    let info = archive.write(&working, &metadata, &ctx).await.unwrap();
    println!("{:.2} s, {} bytes, {}", start.elapsed().as_secs_f64(), info.bytes, info.path.display());
    if let Some(target) = std::env::var_os("EXTRACT_TO") {
        let start = Instant::now();
        archive.extract(&info, std::path::Path::new(&target), &ctx).await.unwrap();
        println!("extracted in {:.2} s", start.elapsed().as_secs_f64());
    }
}
