//! The three families of backup steps and their built-in implementations.
//!
//! Each family is a small async trait the orchestrator holds as `Box<dyn …>`; what a strategy can
//! promise is a `Copy` struct of flags the orchestrator plans from, never a type check.

pub mod archive;
mod context;
pub mod database;
mod error;
pub mod filesystem;
mod process;
mod restore;

#[cfg(feature = "testing")]
pub mod conformance;

pub use archive::{ArchiveInfo, ArchiveStrategy, DatabaseExtracted, VerifyReport};
pub use context::{StepContext, StepReport, WorkingFolder};
pub use database::{DatabaseCapabilities, DatabaseStrategy, DeferredDump};
pub use error::{ArchiveError, RemoteError, StrategyError};
pub use filesystem::{FilesystemCapabilities, FilesystemStrategy};
pub use process::{ChildCommand, ChildSession};
pub(crate) use restore::Verification;
pub use restore::{DatabaseTarget, HomeTarget, RestoreContext};
