//! `command`: the user's own snapshot commands (ZFS, LVM, EBS…).

use async_trait::async_trait;

use crate::client::Drained;
use crate::strategy::{
    FilesystemCapabilities, FilesystemStrategy, HomeTarget, RestoreContext, StepContext, StepReport, StrategyError,
};

/// TODO(helper)
#[derive(Debug)]
pub struct CommandFilesystem {}

#[async_trait]
impl FilesystemStrategy for CommandFilesystem {
    fn name(&self) -> &str {
        "command"
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
