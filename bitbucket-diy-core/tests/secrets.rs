//! Secrets and permissions: during a real backup and restore (PostgreSQL with a role that has a
//! password, the simulator with its administrator's password), no password and no unlock or
//! cancel token appears on any process's command line (every `/proc/*/cmdline`, sampled every
//! few milliseconds), in any log line at TRACE level, or in any `Debug` output; the password file
//! handed to the PostgreSQL tools is owner-only; working folders and archives are owner-only;
//! TLS verification is on unless turned off, and turning it off is warned about.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bitbucket_diy_core::client::{ClientError, MaintenanceClient};
use bitbucket_diy_core::config::{InstanceType, SecretSource};
use bitbucket_diy_core::orchestrator::{BackupOrchestrator, RestoreRequest};
use bitbucket_diy_core::simulator::{Fault, SimulatorConfig};
use bitbucket_diy_core::strategy::WorkingFolder;
use bitbucket_diy_core::strategy::database::PostgresDatabase;
use bitbucket_diy_core::strategy::filesystem::NativeCopy;
use bitbucket_diy_core::{BackupConfig, ErrorKind};
use secrecy::SecretString;
use support::common::postgres as pg;
use support::{Bench, PgDatabase};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Every log line of this test binary, at TRACE level

fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    static INIT: std::sync::Once = std::sync::Once::new();
    let logs = LOGS.get_or_init(Mutex::default);
    INIT.call_once(|| {
        struct Capture;
        impl Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                captured_logs().lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init()
            .expect("the only subscriber of this test binary");
    });
    logs
}

fn logs_text() -> String {
    String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Watching every process while a run goes on

/// Samples every process's command line every 2 ms, and the simulator's tokens as they appear.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Watched>>,
}

#[derive(Default, Debug)]
struct Watched {
    /// Distinct command lines seen (arguments joined by spaces).
    command_lines: BTreeSet<String>,
    /// Unlock and cancel tokens the simulator handed out.
    tokens: BTreeSet<String>,
    /// Password files (`PGPASSFILE`) seen in the PostgreSQL tools' environments, with the modes
    /// of the file and its folder while the tool ran.
    password_files: Vec<(PathBuf, u32, u32)>,
    /// Environments holding a password in clear (`PGPASSWORD=…`).
    password_in_environment: Vec<String>,
    samples: u64,
}

impl Watcher {
    fn start(bench: Arc<Bench>, db_password: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut watched = Watched::default();
                while !stop.load(Ordering::SeqCst) {
                    let state = bench.sim.snapshot();
                    watched.tokens.extend(state.unlock_token.into_iter().chain(state.cancel_token));
                    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
                            continue;
                        }
                        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
                        let args: Vec<String> = raw
                            .split(|b| *b == 0)
                            .filter(|a| !a.is_empty())
                            .map(|a| String::from_utf8_lossy(a).into_owned())
                            .collect();
                        if args.is_empty() {
                            continue;
                        }
                        let is_pg_tool = args
                            .iter()
                            .take(2)
                            .any(|a| ["pg_dump", "pg_restore", "psql"].iter().any(|t| Path::new(a).ends_with(t)));
                        if is_pg_tool {
                            watch_environment(&entry.path(), &db_password, &mut watched);
                        }
                        watched.command_lines.insert(args.join(" "));
                    }
                    watched.samples += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                watched
            }
        });
        Self { stop, thread: Some(thread) }
    }

    fn finish(mut self) -> Watched {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn watch_environment(proc_dir: &Path, db_password: &str, watched: &mut Watched) {
    let Ok(environ) = std::fs::read(proc_dir.join("environ")) else { return };
    for variable in environ.split(|b| *b == 0).map(String::from_utf8_lossy) {
        if let Some(file) = variable.strip_prefix("PGPASSFILE=") {
            let file = PathBuf::from(file);
            let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).ok();
            if let (Some(file_mode), Some(folder_mode)) = (mode(&file), file.parent().and_then(mode)) {
                watched.password_files.push((file, file_mode, folder_mode));
            }
        }
        if variable.contains(db_password) {
            watched.password_in_environment.push(variable.split('=').next().unwrap_or_default().to_owned());
        }
    }
}

