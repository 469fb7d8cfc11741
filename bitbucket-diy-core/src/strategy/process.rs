//! Running external tools (pg_dump, mysqldump, rsync, user commands) safely.
//!
//! - Secrets reach a child only through its environment ([`ChildCommand::secret_env`]), never its
//!   argument list, which every user of the machine can read in `/proc/<pid>/cmdline`.
//! - A child runs in its own process group, so cancellation stops it and everything it forked
//!   (pg_dump's parallel workers) before the orchestrator unlocks.
//! - Only the tail of standard error is kept, so a chatty tool cannot exhaust memory.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::strategy::StrategyError;

/// Lines of standard error kept for the error message.
const STDERR_TAIL_LINES: usize = 20;
/// Bytes of standard output kept when it is captured (version strings, small query results).
const STDOUT_CAPTURE_LIMIT: usize = 1 << 20;

/// An external command under construction.
pub struct ChildCommand {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    secret_env: Vec<(OsString, SecretString)>,
    env_remove: Vec<OsString>,
    current_dir: Option<PathBuf>,
    stdin: Option<PathBuf>,
    stdout: Option<PathBuf>,
    hint: String,
    shell: bool,
}

impl fmt::Debug for ChildCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildCommand")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("secret_env", &self.secret_env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What a finished child left behind.
#[derive(Debug, Clone)]
pub struct ChildOutput {
    /// Standard output (when not redirected to a file), up to 1 MiB.
    pub stdout: Vec<u8>,
    /// The last lines of standard error.
    pub stderr_tail: String,
}

