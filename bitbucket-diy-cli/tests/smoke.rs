//! The binary starts, and usage errors exit 2. (The end-to-end suite is the workspace's `tests`
//! crate; this file also makes `cargo test` build the binary that suite runs.)

use std::process::Command;

fn bitbucket_diy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bitbucket-diy"))
}

#[test]
fn help_lists_the_commands() {
    let out = bitbucket_diy().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["backup", "restore", "list", "verify", "status", "unlock", "cancel", "simulate", "demo", "config"] {
        assert!(help.contains(command), "{command} missing from\n{help}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = bitbucket_diy().arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
