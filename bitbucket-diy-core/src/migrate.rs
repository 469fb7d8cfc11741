//! Migration from the vendor's bash scripts: read a `bitbucket.diy-backup.vars.sh` and write the
//! equivalent configuration.
//!
//! The vars file is bash the scripts *source*; we never run it. We read plain assignments
//! (`NAME=value`, quoted or not, `export NAME=…`, `(a b)` arrays, also across lines), expand
//! `${OTHER}` and `${X:-default}` from what was read above, and report what we cannot follow:
//! `$(…)` command substitutions, assignments inside `if`/`case` blocks (kept, with a warning),
//! and variables we have no equivalent for. Passwords are never copied into the result.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Something the import could not carry over faithfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportWarning {
    /// 1-based line in the vars file (0 when not tied to a line).
    pub line: usize,
    /// The variable concerned.
    pub variable: String,
    /// What to do about it.
    pub message: String,
}

impl std::fmt::Display for ImportWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: {}: {}", self.line, self.variable, self.message)
        } else {
            write!(f, "{}: {}", self.variable, self.message)
        }
    }
}

/// The configuration written from a vars file, and what did not map.
#[derive(Debug, Clone)]
pub struct ImportResult {
    /// A commented TOML configuration.
    pub toml: String,
    /// One entry per variable that did not map cleanly.
    pub warnings: Vec<ImportWarning>,
}

#[derive(Debug, Clone)]
struct Var {
    value: Value,
    line: usize,
}

#[derive(Debug, Clone)]
enum Value {
    Scalar(String),
    Array(Vec<String>),
}

impl Value {
    fn scalar(&self) -> String {
        match self {
            Value::Scalar(s) => s.clone(),
            Value::Array(items) => items.join(" "),
        }
    }
    fn items(&self) -> Vec<String> {
        match self {
            Value::Scalar(s) if s.is_empty() => Vec::new(),
            Value::Scalar(s) => s.split_whitespace().map(str::to_owned).collect(),
            Value::Array(items) => items.clone(),
        }
    }
}

/// Read `text` (a vars file) and produce the equivalent configuration. Nothing in `text` is
/// ever run.
///
/// ```
/// use bitbucket_diy_core::BackupConfig;
/// use bitbucket_diy_core::migrate::import_vars;
///
/// let vars = r#"
/// BITBUCKET_URL=https://bitbucket.example.com
/// BITBUCKET_HOME=/var/atlassian/application-data/bitbucket/
/// BITBUCKET_BACKUP_USER=backup-admin
/// BITBUCKET_BACKUP_PASS="not copied"
/// BACKUP_DISK_TYPE=rsync
/// BACKUP_DATABASE_TYPE=postgresql
/// BACKUP_ARCHIVE_TYPE=tar
/// BITBUCKET_BACKUP_ROOT=/backup/bitbucket
/// BITBUCKET_BACKUP_ARCHIVE_ROOT=${BITBUCKET_BACKUP_ROOT}-archives
/// POSTGRES_HOST=db.example.com
/// KEEP_BACKUPS=7
/// "#;
/// let imported = import_vars(vars);
/// assert!(imported.toml.contains(r#"folder = "/backup/bitbucket-archives""#));
/// assert!(!imported.toml.contains("not copied"), "passwords are never copied");
/// let warning = imported.warnings.iter().find(|w| w.variable == "BITBUCKET_BACKUP_PASS").unwrap();
/// assert_eq!(warning.line, 5);
///
/// // The result is a configuration the loader accepts.
/// let loaded = BackupConfig::from_toml_with_env(&imported.toml, "imported.toml", [])?;
/// assert_eq!(loaded.config.archive.keep, 7);
/// # Ok::<(), bitbucket_diy_core::ConfigError>(())
/// ```
pub fn import_vars(text: &str) -> ImportResult {
    let mut parser = Parser::default();
    parser.parse(text);
    Mapper { vars: &parser.vars, warnings: parser.warnings.clone(), used: Vec::new() }.map()
}

