//! Building a [`MaintenanceClient`], and the HTTP plumbing behind it.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::client::{
    ApplicationProperties, BackupTask, CancelToken, ClientError, DrainOptions, Drained, InstanceStatus, LockOwner,
    MaintenanceClient, MaintenanceState, UnlockToken,
};

/// Builds a [`MaintenanceClient`]; every error surfaces at [`Self::build`].
#[derive(Debug)]
pub struct MaintenanceClientBuilder {
    base_url: String,
    user: String,
    password: Option<SecretString>,
    connect_timeout: Duration,
    request_timeout: Duration,
    ca_cert: Option<PathBuf>,
    insecure_skip_tls_verify: bool,
    retry_attempts: u32,
    retry_base_delay: Duration,
}

impl MaintenanceClientBuilder {
    pub(crate) fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            user: String::new(),
            password: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            ca_cert: None,
            insecure_skip_tls_verify: false,
            retry_attempts: 4,
            retry_base_delay: Duration::from_millis(250),
        }
    }

    /// Basic-auth credentials of a user with system-admin permission.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<SecretString>) -> Self {
        self.user = user.into();
        self.password = Some(password.into());
        self
    }

    /// Time allowed to open a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for one request, answer included.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Trust this extra CA certificate (PEM file) besides the system's.
    pub fn ca_certificate(mut self, pem_file: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(pem_file.into());
        self
    }

    /// Accept any certificate. Only for tests and emergencies: a warning is logged on build.
    pub fn danger_skip_tls_verify(mut self, skip: bool) -> Self {
        self.insecure_skip_tls_verify = skip;
        self
    }

    /// Attempts (first try included) for retried calls, and the first backoff delay.
    pub fn retries(mut self, attempts: u32, base_delay: Duration) -> Self {
        self.retry_attempts = attempts.max(1);
        self.retry_base_delay = base_delay;
        self
    }

    /// Build the client: parses the URL, loads the CA certificate, sets up TLS.
    pub fn build(self) -> Result<MaintenanceClient, ClientError> {
        let _ = (&self.ca_cert, self.insecure_skip_tls_verify, self.connect_timeout, self.request_timeout, self.retry_attempts, self.retry_base_delay, &self.password);
        todo!("client builder")
    }
}

pub(crate) struct Inner {
    pub(crate) base_url: Url,
    pub(crate) user: String,
}

impl Inner {
    /// `base_url` joined with `path`, keeping the context path.
    pub(crate) fn endpoint(&self, path: &str) -> Url {
        let _ = path;
        todo!()
    }

    pub(crate) async fn application_properties(&self) -> Result<ApplicationProperties, ClientError> {
        todo!()
    }
    pub(crate) async fn status(&self) -> Result<InstanceStatus, ClientError> {
        todo!()
    }
    pub(crate) async fn lock(&self) -> Result<(UnlockToken, LockOwner), ClientError> {
        todo!()
    }
    pub(crate) async fn start_backup(&self, _token: &UnlockToken) -> Result<BackupTask, ClientError> {
        todo!()
    }
    pub(crate) async fn maintenance_state(&self, _token: &UnlockToken) -> Result<MaintenanceState, ClientError> {
        todo!()
    }
    pub(crate) async fn wait_drained(
        &self,
        _token: &UnlockToken,
        _options: &DrainOptions,
        _cancel: &CancellationToken,
        _on_poll: impl Fn(&MaintenanceState) + Send,
    ) -> Result<Drained, ClientError> {
        let _ = Drained::after_wait;
        todo!()
    }
    pub(crate) async fn report_progress(&self, _token: &UnlockToken, _percentage: u8) -> Result<(), ClientError> {
        todo!()
    }
    pub(crate) async fn cancel_backup(&self, _token: &CancelToken) -> Result<(), ClientError> {
        todo!()
    }
    pub(crate) async fn unlock(&self, _token: &UnlockToken) -> Result<(), ClientError> {
        todo!()
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<MaintenanceClient>();
}
