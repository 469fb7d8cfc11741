//! What the administrator's documentation shows works as shown: every `bitbucket-diy` command
//! line uses only options the CLI has, the systemd units and the cron file parse and run real
//! commands, every TOML example loads, every metric name exists, and every link and anchor
//! between the pages leads somewhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bitbucket_diy_core::BackupConfig;
use bitbucket_diy_core::ErrorKind;
use bitbucket_diy_core::metrics::{RunMetrics, write_metrics};

use crate::support::binary;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every Markdown page of the user documentation, and the repository's README.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.push(root().join("README.md"));
    pages.sort();
    assert!(pages.len() >= 10, "{pages:?}");
    pages
}

/// Pages written by the helpers of other areas: their command lines and TOML are theirs to test.
const PAGES_OF_OTHER_AREAS: [&str; 3] = ["offsite.md", "reliability.md", "performance.md"];

fn pages_owned_here() -> Vec<PathBuf> {
    pages().into_iter().filter(|p| !PAGES_OF_OTHER_AREAS.iter().any(|name| p.ends_with(name))).collect()
}

fn example(name: &str) -> PathBuf {
    root().join("docs").join("examples").join(name)
}

/// Fenced code blocks: (info string, text).
fn code_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, usize, String)> = None;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed.starts_with("```") => {
                let indent = line.len() - trimmed.len();
                current = Some((trimmed.trim_start_matches('`').trim().to_owned(), indent, String::new()));
            }
            Some((info, _, text)) if trimmed.starts_with("```") => {
                blocks.push((std::mem::take(info), std::mem::take(text)));
                current = None;
            }
            Some((_, indent, text)) => {
                // Blocks inside list items are indented; their content is the same amount.
                let cut = line.len() - line.trim_start().len();
                text.push_str(&line[cut.min(*indent)..]);
                text.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unclosed code block");
    blocks
}

/// Shell words, with quotes removed (no expansion).
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The `bitbucket-diy` invocations of one shell line: the arguments after the program, up to a
/// redirection or a comment. Environment assignments and `sudo [-u USER]` before it are skipped.
fn invocations(line: &str) -> Vec<Vec<String>> {
    let line = line.trim().trim_start_matches("$ ");
    let mut found = Vec::new();
    for segment in line.split(['|', ';']).flat_map(|s| s.split("&&")) {
        let words = shell_words(segment);
        let mut rest = words.as_slice();
        loop {
            match rest.first().map(String::as_str) {
                Some(w) if w.contains('=') && !w.starts_with('-') => rest = &rest[1..],
                Some("sudo") if rest.get(1).is_some_and(|w| w == "-u") => rest = &rest[3.min(rest.len())..],
                Some("sudo" | "env" | "exec") => rest = &rest[1..],
                _ => break,
            }
        }
        let Some(program) = rest.first() else { continue };
        if program != "bitbucket-diy" && !program.ends_with("/bitbucket-diy") {
            continue;
        }
        // `bitbucket-diy demo: done in 7.91 s` is output, not a command.
        if rest.get(1).is_some_and(|w| w.ends_with(':')) {
            continue;
        }
        let args: Vec<String> = rest[1..]
            .iter()
            // `<id>` is a placeholder; `<`, `> file`, `2>&1` are redirections.
            .take_while(|w| {
                let redirect = w.starts_with('>') || w.starts_with("2>") || (w.starts_with('<') && !w.ends_with('>'));
                !redirect && *w != "#"
            })
            .cloned()
            .collect();
        found.push(args);
    }
    found
}

/// Lines of a shell-like block, with `\` continuations joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        if let Some(start) = line.strip_suffix('\\') {
            pending.push_str(start);
            pending.push(' ');
        } else {
            pending.push_str(line);
            lines.push(std::mem::take(&mut pending));
        }
    }
    if !pending.is_empty() {
        lines.push(pending);
    }
    lines
}

/// Runs `bitbucket-diy ARGS --help`: clap rejects an unknown command or option, or a bad value,
/// before it reaches `--help`, and reads no configuration.
fn check_options(args: &[String], origin: &str, failures: &mut Vec<String>) {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(binary())
        .args(args)
        .arg("--help")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !output.status.success() {
        failures.push(format!(
            "{origin}: `bitbucket-diy {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).lines().next().unwrap_or_default()
        ));
    }
}

