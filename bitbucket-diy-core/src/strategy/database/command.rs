//! `command`: the user's own database backup and restore commands.

use async_trait::async_trait;

use crate::client::Drained;
use crate::config::{ConfigError, CommandDatabaseConfig};
use crate::strategy::{
    DatabaseCapabilities, DatabaseStrategy, DatabaseTarget, RestoreContext, StepContext, StepReport, StrategyError,
};

/// Runs the user's commands.
#[derive(Debug)]
pub struct CommandDatabase {
    config: CommandDatabaseConfig,
}

impl CommandDatabase {
    /// A strategy for the server and database `config` names.
    pub fn from_config(config: &CommandDatabaseConfig) -> Result<Self, ConfigError> {
        Ok(Self { config: config.clone() })
    }
}

#[async_trait]
impl DatabaseStrategy for CommandDatabase {
    fn name(&self) -> &str {
        "command"
    }
    fn capabilities(&self) -> DatabaseCapabilities {
        DatabaseCapabilities::default()
    }
    async fn backup(&self, _ctx: &StepContext, _drained: &Drained) -> Result<StepReport, StrategyError> {
        let _ = &self.config;
        todo!()
    }
    async fn check_restore_target(&self, _target: &DatabaseTarget) -> Result<(), StrategyError> {
        todo!()
    }
    async fn restore(&self, _ctx: &RestoreContext, _target: &DatabaseTarget) -> Result<StepReport, StrategyError> {
        todo!()
    }
}
