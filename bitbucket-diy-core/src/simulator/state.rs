//! The maintenance state machine: available → locked → backup running (draining) → drained →
//! progress 100 (task successful, states un-latched) → unlocked. No HTTP here: the handlers
//! translate [`Refusal`]s and views into answers.
//!
//! Time only moves when someone looks: every entry point calls [`Machine::advance`] first, so no
//! background task is needed and events still carry the instant things happened.

use std::time::{Duration, Instant, SystemTime};

use crate::client::{DrainState, LockOwner, MaintenanceState, MaintenanceTask, TaskProgress, TaskState};
use crate::simulator::events::{SimEvent, SimEventKind, SimState};
use crate::simulator::faults::DrainFaults;

/// A request the state machine refuses: status, Bitbucket-style message and exception name.
/// The exception names are modelled on Bitbucket's; the exact names are not documented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) message: String,
    pub(crate) exception: &'static str,
    /// The lock holder, on a refused lock.
    pub(crate) owner: Option<LockOwner>,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>, exception: &'static str) -> Self {
        Self { status, message: message.into(), exception, owner: None }
    }

    // The vendor documents no status for a wrong or stale token. Bitbucket answers state conflicts
    // with 409, so a token that does not match the current lock gets 409; a missing one is a
    // malformed request (400).
    fn missing_token(place: &str) -> Self {
        Self::new(
            400,
            format!("A maintenance token is required ({place})"),
            "com.atlassian.bitbucket.validation.ArgumentValidationException",
        )
    }

    fn wrong_token(what: &str) -> Self {
        Self::new(
            409,
            format!("The {what} token is not valid: it does not match the current maintenance lock or backup"),
            "com.atlassian.bitbucket.maintenance.InvalidMaintenanceTokenException",
        )
    }

    fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message, "com.atlassian.bitbucket.IllegalEntityStateException")
    }

    fn bad_argument(message: impl Into<String>) -> Self {
        Self::new(400, message, "com.atlassian.bitbucket.validation.ArgumentValidationException")
    }
}

/// What a granted lock returns.
pub(crate) struct LockGranted {
    pub(crate) unlock_token: String,
    pub(crate) owner: LockOwner,
}

/// What a started backup returns.
pub(crate) struct BackupStarted {
    pub(crate) id: String,
    pub(crate) cancel_token: String,
    pub(crate) progress: TaskProgress,
}

struct HeldLock {
    token: String,
    owner: LockOwner,
    at: Instant,
}

struct Task {
    id: String,
    cancel_token: String,
    state: TaskState,
    started_at: Instant,
    db_state: DrainState,
    scm_state: DrainState,
    client_percentage: Option<u8>,
    /// A fault held the drain back: when it finally drains, that is "now", not the due time.
    drain_was_held: bool,
}

impl Task {
    fn is_drained(&self) -> bool {
        self.db_state == DrainState::Drained && self.scm_state == DrainState::Drained
    }

    fn progress(&self) -> TaskProgress {
        // Bitbucket shows 10 % for its own preparation and 90 % for the client's work.
        let (message, percentage) = match (&self.state, self.client_percentage) {
            (TaskState::Successful, _) => ("Backup complete", 100),
            (TaskState::Canceled, _) => ("Backup cancelled", self.client_share()),
            (TaskState::Failed, _) => ("Backup failed: the instance could not be drained", self.client_share()),
            (_, Some(_)) => ("Waiting for the backup client to finish", self.client_share()),
            _ if self.is_drained() => ("Waiting for the backup client to finish", 10),
            _ => ("Closing connections to the current database", 0),
        };
        TaskProgress { message: message.to_owned(), percentage }
    }

    fn client_share(&self) -> u8 {
        // client_percentage is validated to 0..=100, so the result fits in 10..=100.
        self.client_percentage.map_or(0, |p| 10 + (u16::from(p) * 9 / 10) as u8)
    }

