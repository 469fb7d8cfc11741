//! Conformance checks for database strategies.
//!
//! Each check drives a `&dyn DatabaseStrategy` the way the orchestrator does (backup into a
//! working folder with a [`Drained`] proof, then restore into a **new** database) against a real
//! server, which a [`DatabaseFixture`] seeds and reads back. The checks return `Err(description)`
//! instead of panicking, so a test names what the strategy got wrong:
//!
//! ```ignore
//! let strategy = PostgresDatabase::from_config(&config)?;
//! conformance::database::roundtrip(&strategy, &fixture).await?;
//! conformance::database::refuses_non_empty_target(&strategy, &fixture).await?;
//! conformance::database::previous_dump_survives_failure(&strategy, &broken, &fixture).await?;
//! conformance::database::cancelled_backup_keeps_previous_dump(&strategy, &fixture).await?;
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::archive_format::{BackupMetadata, FORMAT_VERSION, StrategyRecord};
use crate::backup_id::BackupId;
use crate::client::Drained;
use crate::events::NoEvents;
use crate::strategy::conformance::TestResult;
use crate::strategy::{
    DatabaseStrategy, DatabaseTarget, RestoreContext, StepContext, StepReport, StrategyError, WorkingFolder,
};

/// Seeds and reads the server a strategy under test talks to.
#[async_trait]
pub trait DatabaseFixture: Send + Sync {
    /// The database the strategy backs up.
    fn source_database(&self) -> String;

    /// A name no database on the server has yet, distinct on every call (the fixture drops any
    /// database of that name when it is dropped itself).
    fn fresh_database_name(&self, purpose: &str) -> String;

    /// Fill the source database with representative data (several tables, a foreign key,
    /// non-ASCII text, binary data, a sequence or auto-increment, a view).
    async fn seed(&self) -> Result<(), String>;

    /// Everything a restore must reproduce in `database`, as comparable text (e.g. each table's
    /// rows in order, the view's rows, the sequence's next value).
    async fn contents(&self, database: &str) -> Result<String, String>;

    /// Create `database` holding at least one table with a row.
    async fn create_non_empty(&self, database: &str) -> Result<(), String>;
}

/// A step context for a backup outside the orchestrator, writing into `working`.
pub fn step_context(working: &Path, cancel: CancellationToken) -> Result<StepContext, String> {
    Ok(StepContext::new(backup_id()?, WorkingFolder::new(working), Arc::new(NoEvents), cancel))
}

/// A restore context for the backup `report` of `strategy` left in `source`.
pub fn restore_context(
    source: &Path,
    strategy: &dyn DatabaseStrategy,
    report: &StepReport,
) -> Result<RestoreContext, String> {
    let metadata = BackupMetadata {
        format_version: FORMAT_VERSION,
        id: backup_id()?,
        created_at: jiff::Timestamp::now(),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        bitbucket_version: None,
        instance_url: None,
        zero_downtime: false,
        lock_window: None,
        database: StrategyRecord::from_report(strategy.name(), report),
        filesystem: StrategyRecord::default(),
        data_stores: Vec::new(),
    };
    Ok(RestoreContext::new(WorkingFolder::new(source), metadata, Arc::new(NoEvents), CancellationToken::new()))
}

fn backup_id() -> Result<BackupId, String> {
    BackupId::generate("conformance-", jiff::Timestamp::now()).map_err(|e| format!("backup id: {e}"))
}

/// Seed, back up, restore into a new database, and find the same contents there.
pub async fn roundtrip(strategy: &dyn DatabaseStrategy, fixture: &dyn DatabaseFixture) -> TestResult {
    fixture.seed().await?;
    let working = temp_dir()?;
    let report = backup(strategy, working.path(), CancellationToken::new()).await?;
    let dump = WorkingFolder::new(working.path()).database_dir();
    if !dump.is_dir() {
        return Err(format!("backup succeeded but left no dump folder at {}", dump.display()));
    }
    expect_no_leftovers(working.path())?;

    let target = DatabaseTarget { database: fixture.fresh_database_name("roundtrip") };
    strategy
        .check_restore_target(&target)
        .await
        .map_err(|e| format!("check_restore_target refused the new database {}: {e}", target.database))?;
    strategy
        .restore(&restore_context(working.path(), strategy, &report)?, &target)
        .await
        .map_err(|e| format!("restore into {} failed: {e}", target.database))?;

    let expected = fixture.contents(&fixture.source_database()).await?;
    let restored = fixture.contents(&target.database).await?;
    if let Some(difference) = first_difference(&expected, &restored) {
        return Err(format!("restored database {} differs from the source: {difference}", target.database));
    }
    Ok(())
}

