//! Where output goes: reports on stdout; progress, log lines, warnings and errors on stderr.
//!
//! Log lines follow the reference scripts' `[url] INFO: …` lines, with a UTC timestamp:
//! `2026-04-12T02:15:00Z [https://bitbucket.example.com] INFO: locked (owner: Jane)`.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressDrawTarget};
use tracing::Level;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::{GlobalArgs, ProgressMode};

/// How stderr is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// indicatif bars; messages printed above them.
    Bars,
    /// Timestamped log lines.
    Lines,
    /// JSON lines.
    Json,
    /// Warnings and errors only (as log lines).
    Quiet,
}

/// The process's output.
pub struct Ui {
    style: Style,
    verbose: u8,
    json_report: bool,
    label: Mutex<String>,
    multi: Option<MultiProgress>,
}

impl std::fmt::Debug for Ui {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ui").field("style", &self.style).field("json_report", &self.json_report).finish()
    }
}

impl Ui {
    /// Output as the flags and the terminal say.
    pub fn new(args: &GlobalArgs) -> Arc<Self> {
        let terminal = std::io::stderr().is_terminal();
        let style = match args.progress {
            _ if args.quiet => Style::Quiet,
            ProgressMode::Auto if terminal => Style::Bars,
            ProgressMode::Auto | ProgressMode::Lines => Style::Lines,
            ProgressMode::Bars => Style::Bars,
            ProgressMode::Json => Style::Json,
            ProgressMode::None => Style::Quiet,
        };
        // indicatif draws only on a terminal; elsewhere lines go straight to stderr.
        let multi = (style == Style::Bars).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Arc::new(Self {
            style,
            verbose: args.verbose,
            json_report: args.json,
            label: Mutex::new("bitbucket-diy".to_owned()),
            multi,
        })
    }

    /// How stderr is used.
    pub fn style(&self) -> Style {
        self.style
    }

    /// Whether the report goes out as JSON.
    pub fn json_report(&self) -> bool {
        self.json_report
    }

    /// The bars, when drawn.
    pub fn multi(&self) -> Option<&MultiProgress> {
        self.multi.as_ref()
    }

    /// Name log lines after this instance (`[url]`).
    pub fn set_label(&self, label: impl Into<String>) {
        if let Ok(mut l) = self.label.lock() {
            *l = label.into();
        }
    }

    fn label(&self) -> String {
        self.label.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// A log line at `level`.
    pub fn log(&self, level: Level, message: &str) {
        let shown = match self.style {
            Style::Quiet => level <= Level::WARN,
            _ => level <= Level::INFO || self.verbose > 0,
        };
        if !shown {
            return;
        }
        match self.style {
            Style::Bars => {
                let text = match level {
                    Level::ERROR => format!("error: {message}"),
                    Level::WARN => format!("warning: {message}"),
                    _ => message.to_owned(),
                };
                self.stderr_line(&text);
            }
            Style::Json => {
                let line = serde_json::json!({
                    "time": now(),
                    "event": "log",
                    "level": level.as_str().to_ascii_lowercase(),
                    "message": message,
                });
                self.stderr_line(&line.to_string());
            }
            Style::Lines | Style::Quiet => self.stderr_line(&self.log_line(level, message)),
        }
    }

    /// `2026-04-12T02:15:00Z [label] INFO: message`.
    pub fn log_line(&self, level: Level, message: &str) -> String {
        format!("{} [{}] {}: {message}", now(), self.label(), level.as_str())
    }

    /// Shorthand for an INFO line.
    pub fn info(&self, message: &str) {
        self.log(Level::INFO, message);
    }

    /// Shorthand for a WARN line.
    pub fn warn(&self, message: &str) {
        self.log(Level::WARN, message);
    }

    /// One raw line on stderr, above the bars when they are drawn.
    pub fn stderr_line(&self, text: &str) {
        match &self.multi {
            Some(multi) if !multi.is_hidden() => {
                let _ = multi.println(text);
            }
            _ => {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
        }
    }

    /// Raw bytes on stderr (formatted tracing output), above the bars when they are drawn.
    fn stderr_bytes(&self, bytes: &[u8]) {
        let write = || {
            let _ = std::io::stderr().lock().write_all(bytes);
        };
        match &self.multi {
            Some(multi) => multi.suspend(write),
            None => write(),
        }
    }

    /// The report, on stdout.
    pub fn stdout(&self, text: &str) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// A JSON document, on stdout.
    pub fn stdout_json(&self, value: &impl serde::Serialize) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
        self.stdout(&text)
    }

    /// Remove finished bars before the report is printed.
    pub fn clear_bars(&self) {
        if let Some(multi) = &self.multi {
            let _ = multi.clear();
        }
    }
}

/// Now, to the second, in UTC: `2026-04-12T02:15:00Z`.
pub fn now() -> String {
    let now = jiff::Timestamp::now();
    now.round(jiff::Unit::Second).unwrap_or(now).to_string()
}

/// Send the core's `tracing` output through [`Ui`], formatted as log lines.
pub fn init_tracing(ui: &Arc<Ui>, verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    // Our own crates at the chosen level; dependencies (hyper, reqwest…) one notch quieter.
    let directives = match verbose {
        0 | 1 => default.to_owned(),
        _ => format!("warn,bitbucket_diy_core={default},bitbucket_diy={default}"),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BITBUCKET_DIY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Plain text: the lines go to log files and journald as often as to a terminal.
        .with_ansi(false)
        .event_format(LogLineFormat { ui: ui.clone() })
        .with_writer(UiWriter { ui: ui.clone() })
        .try_init();
}

/// Formats `tracing` events as our log lines.
struct LogLineFormat {
    ui: Arc<Ui>,
}

impl<S, N> FormatEvent<S, N> for LogLineFormat
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = *event.metadata().level();
        match self.ui.style() {
            Style::Json => {
                let mut message = String::new();
                ctx.field_format().format_fields(Writer::new(&mut message), event)?;
                let line = serde_json::json!({
                    "time": now(),
                    "event": "log",
                    "level": level.as_str().to_ascii_lowercase(),
                    "target": event.metadata().target(),
                    "message": message,
                });
                writeln!(writer, "{line}")
            }
            _ => {
                write!(writer, "{} [{}] {}: ", now(), self.ui.label(), level.as_str())?;
                ctx.field_format().format_fields(writer.by_ref(), event)?;
                writeln!(writer)
            }
        }
    }
}

/// A `tracing` writer that goes through [`Ui`] (so lines never tear a progress bar).
#[derive(Clone)]
struct UiWriter {
    ui: Arc<Ui>,
}

struct UiLine {
    ui: Arc<Ui>,
    buffer: Vec<u8>,
}

impl Write for UiLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for UiLine {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            self.ui.stderr_bytes(&self.buffer);
        }
    }
}

impl<'a> MakeWriter<'a> for UiWriter {
    type Writer = UiLine;

    fn make_writer(&'a self) -> Self::Writer {
        UiLine { ui: self.ui.clone(), buffer: Vec::new() }
    }
}