impl ChildOutput {
    /// Standard output as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl ChildCommand {
    /// A command running `program` (looked up on `PATH`).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            secret_env: Vec::new(),
            env_remove: Vec::new(),
            current_dir: None,
            stdin: None,
            stdout: None,
            hint: String::new(),
            shell: false,
        }
    }

    /// A user-written command line run by `/bin/sh -c` (hooks, `command` strategies).
    pub fn shell(command_line: &str) -> Self {
        let mut cmd = Self::new("/bin/sh");
        cmd.args = vec!["-c".into(), command_line.into()];
        cmd.shell = true;
        cmd
    }

    /// Add one argument. Never pass a secret here.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Add arguments. Never pass a secret here.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Set a plain environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Pass a secret through the environment (e.g. `PGPASSWORD`, `MYSQL_PWD`).
    pub fn secret_env(mut self, key: impl AsRef<OsStr>, value: &SecretString) -> Self {
        self.secret_env.push((key.as_ref().to_owned(), value.clone()));
        self
    }

    /// Make sure the child does not inherit `key` from us.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env_remove.push(key.as_ref().to_owned());
        self
    }

    /// Run in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.current_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Feed the file at `path` as standard input.
    pub fn stdin_file(mut self, path: impl AsRef<Path>) -> Self {
        self.stdin = Some(path.as_ref().to_owned());
        self
    }

    /// Write standard output to a new file at `path` (owner-only permissions).
    pub fn stdout_file(mut self, path: impl AsRef<Path>) -> Self {
        self.stdout = Some(path.as_ref().to_owned());
        self
    }

    /// What to tell the user when the program is missing ("install the postgresql-client package").
    pub fn install_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }

    /// The program's name, for messages.
    pub fn program_name(&self) -> String {
        if self.shell {
            return "sh -c".to_owned();
        }
        Path::new(&self.program).file_name().unwrap_or(self.program.as_os_str()).to_string_lossy().into_owned()
    }

    /// The tokio command with environment, secrets and folder applied; stdio left to the caller.
    fn prepare(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).kill_on_drop(true).process_group(0).stdin(Stdio::null());
        // Our own secret-bearing variables (BITBUCKET_DIY_BITBUCKET_PASSWORD, the unlock token…)
        // never reach a tool, a hook or a user command: none of them needs ours.
        for (key, _) in std::env::vars_os() {
            if is_secret_variable(&key) {
                cmd.env_remove(key);
            }
        }
        for key in &self.env_remove {
            cmd.env_remove(key);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in &self.secret_env {
            cmd.env(k, v.expose_secret());
        }
        if let Some(dir) = &self.current_dir {
            cmd.current_dir(dir);
        }
        cmd
    }

    fn spawn(&self, cmd: &mut Command) -> Result<tokio::process::Child, StrategyError> {
        cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound && self.current_dir.as_ref().is_none_or(|d| d.is_dir()) {
                StrategyError::ToolMissing {
                    tool: self.program_name(),
                    hint: if self.hint.is_empty() {
                        "install it or add it to PATH".to_owned()
                    } else {
                        self.hint.clone()
                    },
                }
            } else {
                StrategyError::io("starting", PathBuf::from(&self.program), e)
            }
        })
    }

    /// Start a long-lived child whose standard input and output we talk to (a `psql` session
    /// holding a transaction open). Killed with its process group when the session is dropped.
    pub fn spawn_session(self) -> Result<ChildSession, StrategyError> {
        let mut cmd = self.prepare();
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.spawn(&mut cmd)?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(|out| BufReader::new(out).lines());
        Ok(ChildSession { program: self.program_name(), child, stdin, stdout })
    }

    /// Run to completion. On cancellation the whole process group is killed and
    /// [`StrategyError::Cancelled`] returned; a non-zero exit is [`StrategyError::CommandFailed`].
    pub async fn run(self, cancel: &CancellationToken) -> Result<ChildOutput, StrategyError> {
        let program = self.program_name();
        let mut cmd = self.prepare();
        if let Some(path) = &self.stdin {
            let file = std::fs::File::open(path).map_err(|e| StrategyError::io("opening", path, e))?;
            cmd.stdin(Stdio::from(file));
        }
        let capture_stdout = match &self.stdout {
            Some(path) => {
                let file = create_private(path)?;
                cmd.stdout(Stdio::from(file));
                false
            }
            None => {
                cmd.stdout(Stdio::piped());
                true
            }
        };
        cmd.stderr(Stdio::piped());

        let mut child = self.spawn(&mut cmd)?;
        let pid = child.id();

        let stderr = child.stderr.take();
        let stderr_task = tokio::spawn(async move {
            let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
            if let Some(stderr) = stderr {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tail.len() == STDERR_TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
            Vec::from(tail).join("\n")
        });
        let stdout = if capture_stdout { child.stdout.take() } else { None };
        let stdout_task = tokio::spawn(async move {
            let mut buf = Vec::new();
            if let Some(out) = stdout {
                let mut limited = out.take(STDOUT_CAPTURE_LIMIT as u64);
                let _ = limited.read_to_end(&mut buf).await;
                // Drain the rest so the child never blocks on a full pipe.
                let mut rest = limited.into_inner();
                let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
            }
            buf
        });

        let status = tokio::select! {
            status = child.wait() => status.map_err(|e| StrategyError::io("waiting for", PathBuf::from(&self.program), e))?,
            () = cancel.cancelled() => {
                kill_group(pid);
                let _ = child.wait().await;
                return Err(StrategyError::Cancelled);
            }
        };
        let stderr_tail = stderr_task.await.unwrap_or_default();
        let stdout = stdout_task.await.unwrap_or_default();
        if status.success() {
            Ok(ChildOutput { stdout, stderr_tail })
        } else {
            Err(StrategyError::CommandFailed { program, status: describe(status), stderr: stderr_tail })
        }
    }
}

/// A running child we converse with line by line; its process group is killed on drop.
pub struct ChildSession {
    program: String,
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: Option<tokio::io::Lines<BufReader<tokio::process::ChildStdout>>>,
}

impl fmt::Debug for ChildSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSession").field("program", &self.program).field("pid", &self.child.id()).finish()
    }
}

impl ChildSession {
    /// Write `text` to the child's standard input.
    pub async fn send(&mut self, text: &str) -> Result<(), StrategyError> {
        use tokio::io::AsyncWriteExt;
        let Some(stdin) = self.stdin.as_mut() else { return Err(self.gone("its input is closed")) };
        let written = async {
            stdin.write_all(text.as_bytes()).await?;
            stdin.flush().await
        };
        written.await.map_err(|e| self.gone(&e.to_string()))
    }

