//! `bitbucket-diy`: consistent, low-downtime backups of Bitbucket Server and Data Center.
//!
//! A thin layer over `bitbucket-diy-core`: it parses the command line, calls the core and
//! renders what comes back. Exit codes come from the core's [`ErrorKind::exit_code`] (see
//! docs/cli.md); usage errors exit 2, as configuration errors do.

mod cli;
mod commands;
mod progress;
mod render;
mod secrets;
mod signals;
mod ui;

use std::process::ExitCode;

use bitbucket_diy_core::{Error, ErrorKind};
use clap::Parser;
use serde::Serialize;

use crate::cli::Cli;
use crate::ui::Ui;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ui = Ui::new(&cli.global);
    ui::init_tracing(&ui, cli.global.verbose, cli.global.quiet);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
    let outcome = match runtime {
        Ok(runtime) => runtime.block_on(commands::run(cli, ui.clone())),
        Err(e) => Err(Error::Io { action: "starting the async runtime", path: Default::default(), source: e }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_error(&ui, &e);
            ExitCode::from(u8::try_from(e.kind().exit_code()).unwrap_or(1))
        }
    }
}

#[derive(Serialize)]
struct ErrorDocument<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    kind: &'a str,
    exit_code: i32,
    message: String,
}

/// The error on stderr (and as JSON on stdout with `--json`). Only a left-locked error carries a
/// token: its message is the command that unlocks the instance.
fn report_error(ui: &Ui, e: &Error) {
    let kind = e.kind();
    let message = e.to_string();
    if ui.json_report() {
        let document = ErrorDocument {
            error: ErrorBody { kind: kind.as_str(), exit_code: kind.exit_code(), message: message.clone() },
        };
        let _ = ui.stdout_json(&document);
    }
    let text = match kind {
        ErrorKind::LeftLocked => message,
        _ => format!("{message} [{kind}]"),
    };
    ui.log(tracing::Level::ERROR, &text);
}
