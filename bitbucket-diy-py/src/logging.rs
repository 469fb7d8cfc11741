//! The core's `tracing` logs, forwarded to Python's `logging` (logger ``bitbucket_diy``), so a
//! script sees them where it sees its own: above all the one error that must never be lost, a
//! lock garbage-collected unreleased whose best-effort unlock failed, with the manual command.

use std::fmt::{self, Write as _};

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// The Python logger the core's logs go to.
const LOGGER: &str = "bitbucket_diy";

/// Install the bridge as the process's tracing subscriber, unless the host already has one.
pub(crate) fn install() {
    let subscriber = tracing_subscriber::registry().with(PythonLogging.with_filter(LevelFilter::INFO));
    // Err: an embedding program set its own subscriber, which keeps the logs.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Sends each event to `logging.getLogger("bitbucket_diy")`.
struct PythonLogging;

impl<S: Subscriber> Layer<S> for PythonLogging {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let level = match *event.metadata().level() {
            Level::ERROR => 40,
            Level::WARN => 30,
            Level::INFO => 20,
            Level::DEBUG => 10,
            Level::TRACE => 5,
        };
        let mut text = Text::default();
        event.record(&mut text);
        let logged = Python::try_attach(|py| -> PyResult<()> {
            let logger = py.import("logging")?.call_method1("getLogger", (LOGGER,))?;
            if logger.call_method1("isEnabledFor", (level,))?.is_truthy()? {
                logger.call_method1("log", (level, "%s", text.0.as_str()))?;
            }
            Ok(())
        });
        if logged.is_none() && level >= 40 {
            // The interpreter is shutting down: stderr is the last place an error can go.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("bitbucket_diy: {}", text.0);
            }
        }
    }
}

/// The message, then the other fields as `key=value`.
#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let fields = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}{fields}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let fields = std::mem::take(&mut self.0);
            self.0 = format!("{value}{fields}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}
