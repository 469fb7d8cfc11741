//! The suite every strategy implementation must pass, built-in or third-party
//! (feature `testing`). Each check returns `Err(description)` when the implementation misbehaves.

pub mod archive;
pub mod database;
pub mod filesystem;

/// The outcome of one conformance check.
pub type TestResult = Result<(), String>;
