//! What a home copy consists of: the home and each data store, with their excludes.

use std::path::PathBuf;

use crate::config::{ConfigError, FilesystemConfig, InstanceType};
use crate::strategy::WorkingFolder;
use crate::strategy::filesystem::Excludes;

/// One tree to copy into the working folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopyJob {
    /// The live folder.
    pub source: PathBuf,
    /// `None` for the home, the store's absolute path for a data store.
    pub data_store: Option<PathBuf>,
    /// What is left out.
    pub excludes: Excludes,
}

impl CopyJob {
    /// Where this tree is copied in `working`.
    pub fn destination(&self, working: &WorkingFolder) -> PathBuf {
        match &self.data_store {
            None => working.home_dir(),
            Some(store) => working.data_store_dir(store),
        }
    }
}

/// The home, then each data store.
pub(crate) fn copy_jobs(cfg: &FilesystemConfig, separate_database: bool, instance: InstanceType) -> Vec<CopyJob> {
    let mut jobs = vec![CopyJob {
        source: cfg.home.clone(),
        data_store: None,
        excludes: Excludes::for_home(instance, separate_database, &cfg.exclude, &cfg.exclude_repos),
    }];
    jobs.extend(cfg.data_stores.iter().map(|store| CopyJob {
        source: store.clone(),
        data_store: Some(store.clone()),
        excludes: Excludes::for_data_store(&cfg.exclude_repos),
    }));
    jobs
}

/// Checks shared by the copying strategies, naming the key at fault.
pub(crate) fn validate_copy_config(cfg: &FilesystemConfig, instance: InstanceType) -> Result<(), ConfigError> {
    if !cfg.home.is_absolute() {
        return Err(ConfigError::invalid("filesystem.home", "must be an absolute path"));
    }
    for store in &cfg.data_stores {
        if !store.is_absolute() {
            return Err(ConfigError::invalid(
                "filesystem.data_stores",
                format!("{} must be an absolute path", store.display()),
            ));
        }
        if store.starts_with(&cfg.home) || cfg.home.starts_with(store) {
            return Err(ConfigError::invalid(
                "filesystem.data_stores",
                format!("{} overlaps filesystem.home: it would be copied twice", store.display()),
            ));
        }
    }
    Excludes::validate_patterns(&cfg.exclude)?;
    if instance == InstanceType::Mesh && !cfg.exclude_repos.is_empty() {
        return Err(ConfigError::invalid(
            "filesystem.exclude_repos",
            "does not apply to Mesh nodes, which store repositories by hierarchy rather than by id; \
             list the folders in `filesystem.exclude` instead",
        ));
    }
    Ok(())
}
