//! A stateful simulator of Bitbucket's maintenance and backup API, served over real HTTP on
//! `127.0.0.1:0`: used by the test suites, by `bitbucket-diy simulate`/`demo` and by the Python
//! module to rehearse against.
//!
//! It follows the vendor's API notes (`bitbucket-api.md`): basic auth on every `/mvc` call (401
//! with Bitbucket's JSON error body, 403 for users without system-admin permission),
//! `/status` and `application-properties` without auth, the lock → start → drain → progress →
//! unlock state machine, and the maintenance token where the API requires it (tolerated
//! everywhere). Where the vendor is silent the simulator chooses, and says so where it does:
//! a second lock gets 409; a missing token 400 and a wrong or stale one 409; `GET /mvc/maintenance`
//! without a lock answers 200 with both states `AVAILABLE` and no task; cancel answers 200 and is
//! idempotent; a repeated progress 100 answers 202. Paths it does not know get an HTML 404 page,
//! as Bitbucket's servlet container does for a wrong context path.
//!
//! Draining is real in one sense: [`Simulator::begin_write`] models an in-flight git push or
//! database write, and the states reach `DRAINED` only once the drain delay has passed **and**
//! every such write has finished.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use bitbucket_diy_core::simulator::{Simulator, SimulatorConfig};
//!
//! let sim = Simulator::start(SimulatorConfig::default().with_context_path("/bitbucket")).await?;
//! assert!(sim.url().as_str().ends_with("/bitbucket"));
//! assert!(!sim.is_locked());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
mod conn;
mod events;
mod fault_spec;
mod faults;
mod http;
mod state;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::Url;

pub use config::{SimUser, SimulatorConfig};
pub use events::{SimEvent, SimEventKind, SimState};
pub use fault_spec::FaultSpecError;
pub use faults::{Endpoint, Fault};
pub use http::EVENTS_PATH;

use conn::{ConnectionSwitch, CuttableListener};
use faults::FaultSet;
use state::Machine;

/// How long [`Simulator::shutdown`] waits for connections to finish before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the handlers share. One mutex guards the state machine and the faults together, so
/// a request sees one consistent moment.
pub(crate) struct Shared {
    world: Mutex<World>,
    admin: SimUser,
    admin_display_name: String,
    non_admin_users: Vec<SimUser>,
    context_path: String,
    version: String,
    shutdown: CancellationToken,
}

pub(crate) struct World {
    machine: Machine,
    faults: FaultSet,
}

impl Shared {
    fn world(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock leaves consistent-enough state for a simulator.
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Let time pass, then read the world.
    fn with_world<T>(&self, read: impl FnOnce(&mut World) -> T) -> T {
        let mut guard = self.world();
        let world = &mut *guard;
        world.machine.advance(Instant::now(), world.faults.drain_faults());
        read(world)
    }
}

/// A running simulator. Dropping it (or [`Simulator::shutdown`]) stops the server.
///
/// Faults rehearse what a real instance does on a bad night. Here a backup task that never
/// drains, seen through the client:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use bitbucket_diy_core::client::{ClientError, DrainOptions};
/// use bitbucket_diy_core::simulator::{Fault, Simulator, SimulatorConfig};
/// use tokio_util::sync::CancellationToken;
///
/// let sim = Simulator::start(SimulatorConfig::default().with_fault(Fault::NeverDrain)).await?;
/// let client = bitbucket_diy_core::MaintenanceClient::builder(sim.url())
///     .credentials(sim.user(), sim.password())
///     .build()?;
/// let lock = client.lock().await?;
/// client.start_backup(lock.token()).await?;
/// let options = DrainOptions { poll_interval: Duration::from_millis(10), timeout: Duration::from_millis(100) };
/// let waited = client.wait_drained(lock.token(), &options, &CancellationToken::new(), |_| {}).await;
/// assert!(matches!(waited, Err(ClientError::DrainTimeout { .. })));
/// assert!(sim.is_locked());
/// lock.release().await.map_err(|(_lock, e)| e)?;
/// assert!(!sim.is_locked());
/// sim.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Simulator {
    shared: Arc<Shared>,
    url: Url,
    server: Option<JoinHandle<()>>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator").field("url", &self.url.as_str()).finish_non_exhaustive()
    }
}