/// Wrappers that keep each PostgreSQL tool alive long enough for the 2 ms sampler to see it
/// (same arguments, then the real tool), so the scan provably covers them.
fn slow_tools(folder: &Path) -> PathBuf {
    let bin = folder.join("slow-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["pg_dump", "pg_restore", "psql"] {
        let real = String::from_utf8(
            std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap().stdout,
        )
        .unwrap();
        let script = bin.join(tool);
        std::fs::write(&script, format!("#!/bin/sh\nsleep 0.3\nexec {} \"$@\"\n", real.trim())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

// ---------------------------------------------------------------------------------------------

struct Secrets {
    db_password: String,
    bitbucket_password: String,
}

impl Secrets {
    fn new() -> Self {
        let pid = std::process::id();
        Self { db_password: format!("Pg-Secret-{pid}-x7Q!"), bitbucket_password: format!("Bb-Secret-{pid}-k3Z?") }
    }

    /// Every secret of the run: the passwords and every token the simulator handed out.
    fn all(&self, tokens: &BTreeSet<String>) -> Vec<String> {
        let mut all = vec![self.db_password.clone(), self.bitbucket_password.clone()];
        all.extend(tokens.iter().cloned());
        all
    }
}

fn find_secrets(text: &str, secrets: &[String]) -> Vec<String> {
    secrets.iter().filter(|s| text.contains(s.as_str())).map(|s| format!("{}…", &s[..6.min(s.len())])).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_on_a_command_line_in_a_log_or_in_debug_during_backup_and_restore() {
    captured_logs();
    let secrets = Secrets::new();
    let bench = Bench::with(
        bitbucket_diy_core::sample_home::SampleHomeSpec::tiny(),
        SimulatorConfig::default().with_admin("backup-admin", secrets.bitbucket_password.clone()),
    )
    .await;

    // A role with a password (trust authentication accepts it; the tools are still handed it).
    let db = PgDatabase::create("secrets_source", "SELECT 1;");
    let role = db.cleanup.role(format!("bbdiy_secret_role_{}", std::process::id()));
    pg::psql(
        "postgres",
        &format!(
            "CREATE ROLE {} LOGIN CREATEDB PASSWORD {}; ALTER DATABASE {} OWNER TO {0};",
            pg::ident(&role),
            pg::literal(&secrets.db_password),
            pg::ident(&db.name)
        ),
    );
    pg::psql_as(
        &role,
        &db.name,
        "CREATE TABLE repository (id int PRIMARY KEY, slug text); INSERT INTO repository VALUES (1, 'a');",
    );
    let mut config = db.config();
    config.user = role.clone();
    config.password = SecretSource::Value(SecretString::from(secrets.db_password.clone()));
    config.bin_dir = Some(slow_tools(bench.dir.path()));

    let client = MaintenanceClient::builder(bench.sim.url().as_str())
        .credentials("backup-admin", secrets.bitbucket_password.clone())
        .build()
        .unwrap();
    let orchestrator: BackupOrchestrator = bench
        .orchestrator()
        .client(client.clone())
        .database(PostgresDatabase::from_config(&config).unwrap())
        .filesystem(NativeCopy::from_config(&bench.filesystem_config(), true, InstanceType::Bitbucket).unwrap())
        .events(Arc::new(bitbucket_diy_core::events::TracingEvents))
        .build()
        .unwrap();

    let sim = Arc::new(bench);
    let watcher = Watcher::start(sim.clone(), secrets.db_password.clone());
    // Controls: a command line and a TRACE line the scans must find, so a scan that sees
    // nothing cannot pass.
    let canary = format!("bbdiy-canary-{}", std::process::id());
    let mut control = std::process::Command::new("sh").args(["-c", "sleep 0.5", &canary]).spawn().unwrap();
    tracing::trace!("control line {canary}");
    let report = orchestrator.backup(CancellationToken::new()).await.unwrap();
    control.wait().unwrap();
    let restored_home = sim.dir.path().join("restored");
    let restored_db = db.another_name("secrets", "restored");
    orchestrator
        .restore(&RestoreRequest::new(report.id.as_str(), &restored_home, Some(restored_db)), CancellationToken::new())
        .await
        .unwrap();
    let verified = orchestrator.verify(report.id.as_str(), true, CancellationToken::new()).await.unwrap();
    let watched = watcher.finish();
    let all = secrets.all(&watched.tokens);

    eprintln!(
        "watched: {} samples, {} distinct command lines, {} tokens, {} password-file sightings",
        watched.samples,
        watched.command_lines.len(),
        watched.tokens.len(),
        watched.password_files.len()
    );
    // The scan saw what it had to see.
    assert!(watched.command_lines.iter().any(|c| c.contains(&canary)), "the control command line was not seen");
    assert!(logs_text().contains(&format!("control line {canary}")), "the control TRACE line was not captured");
    assert!(
        watched.tokens.len() >= 2,
        "the simulator's unlock and cancel tokens were not captured: {}",
        watched.tokens.len()
    );
    for tool in ["pg_dump", "pg_restore", "psql"] {
        assert!(
            watched.command_lines.iter().any(|c| c.split(' ').take(3).any(|a| a.ends_with(tool))),
            "{tool} was never seen in {} samples",
            watched.samples
        );
    }
    // 1. Command lines.
    let exposed: Vec<&String> = watched.command_lines.iter().filter(|c| !find_secrets(c, &all).is_empty()).collect();
    assert!(exposed.is_empty(), "secrets on command lines: {exposed:?}");
    // Environment: a password file, owner-only, never the password itself.
    assert!(
        watched.password_in_environment.is_empty(),
        "passwords in environments: {:?}",
        watched.password_in_environment
    );
    assert!(!watched.password_files.is_empty(), "no PGPASSFILE seen: the password did not reach the tools");
    for (file, file_mode, folder_mode) in &watched.password_files {
        assert_eq!((*file_mode, *folder_mode), (0o600, 0o700), "{} is not owner-only", file.display());
    }
    // 2. Logs at TRACE level.
    let text = logs_text();
    assert!(text.contains("TRACE") || text.contains("DEBUG"), "nothing was captured below INFO: {} bytes", text.len());
    assert!(text.contains("calling Bitbucket"), "the client's logs were not captured");
    let leaked = find_secrets(&text, &all);
    assert!(leaked.is_empty(), "secrets in the logs: {leaked:?}");
    // 3. Debug output of everything that holds a secret.
    let debug = format!("{orchestrator:?}\n{client:?}\n{config:?}\n{report:?}\n{verified:?}\n{:?}", sim.sim.snapshot());
    assert!(debug.contains("backup-admin"), "the Debug output is not the real one");
    let leaked = find_secrets(&debug, &all);
    assert!(leaked.is_empty(), "secrets in Debug output: {leaked:?}");
    // 4. Owner-only folders and files.
    let working = WorkingFolder::new(&sim.working);
    for folder in [working.root().to_owned(), working.state_dir(), sim.archives.clone()] {
        assert_eq!(mode(&folder), 0o700, "{} is not owner-only", folder.display());
    }
    assert_eq!(mode(&report.archive), 0o600, "the archive is not owner-only");
    tokio::task::spawn_blocking(move || drop(sim)).await.unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_left_locked_error_shows_the_token_in_its_message_only() {
    captured_logs();
    let bench = Bench::new().await;
    bench.sim.add_fault(Fault::RejectUnlock { times: 100 });
    let orchestrator = bench
        .orchestrator()
        .with_options(|o| {
            o.unlock_attempts = 2;
            o.unlock_retry_delay = Duration::from_millis(5);
        })
        .build()
        .unwrap();
    let err = orchestrator.backup(CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeftLocked);
    let token = bench.sim.snapshot().unlock_token.unwrap();
    assert!(err.to_string().contains(&token), "the message must let a human unlock");
    assert!(!format!("{err:?}").contains(&token), "Debug never shows it");
    assert!(!logs_text().contains(&token), "the token reached a log line");
}

#[test]
fn configurations_and_their_errors_never_show_passwords() {
    let text = r#"
[bitbucket]
url = "https://bitbucket.example.com"
user = "backup"
password = "Cfg-Bb-Secret-1"

[database]
type = "postgresql"
database = "bitbucket"
password = "Cfg-Db-Secret-2"

[filesystem]
home = "/var/atlassian/application-data/bitbucket"

[archive]
folder = "/backup/archives"

[backup]
working_folder = "/backup/work"
"#;
    let secrets = ["Cfg-Bb-Secret-1".to_owned(), "Cfg-Db-Secret-2".to_owned()];
    let loaded = BackupConfig::from_toml_with_env(text, "c.toml", Vec::new()).unwrap();
    let shown = format!("{loaded:?}\n{}", loaded.warnings.join("\n"));
    assert!(find_secrets(&shown, &secrets).is_empty(), "{shown}");
    let builder = BackupOrchestrator::from_config(&loaded.config).unwrap();
    let orchestrator = builder.build().unwrap();
    let shown = format!("{orchestrator:?}\n{:?}", orchestrator.client().unwrap());
    assert!(shown.contains("bitbucket.example.com") && find_secrets(&shown, &secrets).is_empty(), "{shown}");

    // Errors on the lines that hold them.
    for broken in [
        text.replace("\"Cfg-Bb-Secret-1\"", "\"Cfg-Bb-Secret-1\" oops"),
        text.replace("\"Cfg-Db-Secret-2\"", "[\"Cfg-Db-Secret-2\"]"),
        text.replace("database = \"bitbucket\"", "database = \"bitbucket\"\nport = \"x\""),
    ] {
        let err = BackupConfig::from_toml_with_env(&broken, "c.toml", Vec::new()).unwrap_err();
        let shown = format!("{err}\n{err:?}");
        assert!(find_secrets(&shown, &secrets).is_empty(), "{shown}");
    }
}

#[tokio::test]
async fn wrong_credentials_are_reported_without_the_password() {
    let bench = Bench::new().await;
    let client = MaintenanceClient::builder(bench.sim.url().as_str())
        .credentials(bench.sim.user(), "Wrong-Pw-Secret-3")
        .build()
        .unwrap();
    let err = client.lock().await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err:?}");
    assert!(!format!("{err} {err:?} {client:?}").contains("Wrong-Pw-Secret-3"));
}

// ---------------------------------------------------------------------------------------------
// TLS

/// A TLS server for 127.0.0.1 with a certificate signed by a CA of its own (one the system does
/// not trust), answering `/status`. Returns its base URL and the CA certificate file.
fn untrusted_server(folder: &Path) -> (String, PathBuf) {
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(folder)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?} failed");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    std::fs::write(folder.join("leaf.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    let (cert, key) = (folder.join("cert.pem"), folder.join("key.pem"));
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> =
        rustls::pki_types::CertificateDer::pem_file_iter(&cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Arc::new(rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://127.0.0.1:{}/", listener.local_addr().unwrap().port());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let connection = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(connection, stream);
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") {
                    match std::io::Read::read(&mut tls, &mut byte) {
                        Ok(1) => request.push(byte[0]),
                        _ => return,
                    }
                }
                let body = "{\"state\":\"RUNNING\"}";
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (url, folder.join("ca.pem"))
}

#[tokio::test]
async fn tls_is_verified_unless_turned_off_and_turning_it_off_is_warned() {
    captured_logs();
    let scratch = tempfile::tempdir().unwrap();
    let (url, ca) = untrusted_server(scratch.path());
    let warned = || logs_text().lines().any(|l| l.contains("TLS certificate verification is OFF") && l.contains(&url));

    let verified = MaintenanceClient::builder(&url).build().unwrap();
    let err = verified.status().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err:?}");
    let chain = format!("{:?}", std::error::Error::source(&err));
    assert!(chain.to_lowercase().contains("certificate"), "the refusal should name the certificate: {chain}");

    let with_ca = MaintenanceClient::builder(&url).ca_certificate(&ca).build().unwrap();
    assert!(with_ca.status().await.unwrap().is_running(), "trusting the server's CA works with verification on");
    assert!(!warned(), "no warning without the opt-out");

    let insecure = MaintenanceClient::builder(&url).danger_skip_tls_verify(true).build().unwrap();
    assert!(insecure.status().await.unwrap().is_running(), "the opt-out connects");
    let text = logs_text();
    let warning = text
        .lines()
        .find(|l| l.contains("TLS certificate verification is OFF") && l.contains(&url))
        .unwrap_or_else(|| panic!("no warning names {url}:\n{text}"));
    assert!(warning.contains("WARN"), "{warning}");
}
