//! Renders the core's events: progress bars on a terminal, log lines otherwise, or JSON lines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitbucket_diy_core::events::{Event, EventSink, Phase, Unit};
use indicatif::{ProgressBar, ProgressStyle};
use tracing::Level;

use crate::render;
use crate::ui::{Style, Ui};

/// Progress lines (not bars) are printed at most this often per phase.
const LINE_INTERVAL: Duration = Duration::from_secs(10);
/// Phases that take at least this long get a "done" line (the others only with -v).
const LONG_PHASE: Duration = Duration::from_secs(1);

/// What the run went through so far, for the messages around a cancellation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    /// The lock was requested (it may be held before its answer arrives).
    pub locking: bool,
    /// The instance was locked by this run.
    pub locked: bool,
    /// …and unlocked again.
    pub unlocked: bool,
}

#[derive(Default)]
struct State {
    bars: HashMap<Phase, ProgressBar>,
    last_line: HashMap<Phase, Instant>,
    seen: Seen,
}

/// The CLI's [`EventSink`].
pub struct Renderer {
    ui: Arc<Ui>,
    state: Mutex<State>,
}

impl Renderer {
    /// Render through `ui`.
    pub fn new(ui: Arc<Ui>) -> Arc<Self> {
        Arc::new(Self { ui, state: Mutex::default() })
    }

    /// What the run went through so far.
    pub fn seen(&self) -> Seen {
        self.state.lock().map(|s| s.seen).unwrap_or_default()
    }

    /// Stop drawing: each unfinished phase leaves a line saying it was stopped.
    pub fn finish(&self) {
        let unfinished: Vec<(Phase, ProgressBar)> =
            self.state.lock().map(|mut state| state.bars.drain().collect()).unwrap_or_default();
        for (phase, bar) in unfinished {
            bar.finish_and_clear();
            self.ui.stderr_line(&format!("✗ {} (stopped)", render::phase(phase)));
        }
        self.ui.clear_bars();
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> Option<T> {
        self.state.lock().ok().map(|mut s| f(&mut s))
    }

    /// The human message for events that are not phases or progress.
    fn message(event: &Event) -> Option<(Level, String)> {
        Some(match event {
            Event::Locked { owner } => (Level::INFO, format!("locked for maintenance (owner: {owner})")),
            Event::Drained { waited } => {
                (Level::INFO, format!("drained after {}: copying while Bitbucket is quiet", render::duration(*waited)))
            }
            Event::ProgressReported { percentage } => {
                (Level::INFO, format!("backup progress {percentage}% reported to Bitbucket"))
            }
            Event::Unlocked { lock_window } => {
                (Level::INFO, format!("unlocked: Bitbucket was in maintenance for {}", render::duration(*lock_window)))
            }
            Event::Warning { message } => (Level::WARN, message.clone()),
            Event::ArchiveWritten { path, bytes } => {
                (Level::INFO, format!("archive written: {} ({})", path.display(), render::bytes(*bytes)))
            }
            Event::ArchivePruned { path } => (Level::INFO, format!("removed old archive {}", path.display())),
            Event::Retrying { what, attempt, reason } => {
                (Level::WARN, format!("retrying {what} (attempt {attempt}): {reason}"))
            }
            _ => return None,
        })
    }

    fn on_bars(&self, event: &Event) {
        let Some(multi) = self.ui.multi() else { return };
        match event {
            // Hooks are usually not configured: no spinner for an empty phase.
            Event::PhaseStarted { phase: Phase::Hook } | Event::PhaseFinished { phase: Phase::Hook, .. } => {}
            Event::PhaseStarted { phase } => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(spinner_style());
                bar.set_message(render::phase(*phase));
                bar.enable_steady_tick(Duration::from_millis(120));
                if let Some(old) = self.with_state(|s| s.bars.insert(*phase, bar)).flatten() {
                    old.finish_and_clear();
                }
            }
            Event::Progress { phase, done, total, unit } => {
                self.with_state(|s| {
                    if let Some(bar) = s.bars.get(phase) {
                        if let Some(total) = total
                            && bar.length() != Some(*total)
                        {
                            bar.set_length(*total);
                            bar.set_style(bar_style(*unit));
                        }
                        bar.set_position(*done);
                    }
                });
            }
            Event::PhaseFinished { phase, elapsed } => {
                // The bar goes; a line stays, so the finished phases read as a log afterwards.
                if let Some(bar) = self.with_state(|s| s.bars.remove(phase)).flatten() {
                    bar.finish_and_clear();
                }
                self.ui.stderr_line(&format!("✔ {} ({})", render::phase(*phase), render::duration(*elapsed)));
            }
            other => {
                if let Some((level, message)) = Self::message(other) {
                    self.ui.log(level, &message);
                }
            }
        }
    }

