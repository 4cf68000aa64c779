//! What the admin commands print besides tables: JSON for scripts (`--json`), and sizes, ages
//! and times in words.

use std::io::Write;

/// Print JSON pretty, so the output is stable for people and scripts alike. A reader that
/// stops early (`| head`) is not an error.
pub fn print_json(v: &serde_json::Value) -> Result<(), String> {
    let mut text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    text.push('\n');
    write_stdout(text.as_bytes())
}

/// Write bytes to standard output; a closed pipe ends the output quietly.
pub fn write_stdout(bytes: &[u8]) -> Result<(), String> {
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| e.to_string()),
    }
}

pub use crate::evict::human_bytes;

/// `90s`, `5m`, `3h`, `2d`.
pub fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub use crate::clock::iso_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_age(119), "119s");
        assert_eq!(human_age(7199), "119m");
        assert_eq!(human_age(172_800), "2d");
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00Z");
    }
}