#[test]
fn every_command_line_in_the_documentation_uses_real_options() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for page in pages_owned_here() {
        let name = page.file_name().unwrap().to_string_lossy().into_owned();
        let text = read(&page);
        let mut lines: Vec<String> = Vec::new();
        for (info, block) in code_blocks(&text) {
            if matches!(info.as_str(), "" | "console" | "sh" | "text" | "cron" | "ini" | "systemd") {
                lines.extend(logical_lines(&block));
            }
        }
        // Inline code spans: `bitbucket-diy …` in the prose.
        for (i, span) in text.split('`').enumerate() {
            if i % 2 == 1 && span.starts_with("bitbucket-diy ") {
                lines.push(span.to_owned());
            }
        }
        for line in lines {
            // Synopses (`[--deep]`, `SPEC]...`) describe the grammar; they are not commands.
            if line.contains('[') || line.contains("...") {
                continue;
            }
            for args in invocations(&line) {
                checked += 1;
                check_options(&args, &name, &mut failures);
            }
        }
    }
    assert!(checked > 40, "only {checked} command lines found: the extraction broke");
    assert!(failures.is_empty(), "command lines the CLI refuses:\n{}", failures.join("\n"));
}

/// A systemd unit as (section, key, value) triples; panics on a line that is neither.
fn parse_unit(path: &Path) -> Vec<(String, String, String)> {
    let mut entries = Vec::new();
    let mut section = String::new();
    for (number, line) in logical_lines(&read(path)).iter().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}: line {}: not `Key=value`: {line}", path.display(), number + 1));
        assert!(!section.is_empty(), "{}: `{key}` before any [Section]", path.display());
        assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()),
            "{}: bad key `{key}`",
            path.display()
        );
        entries.push((section.clone(), key.to_owned(), value.to_owned()));
    }
    entries
}

fn value<'a>(unit: &'a [(String, String, String)], section: &str, key: &str) -> Option<&'a str> {
    unit.iter().find(|(s, k, _)| s == section && k == key).map(|(_, _, v)| v.as_str())
}

#[test]
fn systemd_units_parse_and_run_real_commands() {
    let mut failures = Vec::new();
    let mut services = 0;
    for entry in std::fs::read_dir(root().join("docs/examples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".service") {
            services += 1;
            let unit = parse_unit(&path);
            assert_eq!(value(&unit, "Service", "Type"), Some("oneshot"), "{name}");
            let exec = value(&unit, "Service", "ExecStart").unwrap_or_else(|| panic!("{name}: no ExecStart"));
            if let Some(failure_unit) = value(&unit, "Unit", "OnFailure") {
                let template = failure_unit.replace("%n", "");
                assert!(example(&template).is_file(), "{name}: OnFailure names {failure_unit}, not in docs/examples");
            }
            for args in invocations(exec) {
                assert!(exec.starts_with("/usr/local/bin/bitbucket-diy "), "{name}: {exec}");
                check_options(&args, &name, &mut failures);
                // What the service writes must be writable under ProtectSystem=strict.
                let writable = value(&unit, "Service", "ReadWritePaths").unwrap_or_default();
                if let Some(i) = args.iter().position(|a| a == "--metrics-file") {
                    let folder = Path::new(&args[i + 1]).parent().unwrap().to_string_lossy().into_owned();
                    assert!(writable.split_whitespace().any(|p| p == folder), "{name}: {folder} not writable");
                }
            }
        }
        if name.ends_with(".timer") {
            let unit = parse_unit(&path);
            assert!(value(&unit, "Timer", "OnCalendar").is_some(), "{name}");
            let service = value(&unit, "Timer", "Unit").unwrap_or_else(|| panic!("{name}: no Unit="));
            assert!(example(service).is_file(), "{name} starts {service}, not in docs/examples");
            assert_eq!(value(&unit, "Install", "WantedBy"), Some("timers.target"), "{name}");
        }
    }
    assert!(services >= 3, "{services}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_cron_file_runs_a_real_command() {
    let path = example("bitbucket-diy.cron");
    let mut jobs = 0;
    let mut failures = Vec::new();
    for line in read(&path).lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields[0].contains('=') {
            continue; // MAILTO=…
        }
        // minute hour day month weekday user command…
        assert!(fields.len() > 6, "not a /etc/cron.d line: {line}");
        assert_eq!(fields[5], "atlbitbucket", "{line}");
        let command = fields[6..].join(" ");
        for args in invocations(&command) {
            jobs += 1;
            assert!(args.iter().any(|a| a == "--quiet"), "errors only on stderr, so cron mails only failures");
            check_options(&args, "bitbucket-diy.cron", &mut failures);
        }
    }
    assert_eq!(jobs, 1);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every `bitbucket_diy_…` name the textfile holds, after a success and after a failure.
fn metric_names() -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bitbucket_diy.prom");
    let mut names = BTreeSet::new();
    let success = RunMetrics {
        finished_at: "2026-04-12T02:15:09Z".parse().unwrap(),
        duration: Duration::from_secs(1),
        exit_code: 0,
        error_kind: None,
        lock_window: Some(Duration::from_secs(1)),
        archive_bytes: Some(1),
    };
    let failure = RunMetrics {
        exit_code: 10,
        error_kind: Some(ErrorKind::LeftLocked),
        lock_window: None,
        archive_bytes: None,
        ..success.clone()
    };
    for metrics in [success, failure] {
        write_metrics(&path, &metrics).unwrap();
        names.extend(metric_tokens(&read(&path)));
    }
    names
}

