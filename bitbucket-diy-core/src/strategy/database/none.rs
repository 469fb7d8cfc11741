//! `none`: the database lives in the home (Bitbucket's internal database) or on the snapshotted
//! volume; the filesystem step captures it and this strategy does nothing.

use async_trait::async_trait;

use crate::client::Drained;
use crate::strategy::{
    DatabaseCapabilities, DatabaseStrategy, DatabaseTarget, RestoreContext, StepContext, StepReport, StrategyError,
};

/// No separate database step.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDatabase;

#[async_trait]
impl DatabaseStrategy for NoDatabase {
    fn name(&self) -> &str {
        "none"
    }

    fn capabilities(&self) -> DatabaseCapabilities {
        // Whatever captures the home captures the database, at the same instant.
        DatabaseCapabilities::new(false, true, true)
    }

    async fn backup(&self, _ctx: &StepContext, _drained: &Drained) -> Result<StepReport, StrategyError> {
        Ok(StepReport::default().note("database", "inside the home or the filesystem snapshot"))
    }

    async fn check_restore_target(&self, _target: &DatabaseTarget) -> Result<(), StrategyError> {
        Ok(())
    }

    async fn restore(&self, _ctx: &RestoreContext, _target: &DatabaseTarget) -> Result<StepReport, StrategyError> {
        Ok(StepReport::default().note("database", "restored with the home"))
    }
}
