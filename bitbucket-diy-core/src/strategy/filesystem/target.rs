//! Restore targets: what must be empty before a restore writes anything, and where data stores
//! go.

use std::path::{Path, PathBuf};

use crate::strategy::{HomeTarget, RestoreContext, StrategyError};

/// Refuse `path` when it exists and is a file, or a folder with anything in it (dotfiles count:
/// the reference scripts ignored them and restored over `.bash_history` and worse). Public so
/// strategies defined outside the crate (in Python, say) refuse targets the same way.
pub fn ensure_empty_target(path: &Path) -> Result<(), StrategyError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StrategyError::io("inspecting the restore target", path, e)),
    };
    let target = path.display().to_string();
    if !meta.is_dir() {
        return Err(StrategyError::TargetNotEmpty { target, detail: "it is a file, not a folder".to_owned() });
    }
    let entries = std::fs::read_dir(path).map_err(|e| StrategyError::io("reading the restore target", path, e))?;
    let mut names = Vec::new();
    let mut count = 0usize;
    for entry in entries {
        let entry = entry.map_err(|e| StrategyError::io("reading the restore target", path, e))?;
        count += 1;
        if names.len() < 3 {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    if count == 0 {
        return Ok(());
    }
    let more = if count > names.len() { format!(" and {} more", count - names.len()) } else { String::new() };
    Err(StrategyError::TargetNotEmpty {
        target,
        detail: format!("it holds {}{more}; restore into a new or empty folder", names.join(", ")),
    })
}

/// Each backed-up data store: (original path, where the backup holds it, where it is restored).
/// Unmapped stores go back to their original path.
pub(crate) fn data_store_plan(ctx: &RestoreContext, target: &HomeTarget) -> Vec<(PathBuf, PathBuf, PathBuf)> {
    ctx.metadata()
        .data_stores
        .iter()
        .map(|original| {
            let source = ctx.source().data_store_dir(original);
            let restored = target.data_stores.get(original).cloned().unwrap_or_else(|| original.clone());
            (original.clone(), source, restored)
        })
        .collect()
}

/// Every folder a restore into `target` writes, for the emptiness check.
pub(crate) fn all_targets(ctx: &RestoreContext, target: &HomeTarget) -> Vec<PathBuf> {
    let mut all = vec![target.home.clone()];
    all.extend(data_store_plan(ctx, target).into_iter().map(|(_, _, restored)| restored));
    all
}

/// The mapped targets only (what `check_restore_target` can see without the backup's metadata).
pub(crate) fn mapped_targets(target: &HomeTarget) -> Vec<PathBuf> {
    let mut all = vec![target.home.clone()];
    all.extend(target.data_stores.values().cloned());
    all
}
