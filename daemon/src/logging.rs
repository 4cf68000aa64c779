//! Logging: journald when running under systemd, stderr otherwise.
//!
//! Log lines carry internal keys, AE titles, statuses, counts, bytes and durations. They never
//! carry a patient name or ID, an accession number, a UID or a path built from them: the
//! types that hold such values print none of them in `Debug`. Nor bytes a peer sent: errors
//! from the upper layer are described by [`crate::ul_error`] (PDU types and lengths only),
//! AE titles outside the AE repertoire are refused and logged escaped. Every line on stderr
//! is cut at [`MAX_LINE`] bytes, and colour codes are written only to a terminal.

use std::io::{IsTerminal, Write};

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
        let f = EnvFilter::try_from_env("FIONA_LOG")
            .or_else(|_| EnvFilter::try_from_default_env())
            .unwrap_or_else(|_| EnvFilter::new("info"));
        // Libraries whose warnings and debug lines can carry what a peer sent (rustls names
        // a client's SNI value; ldap3 a directory's answer): errors only, whatever the level
        // asked for.
        ["rustls=error", "ldap3=error"]
            .into_iter()
            .filter_map(|d| d.parse().ok())
            .fold(f, |f, d| f.add_directive(d))
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
                .with_writer(|| Bounded(std::io::stderr()))
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .try_init();
    Sink::Stderr
}

/// The longest log line written, in bytes (the rest is cut, marked).
pub const MAX_LINE: usize = 4096;

/// A writer that cuts each write (one formatted event) at [`MAX_LINE`] bytes.
struct Bounded<W>(W);

impl<W: Write> Write for Bounded<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() <= MAX_LINE {
            return self.0.write_all(buf).map(|()| buf.len());
        }
        let mut end = MAX_LINE - 16;
        // Cut on a UTF-8 character boundary.
        while end > 0 && (buf[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        self.0.write_all(&buf[..end])?;
        self.0.write_all(b" [line cut]\n")?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_short_ones_kept() {
        let mut out = Vec::new();
        let short = b"a short line\n";
        assert_eq!(Bounded(&mut out).write(short).unwrap(), short.len());
        assert_eq!(out, short);
        out.clear();
        let long = "é".repeat(MAX_LINE);
        let n = Bounded(&mut out).write(long.as_bytes()).unwrap();
        assert_eq!(n, long.len());
        assert!(out.len() <= MAX_LINE, "{}", out.len());
        let text = String::from_utf8(out).expect("cut on a character boundary");
        assert!(text.ends_with(" [line cut]\n"));
    }
}
