//! `status`, `unlock` and `cancel`: talk to Bitbucket directly, with or without a configuration
//! file.

use std::sync::Arc;
use std::time::Duration;

use bitbucket_diy_core::client::{CancelToken, InstanceState, MaintenanceState, UnlockToken};
use bitbucket_diy_core::config::{BitbucketConfig, ConfigError, InstanceType, SecretSource};
use bitbucket_diy_core::orchestrator::client_from;
use bitbucket_diy_core::{MaintenanceClient, Result};
use secrecy::SecretString;
use serde::Serialize;

use crate::cli::{GlobalArgs, RemoteArgs};
use crate::commands::{load_config, report};
use crate::render;
use crate::secrets;
use crate::ui::Ui;

const UNLOCK_TOKEN_VAR: &str = "BITBUCKET_DIY_UNLOCK_TOKEN";
const CANCEL_TOKEN_VAR: &str = "BITBUCKET_DIY_CANCEL_TOKEN";

/// `[bitbucket]` from `--url`/`--user` (no configuration file needed), else from the
/// configuration, with `--user` taking precedence.
fn bitbucket(global: &GlobalArgs, ui: &Ui, args: &RemoteArgs) -> Result<BitbucketConfig> {
    let mut bitbucket = match &args.url {
        Some(url) => BitbucketConfig {
            url: url.parse().map_err(|e| crate::commands::invalid("--url", format!("`{url}` is not a URL: {e}")))?,
            user: String::new(),
            password: SecretSource::Unset,
            ca_cert: args.ca_cert.clone(),
            insecure_skip_tls_verify: false,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            instance_type: InstanceType::Bitbucket,
        },
        None => load_config(global.config.as_deref(), ui)?.config.bitbucket,
    };
    if let Some(user) = &args.user {
        bitbucket.user = user.clone();
    }
    ui.set_label(bitbucket.url.as_str().trim_end_matches('/'));
    Ok(bitbucket)
}

/// A client for the calls that need no credentials (`/status`, `application-properties`).
fn anonymous_client(bitbucket: &BitbucketConfig) -> Result<MaintenanceClient> {
    // Anonymous calls never send the credentials, so an empty password is never used.
    client_from(bitbucket, SecretString::from(String::new()))
}

fn authenticated_client(bitbucket: &BitbucketConfig) -> Result<MaintenanceClient> {
    if bitbucket.user.trim().is_empty() {
        return Err(ConfigError::Missing {
            key: "--user".to_owned(),
            hint: "the admin user to authenticate as (or use a configuration file)".to_owned(),
        }
        .into());
    }
    let password = secrets::bitbucket_password(&bitbucket.password, &bitbucket.user, bitbucket.url.as_str())?;
    client_from(bitbucket, password)
}

fn required_token(args: &RemoteArgs, var: &str, what: &str) -> Result<String> {
    secrets::token(args, var)?.ok_or_else(|| {
        ConfigError::Missing {
            key: format!("{what} token"),
            hint: format!("set {var}, or pass --token-file FILE, or --token - to read it from stdin"),
        }
        .into()
    })
}

#[derive(Debug, Serialize)]
struct Status {
    url: String,
    version: Option<String>,
    state: String,
    locked: bool,
    maintenance: Option<MaintenanceState>,
}

pub async fn status(global: &GlobalArgs, ui: &Arc<Ui>, args: &RemoteArgs) -> Result<()> {
    let bitbucket = bitbucket(global, ui, args)?;
    let token = secrets::token(args, UNLOCK_TOKEN_VAR)?;
    let client = anonymous_client(&bitbucket)?;
    let state = client.status().await?;
    let version = match client.application_properties().await {
        Ok(props) => Some(props.version),
        Err(e) => {
            ui.warn(&format!("cannot read the version: {e}"));
            None
        }
    };
    let maintenance = match token {
        Some(token) => Some(authenticated_client(&bitbucket)?.maintenance_state(&UnlockToken::new(token)).await?),
        None => None,
    };
    let status = Status {
        url: client.base_url().to_string(),
        version,
        locked: state.state == InstanceState::Maintenance,
        state: state.state.to_string(),
        maintenance,
    };
    report(ui, &status, || human_status(&status))
}

fn human_status(status: &Status) -> String {
    let mut rows = vec![
        ("version", status.version.clone().unwrap_or_else(|| "unknown".to_owned())),
        ("state", status.state.clone()),
        ("locked", if status.locked { "yes: in maintenance mode".to_owned() } else { "no".to_owned() }),
    ];
    if let Some(m) = &status.maintenance {
        let task = match &m.task {
            Some(task) => {
                let progress =
                    task.progress.as_ref().map(|p| format!(", {}% {}", p.percentage, p.message)).unwrap_or_default();
                format!("{}{progress}", task.state)
            }
            None => "none".to_owned(),
        };
        rows.push(("backup task", task));
        rows.push(("db-state", m.db_state.to_string()));
        rows.push(("scm-state", m.scm_state.to_string()));
    }
    format!("Bitbucket at {}\n{}", status.url.trim_end_matches('/'), render::rows(&rows))
}

#[derive(Debug, Serialize)]
struct Unlocked {
    unlocked: bool,
    state: Option<String>,
}

pub async fn unlock(global: &GlobalArgs, ui: &Arc<Ui>, args: &RemoteArgs) -> Result<()> {
    let bitbucket = bitbucket(global, ui, args)?;
    let token = required_token(args, UNLOCK_TOKEN_VAR, "unlock")?;
    let client = authenticated_client(&bitbucket)?;
    client.unlock(&UnlockToken::new(token)).await?;
    let state = client.status().await.ok().map(|s| s.state);
    if state == Some(InstanceState::Maintenance) {
        ui.warn("Bitbucket still reports MAINTENANCE: another lock may be held (see `bitbucket-diy status`)");
    }
    let unlocked = Unlocked { unlocked: true, state: state.map(|s| s.to_string()) };
    report(ui, &unlocked, || {
        format!(
            "Bitbucket at {} unlocked (state now: {})\n",
            client.base_url(),
            unlocked.state.as_deref().unwrap_or("unknown")
        )
    })
}

#[derive(Debug, Serialize)]
struct Cancelled {
    cancelled: bool,
}

pub async fn cancel(global: &GlobalArgs, ui: &Arc<Ui>, args: &RemoteArgs) -> Result<()> {
    let bitbucket = bitbucket(global, ui, args)?;
    let token = required_token(args, CANCEL_TOKEN_VAR, "cancel")?;
    let client = authenticated_client(&bitbucket)?;
    client.cancel_backup(&CancelToken::new(token)).await?;
    report(ui, &Cancelled { cancelled: true }, || {
        format!(
            "Bitbucket's backup task at {} cancelled. The instance stays in maintenance mode until it is \
             unlocked: BITBUCKET_DIY_UNLOCK_TOKEN=… bitbucket-diy unlock\n",
            client.base_url()
        )
    })
}