    /// The next line of the child's standard output; an error if it ends first.
    pub async fn read_line(&mut self) -> Result<String, StrategyError> {
        let Some(lines) = self.stdout.as_mut() else { return Err(self.gone("its output is closed")) };
        match lines.next_line().await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err(self.failure().await),
            Err(e) => Err(self.gone(&e.to_string())),
        }
    }

    /// Close standard input and wait for a clean exit.
    pub async fn finish(mut self) -> Result<(), StrategyError> {
        drop(self.stdin.take());
        let status = self.child.wait().await.map_err(|e| self.gone(&e.to_string()))?;
        if status.success() { Ok(()) } else { Err(self.failure().await) }
    }

    async fn failure(&mut self) -> StrategyError {
        let status = self.child.wait().await.map(describe).unwrap_or_else(|e| e.to_string());
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut stderr).await;
        }
        let tail: Vec<&str> = stderr.lines().rev().take(STDERR_TAIL_LINES).collect();
        let stderr = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        StrategyError::CommandFailed { program: self.program.clone(), status, stderr }
    }

    fn gone(&self, why: &str) -> StrategyError {
        StrategyError::CommandFailed {
            program: self.program.clone(),
            status: "ended early".to_owned(),
            stderr: why.to_owned(),
        }
    }
}

impl Drop for ChildSession {
    fn drop(&mut self) {
        kill_group(self.child.id());
    }
}

/// `BITBUCKET_DIY_*` variables that may hold a password, a token or a key.
fn is_secret_variable(name: &OsStr) -> bool {
    let name = name.to_string_lossy().to_ascii_uppercase();
    name.starts_with("BITBUCKET_DIY_")
        && ["PASSWORD", "TOKEN", "SECRET", "ACCESS_KEY", "IDENTITY"].iter().any(|word| name.contains(word))
        && !name.ends_with("_FILE")
        && !name.ends_with("_ENV")
}

fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw) else {
        return;
    };
    // The child leads its own group (process_group(0)), so this reaches its workers too.
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".to_owned(),
    }
}

/// Create a new file readable and writable by its owner only.
pub(crate) fn create_private(path: &Path) -> Result<std::fs::File, StrategyError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| StrategyError::io("creating", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_go_through_the_environment() {
        let out = ChildCommand::new("sh")
            .args(["-c", "printf %s \"$SECRET_X\""])
            .secret_env("SECRET_X", &SecretString::from("hunter2"))
            .run(&CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(out.stdout_text(), "hunter2");
    }

    #[test]
    fn our_secret_variables_are_recognised() {
        for secret in
            ["BITBUCKET_DIY_BITBUCKET_PASSWORD", "BITBUCKET_DIY_DATABASE_PASSWORD", "BITBUCKET_DIY_UNLOCK_TOKEN"]
        {
            assert!(is_secret_variable(OsStr::new(secret)), "{secret}");
        }
        for plain in ["BITBUCKET_DIY_BACKUP_ID", "BITBUCKET_DIY_DATABASE_PASSWORD_FILE", "PGPASSWORD", "PATH"] {
            assert!(!is_secret_variable(OsStr::new(plain)), "{plain}");
        }
    }

    #[tokio::test]
    async fn missing_tool_is_named() {
        let err = ChildCommand::new("definitely-not-a-tool-bbdiy")
            .install_hint("apt-get install nothing")
            .run(&CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StrategyError::ToolMissing { ref tool, .. } if tool == "definitely-not-a-tool-bbdiy"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn failure_keeps_stderr_tail() {
        let err = ChildCommand::new("sh")
            .args(["-c", "echo first >&2; echo boom >&2; exit 3"])
            .run(&CancellationToken::new())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exit code 3") && text.contains("boom"), "{text}");
    }

    #[tokio::test]
    async fn cancellation_kills_the_child_and_its_children() {
        let cancel = CancellationToken::new();
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let task = tokio::spawn({
            let cancel = cancel.clone();
            async move { ChildCommand::new("sh").args(["-c", &script]).run(&cancel).await }
        });
        while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        cancel.cancel();
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, StrategyError::Cancelled));
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // The grandchild must be gone (or a zombie reaped by init) shortly after.
        let mut alive = true;
        for _ in 0..100 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                alive = false;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(!alive, "grandchild {pid} survived cancellation");
    }
}
