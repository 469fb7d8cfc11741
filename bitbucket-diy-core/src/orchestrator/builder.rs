//! Putting an orchestrator together, by hand or from a configuration.

use std::path::PathBuf;
use std::sync::Arc;

use secrecy::SecretString;

use crate::client::{DrainOptions, MaintenanceClient};
use crate::config::{
    ArchiveType, BackupConfig, BitbucketConfig, ConfigError, DatabaseConfig, FilesystemType, InstanceType,
};
use crate::error::Error;
use crate::events::{EventSink, TracingEvents};
use crate::orchestrator::{BackupOptions, BackupOrchestrator, Hooks};
use crate::strategy::archive::{NoArchive, TarGzArchive, TarZstdArchive};
use crate::strategy::database::{CommandDatabase, MysqlDatabase, NoDatabase, PostgresDatabase};
use crate::strategy::filesystem::{CommandFilesystem, NativeCopy, RsyncCopy};
use crate::strategy::{ArchiveStrategy, DatabaseStrategy, FilesystemStrategy, WorkingFolder};

/// Default zstd level: fast, and within a few percent of level 9's size on git packs (already
/// compressed); see docs/performance.md.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Default gzip level, gzip's own default.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// Builds a [`BackupOrchestrator`]. Every missing piece is reported at [`Self::build`].
pub struct OrchestratorBuilder {
    working: WorkingFolder,
    client: Option<Result<MaintenanceClient, ConfigError>>,
    bitbucket: Option<BitbucketConfig>,
    database: Option<Arc<dyn DatabaseStrategy>>,
    filesystem: Option<Arc<dyn FilesystemStrategy>>,
    archive: Option<Arc<dyn ArchiveStrategy>>,
    options: BackupOptions,
    hooks: Hooks,
    events: Arc<dyn EventSink>,
}

impl std::fmt::Debug for OrchestratorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratorBuilder").field("working", &self.working).finish_non_exhaustive()
    }
}

impl OrchestratorBuilder {
    pub(crate) fn new(working: PathBuf) -> Self {
        Self {
            working: WorkingFolder::new(working),
            client: None,
            bitbucket: None,
            database: None,
            filesystem: None,
            archive: None,
            options: BackupOptions::default(),
            hooks: Hooks::default(),
            events: Arc::new(TracingEvents),
        }
    }

    /// Everything a configuration says: client (when a password is configured), built-in
    /// strategies, options and hooks.
    pub fn from_config(config: &BackupConfig) -> Result<Self, Error> {
        config.validate()?;
        let mut builder = Self::new(config.backup.working_folder.clone());
        builder.bitbucket = Some(config.bitbucket.clone());
        builder.client = Some(match config.bitbucket.password.resolve("bitbucket.password")? {
            Some(password) => Ok(client_from(&config.bitbucket, password)?),
            None => Err(ConfigError::Missing {
                key: "bitbucket.password".to_owned(),
                hint: "set password_env or password_file in [bitbucket], or BITBUCKET_DIY_BITBUCKET_PASSWORD"
                    .to_owned(),
            }),
        });

        let mesh = config.bitbucket.instance_type == InstanceType::Mesh;
        let database: Arc<dyn DatabaseStrategy> = match (&config.database, mesh) {
            // Mesh nodes have no database of their own (the reference scripts force `none`).
            (_, true) | (DatabaseConfig::None, _) => Arc::new(NoDatabase),
            (DatabaseConfig::Postgresql(pg), _) => Arc::new(PostgresDatabase::from_config(pg)?),
            (DatabaseConfig::Mysql(my), _) => Arc::new(MysqlDatabase::from_config(my)?),
            (DatabaseConfig::Command(cmd), _) => Arc::new(CommandDatabase::from_config(cmd)?),
        };
        let separate_database = !database.capabilities().covered_by_filesystem;
        let fs = &config.filesystem;
        let instance = config.bitbucket.instance_type;
        let filesystem: Arc<dyn FilesystemStrategy> = match fs.kind {
            FilesystemType::Native => Arc::new(NativeCopy::from_config(fs, separate_database, instance)?),
            FilesystemType::Rsync => Arc::new(RsyncCopy::from_config(fs, separate_database, instance)?),
            FilesystemType::Command => Arc::new(CommandFilesystem::from_config(fs, separate_database, instance)?),
        };
        let archive_cfg = &config.archive;
        let folder = archive_cfg.folder.clone().unwrap_or_default();
        let archive: Arc<dyn ArchiveStrategy> = match archive_cfg.kind {
            ArchiveType::TarZstd => Arc::new(TarZstdArchive::new(
                folder,
                archive_cfg.level.unwrap_or(DEFAULT_ZSTD_LEVEL),
                archive_cfg.threads,
            )),
            ArchiveType::TarGz => {
                Arc::new(TarGzArchive::new(folder, archive_cfg.level.map_or(DEFAULT_GZIP_LEVEL, |l| l.unsigned_abs())))
            }
            ArchiveType::None => Arc::new(NoArchive::new(builder.working.clone())),
        };
        builder.database = Some(database);
        builder.filesystem = Some(filesystem);
        builder.archive = Some(archive);
        let b = &config.backup;
        builder.options = BackupOptions {
            zero_downtime: b.zero_downtime,
            id_prefix: b.id_prefix.clone(),
            drain: DrainOptions { poll_interval: b.poll_interval, timeout: b.drain_timeout },
            locked_timeout: b.locked_timeout,
            keep: archive_cfg.keep,
            data_stores: fs.data_stores.clone(),
            ..BackupOptions::default()
        };
        builder.hooks = Hooks::new(b.hooks.clone());
        Ok(builder)
    }

