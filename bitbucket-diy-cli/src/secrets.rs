//! Passwords and tokens: never from our own command line (other users see it in `ps`), except a
//! token given explicitly with `--token VALUE`.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use bitbucket_diy_core::config::{ConfigError, SecretSource, env_var_for};
use bitbucket_diy_core::{Error, Result};
use secrecy::SecretString;

use crate::cli::RemoteArgs;

/// The variable that holds the Bitbucket password when the configuration names no source.
pub fn password_var() -> String {
    env_var_for("bitbucket.password")
}

/// The Bitbucket password: from the configured source, else from `BITBUCKET_DIY_BITBUCKET_PASSWORD`
/// (already applied when a configuration file was loaded), else a prompt when a human is there.
pub fn bitbucket_password(source: &SecretSource, user: &str, url: &str) -> Result<SecretString> {
    if let Some(password) = source.resolve("bitbucket.password")? {
        return Ok(password);
    }
    if let Ok(password) = std::env::var(password_var()) {
        return Ok(SecretString::from(password));
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        let term = console::Term::stderr();
        let _ = term.write_str(&format!("Password of {user} at {url}: "));
        // A blocking read on a runtime thread: tell tokio (the CLI's runtime is multi-threaded).
        let password = tokio::task::block_in_place(|| term.read_secure_line()).map_err(|e| Error::Io {
            action: "reading the password from",
            path: "the terminal".into(),
            source: e,
        })?;
        if !password.is_empty() {
            return Ok(SecretString::from(password));
        }
    }
    Err(ConfigError::Missing {
        key: "bitbucket.password".to_owned(),
        hint: format!(
            "set {} (or password_env / password_file in [bitbucket]); no terminal to prompt on",
            password_var()
        ),
    }
    .into())
}

/// The token of `unlock`/`cancel`/`status`: `--token-file`, `--token VALUE` or `--token -`
/// (stdin), else the environment variable `env_var`. `None` when none is given.
pub fn token(args: &RemoteArgs, env_var: &str) -> Result<Option<String>> {
    let (origin, raw) = if let Some(file) = &args.token_file {
        (file.display().to_string(), read_first_line(file)?)
    } else if let Some(value) = &args.token {
        if value == "-" {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map_err(|e| Error::Io {
                action: "reading the token from",
                path: "stdin".into(),
                source: e,
            })?;
            ("stdin".to_owned(), line)
        } else {
            ("--token".to_owned(), value.clone())
        }
    } else {
        match std::env::var(env_var) {
            Ok(value) => (env_var.to_owned(), value),
            Err(_) => return Ok(None),
        }
    };
    let token = raw.trim().to_owned();
    if token.is_empty() {
        return Err(crate::commands::invalid("token", format!("the token from {origin} is empty")));
    }
    Ok(Some(token))
}

fn read_first_line(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::commands::invalid("--token-file", format!("cannot read {}: {e}", path.display())))?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}
