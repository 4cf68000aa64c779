//! Date shifting for DA and DT values.
//!
//! A project removes, keeps or shifts dates. A shift is either fixed for the project, or (the
//! default) per participant: `HMAC-SHA256(project secret, "fiona-date-v1\0" || pseudonym)`
//! picks an offset uniformly in the configured range of days. The offset is the same for
//! every study of a participant, so intervals between a participant's studies are kept, and
//! unrelated between participants and projects. (The old system shifted every date of every
//! project by the same 42 days; legacy mode can still do that as a fixed shift.)
//!
//! Shifting keeps the value's form:
//!
//! * DA `YYYYMMDD` shifts by whole days; partial dates keep their precision (`YYYYMM` and
//!   `YYYY` are shifted from their first day and cut back); the legacy ACR-NEMA form
//!   `YYYY.MM.DD` is written back in the same form; ranges (`A-B`) and multiple values
//!   (`\`) shift each part.
//! * DT shifts its date part and keeps the time, fractional seconds and time-zone suffix
//!   (`&ZZXX`) exactly as they were.
//!
//! A value that is not a date is an error (the engine then removes it rather than pass it
//! on unshifted).

use time::{Date, Duration, Month};

/// Why a value could not be shifted. Carries no part of the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DateError {
    #[error("not a DICOM date (DA)")]
    NotADate,
    #[error("not a DICOM date-time (DT)")]
    NotADateTime,
    #[error("shifted date is out of range")]
    OutOfRange,
}

/// The per-participant offset in days, uniform in `min..=max` (a `min > max` range is
/// treated as `max..=min`).
pub fn participant_offset(key: &[u8; 32], pseudonym: &str, min: i32, max: i32) -> i32 {
    let (lo, hi) = if min <= max { (min, max) } else { (max, min) };
    let span = (i64::from(hi) - i64::from(lo) + 1) as u64;
    let tag = super::keyed_hash(key, b"fiona-date-v1\0", pseudonym.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&tag[..8]);
    // Modulo bias is below 2^-40 for any span that fits in i32.
    (i64::from(lo) + (u64::from_be_bytes(b) % span) as i64) as i32
}

fn parse_ymd(y: &str, m: &str, d: &str) -> Option<Date> {
    let y: i32 = y.parse().ok()?;
    let m: u8 = m.parse().ok()?;
    let d: u8 = d.parse().ok()?;
    Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn shifted(d: Date, days: i32) -> Result<Date, DateError> {
    d.checked_add(Duration::days(i64::from(days)))
        .filter(|r| (1..=9999).contains(&r.year()))
        .ok_or(DateError::OutOfRange)
}

fn ymd(d: Date) -> String {
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Shift one DA value (no backslash, no range).
fn shift_one_da(v: &str, days: i32) -> Result<String, DateError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(String::new());
    }
    if v.len() == 10 && v.as_bytes()[4] == b'.' && v.as_bytes()[7] == b'.' {
        let d = parse_ymd(&v[0..4], &v[5..7], &v[8..10]).ok_or(DateError::NotADate)?;
        let s = ymd(shifted(d, days)?);
        return Ok(format!("{}.{}.{}", &s[0..4], &s[4..6], &s[6..8]));
    }
    if !all_digits(v) {
        return Err(DateError::NotADate);
    }
    match v.len() {
        8 => {
            let d = parse_ymd(&v[0..4], &v[4..6], &v[6..8]).ok_or(DateError::NotADate)?;
            Ok(ymd(shifted(d, days)?))
        }
        6 => {
            let d = parse_ymd(&v[0..4], &v[4..6], "01").ok_or(DateError::NotADate)?;
            Ok(ymd(shifted(d, days)?)[..6].to_string())
        }
        4 => {
            let d = parse_ymd(v, "01", "01").ok_or(DateError::NotADate)?;
            Ok(ymd(shifted(d, days)?)[..4].to_string())
        }
        _ => Err(DateError::NotADate),
    }
}

/// Shift a DA value: single, multiple (`\`) or a range (`A-B`, `-B`, `A-`).
pub fn shift_da(value: &str, days: i32) -> Result<String, DateError> {
    let mut out = Vec::new();
    for part in value.trim_end_matches(['\0', ' ']).split('\\') {
        if let Some((a, b)) = part.split_once('-') {
            out.push(format!(
                "{}-{}",
                shift_one_da(a, days)?,
                shift_one_da(b, days)?
            ));
        } else {
            out.push(shift_one_da(part, days)?);
        }
    }
    Ok(out.join("\\"))
}