#[derive(Default)]
struct Parser {
    vars: BTreeMap<String, Var>,
    warnings: Vec<ImportWarning>,
    depth: usize,
}

impl Parser {
    fn parse(&mut self, text: &str) {
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let number = i + 1;
            let mut line = strip_comment(lines[i]).trim().to_owned();
            i += 1;
            // An array may span lines: `NAMES=(a` … `b)`.
            if let Some(eq) = assignment_eq(&line)
                && line[eq + 1..].trim_start().starts_with('(')
            {
                while !balanced_array(&line[eq + 1..]) && i < lines.len() {
                    line.push(' ');
                    line.push_str(strip_comment(lines[i]).trim());
                    i += 1;
                }
            }
            self.line(&line, number);
        }
    }

    fn line(&mut self, line: &str, number: usize) {
        if line.is_empty() {
            return;
        }
        let first = line.split_whitespace().next().unwrap_or_default();
        match first {
            "if" | "case" => self.depth += 1,
            "fi" | "esac" => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        let statement = line.trim_start_matches("then ").trim_start_matches("else ").trim();
        let statement = statement.strip_prefix("export ").unwrap_or(statement).trim();
        let Some(eq) = assignment_eq(statement) else { return };
        let name = statement[..eq].to_owned();
        let raw = statement[eq + 1..].trim().trim_end_matches(";;").trim_end_matches(';').trim();
        if raw.contains("$(") || raw.contains('`') {
            self.warn(number, &name, "uses a command substitution, which is never run: set the value by hand");
            return;
        }
        if self.depth > 0 {
            self.warn(number, &name, "is set inside an if/case block: the last assignment read was kept; check it");
        }
        let value = if let Some(inner) = raw.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
            Value::Array(split_words(inner).into_iter().map(|w| self.expand(&w, number, &name)).collect())
        } else {
            let words = split_words(raw);
            Value::Scalar(self.expand(words.first().map_or("", String::as_str), number, &name))
        };
        self.vars.insert(name, Var { value, line: number });
    }

    /// `${OTHER}`, `$OTHER` and `${X:-default}` from what was read so far.
    fn expand(&mut self, word: &str, number: usize, name: &str) -> String {
        let mut out = String::new();
        let mut rest = word;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            let (reference, len) = if let Some(body) = after.strip_prefix('{') {
                match body.find('}') {
                    Some(end) => (body[..end].to_owned(), end + 2),
                    None => (body.to_owned(), after.len()),
                }
            } else {
                let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                (after[..end].to_owned(), end)
            };
            let (var, default) = match reference.split_once(":-") {
                Some((v, d)) => (v.to_owned(), Some(d.to_owned())),
                None => (reference.clone(), None),
            };
            let value = self.vars.get(&var).map(|v| v.value.scalar());
            match (value, default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(&d),
                (None, None) => {
                    if !var.is_empty() {
                        self.warn(number, name, &format!("refers to ${{{var}}}, which the file does not set"));
                    }
                }
            }
            rest = &after[len.min(after.len())..];
        }
        out.push_str(rest);
        out
    }

    fn warn(&mut self, line: usize, variable: &str, message: &str) {
        self.warnings.push(ImportWarning { line, variable: variable.to_owned(), message: message.to_owned() });
    }
}

/// Index of `=` when `line` starts with a shell variable assignment.
fn assignment_eq(line: &str) -> Option<usize> {
    let eq = line.find('=')?;
    let name = &line[..eq];
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    valid.then_some(eq)
}

fn balanced_array(value: &str) -> bool {
    let mut quote = None;
    for c in value.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ')') => return true,
            _ => {}
        }
    }
    false
}

fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if i == 0 || line[..i].ends_with(char::is_whitespace) => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Shell words: quotes group, backslash escapes outside single quotes.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => current.push(c),
            (_, '\\') => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
                in_word = true;
            }
            (_, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

struct Mapper<'a> {
    vars: &'a BTreeMap<String, Var>,
    warnings: Vec<ImportWarning>,
    used: Vec<&'static str>,
}

/// Variables we read or deliberately leave out (with their reason).
const IGNORED: &[(&str, &str)] = &[
    ("BITBUCKET_VERBOSE_BACKUP", "logging is set with -v/-q"),
    ("CURL_OPTIONS", "the client has its own timeouts and TLS settings"),
    ("HIPCHAT_URL", "HipChat is gone: use a hook (backup.hooks.on_failure)"),
    ("HIPCHAT_ROOM", "HipChat is gone: use a hook (backup.hooks.on_failure)"),
    ("HIPCHAT_TOKEN", "HipChat is gone: use a hook (backup.hooks.on_failure)"),
    ("BITBUCKET_BACKUP_DB", "the working folder's layout is fixed (bitbucket-db/)"),
    ("BITBUCKET_BACKUP_HOME", "the working folder's layout is fixed (bitbucket-home/)"),
    ("BITBUCKET_BACKUP_DATA_STORES", "the working folder's layout is fixed (bitbucket-data-stores/)"),
    (
        "BITBUCKET_UID",
        "restored files belong to the user running the restore: chown -R the new home to Bitbucket's user",
    ),
    (
        "BITBUCKET_GID",
        "restored files belong to the user running the restore: chown -R the new home to Bitbucket's user",
    ),
    ("PG_PARALLEL", "database.jobs sets pg_dump -j"),
    ("PG_SNAPSHOT_OPT", "never used: --no-synchronized-snapshots is inconsistent under writes"),
    ("POSTGRESQL_SERVICE_NAME", "postgresql-fslevel is `none` plus a snapshot command"),
];

