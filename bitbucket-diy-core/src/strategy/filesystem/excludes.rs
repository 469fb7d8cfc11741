//! What is left out of a home or data-store copy.
//!
//! Patterns follow rsync's exclude syntax, restricted to what both our matcher and rsync agree
//! on, so the `native` and `rsync` strategies copy exactly the same tree:
//!
//! - a leading `/` anchors the pattern at the root of the copy (`/tmp` is `<home>/tmp` only);
//!   without it the pattern matches at the end of any path (`*.tmp` anywhere, `sub/foo` wherever
//!   a `foo` sits in a `sub`);
//! - a trailing `/` matches directories only;
//! - `*` matches within one path component, `?` one character other than `/`, `**` anything
//!   including `/`;
//! - an excluded directory takes everything below it along.
//!
//! Character classes (`[…]`), escapes (`\`) and rsync's `+ `/`- ` rule prefixes are refused:
//! our matcher would not treat them as rsync does.
//!
//! The lists come from the reference scripts, fixed where they went wrong (see
//! reference-scripts.md, "Home excludes"): Bitbucket homes get the long list that the scripts'
//! Data Center branch lost, internal database files are left out only when a separate database
//! strategy dumps the database, and repository excludes are actually applied.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use crate::config::{ConfigError, InstanceType};

/// Left out of every Bitbucket (Server or Data Center) home: caches, exports, logs, plugin
/// caches, temporary files, the instance's own lock file and the bundled search index data, at
/// the home's root and in the shared home.
pub const BITBUCKET_HOME_EXCLUDES: &[&str] = &[
    "/caches/",
    "/export/",
    "/log/",
    "/plugins/.*/",
    "/tmp",
    "/.lock",
    "/search/data/",
    "/shared/search/data/",
    "/shared/export/",
    "/shared/.lock",
];

/// The internal database's files (evaluation installs), left out only when a separate database
/// strategy dumps the database: otherwise they *are* the database and must be copied.
pub const INTERNAL_DATABASE_EXCLUDES: &[&str] = &["/data/db.*", "/shared/data/db.*"];

/// Left out of every Mesh node's home. A Mesh node has no external database, so nothing
/// database-related is ever left out.
pub const MESH_HOME_EXCLUDES: &[&str] = &["/caches/", "/export/", "/log/", "/plugins/.*/", "/tmp", "/.lock"];

/// The exclude rules of one home or data-store copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Excludes {
    patterns: Vec<String>,
}

/// Why a user-written pattern is refused.
fn pattern_problem(pattern: &str) -> Option<&'static str> {
    if pattern.trim().is_empty() {
        Some("an empty pattern would exclude nothing or everything")
    } else if pattern.contains('[') || pattern.contains('\\') {
        Some("character classes and escapes are not supported")
    } else if pattern.starts_with("+ ") || pattern.starts_with("- ") {
        Some("rsync filter-rule prefixes are not supported; write the bare pattern")
    } else if pattern == "/" || pattern == "/**" || pattern == "**" || pattern == "*" {
        Some("it would exclude the whole tree")
    } else if pattern.split('/').any(|c| c == "..") {
        Some("`..` cannot appear in a pattern")
    } else {
        None
    }
}

impl Excludes {
    /// Exactly these patterns (already validated by the caller).
    pub fn from_patterns<I, S>(patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { patterns: patterns.into_iter().map(Into::into).collect() }
    }

    /// Check user-written patterns (`filesystem.exclude`), naming the first bad one.
    pub fn validate_patterns(patterns: &[String]) -> Result<(), ConfigError> {
        for pattern in patterns {
            if let Some(reason) = pattern_problem(pattern) {
                return Err(ConfigError::invalid("filesystem.exclude", format!("pattern `{pattern}`: {reason}")));
            }
        }
        Ok(())
    }

