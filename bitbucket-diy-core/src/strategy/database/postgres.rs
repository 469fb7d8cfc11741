//! `postgresql`: pg_dump in directory format with parallel jobs; pg_restore into a new database.

use async_trait::async_trait;

use crate::client::Drained;
use crate::config::{ConfigError, PostgresConfig};
use crate::strategy::{
    DatabaseCapabilities, DatabaseStrategy, DatabaseTarget, RestoreContext, StepContext, StepReport, StrategyError,
};

/// Dumps PostgreSQL with `pg_dump -Fd -j N`.
#[derive(Debug)]
pub struct PostgresDatabase {
    config: PostgresConfig,
}

impl PostgresDatabase {
    /// A strategy for the server and database `config` names.
    pub fn from_config(config: &PostgresConfig) -> Result<Self, ConfigError> {
        Ok(Self { config: config.clone() })
    }
}

#[async_trait]
impl DatabaseStrategy for PostgresDatabase {
    fn name(&self) -> &str {
        "postgresql"
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