impl Mapper<'_> {
    fn get(&mut self, name: &'static str) -> Option<Value> {
        self.used.push(name);
        self.vars.get(name).map(|v| v.value.clone())
    }

    fn scalar(&mut self, name: &'static str) -> Option<String> {
        self.get(name).map(|v| v.scalar()).filter(|s| !s.is_empty())
    }

    fn line_of(&self, name: &str) -> usize {
        self.vars.get(name).map_or(0, |v| v.line)
    }

    fn warn(&mut self, name: &str, message: impl Into<String>) {
        let line = self.line_of(name);
        self.warnings.push(ImportWarning { line, variable: name.to_owned(), message: message.into() });
    }

    /// A type variable, accepting a legacy name (with a warning).
    fn type_var(&mut self, name: &'static str, legacy: &'static str) -> Option<String> {
        if let Some(v) = self.scalar(legacy) {
            self.warn(legacy, format!("is the old name of {name}; read as {name}"));
            return self.scalar(name).or(Some(v));
        }
        self.scalar(name)
    }

    fn map(mut self) -> ImportResult {
        let mut out = String::from(
            "# Generated by `bitbucket-diy config import-vars` from the vendor scripts' vars file.\n\
             # Review every value; `bitbucket-diy config check` probes what it can.\n",
        );
        self.bitbucket(&mut out);
        self.database(&mut out);
        self.filesystem(&mut out);
        self.archive(&mut out);
        self.backup(&mut out);
        self.leftovers();
        ImportResult { toml: out, warnings: self.warnings }
    }

    fn bitbucket(&mut self, out: &mut String) {
        let url = self.scalar("BITBUCKET_URL").unwrap_or_else(|| "http://localhost:7990".to_owned());
        let user = self.scalar("BITBUCKET_BACKUP_USER").unwrap_or_else(|| "admin".to_owned());
        let _ = writeln!(out, "\n[bitbucket]\nurl = {}\nuser = {}", quote(url.trim_end_matches('/')), quote(&user));
        if self.scalar("BITBUCKET_BACKUP_PASS").is_some() {
            self.warn(
                "BITBUCKET_BACKUP_PASS",
                "holds a password: not copied; export BITBUCKET_BACKUP_PASS for each run (password_env names it) or point password_file at an owner-only file",
            );
        }
        out.push_str("password_env = \"BITBUCKET_BACKUP_PASS\"\n");
        if self.scalar("CURL_OPTIONS").is_some_and(|o| o.split_whitespace().any(|w| w == "-k" || w == "--insecure")) {
            self.warn(
                "CURL_OPTIONS",
                "used -k (no TLS verification): prefer ca_cert; insecure_skip_tls_verify = true if you must",
            );
        }
        if self.scalar("INSTANCE_TYPE").as_deref() == Some("bitbucket-mesh") {
            out.push_str("instance_type = \"mesh\"\n");
        }
    }

    fn database(&mut self, out: &mut String) {
        let mesh = self.scalar("INSTANCE_TYPE").as_deref() == Some("bitbucket-mesh");
        let kind = self.scalar("BACKUP_DATABASE_TYPE").unwrap_or_else(|| "postgresql".to_owned());
        let database = self.scalar("BITBUCKET_DB").unwrap_or_else(|| "bitbucket".to_owned());
        out.push_str("\n[database]\n");
        match kind.as_str() {
            _ if mesh => out.push_str("type = \"none\"  # Mesh nodes have no database of their own\n"),
            "postgresql" | "postgresql-docker" => {
                if kind == "postgresql-docker" {
                    self.warn(
                        "BACKUP_DATABASE_TYPE",
                        "postgresql-docker: we dump over TCP with pg_dump; point host/port at the container",
                    );
                }
                let host = self.scalar("POSTGRES_HOST").unwrap_or_else(|| "localhost".to_owned());
                let _ = writeln!(out, "type = \"postgresql\"\nhost = {}", quote(&host));
                if let Some(port) = self.scalar("POSTGRES_PORT") {
                    self.number(out, "POSTGRES_PORT", "port", &port);
                }
                let _ = writeln!(out, "database = {}", quote(&database));
                if let Some(user) = self.scalar("POSTGRES_USERNAME") {
                    let _ = writeln!(out, "user = {}", quote(&user));
                }
                if self.scalar("PGPASSWORD").is_some() {
                    self.warn(
                        "PGPASSWORD",
                        "holds a password: not copied; export PGPASSWORD for each run (password_env names it) or point password_file at an owner-only file",
                    );
                }
                out.push_str("password_env = \"PGPASSWORD\"\n");
            }
            "mysql" => {
                let _ = writeln!(out, "type = \"mysql\"");
                if let Some(host) = self.scalar("MYSQL_HOST") {
                    let _ = writeln!(out, "host = {}", quote(&host));
                }
                let _ = writeln!(out, "database = {}", quote(&database));
                if let Some(user) = self.scalar("MYSQL_USERNAME") {
                    let _ = writeln!(out, "user = {}", quote(&user));
                }
                if self.scalar("MYSQL_PASSWORD").is_some() {
                    self.warn(
                        "MYSQL_PASSWORD",
                        "holds a password: not copied; export MYSQL_PASSWORD for each run (password_env names it) or point password_file at an owner-only file",
                    );
                }
                out.push_str("password_env = \"MYSQL_PASSWORD\"\n");
                if let Some(options) = self.get("MYSQL_BACKUP_OPTIONS") {
                    let _ = writeln!(out, "dump_options = {}", array(&options.items()));
                }
            }
            "postgresql-fslevel" | "postgresql93-fslevel" => {
                out.push_str("type = \"none\"  # the data directory is on the snapshotted volume\n");
            }
            other => {
                self.warn(
                    "BACKUP_DATABASE_TYPE",
                    format!("`{other}` has no built-in equivalent: written as a `command` strategy to fill in"),
                );
                out.push_str(
                    "type = \"command\"\nbackup = \"echo 'write the database backup into $BITBUCKET_DIY_DATABASE_DIR' && false\"\n\
                     restore = \"echo 'restore from $BITBUCKET_DIY_DATABASE_DIR into $BITBUCKET_DIY_TARGET_DATABASE' && false\"\n",
                );
            }
        }
    }

    fn filesystem(&mut self, out: &mut String) {
        let kind = self.type_var("BACKUP_DISK_TYPE", "BACKUP_HOME_TYPE").unwrap_or_else(|| "rsync".to_owned());
        let home =
            self.scalar("BITBUCKET_HOME").unwrap_or_else(|| "/var/atlassian/application-data/bitbucket".to_owned());
        out.push_str("\n[filesystem]\n");
        match kind.as_str() {
            "rsync" => out.push_str("type = \"native\"  # the scripts used rsync; \"rsync\" is available too\n"),
            "zfs" => {
                let names = self
                    .get("ZFS_FILESYSTEM_NAMES")
                    .or_else(|| self.get("ZFS_HOME_TANK_NAME"))
                    .map(|v| v.items())
                    .unwrap_or_default();
                let snapshot = names
                    .iter()
                    .map(|fs| format!("zfs snapshot {fs}@$BITBUCKET_DIY_BACKUP_ID"))
                    .collect::<Vec<_>>()
                    .join(" && ");
                // A restore goes into a new home, never over the live one (the scripts' `zfs
                // rollback`): left for the user to write, failing until they do.
                let rollback = format!(
                    "echo 'write the restore of {} @$BITBUCKET_DIY_BACKUP_ID into $BITBUCKET_DIY_TARGET_HOME (e.g. zfs clone)' >&2; exit 1",
                    names.join(", ")
                );
                let _ = writeln!(
                    out,
                    "type = \"command\"\nbackup_command = {}\nrestore_command = {}\natomic_snapshot = true",
                    quote(&snapshot),
                    quote(&rollback)
                );
                self.warn(
                    "BACKUP_DISK_TYPE",
                    "zfs: written as `command` snapshots; restore_command is left for you to write (a clone into the new home, \
                     not the scripts' rollback in place); retention of ZFS snapshots is yours (a hook)",
                );
            }
            other => {
                self.warn("BACKUP_DISK_TYPE", format!("`{other}` has no built-in equivalent: written as `native`; snapshot commands go in type = \"command\""));
                out.push_str("type = \"native\"\n");
            }
        }
        let _ = writeln!(out, "home = {}", quote(home.trim_end_matches('/')));
        if let Some(stores) = self.get("BITBUCKET_DATA_STORES") {
            let stores: Vec<String> = stores.items().iter().map(|s| s.trim_end_matches('/').to_owned()).collect();
            let _ = writeln!(out, "data_stores = {}", array(&stores));
        }
        if let Some(repos) = self.get("BITBUCKET_BACKUP_EXCLUDE_REPOS") {
            let ids: Vec<String> = repos.items();
            match ids.iter().map(|i| i.parse::<u64>()).collect::<Result<Vec<_>, _>>() {
                Ok(ids) => {
                    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
                    let _ = writeln!(out, "exclude_repos = [{list}]");
                }
                Err(_) => {
                    self.warn("BITBUCKET_BACKUP_EXCLUDE_REPOS", "holds something other than repository ids; not copied")
                }
            }
        }
    }

    fn archive(&mut self, out: &mut String) {
        let kind = self.scalar("BACKUP_ARCHIVE_TYPE").unwrap_or_default();
        out.push_str("\n[archive]\n");
        match kind.as_str() {
            "tar" => out.push_str("type = \"tar-zstd\"  # the scripts wrote .tar.gz; \"tar-gz\" keeps that format\n"),
            "" => {
                out.push_str("type = \"none\"  # no archive type was set: the working folder holds the latest backup\n")
            }
            other => {
                self.warn(
                    "BACKUP_ARCHIVE_TYPE",
                    format!("`{other}` has no built-in equivalent yet: written as tar-zstd"),
                );
                out.push_str("type = \"tar-zstd\"\n");
            }
        }
        if !kind.is_empty() {
            match self.scalar("BITBUCKET_BACKUP_ARCHIVE_ROOT") {
                Some(root) => {
                    let _ = writeln!(out, "folder = {}", quote(root.trim_end_matches('/')));
                }
                None => {
                    self.warn("BITBUCKET_BACKUP_ARCHIVE_ROOT", "is not set: fill in archive.folder");
                    out.push_str("folder = \"/backup/archives\"  # TODO\n");
                }
            }
        }
        if let Some(keep) = self.scalar("KEEP_BACKUPS") {
            self.number(out, "KEEP_BACKUPS", "keep", &keep);
        }
    }

    fn backup(&mut self, out: &mut String) {
        out.push_str("\n[backup]\n");
        match self.scalar("BITBUCKET_BACKUP_ROOT") {
            Some(root) => {
                let _ = writeln!(out, "working_folder = {}", quote(root.trim_end_matches('/')));
            }
            None => {
                self.warn("BITBUCKET_BACKUP_ROOT", "is not set: fill in backup.working_folder");
                out.push_str("working_folder = \"/backup/work\"  # TODO\n");
            }
        }
        let prefix =
            self.scalar("SNAPSHOT_TAG_PREFIX").or_else(|| self.scalar("INSTANCE_NAME").map(|n| format!("{n}-")));
        if let Some(prefix) = prefix {
            let _ = writeln!(out, "id_prefix = {}", quote(&prefix));
        }
        if self.scalar("BACKUP_ZERO_DOWNTIME").as_deref() == Some("true") {
            out.push_str("zero_downtime = true\n");
        }
    }

    fn number(&mut self, out: &mut String, var: &str, key: &str, value: &str) {
        match value.parse::<u64>() {
            Ok(n) => {
                let _ = writeln!(out, "{key} = {n}");
            }
            Err(_) => self.warn(var, format!("`{value}` is not a number; {key} left at its default")),
        }
    }

    fn leftovers(&mut self) {
        let used = std::mem::take(&mut self.used);
        let names: Vec<String> = self.vars.keys().cloned().collect();
        for name in names {
            if used.contains(&name.as_str()) || name.chars().any(|c| c.is_ascii_lowercase()) {
                continue; // lower-case names are the file's own helpers (psql_version…)
            }
            let reason = IGNORED
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, why)| format!("not used: {why}"))
                .unwrap_or_else(|| "has no equivalent and was not mapped".to_owned());
            self.warn(&name, reason);
        }
    }
}

