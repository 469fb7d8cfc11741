//! End-to-end tests of the `bitbucket-diy` binary against the simulator (started in-process by
//! each test, on port 0) and the real PostgreSQL: every command, its exit code and output modes.
//!
//! Run them with `cargo test --workspace`: the CLI package's own tests make cargo build the
//! binary these tests run.

// Test code: helpers panic with the failure, as the tests themselves do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backup;
mod config;
mod demo;
mod docs;
mod docs_examples;
mod mariadb;
mod postgres;
mod remote;
mod signal_matrix;
mod signals;
mod simulate;
mod support;