    fn end(&mut self, state: TaskState) {
        self.state = state;
        self.db_state = DrainState::Available;
        self.scm_state = DrainState::Available;
    }
}

/// The simulated instance.
pub(crate) struct Machine {
    origin: Instant,
    origin_wall: SystemTime,
    drain_delay: Duration,
    lock: Option<HeldLock>,
    task: Option<Task>,
    progress: Vec<u8>,
    writes_in_flight: usize,
    last_write_end: Option<Instant>,
    request_count: u64,
    events: Vec<SimEvent>,
    last_lock_window: Option<Duration>,
}

/// 2×`bytes` lowercase hex characters from the OS's random source.
fn random_hex(bytes: usize) -> Result<String, Refusal> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| Refusal::new(500, format!("no randomness for a token: {e}"), "java.lang.IllegalStateException"))?;
    Ok(hex::encode(buf))
}

impl Machine {
    pub(crate) fn new(drain_delay: Duration) -> Self {
        Self {
            origin: Instant::now(),
            origin_wall: SystemTime::now(),
            drain_delay,
            lock: None,
            task: None,
            progress: Vec::new(),
            writes_in_flight: 0,
            last_write_end: None,
            request_count: 0,
            events: Vec::new(),
            last_lock_window: None,
        }
    }

    /// Log an event that happened at `at` (possibly before events already logged).
    pub(crate) fn record_at(&mut self, at: Instant, kind: SimEventKind) {
        let since = at.saturating_duration_since(self.origin);
        let event = SimEvent { at: since, wall: self.origin_wall + since, kind };
        let position = self.events.partition_point(|e| e.at <= since);
        self.events.insert(position, event);
    }

    pub(crate) fn events(&self) -> Vec<SimEvent> {
        self.events.clone()
    }

    /// Count a request; returns its 1-based number.
    pub(crate) fn count_request(&mut self) -> u64 {
        self.request_count += 1;
        self.request_count
    }

    /// Let simulated time pass up to `now`: drain, or fail the task.
    pub(crate) fn advance(&mut self, now: Instant, faults: DrainFaults) {
        let drain_delay = self.drain_delay;
        let writes_in_flight = self.writes_in_flight;
        let last_write_end = self.last_write_end;
        let Some(task) = self.task.as_mut() else { return };
        if task.state != TaskState::Running || task.is_drained() {
            return;
        }
        if faults.task_fails {
            let fails_at = task.started_at + drain_delay / 2;
            if now >= fails_at {
                task.end(TaskState::Failed);
                self.record_at(fails_at, SimEventKind::TaskFinished { state: "FAILED".to_owned() });
            }
            return;
        }
        // Draining means waiting for in-flight writes: not before the last one ended.
        let due = (task.started_at + drain_delay).max(last_write_end.unwrap_or(task.started_at));
        if writes_in_flight > 0 || now < due {
            return;
        }
        let at = if task.drain_was_held { now } else { due };
        if faults.never_drain {
            task.drain_was_held = true;
            return;
        }
        task.db_state = DrainState::Drained;
        if faults.only_database_drains {
            task.drain_was_held = true;
            return;
        }
        task.scm_state = DrainState::Drained;
        self.record_at(at, SimEventKind::Drained);
    }

    /// `POST /mvc/maintenance/lock` by `user`.
    pub(crate) fn lock(
        &mut self,
        now: Instant,
        user: LockOwner,
        foreign_owner: Option<&str>,
    ) -> Result<LockGranted, Refusal> {
        let holder = match (foreign_owner, &self.lock) {
            (Some(name), _) => Some(LockOwner { display_name: String::new(), name: name.to_owned() }),
            (None, Some(held)) => Some(held.owner.clone()),
            (None, None) => None,
        };
        if let Some(holder) = holder {
            self.record_at(now, SimEventKind::LockRefused);
            // Unknown in the vendor docs; 409 is the plausible conflict status.
            let mut refusal = Refusal::conflict(format!("The instance is already locked for maintenance by {holder}"));
            refusal.exception = "com.atlassian.bitbucket.maintenance.MaintenanceLockedException";
            refusal.owner = Some(holder);
            return Err(refusal);
        }
        let token = random_hex(20)?;
        self.lock = Some(HeldLock { token: token.clone(), owner: user.clone(), at: now });
        self.task = None;
        self.progress.clear();
        self.record_at(now, SimEventKind::Locked { owner: user.name.clone() });
        Ok(LockGranted { unlock_token: token, owner: user })
    }