    /// Talk to Bitbucket through this client.
    pub fn client(mut self, client: MaintenanceClient) -> Self {
        self.client = Some(Ok(client));
        self
    }

    /// Use this password for the configured Bitbucket user (e.g. typed at a prompt).
    pub fn bitbucket_password(mut self, password: SecretString) -> Result<Self, Error> {
        let Some(bitbucket) = &self.bitbucket else {
            return Err(Error::Config(ConfigError::invalid(
                "bitbucket.password",
                "no [bitbucket] settings to use it with; set a client instead",
            )));
        };
        self.client = Some(Ok(client_from(bitbucket, password)?));
        Ok(self)
    }

    /// The database strategy.
    pub fn database(mut self, strategy: impl DatabaseStrategy + 'static) -> Self {
        self.database = Some(Arc::new(strategy));
        self
    }

    /// The database strategy, boxed (for strategies chosen at run time).
    pub fn database_boxed(mut self, strategy: Box<dyn DatabaseStrategy>) -> Self {
        self.database = Some(Arc::from(strategy));
        self
    }

    /// The filesystem strategy.
    pub fn filesystem(mut self, strategy: impl FilesystemStrategy + 'static) -> Self {
        self.filesystem = Some(Arc::new(strategy));
        self
    }

    /// The filesystem strategy, boxed.
    pub fn filesystem_boxed(mut self, strategy: Box<dyn FilesystemStrategy>) -> Self {
        self.filesystem = Some(Arc::from(strategy));
        self
    }

    /// The archive strategy.
    pub fn archive(mut self, strategy: impl ArchiveStrategy + 'static) -> Self {
        self.archive = Some(Arc::new(strategy));
        self
    }

    /// The archive strategy, boxed.
    pub fn archive_boxed(mut self, strategy: Box<dyn ArchiveStrategy>) -> Self {
        self.archive = Some(Arc::from(strategy));
        self
    }

    /// Options (zero-downtime, timeouts, retention…).
    pub fn options(mut self, options: BackupOptions) -> Self {
        self.options = options;
        self
    }

    /// Change some options in place.
    pub fn with_options(mut self, change: impl FnOnce(&mut BackupOptions)) -> Self {
        change(&mut self.options);
        self
    }

    /// Hooks.
    pub fn hooks(mut self, hooks: Hooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Where events go (default: `tracing`).
    pub fn events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = events;
        self
    }

    /// The orchestrator. Strategies default to `none` for the database, but a filesystem and an
    /// archive strategy must be set.
    pub fn build(self) -> Result<BackupOrchestrator, Error> {
        let missing = |what: &str| {
            Error::Config(ConfigError::Missing {
                key: format!("{what} strategy"),
                hint: format!("set one on the builder or in [{what}]"),
            })
        };
        Ok(BackupOrchestrator {
            client: self.client.unwrap_or_else(|| {
                Err(ConfigError::Missing {
                    key: "bitbucket".to_owned(),
                    hint: "no client was configured: needed to back up".to_owned(),
                })
            }),
            database: self.database.unwrap_or_else(|| Arc::new(NoDatabase)),
            filesystem: self.filesystem.ok_or_else(|| missing("filesystem"))?,
            archive: self.archive.ok_or_else(|| missing("archive"))?,
            working: self.working,
            options: self.options,
            hooks: self.hooks,
            events: self.events,
        })
    }
}

/// The client a `[bitbucket]` section describes.
pub fn client_from(bitbucket: &BitbucketConfig, password: SecretString) -> Result<MaintenanceClient, Error> {
    let mut builder = MaintenanceClient::builder(bitbucket.url.as_str())
        .credentials(bitbucket.user.clone(), password)
        .connect_timeout(bitbucket.connect_timeout)
        .request_timeout(bitbucket.request_timeout)
        .danger_skip_tls_verify(bitbucket.insecure_skip_tls_verify);
    if let Some(ca) = &bitbucket.ca_cert {
        builder = builder.ca_certificate(ca.clone());
    }
    Ok(builder.build()?)
}
