//! The fault matrix: every fault a backup can meet, in every phase it can meet it. Each cell is
//! one real backup (the simulator, a sample home of real git repositories, the native copy, the
//! tar+zstd archive, and the local PostgreSQL where the cell is about the database) with one
//! fault injected, checked for the promises a backup tool must keep whatever happens:
//!
//! 1. **never left locked without a word**: the simulator's log shows our lock released, or the
//!    error is `left-locked` and names the token and the command that unlocks by hand (or, when
//!    the lock's answer itself was lost, says the instance is probably locked);
//! 2. **the server-side backup task ends**: cancelled by us (or by the unlock) when the copy did
//!    not complete; never still `RUNNING`;
//! 3. **nothing half-written looks complete**: every file under a final archive name in the
//!    archive folder verifies against its manifest, a failed run leaves no archive and no
//!    temporary file, and the run lock is free again;
//! 4. **a failure says so**: an error whose exit code is not 0 and whose message names the cause.
//!
//! Cells run a few at a time inside one test per group (their time is mostly spent waiting on
//! the disk and the simulator); a group fails listing every failing cell by name, and prints the
//! whole matrix (`cargo test --test faults -- --nocapture`). docs/reliability.md reports it.
//!
//! Signals through the real CLI binary (SIGINT/SIGTERM during prepare, drain, copy, archive) are
//! cells of the `tests/` crate; here the same moments are hit through the cancellation token the
//! CLI fires on a signal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bitbucket_diy_core::config::{HooksConfig, InstanceType};
use bitbucket_diy_core::events::{Event, EventSink, Fanout, Phase, RecordedEvents};
use bitbucket_diy_core::orchestrator::{BackupOptions, BackupOrchestrator, BackupReport, Hooks, OrchestratorBuilder};
use bitbucket_diy_core::simulator::{Endpoint, Fault, SimEventKind};
use bitbucket_diy_core::strategy::WorkingFolder;
use bitbucket_diy_core::strategy::database::PostgresDatabase;
use bitbucket_diy_core::strategy::filesystem::NativeCopy;
use bitbucket_diy_core::{Error, ErrorKind};
use support::common::postgres as pg;
use support::{Bench, CancelOn, FaultyFilesystem, Immutable, PgDatabase, SmallDisk, StepFault, UnreadableFile};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// What a cell expects

/// The lock, as the simulator saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// Never locked: the fault struck before the lock.
    Never,
    /// Locked, then unlocked by the run.
    Released,
    /// Still locked (or unlocked only by a late request): the error is `left-locked` and carries
    /// the token and the unlock command.
    LeftLocked,
    /// The lock's answer was lost: the error says the instance is probably locked.
    TokenLost,
    /// Whichever of the above the fault's timing produced, each checked by its own rule.
    Any,
}

/// The server-side backup task at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    /// Never started.
    NotStarted,
    /// Started, and our cancel call ended it.
    CancelledByUs,
    /// Started, the cancel token never reached us: the unlock ended it.
    EndedByUnlock,
    /// The server failed it by itself.
    Failed,
    /// Progress 100 reached the server: the copy was complete.
    Completed,
    /// Not running, whatever else.
    NotRunning,
}

#[derive(Debug, Clone)]
enum Outcome {
    /// A complete, verifiable archive.
    Success,
    /// This kind of error, whose message contains each of these (case-insensitively).
    Failure(ErrorKind, &'static [&'static str]),
    /// Either (sweeps where timing decides); the promises are checked for what happened.
    Either,
}

type Setup = Box<dyn FnOnce(&mut World, OrchestratorBuilder) -> OrchestratorBuilder + Send>;
type Trigger = Box<dyn Fn(&Event) -> bool + Send + Sync>;
type OptionChange = Box<dyn FnOnce(&mut BackupOptions) + Send>;

/// One cell of the matrix.
struct Cell {
    phase: &'static str,
    fault: String,
    faults: Vec<Fault>,
    request_timeout: Duration,
    options: Vec<OptionChange>,
    setup: Option<Setup>,
    cancel_on: Option<(usize, Trigger)>,
    /// How long to wait before checking, so a request the server still holds lands first.
    settle: Duration,
    outcome: Outcome,
    lock: Lock,
    task: Task,
}

impl Cell {
    fn new(phase: &'static str, fault: impl Into<String>) -> Self {
        Self {
            phase,
            fault: fault.into(),
            faults: Vec::new(),
            request_timeout: Duration::from_secs(5),
            options: Vec::new(),
            setup: None,
            cancel_on: None,
            settle: Duration::ZERO,
            outcome: Outcome::Either,
            lock: Lock::Any,
            task: Task::NotRunning,
        }
    }

    /// A simulator fault, named by its spec.
    fn server(phase: &'static str, fault: Fault) -> Self {
        Self::new(phase, fault.to_string()).fault(fault)
    }

    fn name(&self) -> String {
        format!("{} × {}", self.phase, self.fault)
    }

    fn fault(mut self, fault: Fault) -> Self {
        self.faults.push(fault);
        self
    }