    fn check_unlock_token(&self, given: Option<&str>, place: &str) -> Result<(), Refusal> {
        let given = given.filter(|t| !t.is_empty()).ok_or_else(|| Refusal::missing_token(place))?;
        match &self.lock {
            Some(held) if held.token == given => Ok(()),
            _ => Err(Refusal::wrong_token("maintenance")),
        }
    }

    /// `POST /mvc/admin/backups?external=true`.
    pub(crate) fn start_backup(
        &mut self,
        now: Instant,
        header_token: Option<&str>,
        external: bool,
    ) -> Result<BackupStarted, Refusal> {
        self.check_unlock_token(header_token, "X-Atlassian-Maintenance-Token header")?;
        if !external {
            // Bitbucket's own (internal) backup needs its backup client; only external is simulated.
            return Err(Refusal::bad_argument("Only external backups are supported: add ?external=true"));
        }
        if self.task.as_ref().is_some_and(|t| t.state == TaskState::Running) {
            return Err(Refusal::conflict("A backup is already running"));
        }
        let task = Task {
            id: random_hex(16)?,
            cancel_token: random_hex(20)?,
            state: TaskState::Running,
            started_at: now,
            db_state: DrainState::Draining,
            scm_state: DrainState::Draining,
            client_percentage: None,
            drain_was_held: false,
        };
        let started =
            BackupStarted { id: task.id.clone(), cancel_token: task.cancel_token.clone(), progress: task.progress() };
        self.task = Some(task);
        self.progress.clear();
        self.record_at(now, SimEventKind::BackupStarted);
        Ok(started)
    }

    /// `GET /mvc/maintenance`. Without a lock the vendor docs do not say what comes back; the
    /// plausible answer is 200 with both states `AVAILABLE` and no task, which we give.
    pub(crate) fn maintenance_state(&self, header_token: Option<&str>) -> Result<MaintenanceState, Refusal> {
        if self.lock.is_none() {
            return Ok(MaintenanceState {
                task: None,
                db_state: DrainState::Available,
                scm_state: DrainState::Available,
            });
        }
        self.check_unlock_token(header_token, "X-Atlassian-Maintenance-Token header")?;
        Ok(match &self.task {
            Some(task) => MaintenanceState {
                task: Some(MaintenanceTask {
                    id: Some(task.id.clone()),
                    state: task.state.clone(),
                    progress: Some(task.progress()),
                }),
                db_state: task.db_state.clone(),
                scm_state: task.scm_state.clone(),
            },
            None => MaintenanceState { task: None, db_state: DrainState::Available, scm_state: DrainState::Available },
        })
    }

    /// `POST /mvc/admin/backups/progress/client?token=<unlock token>&percentage=N`.
    pub(crate) fn report_progress(
        &mut self,
        now: Instant,
        token: Option<&str>,
        percentage: Option<&str>,
    ) -> Result<(), Refusal> {
        self.check_unlock_token(token, "token query parameter")?;
        let percentage = percentage
            .and_then(|p| p.parse::<u8>().ok())
            .filter(|p| *p <= 100)
            .ok_or_else(|| Refusal::bad_argument("percentage must be an integer from 0 to 100"))?;
        let Some(task) = self.task.as_mut() else { return Err(Refusal::conflict("No backup is running")) };
        match task.state {
            TaskState::Running => {
                task.client_percentage = Some(percentage);
                if percentage == 100 {
                    // 100 means "backup finished": Bitbucket un-latches the database and the home.
                    task.end(TaskState::Successful);
                }
            }
            // A repeated 100 (a retried request whose answer was lost) changes nothing.
            TaskState::Successful if percentage == 100 => {}
            ref other => return Err(Refusal::conflict(format!("The backup task is {other}"))),
        }
        let finished = task.state == TaskState::Successful && self.progress.last() != Some(&100);
        self.progress.push(percentage);
        self.record_at(now, SimEventKind::ProgressReported { percentage });
        if finished {
            self.record_at(now, SimEventKind::TaskFinished { state: "SUCCESSFUL".to_owned() });
        }
        Ok(())
    }

