//! `Simulator`: the core's fake Bitbucket, to rehearse scripts against.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bitbucket_diy_core::simulator::{self as sim, Fault, SimulatorConfig};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyType};

use crate::client::MaintenanceClient;
use crate::convert::{duration_arg, py_repr, to_py_data};
use crate::errors::config_err;
use crate::runtime::wait_short;

/// A simulated Bitbucket serving the maintenance and backup API on ``127.0.0.1`` (a free port),
/// with fault injection, to rehearse scripts and test strategies without a real instance.
///
/// ``Simulator(*, user="admin", password="admin", context_path="", version="8.19.0",
/// drain_delay=0.2, faults=(), non_admin_users=None)``: `user`/`password` are the system
/// administrator's; `non_admin_users` maps names to passwords of users whose calls get 403;
/// `drain_delay` (seconds or `timedelta`) is how long draining takes; `faults` are active from
/// the start.
///
/// It starts when created and stops at the end of its ``with`` block (or on `close()`)::
///
///     with bitbucket_diy.Simulator(drain_delay=0.1, faults=["never-drain"]) as sim:
///         client = MaintenanceClient(sim.url, sim.user, sim.password)
///         ...
///         assert not sim.is_locked
///
/// Faults use the CLI's ``simulate --fault`` syntax: ``never-drain``, ``only-database-drains``,
/// ``task-fails``, ``server-error:ENDPOINT[:TIMES]``, ``drop-connection:ENDPOINT[:TIMES]``,
/// ``answer-lost:ENDPOINT[:TIMES]``, ``slow:DURATION[:ENDPOINT]``, ``html[:ENDPOINT]``,
/// ``malformed-json:ENDPOINT``, ``reject-unlock[:TIMES]``, ``locked-by:OWNER``,
/// ``server-error-on-request:N``; endpoints are ``application-properties``, ``status``, ``lock``,
/// ``start-backup``, ``maintenance-state``, ``progress``, ``cancel-backup``, ``unlock``.
#[pyclass(module = "bitbucket_diy", frozen)]
pub(crate) struct Simulator {
    running: Mutex<Option<sim::Simulator>>,
    url: String,
    user: String,
    password: String,
}

impl Simulator {
    fn with_running<T>(&self, py: Python<'_>, read: impl FnOnce(&sim::Simulator) -> T) -> PyResult<T> {
        let running = self.running.lock().map_err(|_| PyRuntimeError::new_err("simulator state poisoned"))?;
        match running.as_ref() {
            Some(simulator) => Ok(read(simulator)),
            None => Err(config_err(py, "this simulator was closed")),
        }
    }
}

fn parse_fault(py: Python<'_>, spec: &str) -> PyResult<Fault> {
    spec.parse::<Fault>().map_err(|e| config_err(py, e.to_string()))
}

#[pymethods]
impl Simulator {
    /// See the class documentation.
    #[new]
    #[pyo3(signature = (*, user = "admin", password = "admin", context_path = "", version = "8.19.0", drain_delay = None, faults = Vec::new(), non_admin_users = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        user: &str,
        password: &str,
        context_path: &str,
        version: &str,
        drain_delay: Option<&Bound<'_, PyAny>>,
        faults: Vec<String>,
        non_admin_users: Option<HashMap<String, String>>,
    ) -> PyResult<Self> {
        let mut config =
            SimulatorConfig::default().with_admin(user, password).with_context_path(context_path).with_version(version);
        if let Some(delay) = drain_delay {
            config = config.with_drain_delay(duration_arg(delay, "drain_delay")?);
        }
        for spec in &faults {
            config = config.with_fault(parse_fault(py, spec)?);
        }
        for (name, password) in non_admin_users.unwrap_or_default() {
            config = config.with_non_admin_user(name, password);
        }
        let started = wait_short(py, sim::Simulator::start(config))?
            .map_err(|e| config_err(py, format!("cannot start the simulator: {e}")))?;
        Ok(Self {
            url: started.url().to_string(),
            user: started.user().to_owned(),
            password: started.password().to_owned(),
            running: Mutex::new(Some(started)),
        })
    }

    /// The base URL, context path included, e.g. ``http://127.0.0.1:41234/bitbucket``.
    #[getter]
    fn url(&self) -> String {
        self.url.clone()
    }

    /// The system administrator's user name.
    #[getter]
    fn user(&self) -> String {
        self.user.clone()
    }

    /// The system administrator's (fake) password.
    #[getter]
    fn password(&self) -> String {
        self.password.clone()
    }

    /// Whether the simulated instance is in maintenance mode.
    #[getter]
    fn is_locked(&self, py: Python<'_>) -> PyResult<bool> {
        self.with_running(py, sim::Simulator::is_locked)
    }

    /// How long the last lock was held (lock to unlock), or `None` while locked or never locked.
    #[getter]
    fn lock_window(&self, py: Python<'_>) -> PyResult<Option<Duration>> {
        self.with_running(py, sim::Simulator::lock_window)
    }

    /// Everything the simulator saw, in order: dicts with ``"event"`` (``"request"``,
    /// ``"locked"``, ``"drained"``, ``"progress-reported"``, ``"unlocked"``…), ``"at"`` (seconds
    /// since it started) and the event's fields. Request paths never carry query strings.
    fn events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let events = self.with_running(py, sim::Simulator::events)?;
        let list = PyList::empty(py);
        for event in events {
            let entry = to_py_data(py, &event.kind)?.cast_into::<PyDict>()?;
            entry.set_item("at", event.at.as_secs_f64())?;
            list.append(entry)?;
        }
        Ok(list)
    }

    /// The state right now, as a dict: ``locked``, ``owner``, ``task_state``, ``db_state``,
    /// ``scm_state``, ``progress`` (percentages reported), ``request_count``, and the simulator's
    /// own fake ``unlock_token`` and ``cancel_token``.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let state = self.with_running(py, sim::Simulator::snapshot)?;
        to_py_data(py, &state)
    }

    /// Activate a fault now (see the class documentation for the syntax). Raises `ConfigError`
    /// for a spec that does not parse.
    fn add_fault(&self, py: Python<'_>, spec: &str) -> PyResult<()> {
        let fault = parse_fault(py, spec)?;
        self.with_running(py, |s| s.add_fault(fault))
    }

    /// Remove every fault.
    fn clear_faults(&self, py: Python<'_>) -> PyResult<()> {
        self.with_running(py, sim::Simulator::clear_faults)
    }

    /// A `MaintenanceClient` logged in as the administrator.
    fn client(&self, py: Python<'_>) -> PyResult<MaintenanceClient> {
        let inner = bitbucket_diy_core::client::MaintenanceClient::builder(&self.url)
            .credentials(&self.user, secrecy::SecretString::from(self.password.clone()))
            .build()
            .map_err(|e| crate::errors::client_err(py, e))?;
        Ok(MaintenanceClient { inner })
    }

    /// The ``[bitbucket]`` section of a configuration for this simulator:
    /// ``{"url": …, "user": …, "password": …}``.
    fn bitbucket_config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let section = PyDict::new(py);
        section.set_item("url", &self.url)?;
        section.set_item("user", &self.user)?;
        section.set_item("password", &self.password)?;
        Ok(section)
    }

    /// Stop serving. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let running = self.running.lock().map_err(|_| PyRuntimeError::new_err("simulator state poisoned"))?.take();
        if let Some(simulator) = running {
            wait_short(py, simulator.shutdown())?;
        }
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyType>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state = if self.running.lock().map(|r| r.is_some()).unwrap_or(false) { "running" } else { "closed" };
        format!("Simulator(url={}, {state})", py_repr(&self.url))
    }
}