fn metric_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("bitbucket_diy_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
        tokens.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    tokens
}

#[test]
fn every_metric_the_documentation_names_exists() {
    let known = metric_names();
    assert!(known.contains("bitbucket_diy_last_success_timestamp_seconds"), "{known:?}");
    let mut sources: Vec<PathBuf> = pages();
    sources.push(example("bitbucket-diy.rules.yml"));
    let mut unknown = Vec::new();
    for source in sources.iter().filter(|p| p.is_file()) {
        for token in metric_tokens(&read(source)) {
            // `bitbucket_diy.prom` and `bitbucket_diy_core` are a file and a crate, not metrics.
            if token == "bitbucket_diy_" || token.starts_with("bitbucket_diy_core") {
                continue;
            }
            if !known.contains(&token) {
                unknown.push(format!("{}: {token}", source.display()));
            }
        }
    }
    assert!(unknown.is_empty(), "not written by metrics::write_metrics: {unknown:?}");
    let rules = read(&example("bitbucket-diy.rules.yml"));
    assert!(rules.contains("alert: BitbucketBackupMissing") && rules.contains("alert: BitbucketLeftLocked"));
}

/// Sections every configuration needs, added to an example that leaves them out.
const STUBS: [(&str, &str); 4] = [
    ("[bitbucket]", "[bitbucket]\nurl = \"https://bitbucket.example.com\"\nuser = \"backup-admin\"\n"),
    ("[filesystem]", "[filesystem]\nhome = \"/srv/stub/home\"\n"),
    ("[archive]", "[archive]\ntype = \"none\"\n"),
    ("[backup]", "[backup]\nworking_folder = \"/srv/stub/work\"\n"),
];

#[test]
fn every_toml_example_loads() {
    let mut loaded = 0;
    let mut failures = Vec::new();
    for page in pages_owned_here() {
        for (info, block) in code_blocks(&read(&page)) {
            if info != "toml" {
                continue;
            }
            let mut text = block.clone();
            for (header, stub) in STUBS {
                if !text.lines().any(|l| l.trim() == header) {
                    text.push('\n');
                    text.push_str(stub);
                }
            }
            loaded += 1;
            if let Err(e) = BackupConfig::from_toml_with_env(&text, &page.display().to_string(), []) {
                failures.push(format!("{e}\n--- the example:\n{block}"));
            }
        }
    }
    assert!(loaded >= 5, "only {loaded} TOML examples found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// GitHub's anchor for a heading: lower case, punctuation removed, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let base = anchor(line.trim_start_matches('#'));
        let mut candidate = base.clone();
        let mut n = 1;
        while seen.contains(&candidate) {
            candidate = format!("{base}-{n}");
            n += 1;
        }
        seen.insert(candidate);
    }
    seen
}

#[test]
fn every_link_between_the_pages_leads_somewhere() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = read(&page);
        let dir = page.parent().unwrap();
        for piece in text.split("](").skip(1) {
            let Some(end) = piece.find(')') else { continue };
            let target = &piece[..end];
            if target.starts_with("http") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            checked += 1;
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let path = if file.is_empty() { page.clone() } else { dir.join(file) };
            if !path.exists() {
                // Pages of other areas are checked once they are in the tree.
                let elsewhere = PAGES_OF_OTHER_AREAS.iter().any(|name| file.ends_with(name));
                if !elsewhere {
                    broken.push(format!("{}: {target}", page.display()));
                }
                continue;
            }
            if !fragment.is_empty() && !anchors(&read(&path)).contains(fragment) {
                broken.push(format!("{}: {target} (no such heading)", page.display()));
            }
        }
    }
    assert!(checked > 50, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
