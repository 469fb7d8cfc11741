//! The commented example configuration `bitbucket-diy config init` writes.

/// A commented configuration showing every section and the keys most installations set, with the
/// others commented out at their defaults. It loads as it is (see the test below); every key is
/// described in docs/configuration.md.
pub const EXAMPLE_CONFIG: &str = include_str!("example.toml");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ArchiveType, BackupConfig, DatabaseConfig, FilesystemType, SecretSource};

    #[test]
    fn example_loads_without_warnings() {
        let loaded = BackupConfig::from_toml_with_env(EXAMPLE_CONFIG, "example.toml", []).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = loaded.config;
        assert!(matches!(c.bitbucket.password, SecretSource::Env(ref v) if v == "BITBUCKET_BACKUP_PASSWORD"));
        assert!(matches!(c.database, DatabaseConfig::Postgresql(_)));
        assert_eq!(c.filesystem.kind, FilesystemType::Native);
        assert_eq!((c.archive.kind, c.archive.keep), (ArchiveType::TarZstd, 7));
    }

    #[test]
    fn every_commented_key_loads_when_uncommented() {
        // The commented `key = value` lines are real settings: uncommented (one password source
        // at a time), the file must still load.
        let uncommented: String = EXAMPLE_CONFIG
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
                        && !rest.starts_with("password_file") =>
                {
                    rest.to_owned()
                }
                _ => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(uncommented, EXAMPLE_CONFIG);
        BackupConfig::from_toml_with_env(&uncommented, "uncommented.toml", [])
            .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    }
}
