//! `rsync`: the same job through rsync with the reference scripts' flags.

use async_trait::async_trait;

use crate::client::Drained;
use crate::strategy::{
    FilesystemCapabilities, FilesystemStrategy, HomeTarget, RestoreContext, StepContext, StepReport, StrategyError,
};

/// TODO(helper)
#[derive(Debug)]
pub struct RsyncCopy {}

#[async_trait]
impl FilesystemStrategy for RsyncCopy {
    fn name(&self) -> &str {
        "rsync"
    }
    fn capabilities(&self) -> FilesystemCapabilities {
        FilesystemCapabilities::default()
    }
    async fn backup(&self, _ctx: &StepContext, _drained: &Drained) -> Result<StepReport, StrategyError> {
        todo!()
    }
    async fn check_restore_target(&self, _target: &HomeTarget) -> Result<(), StrategyError> {
        todo!()
    }
    async fn restore(&self, _ctx: &RestoreContext, _target: &HomeTarget) -> Result<StepReport, StrategyError> {
        todo!()
    }
}
