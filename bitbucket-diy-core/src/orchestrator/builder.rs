//! Putting an orchestrator together, by hand or from a configuration.

#[cfg(feature = "encryption")]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use secrecy::SecretString;

use crate::client::{DrainOptions, MaintenanceClient};
use crate::config::{
    ArchiveConfig, ArchiveType, BackupConfig, BitbucketConfig, ConfigError, DatabaseConfig, FilesystemType,
    InstanceType,
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
    /// The `[archive]` section the archive strategy was built from, to rebuild it with keys
    /// given at run time.
    archive_config: Option<ArchiveConfig>,
    archive_keys: ArchiveKeys,
    options: BackupOptions,
    hooks: Hooks,
    events: Arc<dyn EventSink>,
}

/// Keys and credentials given at run time rather than in the configuration.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ArchiveKeys {
    /// The age identity file that decrypts archives (restore, verify); overrides
    /// `archive.encryption.identity_file`.
    pub identity_file: Option<PathBuf>,
    /// Object store credentials; override those of `[archive.remote]` and the environment.
    #[cfg(feature = "object-store")]
    pub remote_credentials: Option<crate::strategy::archive::remote::RemoteCredentials>,
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
            archive_config: None,
            archive_keys: ArchiveKeys::default(),
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
        let archive = archive_from_config(archive_cfg, &builder.working, &ArchiveKeys::default())?;
        builder.database = Some(database);
        builder.filesystem = Some(filesystem);
        builder.archive = Some(archive);
        builder.archive_config = Some(archive_cfg.clone());
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

    /// Read encrypted archives with this age identity file (restore, verify), whether or not the
    /// configuration has one. Rebuilds the archive strategy of [`Self::from_config`].
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Result<Self, Error> {
        self.archive_keys.identity_file = Some(path.into());
        self.rebuild_archive()
    }

    /// Use these object store credentials (e.g. from a secret manager) instead of the
    /// configuration's and the environment's. Rebuilds the archive strategy of
    /// [`Self::from_config`].
    #[cfg(feature = "object-store")]
    pub fn remote_credentials(
        mut self,
        credentials: crate::strategy::archive::remote::RemoteCredentials,
    ) -> Result<Self, Error> {
        self.archive_keys.remote_credentials = Some(credentials);
        self.rebuild_archive()
    }

    fn rebuild_archive(mut self) -> Result<Self, Error> {
        match &self.archive_config {
            Some(config) => {
                self.archive = Some(archive_from_config(config, &self.working, &self.archive_keys)?);
                Ok(self)
            }
            None => Err(Error::Config(ConfigError::invalid(
                "archive",
                "keys can be given only to an archive strategy built from the configuration",
            ))),
        }
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
        self.archive_config = None;
        self
    }

    /// The archive strategy, boxed.
    pub fn archive_boxed(mut self, strategy: Box<dyn ArchiveStrategy>) -> Self {
        self.archive = Some(Arc::from(strategy));
        self.archive_config = None;
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

/// The archive strategy an `[archive]` section describes: `tar-zstd`, `tar-gz` or `none`, with
/// `[archive.encryption]` and `[archive.remote]`; `keys` adds what is given at run time.
/// `working` is the working folder (the `none` strategy's backup, and the local folder of an
/// upload-only remote archive, where nothing is written).
pub fn archive_from_config(
    config: &ArchiveConfig,
    working: &WorkingFolder,
    keys: &ArchiveKeys,
) -> Result<Arc<dyn ArchiveStrategy>, Error> {
    let folder = config.folder.clone().unwrap_or_else(|| working.state_dir());
    #[cfg(feature = "encryption")]
    let encryption = encryption_from_config(config, keys.identity_file.as_deref())?;
    #[cfg(not(feature = "encryption"))]
    if keys.identity_file.is_some() {
        return Err(Error::Config(ConfigError::invalid(
            "identity file",
            "this build of bitbucket-diy has no encryption support (cargo feature `encryption`)",
        )));
    }
    #[cfg(feature = "object-store")]
    if let Some(remote) = &config.remote {
        use crate::strategy::archive::remote::{RemoteArchive, RemoteOptions, RemoteStore};
        let store = RemoteStore::from_config(remote, keys.remote_credentials.clone())?;
        let options = RemoteOptions {
            keep_local: remote.keep_local,
            keep: remote.keep,
            verify_upload: remote.verify_upload,
            part_size: remote.part_size_mib << 20,
            upload_concurrency: remote.upload_concurrency,
        };
        let level = config.level.unwrap_or(DEFAULT_ZSTD_LEVEL);
        let archive = RemoteArchive::new(store, folder, level, config.threads, options);
        #[cfg(feature = "encryption")]
        let archive = match encryption {
            Some(encryption) => archive.encrypted(encryption),
            None => archive,
        };
        return Ok(Arc::new(archive));
    }
    let archive: Arc<dyn ArchiveStrategy> = match config.kind {
        ArchiveType::TarZstd => {
            let archive = TarZstdArchive::new(folder, config.level.unwrap_or(DEFAULT_ZSTD_LEVEL), config.threads);
            #[cfg(feature = "encryption")]
            let archive = match encryption {
                Some(encryption) => archive.encrypted(encryption),
                None => archive,
            };
            Arc::new(archive)
        }
        ArchiveType::TarGz => {
            let archive = TarGzArchive::new(folder, config.level.map_or(DEFAULT_GZIP_LEVEL, |l| l.unsigned_abs()));
            #[cfg(feature = "encryption")]
            let archive = match encryption {
                Some(encryption) => archive.encrypted(encryption),
                None => archive,
            };
            Arc::new(archive)
        }
        ArchiveType::None => Arc::new(NoArchive::new(working.clone())),
    };
    Ok(archive)
}

/// Recipients from the configuration, the identity from `identity_file` (run time) or the
/// configuration. An identity alone (a restore host) reads encrypted archives and refuses to
/// write.
#[cfg(feature = "encryption")]
fn encryption_from_config(
    config: &ArchiveConfig,
    identity_file: Option<&Path>,
) -> Result<Option<Arc<crate::encryption::Encryption>>, ConfigError> {
    use crate::encryption::{Encryption, Identities, Recipients};
    let section = config.encryption.clone().unwrap_or_default();
    let mut recipients = None;
    if !section.recipients.is_empty() {
        recipients = Some(Recipients::parse(&section.recipients, "archive.encryption.recipients")?);
    }
    if let Some(file) = &section.recipients_file {
        let from_file = Recipients::from_file(file)?;
        recipients = Some(match recipients {
            Some(inline) => inline.merged(from_file),
            None => from_file,
        });
    }
    let identity = identity_file.or(section.identity_file.as_deref()).map(Identities::from_file).transpose()?;
    Ok(match (recipients, identity) {
        (Some(recipients), Some(identity)) => Some(Arc::new(Encryption::to(recipients).identities(identity))),
        (Some(recipients), None) => Some(Arc::new(Encryption::to(recipients))),
        (None, Some(identity)) => Some(Arc::new(Encryption::with_identities_only(identity))),
        (None, None) => None,
    })
}