fn quote(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

fn array(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| quote(i)).collect();
    format!("[{}]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ArchiveType, BackupConfig, DatabaseConfig, FilesystemType};

    const VARS: &str = r#"
# Example vars file
INSTANCE_NAME=bitbucket
BITBUCKET_URL=https://bitbucket.example.com/bitbucket/
BITBUCKET_HOME=/var/atlassian/application-data/bitbucket/
BITBUCKET_UID=atlbitbucket
BITBUCKET_BACKUP_USER=admin
BITBUCKET_BACKUP_PASS="s3cret pass"
BACKUP_DISK_TYPE=rsync
BACKUP_DATABASE_TYPE=postgresql
BACKUP_ARCHIVE_TYPE=tar
export BITBUCKET_BACKUP_ROOT=/bitbucket-backup
BITBUCKET_BACKUP_ARCHIVE_ROOT=${BITBUCKET_BACKUP_ROOT}-archives
BITBUCKET_DATA_STORES=(/data/store1/
   /data/store2/)
BITBUCKET_BACKUP_EXCLUDE_REPOS=(12 15)
KEEP_BACKUPS=5
BITBUCKET_DB=bitbucket
POSTGRES_HOST=db.example.com
POSTGRES_PORT=5433
POSTGRES_USERNAME=bitbucket
export PGPASSWORD=dbpass
psql_version="$(psql --version | awk '{print $3}')"
if [[ ${psql_majorminor} -ge 9003 ]]; then
    PG_PARALLEL="-j 5"
fi
HIPCHAT_URL=https://api.hipchat.com
AWS_REGION=us-east-1
BITBUCKET_VERBOSE_BACKUP=${BITBUCKET_VERBOSE_BACKUP:-true}"#;

    #[test]
    fn a_typical_vars_file_becomes_a_loadable_configuration() {
        let result = import_vars(VARS);
        let loaded = BackupConfig::from_toml_with_env(&result.toml, "imported", [])
            .unwrap_or_else(|e| panic!("{e}\n{}", result.toml));
        let c = loaded.config;
        assert_eq!(c.bitbucket.url.as_str(), "https://bitbucket.example.com/bitbucket");
        assert_eq!(c.filesystem.kind, FilesystemType::Native);
        assert_eq!(c.filesystem.data_stores.len(), 2);
        assert_eq!(c.filesystem.exclude_repos, vec![12, 15]);
        assert_eq!(c.archive.kind, ArchiveType::TarZstd);
        assert_eq!(c.archive.folder.as_deref(), Some(std::path::Path::new("/bitbucket-backup-archives")));
        assert_eq!(c.archive.keep, 5);
        assert_eq!(c.backup.id_prefix, "bitbucket-");
        let DatabaseConfig::Postgresql(pg) = c.database else { panic!() };
        assert_eq!((pg.host.as_str(), pg.port), ("db.example.com", 5433));
        assert!(!result.toml.contains("s3cret") && !result.toml.contains("dbpass"), "{}", result.toml);
    }

    #[test]
    fn what_does_not_map_is_reported_by_line() {
        let warnings = import_vars(VARS).warnings;
        let find =
            |var: &str| warnings.iter().find(|w| w.variable == var).unwrap_or_else(|| panic!("{var}: {warnings:?}"));
        assert_eq!(find("psql_version").line, 23);
        assert!(find("psql_version").message.contains("command substitution"));
        assert!(find("PG_PARALLEL").message.contains("if/case"));
        assert!(find("AWS_REGION").message.contains("no equivalent"));
        assert!(find("HIPCHAT_URL").message.contains("hook"));
        assert!(find("BITBUCKET_BACKUP_PASS").message.contains("not copied"));
    }

    #[test]
    fn shell_code_is_never_run() {
        let dir = tempfile::tempdir().unwrap();
        let canary = dir.path().join("pwned");
        let text = format!("BITBUCKET_URL=$(touch {c})\nX=`touch {c}`\ntouch {c}\n", c = canary.display());
        let result = import_vars(&text);
        assert!(!canary.exists());
        assert!(result.warnings.iter().any(|w| w.variable == "BITBUCKET_URL"));
    }

    #[test]
    fn legacy_names_and_zfs_map() {
        let text = "BACKUP_HOME_TYPE=zfs\nZFS_FILESYSTEM_NAMES=(tank/home tank/db)\nBITBUCKET_BACKUP_ROOT=/w\nBACKUP_DATABASE_TYPE=postgresql-fslevel\nBACKUP_ZERO_DOWNTIME=true";
        let result = import_vars(text);
        let c = BackupConfig::from_toml_with_env(&result.toml, "imported", []).unwrap().config;
        assert_eq!(c.filesystem.kind, FilesystemType::Command);
        assert!(c.filesystem.atomic_snapshot && c.backup.zero_downtime);
        assert!(c.filesystem.backup_command.unwrap().contains("zfs snapshot tank/db@$BITBUCKET_DIY_BACKUP_ID"));
        assert!(matches!(c.database, DatabaseConfig::None));
        assert!(result.warnings.iter().any(|w| w.variable == "BACKUP_HOME_TYPE"));
    }
}
