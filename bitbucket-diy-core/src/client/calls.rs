//! The maintenance API, one method per call. Which calls retry is decided here (see the module
//! documentation of [`crate::client`]).

use reqwest::Method;
use serde::Deserialize;
use url::Url;

use crate::client::builder::Inner;
use crate::client::http::{Call, Refusals};
use crate::client::wire::id_string_or_number;
use crate::client::{
    ApplicationProperties, BackupTask, CancelToken, ClientError, InstanceStatus, LockOwner, MaintenanceState,
    TaskProgress, UnlockToken,
};

/// `POST /mvc/maintenance/lock`'s answer. No `Debug`: it holds the token.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LockAnswer {
    #[serde(default)]
    unlock_token: Option<String>,
    #[serde(default)]
    owner: Option<LockOwner>,
}

/// `POST /mvc/admin/backups?external=true`'s answer. No `Debug`: it holds the token.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartAnswer {
    #[serde(default)]
    cancel_token: Option<String>,
    #[serde(default, deserialize_with = "id_string_or_number")]
    id: Option<String>,
    #[serde(default)]
    progress: Option<TaskProgress>,
}

/// A token must be there (the vendor scripts once took a missing one, read as `null`, for a
/// token) and must be plain: it ends up in a printed recovery command.
fn checked_token(url: &Url, field: &str, token: Option<String>) -> Result<String, ClientError> {
    let invalid = |reason: String| ClientError::InvalidResponse { url: url.clone(), reason };
    let token = token.filter(|t| !t.is_empty()).ok_or_else(|| invalid(format!("`{field}` is missing or empty")))?;
    let is_plain = token.len() <= 256 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !is_plain {
        return Err(invalid(format!("`{field}` holds characters a token never has")));
    }
    Ok(token)
}

impl Inner {
    pub(crate) async fn application_properties(&self) -> Result<ApplicationProperties, ClientError> {
        let call = &Call::anonymous_get("rest/api/1.0/application-properties");
        self.retried("reading application-properties", move || async move { self.send(call).await?.json() }).await
    }

    pub(crate) async fn status(&self) -> Result<InstanceStatus, ClientError> {
        let call = &Call::anonymous_get("status");
        self.retried("reading the instance status", move || async move { self.send(call).await?.json() }).await
    }

    /// Never retried: a lost answer would leave the instance locked with a token we never saw,
    /// and the retry would be refused as "already locked".
    pub(crate) async fn lock(&self) -> Result<(UnlockToken, LockOwner), ClientError> {
        let answer = self.send(&Call::authenticated(Method::POST, "mvc/maintenance/lock", Refusals::Lock)).await?;
        let lock: LockAnswer = answer.json()?;
        let token = checked_token(&answer.url, "unlockToken", lock.unlock_token)?;
        tracing::info!("Bitbucket locked for maintenance");
        Ok((UnlockToken::new(token), lock.owner.unwrap_or_default()))
    }

    /// Never retried: a second start would be refused while the first task runs.
    pub(crate) async fn start_backup(&self, token: &UnlockToken) -> Result<BackupTask, ClientError> {
        let call = Call::authenticated(Method::POST, "mvc/admin/backups", Refusals::Token)
            .query("external", "true")
            .maintenance_token(token);
        let answer = self.send(&call).await?;
        let started: StartAnswer = answer.json()?;
        let cancel_token = checked_token(&answer.url, "cancelToken", started.cancel_token)?;
        tracing::info!("Bitbucket backup task started");
        Ok(BackupTask { cancel_token: CancelToken::new(cancel_token), id: started.id, progress: started.progress })
    }

    pub(crate) async fn maintenance_state(&self, token: &UnlockToken) -> Result<MaintenanceState, ClientError> {
        let call = &Call::authenticated(Method::GET, "mvc/maintenance", Refusals::Token).maintenance_token(token);
        self.retried("reading the maintenance state", move || async move { self.send(call).await?.json() }).await
    }

    /// Retried: posting the same percentage twice changes nothing.
    pub(crate) async fn report_progress(&self, token: &UnlockToken, percentage: u8) -> Result<(), ClientError> {
        if percentage > 100 {
            return Err(ClientError::InvalidConfig {
                setting: "percentage",
                reason: format!("{percentage} is not a percentage (0 to 100)"),
            });
        }
        let percentage_text = percentage.to_string();
        let call = &Call::authenticated(Method::POST, "mvc/admin/backups/progress/client", Refusals::Token)
            .query("token", token.expose_secret())
            .query("percentage", &percentage_text);
        self.retried("reporting progress", move || async move { self.send(call).await.map(drop) }).await?;
        tracing::info!(percentage, "backup progress reported to Bitbucket");
        Ok(())
    }

    /// One attempt: the orchestrator decides how long to keep trying.
    pub(crate) async fn cancel_backup(&self, token: &CancelToken) -> Result<(), ClientError> {
        let call =
            Call::authenticated(Method::POST, "mvc/maintenance", Refusals::Token).query("token", token.expose_secret());
        self.send(&call).await?;
        tracing::info!("Bitbucket backup task cancelled");
        Ok(())
    }

    /// One attempt: the orchestrator decides how long to keep trying.
    pub(crate) async fn unlock(&self, token: &UnlockToken) -> Result<(), ClientError> {
        let call = Call::authenticated(Method::DELETE, "mvc/maintenance/lock", Refusals::Token)
            .query("token", token.expose_secret());
        self.send(&call).await?;
        tracing::info!("Bitbucket unlocked");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_be_present_and_plain() {
        let url = Url::parse("http://h/mvc/maintenance/lock").unwrap();
        assert!(checked_token(&url, "unlockToken", None).is_err());
        assert!(checked_token(&url, "unlockToken", Some(String::new())).is_err());
        assert!(checked_token(&url, "unlockToken", Some("abc'; rm -rf /".into())).is_err());
        assert_eq!(checked_token(&url, "unlockToken", Some("0a1b".into())).unwrap(), "0a1b");
    }
}
