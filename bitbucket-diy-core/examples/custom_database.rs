//! A database strategy of your own, in Rust: Bitbucket's database dumped by a command-line tool
//! bitbucket-diy does not ship. The tool here is SQLite's `sqlite3` (the same example as the
//! Python one in docs/python.md), so the rehearsal runs anywhere; a strategy for another tool has
//! the same shape. Run it against the built-in simulator with
//!
//! ```text
//! cargo run -p bitbucket-diy-core --example custom_database
//! ```
//!
//! The strategy supplies two steps: the dump while Bitbucket is drained, and the restore into a
//! new database. Everything else stays the orchestrator's: the home copy, the lock, the drain,
//! archives, retention, and unlocking on every path. `tests/docs_examples.rs` runs
//! [`rehearse`], so this file cannot rot. See docs/strategies.md for the contract.

use std::path::{Path, PathBuf};
use std::time::Instant;

use async_trait::async_trait;
use bitbucket_diy_core::BackupConfig;
use bitbucket_diy_core::client::Drained;
use bitbucket_diy_core::events::{Phase, Unit};
use bitbucket_diy_core::orchestrator::{BackupOrchestrator, RestoreRequest};
use bitbucket_diy_core::sample_home::{self, SampleHomeSpec};
use bitbucket_diy_core::simulator::{Simulator, SimulatorConfig};
use bitbucket_diy_core::strategy::filesystem::NativeCopy;
use bitbucket_diy_core::strategy::{
    ChildCommand, DatabaseCapabilities, DatabaseStrategy, DatabaseTarget, RestoreContext, StepContext, StepReport,
    StrategyError,
};
use tokio_util::sync::CancellationToken;

/// The dump's file name inside the working folder's `bitbucket-db/`.
const DUMP_FILE: &str = "bitbucket.sqlite";

/// Dumps an SQLite database with `sqlite3 .backup` and restores it with `sqlite3 .restore`.
#[derive(Debug)]
pub struct SqliteCliDatabase {
    database: PathBuf,
}

impl SqliteCliDatabase {
    /// The strategy for the database file at `database`.
    pub fn new(database: impl Into<PathBuf>) -> Self {
        Self { database: database.into() }
    }
}

/// `sqlite3`, run through [`ChildCommand`]: in its own process group (a cancelled run kills it
/// before Bitbucket is unlocked), arguments as a list (no shell), and a clear error when missing.
fn sqlite3() -> ChildCommand {
    ChildCommand::new("sqlite3").install_hint("install it with `apt-get install sqlite3`")
}

#[async_trait]
impl DatabaseStrategy for SqliteCliDatabase {
    /// Recorded in every backup; a restore refuses a backup made by another strategy.
    fn name(&self) -> &str {
        "sqlite-cli"
    }

    /// Nothing promised: the dump is taken whole while Bitbucket is drained, and the database
    /// lives outside the home (so the home copy leaves Bitbucket's internal database files out).
    fn capabilities(&self) -> DatabaseCapabilities {
        DatabaseCapabilities::default()
    }

    /// `config check` and `orchestrator.check()`: the tool runs and the database opens.
    async fn check(&self) -> Result<(), StrategyError> {
        sqlite3().arg(&self.database).arg("SELECT 1;").run(&CancellationToken::new()).await?;
        Ok(())
    }

    /// Before the lock: the same probe, so a missing tool fails the run while Bitbucket still
    /// serves its users.
    async fn prepare(&self, ctx: &StepContext) -> Result<(), StrategyError> {
        sqlite3().arg(&self.database).arg("SELECT 1;").run(ctx.cancellation()).await?;
        Ok(())
    }

