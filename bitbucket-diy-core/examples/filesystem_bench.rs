//! One quick measurement of the `native` copy against `rsync -a --delete` on a generated home.
//!
//! ```text
//! cargo run --release -p bitbucket-diy-core --example filesystem_bench -- /scratch/dir 200
//! ```
//! (the second argument is the home's size in MB). Drops the page cache between runs when
//! allowed (root), so "cold" means cold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bitbucket_diy_core::config::{FilesystemConfig, FilesystemType, InstanceType};
use bitbucket_diy_core::events::NoEvents;
use bitbucket_diy_core::sample_home::{SampleHome, SampleHomeSpec, commit_to_repo, generate};
use bitbucket_diy_core::strategy::filesystem::NativeCopy;
use bitbucket_diy_core::strategy::{FilesystemStrategy, StepContext, WorkingFolder};
use tokio_util::sync::CancellationToken;

fn drop_caches() -> &'static str {
    let _ = std::process::Command::new("sync").status();
    match std::fs::write("/proc/sys/vm/drop_caches", "3") {
        Ok(()) => "cold cache",
        Err(_) => "warm cache (cannot drop caches)",
    }
}

fn rsync(src: &Path, dst: &Path) {
    let status = std::process::Command::new("rsync")
        .args(["-a", "--delete"])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dst.display()))
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let scratch = std::path::PathBuf::from(args.next().expect("usage: filesystem_bench DIR [MB]"));
    let megabytes: u64 = args.next().map_or(200, |a| a.parse().unwrap());
    let home = scratch.join("home");
    let started = Instant::now();
    if !home.exists() {
        generate(&home, &SampleHomeSpec::with_total_bytes(megabytes << 20)).unwrap();
    }
    let repos = SampleHome::repositories_dir(&home);
    let bytes: u64 =
        walkdir::WalkDir::new(&home).into_iter().filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    let files =
        walkdir::WalkDir::new(&home).into_iter().filter(|e| e.as_ref().is_ok_and(|e| e.file_type().is_file())).count();
    println!(
        "home of {} repositories, {files} files, {:.0} MB (generated or found in {:.1?})",
        std::fs::read_dir(&repos).unwrap().count(),
        bytes as f64 / 1e6,
        started.elapsed()
    );

    let cfg = FilesystemConfig {
        kind: FilesystemType::Native,
        home: home.clone(),
        data_stores: Vec::new(),
        exclude: Vec::new(),
        exclude_repos: Vec::new(),
        threads: None,
        rsync_options: Vec::new(),
        prepare_command: None,
        backup_command: None,
        restore_command: None,
        atomic_snapshot: false,
    };
    let native = NativeCopy::from_config(&cfg, true, InstanceType::Bitbucket).unwrap();
    let _ = std::fs::remove_dir_all(scratch.join("work"));
    let ctx = StepContext::new(
        "bench".parse().unwrap(),
        WorkingFolder::new(scratch.join("work")),
        Arc::new(NoEvents),
        CancellationToken::new(),
    );
    let cache = drop_caches();
    let t = Instant::now();
    native.prepare(&ctx).await.unwrap();
    println!("native prepare, empty copy ({cache}, {} threads): {:.2?}", native.threads(), t.elapsed());
    // A little change, as between the prepare pass and the locked one.
    commit_to_repo(&repos.join("3"), "bench change").unwrap();
    let cache = drop_caches();
    let t = Instant::now();
    native.prepare(&ctx).await.unwrap();
    println!("native final pass, one commit changed ({cache}): {:.2?}", t.elapsed());
    let t = Instant::now();
    native.prepare(&ctx).await.unwrap();
    println!("native final pass, nothing changed (warm cache): {:.2?}", t.elapsed());

    let plain = scratch.join("rsync-copy");
    let _ = std::fs::remove_dir_all(&plain);
    let cache = drop_caches();
    let t = Instant::now();
    rsync(&home, &plain);
    println!("rsync -a --delete, empty copy ({cache}): {:.2?}", t.elapsed());
    commit_to_repo(&repos.join("4"), "bench change").unwrap();
    let cache = drop_caches();
    let t = Instant::now();
    rsync(&home, &plain);
    println!("rsync -a --delete, one commit changed ({cache}): {:.2?}", t.elapsed());
    let t = Instant::now();
    rsync(&home, &plain);
    println!("rsync -a --delete, nothing changed (warm cache): {:.2?}", t.elapsed());
}
