//! Building a [`MaintenanceClient`], and the HTTP plumbing behind it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::client::{ClientError, MaintenanceClient};

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
        let base_url = parse_base_url(&self.base_url)?;
        let mut http = reqwest::Client::builder()
            .user_agent(concat!("bitbucket-diy/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .redirect(same_origin_redirects());
        if let Some(pem_file) = &self.ca_cert {
            http = http.tls_certs_merge(read_ca_certificates(pem_file)?);
        }
        if self.insecure_skip_tls_verify {
            tracing::warn!(
                url = %base_url,
                "TLS certificate verification is OFF: anyone on the network path can read the credentials"
            );
            http = http.tls_danger_accept_invalid_certs(true);
        }
        crate::ensure_tls_provider();
        let http = http
            .build()
            .map_err(|e| ClientError::InvalidConfig { setting: "tls", reason: e.without_url().to_string() })?;
        Ok(MaintenanceClient {
            inner: Arc::new(Inner {
                base_url,
                user: self.user,
                password: self.password,
                http,
                connect_timeout: self.connect_timeout,
                request_timeout: self.request_timeout,
                retry_attempts: self.retry_attempts,
                retry_base_delay: self.retry_base_delay,
            }),
        })
    }
}

/// Follow redirects within the same origin, or to its https version, only: the basic-auth and
/// maintenance-token headers would otherwise travel to another server. A redirect elsewhere is
/// answered as "not the API".
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else { return attempt.stop() };
        let next = attempt.url();
        let same_host = first.host_str() == next.host_str();
        let same_origin = same_host
            && first.scheme() == next.scheme()
            && first.port_or_known_default() == next.port_or_known_default();
        let https_upgrade = same_host && first.scheme() == "http" && next.scheme() == "https" && next.port().is_none();
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if same_origin || https_upgrade {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// The base URL with a trailing slash, so that joining keeps the context path.
fn parse_base_url(text: &str) -> Result<Url, ClientError> {
    let invalid = |reason: String| ClientError::InvalidConfig { setting: "url", reason };
    let mut url = Url::parse(text.trim()).map_err(|e| invalid(format!("not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!("`{}` must start with http:// or https://", url.scheme())));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo this URL: it holds a password.
        return Err(invalid("the URL must not carry credentials: configure the user and password instead".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!("`{}` must not have a query string or a fragment", url.path())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host".to_owned()));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn read_ca_certificates(pem_file: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let invalid = |reason: String| ClientError::InvalidConfig { setting: "ca_cert", reason };
    // Read once at build time: a small file, and build() is not async.
    let pem = std::fs::read(pem_file).map_err(|e| invalid(format!("cannot read {}: {e}", pem_file.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| invalid(format!("{} is not a PEM certificate bundle: {e}", pem_file.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!("{} holds no PEM certificate", pem_file.display())));
    }
    Ok(certs)
}

/// The shared state behind every clone of a [`MaintenanceClient`].
pub(crate) struct Inner {
    pub(crate) base_url: Url,
    pub(crate) user: String,
    pub(crate) password: Option<SecretString>,
    pub(crate) http: reqwest::Client,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) retry_attempts: u32,
    pub(crate) retry_base_delay: Duration,
}

impl Inner {
    /// `base_url` joined with `path`, keeping the context path.
    pub(crate) fn endpoint(&self, path: &str) -> Url {
        let mut url = self.base_url.clone();
        // http(s) URLs always have path segments; parse_base_url checked the scheme.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path.split('/'));
        }
        url
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<MaintenanceClient>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_keeps_the_context_path_with_or_without_slash() {
        for text in ["http://h:7990/bitbucket", "http://h:7990/bitbucket/"] {
            assert_eq!(parse_base_url(text).unwrap().as_str(), "http://h:7990/bitbucket/");
        }
        assert_eq!(parse_base_url("https://h").unwrap().as_str(), "https://h/");
    }

    #[test]
    fn bad_base_urls_are_config_errors() {
        for text in ["ftp://h/", "http://u:p@h/", "http://u@h/", "not a url", "http://h/?a=b", "file:///x"] {
            let err = parse_base_url(text).unwrap_err();
            assert!(matches!(err, ClientError::InvalidConfig { setting: "url", .. }), "{text}: {err}");
            assert!(!err.to_string().contains("u:p"), "{err}");
        }
    }
}
