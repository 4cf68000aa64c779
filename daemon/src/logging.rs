//! Logging: journald when running under systemd, stderr otherwise.
//!
//! Log lines carry internal keys, AE titles, statuses, counts, bytes and durations. They never
//! carry a patient name or ID, an accession number, a UID or a path built from them: the
//! types that hold such values print none of them in `Debug`.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Where log lines went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Journald,
    Stderr,
}

/// Install the global subscriber. `FIONA_LOG` (or `RUST_LOG`) sets the filter, default `info`.
pub fn init() -> Sink {
    let filter = || {
        EnvFilter::try_from_env("FIONA_LOG")
            .or_else(|_| EnvFilter::try_from_default_env())
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    // systemd sets JOURNAL_STREAM when stdout/stderr are connected to the journal.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer.with_syslog_identifier("fiona".into());
            if tracing_subscriber::registry()
                .with(filter())
                .with(layer)
                .try_init()
                .is_ok()
            {
                return Sink::Journald;
            }
        }
    }
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .try_init();
    Sink::Stderr
}
