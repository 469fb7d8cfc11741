//! The documentation keeps up with the code: every configuration key and its environment
//! variable is in docs/configuration.md, every command and exit code in docs/cli.md.

use std::path::PathBuf;

use bitbucket_diy_core::BackupConfig;

use crate::support::{command, run};

fn doc(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("docs").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const BASE: &str = "[bitbucket]\nurl = \"http://h\"\nuser = \"u\"\n[filesystem]\nhome = \"/h\"\n\
                    [archive]\ntype = \"none\"\n[backup]\nworking_folder = \"/w\"\n";

/// The keys a table accepts, read from the parser's own "unknown field, expected one of …"
/// message, so the list follows the types without being written down twice.
fn accepted_keys(section: &str, prefix_lines: &str) -> Vec<String> {
    let text = if section.is_empty() {
        format!("{BASE}[zz_unknown_section]\n")
    } else {
        probe_text(section, prefix_lines, "zz_unknown_key = 1\n")
    };
    let err = BackupConfig::from_toml_with_env(&text, "probe", []).unwrap_err().to_string();
    let expected = err.split("expected").nth(1).unwrap_or_else(|| panic!("{section}: {err}"));
    let keys: Vec<String> = expected.split('`').skip(1).step_by(2).map(str::to_owned).collect();
    assert!(!keys.is_empty(), "{section}: {err}");
    keys
}

/// The probe text for `section` (with `prefix_lines` in it) plus `extra` appended to that
/// section, or a new table when `section` is a sub-table (`archive.remote`).
fn probe_text(section: &str, prefix_lines: &str, extra: &str) -> String {
    let header = format!("[{section}]\n");
    if BASE.contains(&header) {
        BASE.replace(&header, &format!("{header}{prefix_lines}{extra}"))
    } else {
        format!("{BASE}{header}{prefix_lines}{extra}")
    }
}

/// `section.key` is itself a table (`backup.hooks`, `archive.remote`): the loader then answers a
/// key inside it with its own list of accepted keys.
fn is_table(section: &str, prefix: &str, key: &str) -> bool {
    let text = format!("{}[{section}.{key}]\nzz_unknown_key = 1\n", probe_text(section, prefix, ""));
    BackupConfig::from_toml_with_env(&text, "probe", [])
        .err()
        .is_some_and(|e| e.to_string().contains("unknown field `zz_unknown_key`"))
}

/// Whether the loader takes `BITBUCKET_DIY_<SECTION>_<KEY>` as an override of `section.key`
/// (a value of the wrong type is still an override; an unknown field is not).
fn env_override_is_accepted(section: &str, prefix: &str, dotted: &str) -> bool {
    let var = bitbucket_diy_core::config::env_var_for(dotted);
    let text = probe_text(section, prefix, "");
    match BackupConfig::from_toml_with_env(&text, "probe", [(var, "1".to_owned())]) {
        Ok(_) => true,
        Err(e) => !e.to_string().contains("unknown field"),
    }
}

#[test]
fn every_configuration_key_and_its_environment_variable_is_documented() {
    let doc = doc("configuration.md");
    let mut missing = Vec::new();
    let mut tables: Vec<(String, &str)> = [
        ("bitbucket", ""),
        ("database", "type = \"postgresql\"\n"),
        ("database", "type = \"mysql\"\n"),
        ("database", "type = \"command\"\n"),
        ("filesystem", ""),
        ("archive", ""),
        ("backup", ""),
    ]
    .into_iter()
    .map(|(section, prefix)| (section.to_owned(), prefix))
    .collect();
    let mut checked = 0;
    while let Some((section, prefix)) = tables.pop() {
        for key in accepted_keys(&section, prefix) {
            let dotted = format!("{section}.{key}");
            checked += 1;
            if !doc.contains(&format!("`{dotted}`")) {
                missing.push(format!("`{dotted}`"));
            }
            // Sub-tables are checked key by key; their own row needs no variable.
            if is_table(&section, prefix, &key) {
                tables.push((dotted, ""));
                continue;
            }
            let var = bitbucket_diy_core::config::env_var_for(&dotted);
            if env_override_is_accepted(&section, prefix, &dotted) && !doc.contains(&format!("`{var}`")) {
                missing.push(format!("`{var}`"));
            }
        }
    }
    assert!(checked > 50, "only {checked} keys found: the probe no longer reads the loader's key lists");
    for section in accepted_keys("", "") {
        if !doc.contains(&format!("[{section}]")) {
            missing.push(format!("[{section}]"));
        }
    }
    assert!(missing.is_empty(), "docs/configuration.md does not document: {missing:?}");
    for env in ["BITBUCKET_DIY_CONFIG", "BITBUCKET_DIY_BITBUCKET_PASSWORD", "BITBUCKET_DIY_ARCHIVE_KEEP"] {
        assert!(doc.contains(env), "{env} is not in docs/configuration.md");
    }
    for path in bitbucket_diy_core::config::default_search_paths().iter().skip(1) {
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(doc.contains(name.as_ref()), "search path {} not in docs/configuration.md", path.display());
    }
}

#[test]
fn hook_keys_are_not_overridable_as_the_reference_says() {
    // The reference marks `[backup.hooks]` keys "set in the file": the loader must agree.
    for key in accepted_keys("backup.hooks", "") {
        assert!(!env_override_is_accepted("backup", "", &format!("backup.hooks.{key}")), "{key}");
    }
    let doc = doc("configuration.md");
    assert!(doc.contains("| `backup.hooks.before_lock` | `[]` | — (set in the file) |"));
}

#[tokio::test]
async fn every_command_and_exit_code_is_in_the_cli_doc() {
    let doc = doc("cli.md");
    let dir = tempfile::tempdir().unwrap();
    let help = run(command(dir.path(), &["--help"])).await;
    help.code(0);
    let commands: Vec<String> = help
        .stdout
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // Wrapped descriptions are indented further than command names.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 11, "{commands:?}");
    for command in commands {
        assert!(doc.contains(&format!("## `{command}")), "docs/cli.md has no section for `{command}`");
    }
    for sub in ["config init", "config check", "config import-vars"] {
        assert!(doc.contains(&format!("`{sub}")), "docs/cli.md does not describe `{sub}`");
    }
    for code in ["| 0 ", "| 2 ", "| 3 ", "| 4 ", "| 5 ", "| 6 ", "| 7 ", "| 10 ", "| 130 "] {
        assert!(doc.contains(code), "exit code row `{code}` missing from docs/cli.md");
    }
}