    /// While drained (the `Drained` argument proves it): the consistent dump.
    async fn backup(&self, ctx: &StepContext, _drained: &Drained) -> Result<StepReport, StrategyError> {
        let started = Instant::now();
        let folder = ctx.working().database_dir();
        tokio::fs::create_dir_all(&folder).await.map_err(|e| StrategyError::io("creating", &folder, e))?;
        // Written under a temporary name and renamed when whole: a failed or cancelled dump never
        // replaces the previous complete one, nor passes for one.
        let partial = folder.join(format!("{DUMP_FILE}.partial"));
        match tokio::fs::remove_file(&partial).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StrategyError::io("removing", &partial, e));
            }
            _ => {}
        }
        // `.backup` takes SQLite's online-backup snapshot of the database.
        sqlite3().arg(&self.database).arg(format!(".backup '{}'", partial.display())).run(ctx.cancellation()).await?;
        let dump = folder.join(DUMP_FILE);
        tokio::fs::rename(&partial, &dump).await.map_err(|e| StrategyError::io("renaming", &partial, e))?;
        let bytes = tokio::fs::metadata(&dump).await.map_err(|e| StrategyError::io("reading", &dump, e))?.len();
        ctx.progress(Phase::BackupDatabase, bytes, Some(bytes), Unit::Bytes);

        let version = sqlite3().arg("-version").run(ctx.cancellation()).await?.stdout_text();
        // Notes are stored in the backup: the restore (and a human) can read them.
        Ok(StepReport { bytes, files: 1, elapsed: started.elapsed(), ..StepReport::default() }
            .note("sqlite3", version.split_whitespace().next().unwrap_or("unknown")))
    }

    /// Before anything is extracted: a restore never overwrites an existing database.
    async fn check_restore_target(&self, target: &DatabaseTarget) -> Result<(), StrategyError> {
        if Path::new(&target.database).exists() {
            return Err(StrategyError::TargetNotEmpty {
                target: target.database.clone(),
                detail: "the file exists: restore into a new file".to_owned(),
            });
        }
        Ok(())
    }

    /// The dump found in the extracted backup, into the new database.
    async fn restore(&self, ctx: &RestoreContext, target: &DatabaseTarget) -> Result<StepReport, StrategyError> {
        let started = Instant::now();
        let dump = ctx.source().database_dir().join(DUMP_FILE);
        sqlite3().arg(&target.database).arg(format!(".restore '{}'", dump.display())).run(ctx.cancellation()).await?;
        let made_with = ctx.metadata().database.notes.get("sqlite3").cloned().unwrap_or_default();
        Ok(StepReport { files: 1, elapsed: started.elapsed(), ..StepReport::default() }
            .note("dumped by sqlite3", made_with))
    }
}

/// The whole rehearsal in `dir`: a stand-in database and a sample home, a simulated Bitbucket,
/// one backup with [`SqliteCliDatabase`], its restore into a new home and a new database.
/// Returns the project names the restored database holds.
pub async fn rehearse(dir: &Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let database = dir.join("bitbucket.sqlite");
    sqlite3()
        .arg(&database)
        .arg("CREATE TABLE project (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO project VALUES (1, 'PLATFORM');")
        .run(&CancellationToken::new())
        .await?;
    let home = dir.join("home");
    let generate = {
        let home = home.clone();
        // Runs git: blocking work stays off the async threads.
        move || sample_home::generate(&home, &SampleHomeSpec::tiny())
    };
    tokio::task::spawn_blocking(generate).await??;

    let sim = Simulator::start(SimulatorConfig::default()).await?;
    let toml = format!(
        r#"
        [bitbucket]
        url = "{url}"
        user = "{user}"

        [filesystem]
        home = "{home}"

        [archive]
        folder = "{dir}/archives"

        [backup]
        working_folder = "{dir}/work"
        poll_interval = "50ms"
        "#,
        url = sim.url(),
        user = sim.user(),
        home = home.display(),
        dir = dir.display(),
    );
    let config = BackupConfig::from_toml_with_env(&toml, "example.toml", [])?.config;
    // Everything from the configuration, then our database step. The filesystem step is built
    // again with `separate_database = true`: the database is dumped by our strategy, so the
    // home copy leaves Bitbucket's internal database files (shared/data/db.*) out.
    let orchestrator = BackupOrchestrator::from_config(&config)?
        .bitbucket_password(sim.password().to_owned().into())?
        .database(SqliteCliDatabase::new(&database))
        .filesystem(NativeCopy::from_config(&config.filesystem, true, config.bitbucket.instance_type)?)
        .build()?;
    // What `bitbucket-diy config check` does: our `check`, the folders, Bitbucket's version.
    orchestrator.check().await?;

    let report = orchestrator.backup(CancellationToken::new()).await?;
    let restored_database = dir.join("restored.sqlite");
    let request = RestoreRequest::new(
        report.id.as_str(),
        dir.join("restored-home"),
        Some(restored_database.display().to_string()),
    );
    orchestrator.restore(&request, CancellationToken::new()).await?;
    sim.shutdown().await;

    let rows =
        sqlite3().arg(&restored_database).arg("SELECT name FROM project;").run(&CancellationToken::new()).await?;
    Ok(rows.stdout_text().lines().map(str::to_owned).collect())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let projects = rehearse(dir.path()).await?;
    // An example program reports on stdout.
    #[allow(clippy::print_stdout)]
    {
        println!("backed up and restored with sqlite3: projects {projects:?}");
    }
    Ok(())
}