    /// Requests time out after `request_timeout`; the checks wait until a slow request the
    /// server still holds has landed.
    fn timeout(mut self, request_timeout: Duration) -> Self {
        self.request_timeout = request_timeout;
        self.settle = SLOW + Duration::from_millis(500);
        self
    }

    fn options(mut self, change: impl FnOnce(&mut BackupOptions) + Send + 'static) -> Self {
        self.options.push(Box::new(change));
        self
    }

    fn setup(
        mut self,
        setup: impl FnOnce(&mut World, OrchestratorBuilder) -> OrchestratorBuilder + Send + 'static,
    ) -> Self {
        self.setup = Some(Box::new(setup));
        self
    }

    fn cancel_on(mut self, nth: usize, trigger: impl Fn(&Event) -> bool + Send + Sync + 'static) -> Self {
        self.cancel_on = Some((nth, Box::new(trigger)));
        self
    }

    fn expect(mut self, outcome: Outcome, lock: Lock, task: Task) -> Self {
        self.outcome = outcome;
        self.lock = lock;
        self.task = task;
        self
    }

    fn fails(self, kind: ErrorKind, mentions: &'static [&'static str], lock: Lock, task: Task) -> Self {
        self.expect(Outcome::Failure(kind, mentions), lock, task)
    }

    fn succeeds(self) -> Self {
        self.expect(Outcome::Success, Lock::Released, Task::NotRunning)
    }
}

/// What a cell's setup may use and keep alive until the checks are done.
struct World {
    bench: Bench,
    guards: Vec<Box<dyn Any + Send + Sync>>,
    cancel: CancellationToken,
    /// Blocking helpers running beside the backup (joined before the checks).
    helpers: Vec<std::thread::JoinHandle<()>>,
}

impl World {
    fn keep(&mut self, guard: impl Any + Send + Sync) {
        self.guards.push(Box::new(guard));
    }

    fn home(&self) -> &Path {
        &self.bench.home
    }

    fn working(&self) -> WorkingFolder {
        WorkingFolder::new(&self.bench.working)
    }

    fn native(&self) -> NativeCopy {
        self.bench.native()
    }
}

// ---------------------------------------------------------------------------------------------
// Running a cell and checking the promises