/// Shift one DT value: the date part moves, the rest is kept as it was.
fn shift_one_dt(v: &str, days: i32) -> Result<String, DateError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(String::new());
    }
    // Split off the time-zone suffix (&ZZXX); a '-' inside the first 8 characters would be a
    // range, not handled here.
    let (main, tz) = match v.get(4..).and_then(|s| s.find(['+', '-'])) {
        Some(i) => v.split_at(4 + i),
        None => (v, ""),
    };
    let digits_end = main.find('.').unwrap_or(main.len());
    if !all_digits(&main[..digits_end]) || digits_end < 4 {
        return Err(DateError::NotADateTime);
    }
    let date_len = digits_end.min(8);
    let date_part = &main[..date_len];
    let shifted_date = shift_one_da(date_part, days).map_err(|_| DateError::NotADateTime)?;
    Ok(format!("{shifted_date}{}{tz}", &main[date_len..]))
}

/// Shift a DT value (multiple values separated by `\` shift each).
pub fn shift_dt(value: &str, days: i32) -> Result<String, DateError> {
    value
        .trim_end_matches(['\0', ' '])
        .split('\\')
        .map(|p| shift_one_dt(p, days))
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.join("\\"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn da_forms() {
        assert_eq!(shift_da("20240229", 42).unwrap(), "20240411");
        assert_eq!(shift_da("20241231", 42).unwrap(), "20250211");
        assert_eq!(shift_da("20240301", -1).unwrap(), "20240229");
        assert_eq!(shift_da("202402", 42).unwrap(), "202403");
        assert_eq!(shift_da("2024", 400).unwrap(), "2025");
        assert_eq!(shift_da("2024.02.29", 42).unwrap(), "2024.04.11");
        assert_eq!(
            shift_da("20240101-20240131", 1).unwrap(),
            "20240102-20240201"
        );
        assert_eq!(shift_da("-20240131", 1).unwrap(), "-20240201");
        assert_eq!(
            shift_da("20240101\\20240102 ", 1).unwrap(),
            "20240102\\20240103"
        );
        assert_eq!(shift_da("", 5).unwrap(), "");
        for bad in ["2024023", "20241301", "20240230", "yesterday", "2024-02"] {
            assert!(shift_da(bad, 1).is_err(), "{bad}");
        }
        assert_eq!(shift_da("99991231", 1), Err(DateError::OutOfRange));
    }

    #[test]
    fn dt_keeps_time_fraction_and_zone() {
        assert_eq!(
            shift_dt("20240229101530.123456+0100", 42).unwrap(),
            "20240411101530.123456+0100"
        );
        assert_eq!(shift_dt("20240229101530", 1).unwrap(), "20240301101530");
        assert_eq!(shift_dt("2024022910", 1).unwrap(), "2024030110");
        assert_eq!(shift_dt("202402-0500", 31).unwrap(), "202403-0500");
        assert_eq!(shift_dt("2024", 1).unwrap(), "2024");
        assert!(shift_dt("2024XX29", 1).is_err());
    }

    #[derive(serde::Deserialize)]
    struct Legacy {
        dates_legacy_fixed_shift_days: i32,
        date_vectors: Vec<serde_json::Value>,
    }

    /// The old system's fixed 42-day shift reproduces its vectors.
    #[test]
    fn legacy_date_vectors() {
        let v: Legacy =
            serde_json::from_str(include_str!("../../data/fiona-legacy/uid-vectors.json")).unwrap();
        assert_eq!(v.date_vectors.len(), 3);
        for d in &v.date_vectors {
            let (input, output) = (d["input"].as_str().unwrap(), d["output"].as_str().unwrap());
            let got = match d["vr"].as_str().unwrap() {
                "DA" => shift_da(input, v.dates_legacy_fixed_shift_days),
                "DT" => shift_dt(input, v.dates_legacy_fixed_shift_days),
                other => panic!("{other}"),
            };
            assert_eq!(got.unwrap(), output);
        }
    }

    #[test]
    fn participant_offsets_are_stable_spread_and_in_range() {
        let k = [3u8; 32];
        let a = participant_offset(&k, "PROJ001", -365, -30);
        assert_eq!(a, participant_offset(&k, "PROJ001", -365, -30));
        assert!((-365..=-30).contains(&a));
        let offsets: std::collections::HashSet<i32> = (0..500)
            .map(|i| participant_offset(&k, &format!("PROJ{i:03}"), -365, -30))
            .collect();
        assert!(offsets.len() > 250, "offsets spread over the range");
        assert!(offsets.iter().all(|o| (-365..=-30).contains(o)));
        assert_ne!(a, participant_offset(&[4u8; 32], "PROJ001", -365, -30));
        assert_eq!(participant_offset(&k, "X", 7, 7), 7);
    }
}
