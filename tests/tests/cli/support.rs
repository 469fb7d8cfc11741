//! The world of one end-to-end test: its own folder, simulator, sample home and configuration
//! file, and the `bitbucket-diy` binary run in a clean environment.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bitbucket_diy_core::MaintenanceClient;
use bitbucket_diy_core::sample_home::{self, SampleHomeSpec};
use bitbucket_diy_core::simulator::{Simulator, SimulatorConfig};
use tempfile::TempDir;

/// The variable the test configurations name as the password source.
pub const PASSWORD_VAR: &str = "BBDIY_TEST_PASSWORD";

/// The binary under test, next to this test executable (`target/debug/bitbucket-diy`).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("bitbucket-diy");
    assert!(
        bin.is_file(),
        "{} is missing: run the end-to-end tests with `cargo test --workspace` (or \
         `cargo build -p bitbucket-diy-cli` first)",
        bin.display()
    );
    static FRESH: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    FRESH.get_or_init(|| {
        // `cargo test -p bitbucket-diy-tests` alone does not rebuild the binary: never test an
        // old one by mistake.
        let built = std::fs::metadata(&bin).unwrap().modified().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for sources in ["bitbucket-diy-cli/src", "bitbucket-diy-core/src"] {
            if let Some(newer) = newest(&root.join(sources)).filter(|(t, _)| *t > built) {
                panic!(
                    "{} is older than {}: run `cargo test --workspace`, or `cargo build -p bitbucket-diy-cli` first",
                    bin.display(),
                    newer.1.display()
                );
            }
        }
    });
    bin
}

/// The most recently modified file below `dir`.
fn newest(dir: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest(&path)
        } else {
            entry.metadata().ok().and_then(|m| m.modified().ok()).map(|t| (t, path))
        };
        if let Some(c) = candidate
            && best.as_ref().is_none_or(|b| c.0 > b.0)
        {
            best = Some(c);
        }
    }
    best
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics, showing both streams, unless the exit code is `code`.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }

    /// Panics unless stdout or stderr contains `text`.
    #[track_caller]
    pub fn says(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text) || self.stderr.contains(text),
            "expected `{text}` in the output\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}\n--- stderr\n{}", self.stdout, self.stderr))
    }
}

/// `bitbucket-diy ARGS` with an empty environment but PATH and HOME: nothing of the developer's
/// own `BITBUCKET_DIY_*` variables or configuration files leaks in.
pub fn command(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .current_dir(home)
        .stdin(Stdio::null());
    command
}

/// Run `command` off the async runtime (the test's simulator must keep serving meanwhile).
pub async fn run(mut command: Command) -> Run {
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Run `command` feeding `input` on stdin.
pub async fn run_with_stdin(mut command: Command, input: &str) -> Run {
    let input = input.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output()
    })
    .await
    .unwrap()
    .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// One test's folder, simulator, home and configuration.
pub struct World {
    pub dir: TempDir,
    pub sim: Simulator,
    pub home: PathBuf,
    pub work: PathBuf,
    pub archives: PathBuf,
    pub config: PathBuf,
}

impl World {
    /// A simulator that drains in 50 ms and a tiny home of real repositories.
    pub async fn new() -> Self {
        Self::with_simulator(SimulatorConfig::default().with_drain_delay(Duration::from_millis(50))).await
    }

    pub async fn with_simulator(config: SimulatorConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("bitbucket-home");
        sample_home::generate(&home, &SampleHomeSpec::tiny()).unwrap();
        let sim = Simulator::start(config).await.unwrap();
        let world = Self {
            work: dir.path().join("work"),
            archives: dir.path().join("archives"),
            config: dir.path().join("bitbucket-diy.toml"),
            home,
            sim,
            dir,
        };
        world.write_config("[database]\ntype = \"none\"\n", "");
        world
    }

    /// Write the configuration with this `[database]` section and extra `[backup]` lines.
    pub fn write_config(&self, database: &str, backup_extra: &str) {
        let text = format!(
            "[bitbucket]\nurl = \"{url}\"\nuser = \"{user}\"\npassword_env = \"{PASSWORD_VAR}\"\n\n{database}\n\
             [filesystem]\nhome = \"{home}\"\n\n[archive]\nfolder = \"{archives}\"\n\n\
             [backup]\nworking_folder = \"{work}\"\npoll_interval = \"20ms\"\n{backup_extra}",
            url = self.sim.url(),
            user = self.sim.user(),
            home = self.home.display(),
            archives = self.archives.display(),
            work = self.work.display(),
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// Replace `from` with `to` in the configuration file.
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "`{from}` not in\n{text}");
        std::fs::write(&self.config, text.replace(from, to)).unwrap();
    }

    /// `bitbucket-diy --config <ours> ARGS` with the right password in the environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = command(self.dir.path(), &["--config", self.config.to_str().unwrap()]);
        command.args(args).env(PASSWORD_VAR, self.sim.password());
        command
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        run(self.command(args)).await
    }

    /// A client of the simulator, for setting the scene (locking it by hand…).
    pub fn client(&self) -> MaintenanceClient {
        MaintenanceClient::builder(self.sim.url().as_str())
            .credentials(self.sim.user(), self.sim.password().to_owned())
            .build()
            .unwrap()
    }

    /// The backup ids `list --json` shows, newest first.
    pub async fn listed_ids(&self) -> Vec<String> {
        let run = self.run(&["list", "--json"]).await;
        run.code(0);
        run.json().as_array().unwrap().iter().map(|b| b["metadata"]["id"].as_str().unwrap().to_owned()).collect()
    }
}

/// A URL where nothing listens: the port of a listener we closed.
pub fn unreachable_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/bitbucket")
}