    /// The rules for a home: the list for `instance`, the internal database files when
    /// `separate_database`, each excluded repository, then the user's `extra` patterns.
    ///
    /// Bitbucket homes hold repositories at `shared/data/repositories/<id>/`. Mesh homes lay
    /// repositories out by hierarchy, not by id, so `exclude_repos` does not apply to them:
    /// [`crate::strategy::filesystem::NativeCopy::from_config`] refuses that combination, and
    /// here the ids are ignored with a warning.
    pub fn for_home(instance: InstanceType, separate_database: bool, extra: &[String], exclude_repos: &[u64]) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        match instance {
            InstanceType::Bitbucket => {
                patterns.extend(BITBUCKET_HOME_EXCLUDES.iter().map(|p| (*p).to_owned()));
                if separate_database {
                    patterns.extend(INTERNAL_DATABASE_EXCLUDES.iter().map(|p| (*p).to_owned()));
                }
                patterns.extend(exclude_repos.iter().map(|id| format!("/shared/data/repositories/{id}/")));
            }
            InstanceType::Mesh => {
                patterns.extend(MESH_HOME_EXCLUDES.iter().map(|p| (*p).to_owned()));
                if !exclude_repos.is_empty() {
                    tracing::warn!(?exclude_repos, "repository excludes do not apply to Mesh homes; ignored");
                }
            }
        }
        patterns.extend(extra.iter().cloned());
        Self { patterns }
    }

    /// The rules for a data store: its excluded repositories, which live at
    /// `repositories/<a>/<b>/<id>/` in a data store.
    pub fn for_data_store(exclude_repos: &[u64]) -> Self {
        Self { patterns: exclude_repos.iter().map(|id| format!("/repositories/*/*/{id}/")).collect() }
    }

    /// The patterns, in order.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `relative` (a path relative to the copied root, no leading `/`) is left out,
    /// either itself or because one of its parent directories is. `is_dir` says whether
    /// `relative` itself is a directory (a symlink to one is not).
    pub fn is_excluded(&self, relative: &Path, is_dir: bool) -> bool {
        let components: Vec<&OsStr> = relative
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name),
                _ => None,
            })
            .collect();
        (1..=components.len()).any(|len| {
            let entry_is_dir = len < components.len() || is_dir;
            self.matches_entry(&components[..len], entry_is_dir)
        })
    }

    /// Whether the entry itself matches a pattern, ignoring its parents (for walks that do not
    /// descend into excluded directories anyway).
    pub(crate) fn excludes_entry(&self, relative: &Path, is_dir: bool) -> bool {
        let components: Vec<&OsStr> = relative
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name),
                _ => None,
            })
            .collect();
        !components.is_empty() && self.matches_entry(&components, is_dir)
    }

    fn matches_entry(&self, components: &[&OsStr], is_dir: bool) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let joined = join_components(components);
        self.patterns.iter().any(|pattern| pattern_matches(pattern, &joined, is_dir))
    }

    /// The patterns as rsync arguments (`--exclude=<pattern>` each).
    pub fn rsync_args(&self) -> Vec<String> {
        self.patterns.iter().map(|p| format!("--exclude={p}")).collect()
    }
}

fn join_components(components: &[&OsStr]) -> Vec<u8> {
    let mut joined = Vec::new();
    for (i, c) in components.iter().enumerate() {
        if i > 0 {
            joined.push(b'/');
        }
        joined.extend_from_slice(c.as_bytes());
    }
    joined
}

/// rsync's rule: anchored patterns match the whole relative path; unanchored ones match any
/// trailing run of whole components.
fn pattern_matches(pattern: &str, path: &[u8], is_dir: bool) -> bool {
    let (pattern, dir_only) = match pattern.strip_suffix('/') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    if dir_only && !is_dir {
        return false;
    }
    if let Some(anchored) = pattern.strip_prefix('/') {
        return glob_matches(anchored.as_bytes(), path);
    }
    let pattern = pattern.as_bytes();
    if glob_matches(pattern, path) {
        return true;
    }
    path.iter().enumerate().filter(|(_, b)| **b == b'/').any(|(i, _)| glob_matches(pattern, &path[i + 1..]))
}

