//! Running the `git` CLI for the generator, isolated from the user's and the system's git
//! configuration so a developer's `~/.gitconfig` (signing, hooks, templates) changes nothing.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::sample_home::SampleHomeError;

/// Committer of generated history (fixed, so generated repositories are reproducible).
pub(crate) const AUTHOR_NAME: &str = "Sample Home";
pub(crate) const AUTHOR_EMAIL: &str = "sample-home@example.invalid";

/// Run `git <args>` in `dir` (or the current folder), feeding `stdin`; return its standard
/// output.
pub(crate) fn git(dir: Option<&Path>, args: &[&str], stdin: Option<&[u8]>) -> Result<String, SampleHomeError> {
    git_with_env(dir, args, stdin, &[])
}

pub(crate) fn git_with_env(
    dir: Option<&Path>,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
) -> Result<String, SampleHomeError> {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.arg("-C").arg(dir);
    }
    cmd.args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
        .env("GIT_COMMITTER_NAME", AUTHOR_NAME)
        .env("GIT_COMMITTER_EMAIL", AUTHOR_EMAIL)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let describe = || format!("git {}", args.iter().take(3).copied().collect::<Vec<_>>().join(" "));
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SampleHomeError::GitMissing
        } else {
            SampleHomeError::Io { path: dir.map(Path::to_owned).unwrap_or_default(), source: e }
        }
    })?;
    // Write stdin from a thread: git may fill its stdout pipe before reading all of its input.
    let writer = match (stdin, child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => {
            let bytes = bytes.to_vec();
            Some(std::thread::spawn(move || pipe.write_all(&bytes)))
        }
        _ => None,
    };
    let output = child
        .wait_with_output()
        .map_err(|e| SampleHomeError::Io { path: dir.map(Path::to_owned).unwrap_or_default(), source: e })?;
    let write_result = writer.map(|w| w.join());
    if !output.status.success() {
        return Err(SampleHomeError::Git {
            command: describe(),
            dir: dir.map(Path::to_owned).unwrap_or_default(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    if let Some(Ok(Err(e))) = write_result {
        return Err(SampleHomeError::Io { path: dir.map(Path::to_owned).unwrap_or_default(), source: e });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
