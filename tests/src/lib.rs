//! End-to-end tests of the `bitbucket-diy` binary live in `tests/cli/` (one test binary with a
//! module per area). Run them with `cargo test --workspace`, which also builds the binary they
//! drive (the CLI package's own tests make cargo build it); they need git, PostgreSQL on
//! 127.0.0.1:5432 and MariaDB on 127.0.0.1:3306 (`scripts/ensure-test-services.sh`).