/// Wildcard match where `*` and `?` stay within a component and `**` crosses components.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some(b'*') if pattern.get(1) == Some(&b'*') => {
            let rest = &pattern[2..];
            (0..=text.len()).any(|i| glob_matches(rest, &text[i..]))
        }
        Some(b'*') => {
            let rest = &pattern[1..];
            for i in 0..=text.len() {
                if glob_matches(rest, &text[i..]) {
                    return true;
                }
                if text.get(i) == Some(&b'/') {
                    break;
                }
            }
            false
        }
        Some(b'?') => matches!(text.first(), Some(c) if *c != b'/') && glob_matches(&pattern[1..], &text[1..]),
        Some(c) => text.first() == Some(c) && glob_matches(&pattern[1..], &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(separate_database: bool) -> Excludes {
        Excludes::for_home(InstanceType::Bitbucket, separate_database, &[], &[7])
    }

    #[test]
    fn anchored_patterns_match_at_the_root_only() {
        let ex = home(true);
        assert!(ex.is_excluded(Path::new("caches"), true));
        assert!(ex.is_excluded(Path::new("caches/idx/file"), false));
        assert!(!ex.is_excluded(Path::new("shared/caches"), true));
        assert!(ex.is_excluded(Path::new("tmp"), false), "`/tmp` has no trailing slash: files too");
        assert!(!ex.is_excluded(Path::new("caches"), false), "`/caches/` is for directories only");
        assert!(ex.is_excluded(Path::new(".lock"), false));
        assert!(!ex.is_excluded(Path::new("shared/data/repositories/1/HEAD.lock"), false));
    }

    #[test]
    fn plugin_caches_and_search_data_are_left_out() {
        let ex = home(false);
        assert!(ex.is_excluded(Path::new("plugins/.osgi-cache"), true));
        assert!(ex.is_excluded(Path::new("plugins/.bundled-plugins/x.jar"), false));
        assert!(!ex.is_excluded(Path::new("plugins/installed-plugins"), true));
        assert!(!ex.is_excluded(Path::new("shared/plugins/installed-plugins/a.jar"), false));
        assert!(ex.is_excluded(Path::new("shared/search/data/nodes/0"), false));
        assert!(!ex.is_excluded(Path::new("shared/search/state.json"), false));
    }

    #[test]
    fn internal_database_only_with_a_separate_database() {
        let db = Path::new("shared/data/db.h2.db");
        assert!(home(true).is_excluded(db, false));
        assert!(!home(false).is_excluded(db, false));
        assert!(!home(true).is_excluded(Path::new("shared/data/dbx"), false));
    }

    #[test]
    fn repository_excludes_apply() {
        let ex = home(true);
        assert!(ex.is_excluded(Path::new("shared/data/repositories/7"), true));
        assert!(ex.is_excluded(Path::new("shared/data/repositories/7/objects/pack/x.pack"), false));
        assert!(!ex.is_excluded(Path::new("shared/data/repositories/70"), true));
        assert!(!ex.is_excluded(Path::new("shared/data/repositories/17"), true));
        let store = Excludes::for_data_store(&[7]);
        assert!(store.is_excluded(Path::new("repositories/00/07/7/HEAD"), false));
        assert!(!store.is_excluded(Path::new("repositories/00/07/8/HEAD"), false));
        assert!(!store.is_excluded(Path::new("repositories/7"), true));
    }

    #[test]
    fn unanchored_patterns_match_anywhere() {
        let ex = Excludes::from_patterns(["*.tmp", "sub/foo", "a/**/z"]);
        assert!(ex.is_excluded(Path::new("x.tmp"), false));
        assert!(ex.is_excluded(Path::new("deep/down/x.tmp"), false));
        assert!(!ex.is_excluded(Path::new("deep/x.tmpl"), false));
        assert!(ex.is_excluded(Path::new("one/sub/foo"), false));
        assert!(!ex.is_excluded(Path::new("one/xsub/foo"), false));
        assert!(ex.is_excluded(Path::new("a/b/c/z"), false));
    }

    #[test]
    fn star_stays_within_a_component() {
        let ex = Excludes::from_patterns(["/data/db.*"]);
        assert!(ex.is_excluded(Path::new("data/db.trace.db"), false));
        assert!(!ex.is_excluded(Path::new("data/db/x"), false));
        assert!(Excludes::from_patterns(["/a*c"]).is_excluded(Path::new("abc"), false));
        assert!(!Excludes::from_patterns(["/a*c"]).is_excluded(Path::new("ab/c"), false));
    }

    #[test]
    fn mesh_keeps_everything_database_related() {
        let ex = Excludes::for_home(InstanceType::Mesh, true, &[], &[]);
        assert!(!ex.is_excluded(Path::new("data/db.h2.db"), false));
        assert!(ex.is_excluded(Path::new("log/mesh.log"), false));
    }

    #[test]
    fn bad_patterns_are_named() {
        for bad in ["", "[abc]", "- /x", "/", "../up"] {
            let err = Excludes::validate_patterns(&[bad.to_owned()]).unwrap_err().to_string();
            assert!(err.contains("filesystem.exclude"), "{bad}: {err}");
        }
        Excludes::validate_patterns(&["/var/cache/".to_owned(), "*.bak".to_owned()]).unwrap();
    }

    #[test]
    fn rsync_arguments() {
        let ex = Excludes::from_patterns(["/tmp", "/caches/"]);
        assert_eq!(ex.rsync_args(), vec!["--exclude=/tmp", "--exclude=/caches/"]);
    }
}
