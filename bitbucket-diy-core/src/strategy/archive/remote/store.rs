//! The object store an archive destination talks to: built from `[archive.remote]`, credentials
//! from the environment or the configuration, never shown in `Debug` or logs.

use std::fmt;
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreScheme, RetryConfig};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{ConfigError, RemoteConfig};
use crate::strategy::{ArchiveError, RemoteError};

/// Credentials given in code (a prompt, a secret manager) rather than through the environment.
/// `Debug` shows the key id only.
#[derive(Clone)]
pub struct RemoteCredentials {
    /// The access key id (S3 and S3-compatible stores).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
    /// A session token, for temporary credentials.
    pub session_token: Option<SecretString>,
}

impl fmt::Debug for RemoteCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[REDACTED]")
            .finish()
    }
}

/// One bucket (or container) and a prefix in it, where archives and their receipts are kept.
///
/// `Debug` and `Display` show the URL only: the client's own `Debug` can print credentials.
#[derive(Clone)]
pub struct RemoteStore {
    store: Arc<dyn ObjectStore>,
    url: String,
    prefix: ObjectPath,
}

impl fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteStore({})", self.url)
    }
}

impl fmt::Display for RemoteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl RemoteStore {
    /// The store `[archive.remote]` describes. Credentials come from `credentials` when given,
    /// else from the keys of the section (`access_key_id`, `secret_access_key_env`…), else from
    /// the provider's standard environment variables (`AWS_ACCESS_KEY_ID`,
    /// `GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_STORAGE_ACCOUNT_KEY`…) and instance metadata.
    pub fn from_config(config: &RemoteConfig, credentials: Option<RemoteCredentials>) -> Result<Self, ConfigError> {
        crate::ensure_tls_provider();
        let invalid = |reason: String| ConfigError::invalid("archive.remote.url", reason);
        let (scheme, prefix) = ObjectStoreScheme::parse(&config.url)
            .map_err(|e| invalid(format!("`{}` is not an object store URL: {e}", config.url)))?;
        let retry = RetryConfig {
            max_retries: config.max_retries,
            retry_timeout: config.retry_timeout,
            backoff: object_store::BackoffConfig::default(),
        };
        // No overall request timeout: downloading a large archive is one long GET. A stalled
        // connection is caught by the read timeout instead, and the GET resumes where it stopped.
        let client = ClientOptions::new()
            .with_allow_http(config.allow_http)
            .with_connect_timeout(config.connect_timeout)
            .with_timeout_disabled()
            .with_read_timeout(config.read_timeout);
        let credentials = match credentials {
            Some(c) => Some(c),
            None => credentials_from_config(config)?,
        };
        let url = config.url.as_str();
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::AmazonS3 => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_retry(retry)
                    .with_client_options(client)
                    .with_allow_http(config.allow_http);
                if let Some(endpoint) = &config.endpoint {
                    builder = builder.with_endpoint(endpoint.as_str().trim_end_matches('/'));
                }
                if let Some(region) = &config.region {
                    builder = builder.with_region(region);
                }
                if let Some(c) = credentials {
                    builder = builder
                        .with_access_key_id(c.access_key_id)
                        .with_secret_access_key(c.secret_access_key.expose_secret());
                    if let Some(token) = &c.session_token {
                        builder = builder.with_token(token.expose_secret());
                    }
                }
                for (key, value) in &config.options {
                    let parsed = key.parse().map_err(|_| unknown_option(key, "aws_"))?;
                    builder = builder.with_config(parsed, value);
                }
                Arc::new(builder.build().map_err(|e| invalid(e.to_string()))?)
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                refuse_s3_keys(config, credentials.is_some(), "Google Cloud Storage")?;
                let mut builder = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .with_retry(retry)
                    .with_client_options(client);
                for (key, value) in &config.options {
                    let parsed = key.parse().map_err(|_| unknown_option(key, "google_"))?;
                    builder = builder.with_config(parsed, value);
                }
                Arc::new(builder.build().map_err(|e| invalid(e.to_string()))?)
            }
            ObjectStoreScheme::MicrosoftAzure => {
                refuse_s3_keys(config, credentials.is_some(), "Azure")?;
                let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .with_retry(retry)
                    .with_client_options(client);
                for (key, value) in &config.options {
                    let parsed = key.parse().map_err(|_| unknown_option(key, "azure_"))?;
                    builder = builder.with_config(parsed, value);
                }
                Arc::new(builder.build().map_err(|e| invalid(e.to_string()))?)
            }
            other => {
                return Err(invalid(format!(
                    "`{url}` ({other:?}) is not supported: use s3://bucket/prefix (also for S3-compatible stores, \
                     with `endpoint`), gs://bucket/prefix or az://container/prefix"
                )));
            }
        };
        Ok(Self { store, url: display_url(url), prefix })
    }

    /// Archives under `prefix` of any store (a custom `ObjectStore`, an in-memory one in tests);
    /// `url` is how the location is shown in lists, reports and errors.
    pub fn from_object_store(store: Arc<dyn ObjectStore>, url: &str, prefix: &str) -> Self {
        Self { store, url: display_url(url), prefix: ObjectPath::from(prefix) }
    }

    /// The URL of the prefix, as shown to users.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub(crate) fn prefix(&self) -> &ObjectPath {
        &self.prefix
    }

    /// The key of object `name` under the prefix.
    pub(crate) fn key(&self, name: &str) -> ObjectPath {
        self.prefix.clone().join(name)
    }

    /// The URL of object `name`, as shown to users.
    pub(crate) fn location(&self, name: &str) -> String {
        format!("{}/{name}", self.url)
    }
}