async fn run_cell(cell: Cell) -> Result<String, String> {
    let bench = Bench::new().await;
    for fault in &cell.faults {
        bench.sim.add_fault(fault.clone());
    }
    let mut world = World { bench, guards: Vec::new(), cancel: CancellationToken::new(), helpers: Vec::new() };
    let recorded = RecordedEvents::new();
    let mut sinks: Vec<Arc<dyn EventSink>> = vec![Arc::new(recorded.clone())];
    if let Some((nth, trigger)) = cell.cancel_on {
        sinks.push(Arc::new(CancelOn::new(world.cancel.clone(), nth, trigger)));
    }
    let mut builder = world
        .bench
        .orchestrator()
        .client(world.bench.client_with_timeout(cell.request_timeout))
        .events(Arc::new(Fanout(sinks)))
        .with_options(|o| {
            o.drain.timeout = Duration::from_secs(5);
            o.unlock_attempts = 3;
            o.unlock_retry_delay = Duration::from_millis(10);
            o.cancel_grace = Duration::from_secs(5);
        });
    for change in cell.options {
        builder = builder.with_options(change);
    }
    if let Some(setup) = cell.setup {
        builder = setup(&mut world, builder);
    }
    let orchestrator = builder.build().map_err(|e| format!("the orchestrator did not build: {e}"))?;

    let result = orchestrator.backup(world.cancel.clone()).await;
    for helper in world.helpers.drain(..) {
        helper.join().map_err(|_| "a helper thread panicked".to_owned())?;
    }
    tokio::time::sleep(cell.settle).await;

    let problems = check(&world, &orchestrator, &result, &recorded, &cell.outcome, cell.lock, cell.task).await;
    let summary = match &result {
        Ok(report) => format!("ok: {}", report.archive.file_name().unwrap_or_default().to_string_lossy()),
        Err(e) => format!("{} (exit {}): {}", e.kind(), e.kind().exit_code(), first_line(&e.to_string())),
    };
    // Guards first (unmount, chattr -i), then the folder; deleting synced files is slow here.
    drop(world.guards);
    let bench = world.bench;
    tokio::task::spawn_blocking(move || drop(bench)).await.unwrap();
    if problems.is_empty() { Ok(summary) } else { Err(format!("{summary}\n      {}", problems.join("\n      "))) }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > 160 {
        format!("{}…", line.chars().take(160).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// Every broken promise, in words.
async fn check(
    world: &World,
    orchestrator: &BackupOrchestrator,
    result: &Result<BackupReport, Error>,
    recorded: &RecordedEvents,
    outcome: &Outcome,
    lock: Lock,
    task: Task,
) -> Vec<String> {
    let mut problems = Vec::new();
    let sim = &world.bench.sim;
    let events = sim.events();
    let state = sim.snapshot();

    // 4. The outcome, the exit code and the message.
    match (outcome, result) {
        (Outcome::Success, Err(e)) => problems.push(format!("expected a backup, got: {e}")),
        (Outcome::Failure(kind, _), Ok(_)) => problems.push(format!("expected a {kind} failure, the backup succeeded")),
        (Outcome::Failure(kind, mentions), Err(e)) => {
            if e.kind() != *kind {
                problems.push(format!("expected a {kind} error, got {}: {e}", e.kind()));
            }
            let text = e.to_string().to_lowercase();
            for mention in *mentions {
                if !text.contains(&mention.to_lowercase()) {
                    problems.push(format!("the message does not name the cause `{mention}`: {e}"));
                }
            }
        }
        _ => {}
    }
    if let Err(e) = result {
        if e.kind().exit_code() == 0 {
            problems.push(format!("exit code 0 for a failure: {e}"));
        }
        if e.to_string().trim().is_empty() {
            problems.push("an empty error message".to_owned());
        }
    }

    // 1. The lock.
    let locked_at = events.iter().rposition(|e| matches!(e.kind, SimEventKind::Locked { .. }));
    let unlocked_after = locked_at.is_some_and(|at| events[at..].iter().any(|e| e.kind == SimEventKind::Unlocked));
    let err = result.as_ref().err();
    let is_left_locked = err.is_some_and(|e| e.kind() == ErrorKind::LeftLocked);
    let left_locked_ok = |problems: &mut Vec<String>| match err {
        Some(e @ Error::LeftLocked { .. }) => {
            let text = e.to_string();
            if !text.contains("bitbucket-diy unlock") || !text.contains("STILL LOCKED") {
                problems.push(format!("a left-locked error must give the unlock command: {text}"));
            }
            match &state.unlock_token {
                Some(token) if !text.contains(token.as_str()) => {
                    problems.push("the left-locked message lacks the token of the lock still held".to_owned())
                }
                Some(token) if format!("{e:?}").contains(token.as_str()) => {
                    problems.push("Debug of the error shows the token".to_owned())
                }
                _ => {}
            }
        }
        other => {
            problems.push(format!("the instance is still locked, and the error does not say how to unlock: {other:?}"))
        }
    };
    let token_lost_ok = |problems: &mut Vec<String>| match err {
        Some(e @ Error::LockTokenLost { .. }) if e.to_string().contains("PROBABLY LOCKED") => {}
        other => problems.push(format!("the lock's answer was lost, and the error does not say so: {other:?}")),
    };
    match lock {
        Lock::Never => {
            if locked_at.is_some() {
                problems.push("the instance was locked".to_owned());
            }
        }
        Lock::Released => {
            if locked_at.is_none() {
                problems.push("the instance was never locked".to_owned());
            } else if !unlocked_after || state.locked {
                problems.push("the instance was not unlocked".to_owned());
            }
        }
        Lock::LeftLocked => left_locked_ok(&mut problems),
        Lock::TokenLost => {
            token_lost_ok(&mut problems);
            if !state.locked {
                problems.push("expected the simulator to hold the lock whose answer was lost".to_owned());
            }
        }
        Lock::Any => {}
    }
    // Whatever the cell: a lock still held is never silent.
    if state.locked && locked_at.is_some() && !is_left_locked {
        problems.push(format!("the instance is left locked, and the run says nothing of it: {result:?}"));
    }
    if state.locked && is_left_locked && lock == Lock::Any {
        match err {
            Some(Error::LockTokenLost { .. }) => token_lost_ok(&mut problems),
            _ => left_locked_ok(&mut problems),
        }
    }

    // 2. The server-side task.
    let started = events.iter().any(|e| e.kind == SimEventKind::BackupStarted);
    let cancel_sent = events.iter().any(|e| match &e.kind {
        SimEventKind::Request { method, path, .. } | SimEventKind::ConnectionDropped { method, path } => {
            method == "POST" && path.ends_with("/mvc/maintenance")
        }
        _ => false,
    });
    let final_state = state.task_state.clone().unwrap_or_default();
    if started && final_state == "RUNNING" {
        problems.push("the server-side backup task is still RUNNING".to_owned());
    }
    match task {
        Task::NotStarted if started => problems.push("a backup task was started".to_owned()),
        Task::CancelledByUs if !(started && cancel_sent && final_state == "CANCELED") => problems.push(format!(
            "expected our cancel call to end the task: started {started}, cancel sent {cancel_sent}, task {final_state}"
        )),
        Task::EndedByUnlock if !(started && final_state == "CANCELED") => {
            problems.push(format!("expected the unlock to end the task: started {started}, task {final_state}"))
        }
        Task::Failed if final_state != "FAILED" => problems.push(format!("expected task FAILED, got {final_state}")),
        Task::Completed if final_state != "SUCCESSFUL" => {
            problems.push(format!("expected task SUCCESSFUL, got {final_state}"))
        }
        _ => {}
    }

    // 3. The archive folder and the run lock.
    let finals = archive_folder_entries(&world.bench.archives);
    for name in &finals {
        if name.starts_with('.') {
            problems.push(format!("a temporary file is left in the archive folder: {name}"));
            continue;
        }
        match orchestrator.verify(name, false, CancellationToken::new()).await {
            Ok(_) => {}
            Err(e) => problems.push(format!("{name} is under a final archive name but does not verify: {e}")),
        }
    }
    let archives = finals.iter().filter(|n| !n.starts_with('.')).count();
    match result {
        Ok(report) => {
            if archives != 1 || !report.archive.is_file() {
                problems.push(format!("a successful run must leave exactly its archive, found {finals:?}"));
            }
            if !recorded.events().iter().any(|e| matches!(e, Event::ArchiveWritten { .. })) {
                problems.push("no archive-written event".to_owned());
            }
        }
        Err(_) if archives > 0 => problems.push(format!("a failed run left archives: {finals:?}")),
        Err(_) => {}
    }
    if let Err(e) = bitbucket_diy_core::orchestrator::RunLock::acquire(&world.working()) {
        problems.push(format!("the run lock is still held: {e}"));
    }
    problems
}

fn archive_folder_entries(folder: &Path) -> Vec<String> {
    std::fs::read_dir(folder)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Runs `cells` a few at a time; prints the matrix; fails naming every failing cell.
async fn run_matrix(group: &str, cells: Vec<Cell>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(4));
    let mut running = tokio::task::JoinSet::new();
    for (index, cell) in cells.into_iter().enumerate() {
        let limit = limit.clone();
        let name = cell.name();
        running.spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            let result = tokio::time::timeout(Duration::from_secs(120), run_cell(cell))
                .await
                .unwrap_or_else(|_| Err("the cell did not finish within 120 s".to_owned()));
            (index, name, result)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            Err(e) => results.push((usize::MAX, "a cell".to_owned(), Err(format!("panicked: {e}")))),
        }
    }
    results.sort_by_key(|(index, ..)| *index);
    let failed: Vec<_> = results.iter().filter(|(.., r)| r.is_err()).collect();
    eprintln!("\n=== fault matrix: {group}: {} cells tried, {} passing", results.len(), results.len() - failed.len());
    for (_, name, result) in &results {
        match result {
            Ok(summary) => eprintln!("  PASS  {name}  —  {summary}"),
            Err(problem) => eprintln!("  FAIL  {name}  —  {problem}"),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cells of `{group}` broke a promise:\n{}",
        failed.len(),
        results.len(),
        failed
            .iter()
            .map(|(_, name, r)| format!("  {name}: {}", r.as_ref().unwrap_err()))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The cells

const SLOW: Duration = Duration::from_secs(2);
const SHORT_TIMEOUT: Duration = Duration::from_millis(300);

fn slow(endpoint: Endpoint) -> Fault {
    Fault::Slow { endpoint: Some(endpoint), delay: SLOW }
}

/// The server misbehaving, call by call, in the order a backup makes them.
fn server_cells() -> Vec<Cell> {
    use Endpoint as E;
    use ErrorKind as K;
    let many = 100;
    vec![
        // Before the lock: reading Bitbucket's version.
        Cell::server("version", Fault::ServerError { endpoint: E::ApplicationProperties, times: many }).fails(
            K::Server,
            &["answered 500"],
            Lock::Never,
            Task::NotStarted,
        ),
        Cell::server("version", Fault::DropConnection { endpoint: E::ApplicationProperties, times: many }).fails(
            K::Transport,
            &["could not reach"],
            Lock::Never,
            Task::NotStarted,
        ),
        Cell::server("version", Fault::AnswerLost { endpoint: E::ApplicationProperties, times: many }).fails(
            K::Transport,
            &["could not reach"],
            Lock::Never,
            Task::NotStarted,
        ),
        Cell::server("version", slow(E::ApplicationProperties)).timeout(SHORT_TIMEOUT).fails(
            K::Timeout,
            &["did not answer within"],
            Lock::Never,
            Task::NotStarted,
        ),
        Cell::server("version", Fault::HtmlInsteadOfJson { endpoint: Some(E::ApplicationProperties) }).fails(
            K::NotFound,
            &["HTML page"],
            Lock::Never,
            Task::NotStarted,
        ),
        Cell::server("version", Fault::MalformedJson { endpoint: E::ApplicationProperties }).fails(
            K::InvalidResponse,
            &["unreadable answer"],
            Lock::Never,
            Task::NotStarted,
        ),
        // The lock: never retried.
        Cell::server("lock", Fault::ServerError { endpoint: E::Lock, times: 1 }).fails(
            K::Server,
            &["answered 500"],
            Lock::Never,
            Task::NotStarted,
        ),
        Cell::server("lock", Fault::DropConnection { endpoint: E::Lock, times: 1 }).fails(
            K::Transport,
            &["could not reach"],
            Lock::Never,
            Task::NotStarted,
        ),
        Cell::server("lock", Fault::AnswerLost { endpoint: E::Lock, times: 1 }).fails(
            K::LeftLocked,
            &["probably locked", "could not reach"],
            Lock::TokenLost,
            Task::NotStarted,
        ),
        Cell::server("lock", slow(E::Lock)).timeout(SHORT_TIMEOUT).fails(
            K::Timeout,
            &["did not answer within"],
            Lock::Any,
            Task::NotStarted,
        ),
        Cell::server("lock", Fault::HtmlInsteadOfJson { endpoint: Some(E::Lock) }).fails(
            K::NotFound,
            &["HTML page"],
            Lock::Never,
            Task::NotStarted,
        ),
        Cell::server("lock", Fault::MalformedJson { endpoint: E::Lock }).fails(
            K::LeftLocked,
            &["probably locked", "unreadable answer"],
            Lock::TokenLost,
            Task::NotStarted,
        ),
        Cell::server("lock", Fault::LockedBy { owner: "Jane Admin".into() }).fails(
            K::AlreadyLocked,
            &["Jane Admin"],
            Lock::Never,
            Task::NotStarted,
        ),
        // Starting the backup task: never retried.
        Cell::server("start", Fault::ServerError { endpoint: E::StartBackup, times: 1 }).fails(
            K::Server,
            &["answered 500"],
            Lock::Released,
            Task::NotStarted,
        ),
        Cell::server("start", Fault::DropConnection { endpoint: E::StartBackup, times: 1 }).fails(
            K::Transport,
            &["could not reach"],
            Lock::Released,
            Task::NotStarted,
        ),
        Cell::server("start", Fault::AnswerLost { endpoint: E::StartBackup, times: 1 }).fails(
            K::Transport,
            &["could not reach"],
            Lock::Released,
            Task::EndedByUnlock,
        ),
        Cell::server("start", slow(E::StartBackup)).timeout(SHORT_TIMEOUT).fails(
            K::Timeout,
            &["did not answer within"],
            Lock::Released,
            Task::NotRunning,
        ),
        Cell::server("start", Fault::HtmlInsteadOfJson { endpoint: Some(E::StartBackup) }).fails(
            K::NotFound,
            &["HTML page"],
            Lock::Released,
            Task::NotStarted,
        ),
        Cell::server("start", Fault::MalformedJson { endpoint: E::StartBackup }).fails(
            K::InvalidResponse,
            &["unreadable answer"],
            Lock::Released,
            Task::EndedByUnlock,
        ),
        // The drain wait: polls are retried; a task that dies or never drains ends the run.
        Cell::server("drain", Fault::ServerError { endpoint: E::MaintenanceState, times: 2 }).succeeds(),
        Cell::server("drain", Fault::ServerError { endpoint: E::MaintenanceState, times: many }).fails(
            K::Server,
            &["answered 500"],
            Lock::Released,
            Task::CancelledByUs,
        ),
        Cell::server("drain", Fault::DropConnection { endpoint: E::MaintenanceState, times: many }).fails(
            K::Transport,
            &["could not reach"],
            Lock::Released,
            Task::CancelledByUs,
        ),
        Cell::server("drain", Fault::AnswerLost { endpoint: E::MaintenanceState, times: many }).fails(
            K::Transport,
            &["could not reach"],
            Lock::Released,
            Task::CancelledByUs,
        ),
        Cell::server("drain", slow(E::MaintenanceState)).timeout(SHORT_TIMEOUT).fails(
            K::Timeout,
            &["did not answer within"],
            Lock::Released,
            Task::CancelledByUs,
        ),
        Cell::server("drain", Fault::HtmlInsteadOfJson { endpoint: Some(E::MaintenanceState) }).fails(
            K::NotFound,
            &["HTML page"],
            Lock::Released,
            Task::CancelledByUs,
        ),
        Cell::server("drain", Fault::MalformedJson { endpoint: E::MaintenanceState }).fails(
            K::InvalidResponse,
            &["unreadable answer"],
            Lock::Released,
            Task::CancelledByUs,
        ),
        Cell::server("drain", Fault::NeverDrain).options(|o| o.drain.timeout = Duration::from_millis(500)).fails(
            K::Timeout,
            &["did not drain"],
            Lock::Released,
            Task::CancelledByUs,
        ),
        Cell::server("drain", Fault::OnlyDatabaseDrains)
            .options(|o| o.drain.timeout = Duration::from_millis(500))
            .fails(K::Timeout, &["did not drain", "scm-state DRAINING"], Lock::Released, Task::CancelledByUs),
        Cell::server("drain", Fault::TaskFails).fails(K::DrainFailed, &["FAILED"], Lock::Released, Task::Failed),
        // Progress reports: a lost one is a warning, never a failed backup.
        Cell::server("progress", Fault::ServerError { endpoint: E::Progress, times: many }).succeeds(),
        Cell::server("progress", Fault::DropConnection { endpoint: E::Progress, times: many }).succeeds(),
        Cell::server("progress", Fault::AnswerLost { endpoint: E::Progress, times: 1 }).succeeds(),
        Cell::server("progress", slow(E::Progress)).timeout(SHORT_TIMEOUT).succeeds(),
        Cell::server("progress", Fault::HtmlInsteadOfJson { endpoint: Some(E::Progress) }).succeeds(),
        Cell::server("progress", Fault::MalformedJson { endpoint: E::Progress }).succeeds(),
        // The unlock: retried; when it cannot succeed, the error gives the way to unlock by hand.
        Cell::server("unlock", Fault::RejectUnlock { times: 2 }).succeeds(),
        Cell::server("unlock", Fault::RejectUnlock { times: many }).fails(
            K::LeftLocked,
            &["still locked", "answered 500"],
            Lock::LeftLocked,
            Task::Completed,
        ),
        Cell::server("unlock", Fault::DropConnection { endpoint: E::Unlock, times: many }).fails(
            K::LeftLocked,
            &["still locked", "could not reach"],
            Lock::LeftLocked,
            Task::Completed,
        ),
        Cell::server("unlock", Fault::AnswerLost { endpoint: E::Unlock, times: 1 }).succeeds(),
        Cell::server("unlock", slow(E::Unlock)).timeout(SHORT_TIMEOUT).fails(
            K::LeftLocked,
            &["still locked", "did not answer within"],
            Lock::LeftLocked,
            Task::Completed,
        ),
        Cell::server("unlock", Fault::HtmlInsteadOfJson { endpoint: Some(E::Unlock) }).fails(
            K::LeftLocked,
            &["still locked", "HTML page"],
            Lock::LeftLocked,
            Task::Completed,
        ),
        // The cancel call, made only on a failure path: when it fails, the unlock ends the task.
        Cell::server("cancel", Fault::ServerError { endpoint: E::CancelBackup, times: many })
            .setup(|w, b| b.filesystem(FaultyFilesystem::new(w.native(), StepFault::FailBackup)))
            .fails(K::Strategy, &["injected failure"], Lock::Released, Task::EndedByUnlock),
        Cell::server("cancel", Fault::DropConnection { endpoint: E::CancelBackup, times: many })
            .setup(|w, b| b.filesystem(FaultyFilesystem::new(w.native(), StepFault::FailBackup)))
            .fails(K::Strategy, &["injected failure"], Lock::Released, Task::EndedByUnlock),
        // Everything slow, but within the request timeout.
        Cell::server("every call", Fault::Slow { endpoint: None, delay: Duration::from_millis(100) }).succeeds(),
    ]
}

/// One 500 on the Nth request, whatever call that is: a sweep through every moment of a run.
fn sweep_cells() -> Vec<Cell> {
    (1..=14).map(|n| Cell::server("request N", Fault::ServerErrorOnRequest(n))).collect()
}

/// The steps failing for real: the database dump, the home copy, the archive write.
fn step_cells() -> Vec<Cell> {
    use ErrorKind as K;
    vec![
        Cell::new("database prepare", "wrong database name")
            .setup(|w, b| {
                let db = PgDatabase::create("faults_wrong_name", "SELECT 1;");
                let mut config = db.config();
                config.database = db.another_name("faults_wrong_name", "missing");
                w.keep(db);
                b.database(PostgresDatabase::from_config(&config).unwrap())
            })
            .fails(K::Strategy, &["does not exist"], Lock::Never, Task::NotStarted),
        Cell::new("database prepare", "pg_dump and psql missing (empty bin_dir)")
            .setup(|w, b| {
                let db = PgDatabase::create("faults_no_tools", "SELECT 1;");
                let empty = w.bench.dir.path().join("empty-bin");
                std::fs::create_dir_all(&empty).unwrap();
                let mut config = db.config();
                config.bin_dir = Some(empty);
                w.keep(db);
                b.database(PostgresDatabase::from_config(&config).unwrap())
            })
            .fails(K::ToolMissing, &["was not found", "empty-bin"], Lock::Never, Task::NotStarted),
        Cell::new("database dump", "database dropped before the lock")
            .setup(|w, b| {
                let db = PgDatabase::create("faults_dropped", "CREATE TABLE t (id int); INSERT INTO t VALUES (1);");
                let hook = format!(
                    "psql -X -q -h {} -p {} -U {} -d postgres -c 'DROP DATABASE {} WITH (FORCE)'",
                    pg::HOST,
                    pg::PORT,
                    pg::SUPERUSER,
                    pg::ident(&db.name)
                );
                let strategy = PostgresDatabase::from_config(&db.config()).unwrap();
                w.keep(db);
                b.database(strategy)
                    .hooks(Hooks::new(HooksConfig { before_lock: vec![hook], ..HooksConfig::default() }))
            })
            .fails(K::Strategy, &["does not exist"], Lock::Released, Task::CancelledByUs),
        Cell::new("database dump, in the lock", "connection killed mid-dump")
            .setup(|w, b| {
                let db = PgDatabase::create("faults_killed", "CREATE TABLE t (id int); INSERT INTO t VALUES (1);");
                let strategy = PostgresDatabase::from_config(&db.config_dump_in_lock()).unwrap();
                let name = db.name.clone();
                let table_lock = pg::TableLock::hold(&name, "t");
                w.helpers.push(std::thread::spawn(move || {
                    pg::wait_for_blocked_pg_dump(&name);
                    pg::psql(
                        "postgres",
                        &format!(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {} \
                         AND application_name = 'pg_dump';",
                            pg::literal(&name)
                        ),
                    );
                    table_lock.release();
                }));
                w.keep(db);
                b.database(strategy)
            })
            .fails(K::Strategy, &["pg_dump", "failed"], Lock::Released, Task::CancelledByUs),
        Cell::new("database dump, in the lock", "disk full (tmpfs working folder)")
            .setup(|w, b| {
                // About 3 MB of incompressible rows: a dump the small disk cannot hold, beside a home
                // copy it can.
                let db = PgDatabase::create(
                    "faults_dump_full",
                    "CREATE TABLE t AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS v \
                 FROM generate_series(1, 200000) g;",
                );
                let strategy = PostgresDatabase::from_config(&db.config_dump_in_lock()).unwrap();
                w.keep(SmallDisk::mount(&w.bench.working, home_copy_bytes(w.home()) + 1024 * 1024));
                w.keep(db);
                b.database(strategy).filesystem(
                    NativeCopy::from_config(&w.bench.filesystem_config(), true, InstanceType::Bitbucket).unwrap(),
                )
            })
            .fails(K::Strategy, &["pg_dump", "No space left"], Lock::Released, Task::CancelledByUs),
        Cell::new("database dump, after the unlock", "disk full (tmpfs working folder)")
            .setup(|w, b| {
                // Bitbucket already had progress 100 when the deferred dump fails: its task completed,
                // and no archive is written.
                // About 3 MB of incompressible rows: a dump the small disk cannot hold, beside a home
                // copy it can.
                let db = PgDatabase::create(
                    "faults_late_full",
                    "CREATE TABLE t AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS v \
                 FROM generate_series(1, 200000) g;",
                );
                let strategy = PostgresDatabase::from_config(&db.config()).unwrap();
                w.keep(SmallDisk::mount(&w.bench.working, home_copy_bytes(w.home()) + 1024 * 1024));
                w.keep(db);
                b.database(strategy).filesystem(
                    NativeCopy::from_config(&w.bench.filesystem_config(), true, InstanceType::Bitbucket).unwrap(),
                )
            })
            .fails(K::Strategy, &["pg_dump", "No space left"], Lock::Released, Task::Completed),
        Cell::new("home copy prepare", "unreadable source file")
            .setup(|w, b| {
                w.keep(UnreadableFile::make(&attachment(w.home())));
                b
            })
            .fails(K::Io, &["Invalid argument", "attachment-0.png"], Lock::Never, Task::NotStarted),
        Cell::new("home copy prepare", "home folder missing")
            .setup(|w, b| {
                std::fs::rename(&w.bench.home, w.bench.dir.path().join("moved-away")).unwrap();
                b
            })
            .fails(K::Io, &["home"], Lock::Never, Task::NotStarted),
        Cell::new("home copy prepare", "disk full (tmpfs working folder)")
            .setup(|w, b| {
                w.keep(SmallDisk::mount(&w.bench.working, 64 * 1024));
                b
            })
            .fails(K::Io, &["No space left"], Lock::Never, Task::NotStarted),
        Cell::new("home copy locked", "unreadable source file")
            .setup(|w, b| {
                let file = attachment(w.home());
                w.keep(UnreadableFile::cleared_on_drop(&file));
                b.hooks(Hooks::new(HooksConfig {
                    before_lock: vec![UnreadableFile::command(&file)],
                    ..HooksConfig::default()
                }))
            })
            .fails(K::Io, &["Invalid argument", "attachment-0.png"], Lock::Released, Task::CancelledByUs),
        Cell::new("home copy locked", "destination folder immutable")
            .setup(|w, b| {
                let file = attachment(w.home());
                let relative = file.parent().unwrap().strip_prefix(w.home()).unwrap().to_owned();
                let destination = w.working().home_dir().join(relative);
                w.keep(Immutable::cleared_on_drop(&destination));
                let hook = format!("echo changed >> '{}' && chattr +i '{}'", file.display(), destination.display());
                b.hooks(Hooks::new(HooksConfig { before_lock: vec![hook], ..HooksConfig::default() }))
            })
            .fails(K::Io, &["Operation not permitted"], Lock::Released, Task::CancelledByUs),
        Cell::new("home copy locked", "disk full (tmpfs working folder)")
            .setup(|w, b| {
                w.keep(SmallDisk::mount(&w.bench.working, home_copy_bytes(w.home()) + 256 * 1024));
                let big = w.home().join("shared/data/attachments/big-upload.bin");
                let hook = format!("head -c 2097152 /dev/urandom > '{}'", big.display());
                b.hooks(Hooks::new(HooksConfig { before_lock: vec![hook], ..HooksConfig::default() }))
            })
            .fails(K::Io, &["No space left"], Lock::Released, Task::CancelledByUs),
        // Found out before the lock: the archive folder is listed to choose an unused id.
        Cell::new("archive", "archive folder is a file")
            .setup(|w, b| {
                std::fs::write(&w.bench.archives, "not a folder").unwrap();
                b
            })
            .fails(K::Io, &["archives", "Not a directory"], Lock::Never, Task::NotStarted),
        Cell::new("archive", "archive folder immutable")
            .setup(|w, b| {
                std::fs::create_dir_all(&w.bench.archives).unwrap();
                w.keep(Immutable::set(&w.bench.archives));
                b
            })
            .fails(K::Io, &["Operation not permitted"], Lock::Released, Task::Completed),
        Cell::new("archive", "disk full (tmpfs archive folder)")
            .setup(|w, b| {
                // Incompressible, so the archive cannot fit.
                let upload = w.home().join("shared/data/attachments/upload.bin");
                std::fs::write(upload, support::random_bytes(512 * 1024)).unwrap();
                w.keep(SmallDisk::mount(&w.bench.archives, 128 * 1024));
                b
            })
            .fails(K::Io, &["No space left"], Lock::Released, Task::Completed),
    ]
}

/// The run cancelled (Ctrl-C, SIGTERM, a Python KeyboardInterrupt) in each phase; and steps that
/// will not stop.
fn cancel_cells() -> Vec<Cell> {
    use ErrorKind as K;
    let started = |wanted: Phase| move |e: &Event| matches!(e, Event::PhaseStarted { phase } if *phase == wanted);
    let progress = |wanted: Phase| move |e: &Event| matches!(e, Event::Progress { phase, .. } if *phase == wanted);
    vec![
        Cell::new("prepare", "cancelled mid-copy").cancel_on(1, progress(Phase::PrepareFilesystem)).fails(
            K::Cancelled,
            &["cancelled during prepare"],
            Lock::Never,
            Task::NotStarted,
        ),
        Cell::new("drain", "cancelled while waiting")
            .fault(Fault::NeverDrain)
            .cancel_on(1, started(Phase::Drain))
            .fails(K::Cancelled, &["cancelled during drain"], Lock::Released, Task::CancelledByUs),
        Cell::new("final copy", "cancelled mid-copy").cancel_on(1, progress(Phase::BackupFilesystem)).fails(
            K::Cancelled,
            &["cancelled during backup"],
            Lock::Released,
            Task::CancelledByUs,
        ),
        Cell::new("final copy", "cancelled while the snapshot export waits on a table lock")
            .setup(|w, b| {
                let db =
                    PgDatabase::create("faults_cancel_export", "CREATE TABLE t (id int); INSERT INTO t VALUES (1);");
                let strategy = PostgresDatabase::from_config(&db.config()).unwrap();
                let name = db.name.clone();
                let cancel = w.cancel.clone();
                let table_lock = pg::TableLock::hold(&name, "t");
                w.helpers.push(std::thread::spawn(move || {
                    pg::wait_for_blocked_client(&name, "psql");
                    cancel.cancel();
                    table_lock.release();
                }));
                w.keep(db);
                b.database(strategy)
            })
            .fails(K::Cancelled, &["cancelled during backup"], Lock::Released, Task::CancelledByUs),
        Cell::new("final copy", "cancelled while pg_dump runs in the lock")
            .setup(|w, b| {
                let db = PgDatabase::create("faults_cancel_dump", "CREATE TABLE t (id int); INSERT INTO t VALUES (1);");
                let strategy = PostgresDatabase::from_config(&db.config_dump_in_lock()).unwrap();
                let name = db.name.clone();
                let cancel = w.cancel.clone();
                let table_lock = pg::TableLock::hold(&name, "t");
                w.helpers.push(std::thread::spawn(move || {
                    pg::wait_for_blocked_pg_dump(&name);
                    cancel.cancel();
                    // The pg_dump process must be gone (killed) while the lock still blocks it; its
                    // server backend stays until then, waiting on the lock.
                    pg::wait_until("pg_dump to be killed", || {
                        support::processes_mentioning("pg_dump", &name).is_empty()
                    });
                    table_lock.release();
                }));
                w.keep(db);
                b.database(strategy)
            })
            .fails(K::Cancelled, &["cancelled during backup"], Lock::Released, Task::CancelledByUs),
        Cell::new("archive", "cancelled mid-write").cancel_on(1, progress(Phase::Archive)).fails(
            K::Cancelled,
            &["cancelled during archive"],
            Lock::Released,
            Task::Completed,
        ),
        Cell::new("final copy", "step deaf to cancellation")
            .setup(|w, b| b.filesystem(FaultyFilesystem::new(w.native(), StepFault::Hang)))
            .options(|o| o.cancel_grace = Duration::from_millis(300))
            .cancel_on(1, started(Phase::BackupFilesystem))
            .fails(K::Cancelled, &["cancelled"], Lock::Released, Task::CancelledByUs),
        Cell::new("final copy", "locked phase over locked_timeout")
            .setup(|w, b| b.filesystem(FaultyFilesystem::new(w.native(), StepFault::Block)))
            .options(|o| o.locked_timeout = Duration::from_millis(500))
            .fails(K::Timeout, &["locked_timeout"], Lock::Released, Task::CancelledByUs),
    ]
}

/// An attachment of the sample home (a file the copy must read).
fn attachment(home: &Path) -> PathBuf {
    home.join("shared/data/attachments/1/00/attachment-0.png")
}

/// Bytes the files of a copy of `home` take on a tmpfs (whole 4 KiB pages; folders take none),
/// excluded files counted too: a little more than the copy needs.
fn home_copy_bytes(home: &Path) -> u64 {
    walkdir::WalkDir::new(home)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().map(|m| m.len().div_ceil(4096) * 4096).unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_faults() {
    run_matrix("server faults", server_cells()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_server_error_on_each_request() {
    run_matrix("one 500 on request N", sweep_cells()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn step_faults() {
    run_matrix("step faults", step_cells()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancellations() {
    run_matrix("cancellations", cancel_cells()).await;
}
