//! The examples the documentation points to run, so they cannot rot.

// Test code: a failure panics with its message.
#![allow(clippy::unwrap_used)]

// `cargo run --example custom_database` runs its `main`; the test runs its `rehearse`.
#[allow(dead_code)]
#[path = "../examples/custom_database.rs"]
mod custom_database;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_database_strategy_example_backs_up_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    // A missing sqlite3 fails here with the tool's name and how to install it.
    let projects = custom_database::rehearse(dir.path()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(projects, ["PLATFORM"]);
    assert!(dir.path().join("restored-home/shared/data/repositories").is_dir());
    // The home copy left the internal database files out: our strategy dumps the database.
    let restored_internal_db = std::fs::read_dir(dir.path().join("restored-home/shared/data"))
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("db."));
    assert!(!restored_internal_db);
}