fn display_url(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

fn unknown_option(key: &str, prefix: &str) -> ConfigError {
    ConfigError::invalid(
        format!("archive.remote.options.{key}"),
        format!("not an option of this store (its options start with `{prefix}`; see docs/offsite.md)"),
    )
}

fn refuse_s3_keys(config: &RemoteConfig, given: bool, store: &str) -> Result<(), ConfigError> {
    if given || config.endpoint.is_some() || config.region.is_some() {
        return Err(ConfigError::invalid(
            "archive.remote",
            format!(
                "`endpoint`, `region` and the access key settings are for S3; {store} takes its credentials from \
                 its environment variables (see docs/offsite.md)"
            ),
        ));
    }
    Ok(())
}

fn credentials_from_config(config: &RemoteConfig) -> Result<Option<RemoteCredentials>, ConfigError> {
    let from_env = |key: &str, var: &str| {
        std::env::var(var).map_err(|_| ConfigError::Missing {
            key: format!("archive.remote.{key}"),
            hint: format!("names the environment variable {var}, which is not set"),
        })
    };
    let key_id = match (&config.access_key_id, &config.access_key_id_env) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(var)) => Some(from_env("access_key_id_env", var)?),
        (None, None) => None,
    };
    let secret = match (&config.secret_access_key_env, &config.secret_access_key_file) {
        (Some(var), _) => Some(SecretString::from(from_env("secret_access_key_env", var)?)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid(
                    "archive.remote.secret_access_key_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            Some(SecretString::from(text.lines().next().unwrap_or_default().trim().to_owned()))
        }
        (None, None) => None,
    };
    let token = match &config.session_token_env {
        Some(var) => Some(SecretString::from(from_env("session_token_env", var)?)),
        None => None,
    };
    match (key_id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => {
            Ok(Some(RemoteCredentials { access_key_id, secret_access_key, session_token: token }))
        }
        (None, None) => Ok(None),
        _ => Err(ConfigError::invalid(
            "archive.remote",
            "set both the access key id (`access_key_id` or `access_key_id_env`) and the secret \
             (`secret_access_key_env` or `secret_access_key_file`), or neither to use AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY",
        )),
    }
}

/// An object store failure as an archive error.
pub(crate) fn remote_error(action: &'static str, location: &str, error: object_store::Error) -> ArchiveError {
    let not_found = matches!(error, object_store::Error::NotFound { .. });
    ArchiveError::Remote { action, location: location.to_owned(), source: RemoteError::new(not_found, error) }
}
