//! Values written by de-identification: length limits and padding per VR, text cut only at
//! character boundaries, and dummy values for the `D` action.
//!
//! Limits are PS3.5 Table 6.2-1. For text VRs the limit counts characters, so a multi-byte
//! value (UTF-8, ISO 2022 sets) is cut at a character boundary, never inside one. Values are
//! padded to an even length: UI with NUL, other text with a space, binary with NUL.

/// Maximum length of one value, in characters (text) or bytes (the rest); `None` when the VR
/// has no practical limit.
pub fn max_len(vr: &str) -> Option<usize> {
    Some(match vr {
        "AE" => 16,
        "AS" => 4,
        "CS" => 16,
        "DA" => 8,
        "DS" => 16,
        "DT" => 26,
        "IS" => 12,
        "LO" => 64,
        "LT" => 10_240,
        "PN" => 64, // per component group
        "SH" => 16,
        "ST" => 1024,
        "TM" => 14,
        "UI" => 64,
        _ => return None,
    })
}

/// Cut a text value to the VR's limit at a character boundary (each backslash-separated
/// value separately; for PN each `=`-separated component group).
pub fn fit(vr: &str, value: &str) -> String {
    let Some(limit) = max_len(vr) else {
        return value.to_string();
    };
    let cut = |s: &str| -> String { s.chars().take(limit).collect() };
    value
        .split('\\')
        .map(|v| {
            if vr == "PN" {
                v.split('=').map(cut).collect::<Vec<_>>().join("=")
            } else {
                cut(v)
            }
        })
        .collect::<Vec<_>>()
        .join("\\")
}

/// Pad encoded bytes to an even length as the VR requires.
pub fn pad(vr: &str, mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() % 2 == 1 {
        let text = !matches!(
            vr,
            "UI" | "OB" | "OD" | "OF" | "OL" | "OV" | "OW" | "UN" | "SQ"
        );
        bytes.push(if text { b' ' } else { 0 });
    }
    bytes
}

/// The dummy value of the `D` action for a text VR: valid for the VR, obviously not real,
/// and carrying nothing from the original. `None` for VRs where the engine must decide
/// (sequences, binary values, UIDs: those are mapped, not dummied).
pub fn dummy(vr: &str) -> Option<&'static str> {
    Some(match vr {
        "AE" => "ANONYMIZED",
        "AS" => "000Y",
        "CS" => "ANONYMIZED",
        "DA" => "19000101",
        "DS" => "0",
        "DT" => "19000101000000",
        "IS" => "0",
        "LO" | "LT" | "SH" | "ST" | "UC" | "UT" => "ANONYMIZED",
        "PN" => "ANONYMIZED",
        "TM" => "000000",
        "UR" => "http://example.invalid/",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_at_character_boundaries() {
        let long = "Æ".repeat(70);
        let f = fit("LO", &long);
        assert_eq!(f.chars().count(), 64);
        assert!(std::str::from_utf8(f.as_bytes()).is_ok());
        assert_eq!(fit("SH", "ABCDEFGHIJKLMNOPQRST"), "ABCDEFGHIJKLMNOP");
        assert_eq!(fit("SH", "A\\BCDEFGHIJKLMNOPQRST"), "A\\BCDEFGHIJKLMNOPQ");
        let pn = format!("{}={}", "a".repeat(70), "山".repeat(70));
        let f = fit("PN", &pn);
        let groups: Vec<&str> = f.split('=').collect();
        assert_eq!(groups[0].chars().count(), 64);
        assert_eq!(groups[1].chars().count(), 64);
        assert_eq!(fit("UT", &"x".repeat(100_000)).len(), 100_000);
    }

    #[test]
    fn padding() {
        assert_eq!(pad("UI", b"1.2.3".to_vec()), b"1.2.3\0");
        assert_eq!(pad("LO", b"abc".to_vec()), b"abc ");
        assert_eq!(pad("LO", b"ab".to_vec()), b"ab");
        assert_eq!(pad("OB", vec![1]), vec![1, 0]);
    }

    #[test]
    fn dummies_fit_their_vr() {
        for vr in [
            "AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM",
        ] {
            let d = dummy(vr).unwrap();
            assert_eq!(fit(vr, d), d, "{vr}");
            assert!(!d.is_empty());
        }
        assert_eq!(dummy("SQ"), None);
        assert_eq!(dummy("UI"), None);
        // the dummy date is a real date
        assert!(crate::deid::dates::shift_da(dummy("DA").unwrap(), 0).is_ok());
    }
}
