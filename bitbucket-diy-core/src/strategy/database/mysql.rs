//! `mysql`: mysqldump --single-transaction (MySQL and MariaDB); restore with mysql into a new database.

use async_trait::async_trait;

use crate::client::Drained;
use crate::config::{ConfigError, MysqlConfig};
use crate::strategy::{
    DatabaseCapabilities, DatabaseStrategy, DatabaseTarget, RestoreContext, StepContext, StepReport, StrategyError,
};

/// Dumps MySQL or MariaDB with `mysqldump --single-transaction`.
#[derive(Debug)]
pub struct MysqlDatabase {
    config: MysqlConfig,
}

impl MysqlDatabase {
    /// A strategy for the server and database `config` names.
    pub fn from_config(config: &MysqlConfig) -> Result<Self, ConfigError> {
        Ok(Self { config: config.clone() })
    }
}

#[async_trait]
impl DatabaseStrategy for MysqlDatabase {
    fn name(&self) -> &str {
        "mysql"
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