/// A database that already holds a table is refused by `check_restore_target` with
/// [`StrategyError::TargetNotEmpty`] naming it, and is left untouched.
pub async fn refuses_non_empty_target(strategy: &dyn DatabaseStrategy, fixture: &dyn DatabaseFixture) -> TestResult {
    let target = DatabaseTarget { database: fixture.fresh_database_name("occupied") };
    fixture.create_non_empty(&target.database).await?;
    let before = fixture.contents(&target.database).await?;
    expect_target_not_empty(strategy.check_restore_target(&target).await, &target.database, "check_restore_target")?;
    let after = fixture.contents(&target.database).await?;
    if before != after {
        return Err(format!("check_restore_target changed {}", target.database));
    }
    Ok(())
}

/// `restore` itself (not only `check_restore_target`) refuses a database that holds a table,
/// and leaves it untouched: the orchestrator's check and the restore may be minutes apart.
pub async fn restore_refuses_non_empty_target(
    strategy: &dyn DatabaseStrategy,
    fixture: &dyn DatabaseFixture,
) -> TestResult {
    fixture.seed().await?;
    let working = temp_dir()?;
    let report = backup(strategy, working.path(), CancellationToken::new()).await?;
    let target = DatabaseTarget { database: fixture.fresh_database_name("occupied") };
    fixture.create_non_empty(&target.database).await?;
    let before = fixture.contents(&target.database).await?;
    let restored = strategy.restore(&restore_context(working.path(), strategy, &report)?, &target).await;
    expect_target_not_empty(restored.map(|_| ()), &target.database, "restore")?;
    let after = fixture.contents(&target.database).await?;
    if before != after {
        return Err(format!(
            "a refused restore changed {}:\n--- before\n{before}\n--- after\n{after}",
            target.database
        ));
    }
    Ok(())
}

/// After a good backup, a failing one (`failing` is the same strategy pointed at something
/// broken: a missing database, a wrong password) returns an error and leaves the previous dump
/// byte for byte, with no partial dump beside it.
pub async fn previous_dump_survives_failure(
    strategy: &dyn DatabaseStrategy,
    failing: &dyn DatabaseStrategy,
    fixture: &dyn DatabaseFixture,
) -> TestResult {
    fixture.seed().await?;
    let working = temp_dir()?;
    backup(strategy, working.path(), CancellationToken::new()).await?;
    let before = snapshot(working.path()).await?;
    let ctx = step_context(working.path(), CancellationToken::new())?;
    if failing.backup(&ctx, &Drained::for_testing()).await.is_ok() {
        return Err("the failing strategy's backup succeeded; the check needs one that fails".to_owned());
    }
    expect_same_tree(&before, &snapshot(working.path()).await?, "a failed backup")
}

/// A backup cancelled before it starts returns [`StrategyError::Cancelled`] and leaves the
/// previous dump byte for byte, with no partial dump beside it.
pub async fn cancelled_backup_keeps_previous_dump(
    strategy: &dyn DatabaseStrategy,
    fixture: &dyn DatabaseFixture,
) -> TestResult {
    fixture.seed().await?;
    let working = temp_dir()?;
    backup(strategy, working.path(), CancellationToken::new()).await?;
    let before = snapshot(working.path()).await?;
    let cancel = CancellationToken::new();
    cancel.cancel();
    match strategy.backup(&step_context(working.path(), cancel)?, &Drained::for_testing()).await {
        Err(StrategyError::Cancelled) => {}
        Err(other) => {
            return Err(format!("a cancelled backup returned `{other}` instead of Cancelled"));
        }
        Ok(_) => return Err("a cancelled backup succeeded".to_owned()),
    }
    expect_same_tree(&before, &snapshot(working.path()).await?, "a cancelled backup")
}

