//! Logs as people and log collectors read them: text, coloured only on a terminal (a
//! redirected log gets no escape codes), or one JSON object per line.

use std::io::IsTerminal;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the process's subscriber: `RUST_LOG` when set, else `default_filter`, on
/// standard error or standard output.
pub fn init_logging(format: LogFormat, default_filter: &str, to_stderr: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let terminal = if to_stderr { std::io::stderr().is_terminal() } else { std::io::stdout().is_terminal() };
    match (format, to_stderr) {
        (LogFormat::Text, true) => builder.with_ansi(terminal).with_writer(std::io::stderr).init(),
        (LogFormat::Text, false) => builder.with_ansi(terminal).init(),
        (LogFormat::Json, true) => builder.json().with_writer(std::io::stderr).init(),
        (LogFormat::Json, false) => builder.json().init(),
    }
}