impl Simulator {
    /// Bind, then serve in the background on the current tokio runtime.
    pub async fn start(config: SimulatorConfig) -> std::io::Result<Simulator> {
        let context_path = config.normalized_context_path()?;
        let listener = TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let url = Url::parse(&format!("http://{addr}{context_path}"))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut faults = FaultSet::default();
        for fault in config.faults {
            faults.add(fault);
        }
        let shared = Arc::new(Shared {
            world: Mutex::new(World { machine: Machine::new(config.drain_delay), faults }),
            admin: config.admin,
            admin_display_name: config.admin_display_name,
            non_admin_users: config.non_admin_users,
            context_path,
            version: config.version,
            shutdown: CancellationToken::new(),
        });
        let app = Router::new().fallback(http::handle).with_state(Arc::clone(&shared));
        let stop = shared.shutdown.clone();
        let server = tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<ConnectionSwitch>();
            let serving =
                axum::serve(CuttableListener(listener), service).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serving.await {
                tracing::warn!("Bitbucket simulator stopped: {e}");
            }
        });
        tracing::debug!(url = %url, "Bitbucket simulator listening");
        Ok(Simulator { shared, url, server: Some(server) })
    }

    /// The base URL, context path included (no trailing slash unless there is no context path).
    pub fn url(&self) -> Url {
        self.url.clone()
    }

    /// The administrator's user name.
    pub fn user(&self) -> &str {
        &self.shared.admin.name
    }

    /// The administrator's password (a fake one, for rehearsals).
    pub fn password(&self) -> &str {
        &self.shared.admin.password
    }

    /// Activate a fault now.
    pub fn add_fault(&self, fault: Fault) {
        self.shared.world().faults.add(fault);
    }

    /// Remove every fault (a foreign [`Fault::LockedBy`] holder goes away too).
    pub fn clear_faults(&self) {
        self.shared.world().faults.clear();
    }

    /// Everything that happened so far, in time order.
    pub fn events(&self) -> Vec<SimEvent> {
        self.shared.with_world(|w| w.machine.events())
    }

    /// Whether the instance is in maintenance mode.
    pub fn is_locked(&self) -> bool {
        self.shared.with_world(|w| w.machine.is_locked(w.faults.locked_by()))
    }

    /// The state right now.
    pub fn snapshot(&self) -> SimState {
        self.shared.with_world(|w| w.machine.snapshot(w.faults.locked_by()))
    }

    /// How long the last lock was held (lock → unlock); `None` while locked or never unlocked.
    pub fn lock_window(&self) -> Option<Duration> {
        self.shared.with_world(|w| w.machine.lock_window())
    }

    /// Start a simulated write (a git push, a database transaction): `None` while locked, since
    /// maintenance mode refuses writes. A backup cannot drain until every guard is dropped.
    pub fn begin_write(&self) -> Option<WriteGuard> {
        let admitted = self.shared.with_world(|w| w.machine.begin_write(w.faults.locked_by()));
        admitted.then(|| WriteGuard { shared: Arc::clone(&self.shared) })
    }

    /// Stop serving: open connections get a moment to finish, then the server is stopped.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err()
        {
            server.abort();
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// A simulated write in flight; the write ends when the guard is dropped.
pub struct WriteGuard {
    shared: Arc<Shared>,
}

impl fmt::Debug for WriteGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteGuard").finish_non_exhaustive()
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut guard = self.shared.world();
        let world = &mut *guard;
        world.machine.end_write(now);
        world.machine.advance(now, world.faults.drain_faults());
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Simulator>();
    is::<WriteGuard>();
}