    fn cancel_running_task(&mut self, now: Instant) {
        if let Some(task) = self.task.as_mut().filter(|t| t.state == TaskState::Running) {
            task.end(TaskState::Canceled);
            self.record_at(now, SimEventKind::BackupCancelled);
            self.record_at(now, SimEventKind::TaskFinished { state: "CANCELED".to_owned() });
        }
    }

    /// `POST /mvc/maintenance?token=<cancel token>`: ends the task, keeps the lock. Cancelling a
    /// task that already ended changes nothing and succeeds (undocumented; idempotent is the
    /// plausible and the kind choice for retries).
    pub(crate) fn cancel_backup(&mut self, now: Instant, token: Option<&str>) -> Result<(), Refusal> {
        let token = token.filter(|t| !t.is_empty()).ok_or_else(|| Refusal::missing_token("token query parameter"))?;
        match &self.task {
            Some(task) if task.cancel_token == token => {
                self.cancel_running_task(now);
                Ok(())
            }
            _ => Err(Refusal::wrong_token("cancel")),
        }
    }

    /// `DELETE /mvc/maintenance/lock?token=<unlock token>`: a task still running is cancelled.
    pub(crate) fn unlock(&mut self, now: Instant, token: Option<&str>) -> Result<(), Refusal> {
        self.check_unlock_token(token, "token query parameter")?;
        self.cancel_running_task(now);
        if let Some(held) = self.lock.take() {
            self.last_lock_window = Some(now.saturating_duration_since(held.at));
        }
        self.record_at(now, SimEventKind::Unlocked);
        Ok(())
    }

    pub(crate) fn is_locked(&self, foreign_owner: Option<&str>) -> bool {
        self.lock.is_some() || foreign_owner.is_some()
    }

    /// Last lock → unlock; `None` while locked or before the first unlock.
    pub(crate) fn lock_window(&self) -> Option<Duration> {
        if self.lock.is_some() { None } else { self.last_lock_window }
    }

    /// Start a simulated write; refused while locked (maintenance mode refuses writes).
    pub(crate) fn begin_write(&mut self, foreign_owner: Option<&str>) -> bool {
        if self.is_locked(foreign_owner) {
            return false;
        }
        self.writes_in_flight += 1;
        true
    }

    pub(crate) fn end_write(&mut self, now: Instant) {
        self.writes_in_flight = self.writes_in_flight.saturating_sub(1);
        self.last_write_end = Some(now);
    }

    pub(crate) fn snapshot(&self, foreign_owner: Option<&str>) -> SimState {
        let (db_state, scm_state) = match (&self.lock, &self.task) {
            (Some(_), Some(task)) => (task.db_state.to_string(), task.scm_state.to_string()),
            _ => (DrainState::Available.to_string(), DrainState::Available.to_string()),
        };
        SimState {
            locked: self.is_locked(foreign_owner),
            owner: foreign_owner.map(str::to_owned).or_else(|| self.lock.as_ref().map(|l| l.owner.name.clone())),
            unlock_token: self.lock.as_ref().map(|l| l.token.clone()),
            cancel_token: self.task.as_ref().map(|t| t.cancel_token.clone()),
            task_state: self.task.as_ref().map(|t| t.state.to_string()),
            db_state,
            scm_state,
            progress: self.progress.clone(),
            request_count: self.request_count,
            writes_in_flight: self.writes_in_flight,
        }
    }
}
