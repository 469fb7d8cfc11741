//! Human formatting of sizes, durations, ages and phases.

use std::time::Duration;

use bitbucket_diy_core::events::Phase;

/// `1.5 KiB`, `12.3 MiB`.
pub fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// `0.84 s`, `12.3 s`, `3 min 12 s`, `1 h 02 min`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.2} s")
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else if secs < 3600.0 {
        format!("{} min {:02} s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{} h {:02} min", d.as_secs() / 3600, (d.as_secs() % 3600) / 60)
    }
}

/// How long ago, coarsely: `42 s`, `5 min`, `3 h`, `2 d`.
pub fn age(since: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let secs = now.duration_since(since).as_secs().max(0);
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// `2026-04-12 02:15` (UTC).
pub fn timestamp(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M").to_string()
}

/// What a phase does, for humans.
pub fn phase(phase: Phase) -> &'static str {
    match phase {
        Phase::PrepareDatabase => "preparing the database (Bitbucket running)",
        Phase::PrepareFilesystem => "copying the home (Bitbucket running)",
        Phase::Lock => "locking Bitbucket",
        Phase::StartBackup => "starting Bitbucket's backup task",
        Phase::Drain => "waiting for Bitbucket to drain",
        Phase::BackupDatabase => "capturing the database (consistent point)",
        Phase::BackupFilesystem => "copying what changed in the home (consistent point)",
        Phase::DumpDatabase => "dumping the database snapshot (Bitbucket running)",
        Phase::Unlock => "unlocking Bitbucket",
        Phase::Archive => "writing the archive",
        Phase::Retention => "removing old archives",
        Phase::Extract => "extracting the archive",
        Phase::RestoreDatabase => "restoring the database",
        Phase::RestoreFilesystem => "restoring the home",
        Phase::CleanGitLocks => "removing stale git lock files",
        Phase::Verify => "checking the archive against its manifest",
        Phase::Hook => "running hooks",
        other => other.as_str(),
    }
}

/// What a step did: `1234 files, 12.0 MiB, 56 unchanged`, or its note when it copied nothing
/// itself (a database inside the home).
pub fn step(report: &bitbucket_diy_core::strategy::StepReport) -> String {
    if report.files == 0
        && report.bytes == 0
        && report.unchanged == 0
        && report.removed == 0
        && let Some(note) = report.notes.values().next()
    {
        return note.clone();
    }
    let mut text = format!("{} files, {}", report.files, bytes(report.bytes));
    if report.unchanged > 0 {
        text.push_str(&format!(", {} unchanged", report.unchanged));
    }
    text
}

/// Rows of `label  value`, labels padded to one width, indented by two spaces.
pub fn rows(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    rows.iter().map(|(label, value)| format!("  {label:<width$}  {value}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_millis(840)), "0.84 s");
        assert_eq!(duration(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(duration(Duration::from_secs(192)), "3 min 12 s");
        assert_eq!(duration(Duration::from_secs(3720)), "1 h 02 min");
    }

    #[test]
    fn ages_are_coarse() {
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let ago = |s: i64| age(jiff::Timestamp::from_second(1_000_000 - s).unwrap(), now);
        assert_eq!(ago(5), "5 s");
        assert_eq!(ago(600), "10 min");
        assert_eq!(ago(7200), "2 h");
        assert_eq!(ago(3 * 86_400), "3 d");
    }
}
