//! Owner-only files that hand a password to a database client: PostgreSQL's password file
//! (`PGPASSFILE`) and MySQL's option file (`--defaults-extra-file`).
//!
//! A password on a command line is readable by every user of the machine in `/proc/<pid>/cmdline`
//! (the reference scripts' `mysqldump -p<pw>`). These files live in a fresh `0700` folder, are
//! created `0600`, and disappear with the [`PrivateDir`] that holds them, on every path.

use std::io::Write;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use crate::strategy::StrategyError;
use crate::strategy::process::create_private;

/// Longest password accepted in a MySQL option file: the client reads option lines into a
/// 4 KiB buffer, and a line cut short would silently change the password.
const MYSQL_OPTION_PASSWORD_MAX: usize = 1024;

/// A temporary folder only its owner can enter, removed when dropped.
#[derive(Debug)]
pub(crate) struct PrivateDir {
    dir: tempfile::TempDir,
}

impl PrivateDir {
    /// A new `0700` folder in the system temporary folder.
    pub(crate) fn new() -> Result<Self, StrategyError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("bitbucket-diy-db.")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| StrategyError::io("creating a private folder in", std::env::temp_dir(), e))?;
        Ok(Self { dir })
    }

    /// The folder.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Write `contents` to a new `0600` file named `name` in the folder.
    pub(crate) fn write(&self, name: &str, contents: &[u8]) -> Result<PathBuf, StrategyError> {
        let path = self.dir.path().join(name);
        let mut file = create_private(&path)?;
        file.write_all(contents).map_err(|e| StrategyError::io("writing", &path, e))?;
        Ok(path)
    }
}

/// One `.pgpass` line matching any host, port, database and user: the file is made for one
/// operation of one configuration, so wildcards cannot hand the password to anyone else, and they
/// keep `localhost`/socket and maintenance-database connections matching.
///
/// libpq escapes `:` and `\` with a backslash; a line break cannot be written at all.
pub(crate) fn pgpass_line(strategy: &str, password: &SecretString) -> Result<SecretString, StrategyError> {
    let password = password.expose_secret();
    if password.contains(['\n', '\r']) {
        return Err(StrategyError::InvalidSetting {
            strategy: strategy.to_owned(),
            setting: "database.password".to_owned(),
            reason: "contains a line break, which a PostgreSQL password file cannot hold".to_owned(),
        });
    }
    let mut line = String::from("*:*:*:*:");
    for c in password.chars() {
        if matches!(c, ':' | '\\') {
            line.push('\\');
        }
        line.push(c);
    }
    line.push('\n');
    Ok(SecretString::from(line))
}

/// A `[client]` option file holding only the password, quoted and escaped the way the MySQL and
/// MariaDB option-file readers undo it (`\\`, `\"`, `\n`, `\r`, `\t`); the quotes keep a `#` from
/// starting a comment and keep leading or trailing spaces.
pub(crate) fn mysql_option_file(strategy: &str, password: &SecretString) -> Result<SecretString, StrategyError> {
    let password = password.expose_secret();
    if password.len() > MYSQL_OPTION_PASSWORD_MAX || password.contains('\0') {
        return Err(StrategyError::InvalidSetting {
            strategy: strategy.to_owned(),
            setting: "database.password".to_owned(),
            reason: format!(
                "must be at most {MYSQL_OPTION_PASSWORD_MAX} bytes without NUL characters to fit a MySQL option file"
            ),
        });
    }
    let mut text = String::from("[client]\npassword=\"");
    for c in password.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '"' => text.push_str("\\\""),
            '\n' => text.push_str("\\n"),
            '\r' => text.push_str("\\r"),
            '\t' => text.push_str("\\t"),
            other => text.push(other),
        }
    }
    text.push_str("\"\n");
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_escapes_colons_and_backslashes() {
        let line = pgpass_line("postgresql", &SecretString::from(r"a:b\c")).unwrap();
        assert_eq!(line.expose_secret(), "*:*:*:*:a\\:b\\\\c\n");
    }

    #[test]
    fn pgpass_refuses_line_breaks() {
        let err = pgpass_line("postgresql", &SecretString::from("a\nb")).unwrap_err();
        assert!(matches!(err, StrategyError::InvalidSetting { .. }), "{err}");
        assert!(!err.to_string().contains("a\nb"), "the error must not show the password");
    }

    #[test]
    fn mysql_option_file_quotes_and_escapes() {
        let text = mysql_option_file("mysql", &SecretString::from(" p#w\"\\ ")).unwrap();
        assert_eq!(text.expose_secret(), "[client]\npassword=\" p#w\\\"\\\\ \"\n");
    }

    #[test]
    fn private_files_are_owner_only_and_removed_with_the_folder() {
        use std::os::unix::fs::PermissionsExt;
        let dir = PrivateDir::new().unwrap();
        let file = dir.write("secret", b"x").unwrap();
        let dir_mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        let file_mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!((dir_mode, file_mode), (0o700, 0o600));
        let folder = dir.path().to_owned();
        drop(dir);
        assert!(!folder.exists());
    }
}