    fn on_lines(&self, event: &Event) {
        match event {
            Event::PhaseStarted { phase } => {
                self.with_state(|s| s.last_line.insert(*phase, Instant::now()));
                // Hooks are usually not configured: their phase is noise unless asked for.
                let level = if *phase == Phase::Hook { Level::DEBUG } else { Level::INFO };
                self.ui.log(level, &format!("{}…", render::phase(*phase)));
            }
            Event::Progress { phase, done, total, unit } => {
                let due = self
                    .with_state(|s| {
                        let last = s.last_line.entry(*phase).or_insert_with(Instant::now);
                        let due = last.elapsed() >= LINE_INTERVAL;
                        if due {
                            *last = Instant::now();
                        }
                        due
                    })
                    .unwrap_or(false);
                if due {
                    let amount = |n: u64| match unit {
                        Unit::Bytes => render::bytes(n),
                        _ => format!("{n} files"),
                    };
                    let text = match total {
                        Some(t) if *t > 0 => {
                            format!("{}: {}% ({} of {})", phase, done * 100 / t, amount(*done), amount(*t))
                        }
                        _ => format!("{phase}: {}", amount(*done)),
                    };
                    self.ui.info(&text);
                }
            }
            Event::PhaseFinished { phase, elapsed } => {
                // Only long phases get a line of their own; the rest show in -v.
                let level = if *elapsed >= LONG_PHASE { Level::INFO } else { Level::DEBUG };
                self.ui.log(level, &format!("{}: done in {}", render::phase(*phase), render::duration(*elapsed)));
            }
            other => {
                if let Some((level, message)) = Self::message(other) {
                    self.ui.log(level, &message);
                }
            }
        }
    }

    fn on_json(&self, event: &Event) {
        let mut value = serde_json::to_value(event).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("time".to_owned(), crate::ui::now().into());
        }
        self.ui.stderr_line(&value.to_string());
    }
}

impl EventSink for Renderer {
    fn emit(&self, event: &Event) {
        match event {
            Event::PhaseStarted { phase: Phase::Lock } => {
                self.with_state(|s| s.seen.locking = true);
            }
            Event::Locked { .. } => {
                self.with_state(|s| s.seen.locked = true);
            }
            Event::Unlocked { .. } => {
                self.with_state(|s| s.seen.unlocked = true);
            }
            _ => {}
        }
        match self.ui.style() {
            Style::Bars => self.on_bars(event),
            Style::Lines => self.on_lines(event),
            Style::Json => self.on_json(event),
            Style::Quiet => {
                if let Some((level @ (Level::WARN | Level::ERROR), message)) = Self::message(event) {
                    self.ui.log(level, &message);
                }
            }
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style(unit: Unit) -> ProgressStyle {
    let template = match unit {
        Unit::Bytes => "{spinner:.cyan} {msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        _ => "{spinner:.cyan} {msg} [{bar:30.cyan/blue}] {pos}/{len} files {eta}",
    };
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}
