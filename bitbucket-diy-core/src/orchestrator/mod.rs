//! The backup and restore runs: phases, the always-unlock guarantee, hooks, retention.

mod hooks;

pub use hooks::HookPoint;