async fn backup(
    strategy: &dyn DatabaseStrategy,
    working: &Path,
    cancel: CancellationToken,
) -> Result<StepReport, String> {
    strategy
        .backup(&step_context(working, cancel)?, &Drained::for_testing())
        .await
        .map_err(|e| format!("backup failed: {e}"))
}

fn expect_target_not_empty(result: Result<(), StrategyError>, database: &str, what: &str) -> TestResult {
    match result {
        Err(e @ StrategyError::TargetNotEmpty { .. }) => {
            let text = e.to_string();
            if text.contains(database) {
                Ok(())
            } else {
                Err(format!("{what}: the refusal does not name the database {database}: {text}"))
            }
        }
        Err(other) => Err(format!("{what} on the non-empty {database} returned `{other}` instead of TargetNotEmpty")),
        Ok(()) => Err(format!("{what} accepted {database}, which holds a table")),
    }
}

/// Where two texts part, as "line N: `expected` became `found`", each side cut to a readable length.
fn first_difference(expected: &str, found: &str) -> Option<String> {
    const SHOWN: usize = 300;
    let cut = |line: Option<&str>| match line {
        None => "(end of text)".to_owned(),
        Some(line) if line.len() > SHOWN => {
            let end = (0..=SHOWN).rev().find(|i| line.is_char_boundary(*i)).unwrap_or(0);
            format!("`{}…`", &line[..end])
        }
        Some(line) => format!("`{line}`"),
    };
    let (mut expected_lines, mut found_lines) = (expected.lines(), found.lines());
    for number in 1.. {
        match (expected_lines.next(), found_lines.next()) {
            (None, None) => return None,
            (a, b) if a == b => {}
            (a, b) => return Some(format!("line {number}: expected {} but found {}", cut(a), cut(b))),
        }
    }
    None
}

fn temp_dir() -> Result<tempfile::TempDir, String> {
    tempfile::tempdir().map_err(|e| format!("cannot create a temporary folder: {e}"))
}

/// Anything in the working root but the dump folder is a leftover (a partial or parked dump).
fn expect_no_leftovers(working: &Path) -> TestResult {
    let entries = std::fs::read_dir(working).map_err(|e| format!("reading {}: {e}", working.display()))?;
    let leftovers: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != WorkingFolder::DATABASE)
        .collect();
    if leftovers.is_empty() { Ok(()) } else { Err(format!("left beside the dump: {}", leftovers.join(", "))) }
}

/// Every file under `root` by relative path, with its SHA-256.
async fn snapshot(root: &Path) -> Result<BTreeMap<PathBuf, String>, String> {
    let root = root.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut files = BTreeMap::new();
        for entry in walkdir::WalkDir::new(&root).sort_by_file_name() {
            let entry = entry.map_err(|e| format!("walking {}: {e}", root.display()))?;
            let relative = entry.path().strip_prefix(&root).unwrap_or(entry.path()).to_owned();
            let digest = if entry.file_type().is_file() {
                let data =
                    std::fs::read(entry.path()).map_err(|e| format!("reading {}: {e}", entry.path().display()))?;
                hex::encode(Sha256::digest(&data))
            } else {
                "dir".to_owned()
            };
            files.insert(relative, digest);
        }
        Ok(files)
    })
    .await
    .map_err(|e| format!("snapshot task failed: {e}"))?
}

fn expect_same_tree(before: &BTreeMap<PathBuf, String>, after: &BTreeMap<PathBuf, String>, what: &str) -> TestResult {
    if before == after {
        return Ok(());
    }
    let changed: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|path| before.get(*path) != after.get(*path))
        .map(|path| path.display().to_string())
        .collect();
    Err(format!("{what} changed the working folder: {}", changed.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_the_first_differing_line() {
        assert_eq!(first_difference("a\nb\n", "a\nb\n"), None);
        assert_eq!(first_difference("a\nb", "a\nc").as_deref(), Some("line 2: expected `b` but found `c`"));
        assert_eq!(
            first_difference("a", "a\nextra").as_deref(),
            Some("line 2: expected (end of text) but found `extra`")
        );
        let long = "é".repeat(400);
        assert!(first_difference(&long, "x").unwrap().contains('…'));
    }
}
