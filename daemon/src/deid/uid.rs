//! UID remapping: every identifying UID is replaced by a deterministic function of the
//! original UID and the project's secret.
//!
//! # Conformant mode (default)
//!
//! `2.25.<n>`, where `n` is the decimal value of a 128-bit UUID (RFC 9562 version 8, the
//! "custom" version) whose 122 free bits are the first bits of
//! `HMAC-SHA256(project secret, "fiona-uid-v1\0" || uid)`. So:
//!
//! * the same UID always maps to the same output within a project, in any order, in any
//!   process, on any box with the same secret;
//! * different projects (different secrets) get unrelated outputs;
//! * without the secret the original cannot be recovered or guessed from the output;
//! * every output is a valid UID: `2.25.` plus at most 39 digits (at most 44 characters),
//!   digits and dots only, and no component with a leading zero (a decimal integer has none);
//! * two different inputs collide with probability about 2^-122 per pair.
//!
//! The input is the UID's value without trailing padding (NUL or space), so a UID and its
//! padded form map to the same output.
//!
//! # Legacy mode (opt-in per project)
//!
//! Reproduces the identifiers of the old FIONA anonymizer bit for bit (vectors in
//! `shared/fiona-legacy/uid-vectors.json`): root `1.3.6.1.4.1.45037`, `sha256(value ||
//! project)` with each hex digit mapped through `0123456789012345`, cut to 63 characters.
//! It is weaker and documented as such: the project name is the only "secret", so anyone who
//! knows it can confirm a guessed original UID; outputs may have a component with a leading
//! zero (not a valid UID); and some inputs are hashed with their NUL pad byte, so a padded
//! and an unpadded copy of one UID map differently.

use sha2::{Digest, Sha256};

/// Root of the legacy FIONA anonymizer's UIDs.
pub const LEGACY_ROOT: &str = "1.3.6.1.4.1.45037";

/// Which attribute a UID comes from; legacy mode hashes some with their pad byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UidKind {
    /// Study Instance UID (legacy: hashed without padding).
    Study,
    /// Any other UID (legacy: hashed as stored, with the NUL pad of an odd-length value).
    Other,
}

/// How a project maps UIDs.
#[derive(Clone)]
pub enum UidMapper {
    Conformant { key: [u8; 32] },
    Legacy { project: String },
}

impl std::fmt::Debug for UidMapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        match self {
            UidMapper::Conformant { .. } => f.write_str("UidMapper::Conformant"),
            UidMapper::Legacy { .. } => f.write_str("UidMapper::Legacy"),
        }
    }
}

/// A UID's value without trailing NUL or space padding.
pub fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

impl UidMapper {
    /// Map one UID. `raw` is the value as stored (it may carry a trailing pad byte).
    pub fn map(&self, raw: &str, kind: UidKind) -> String {
        match self {
            UidMapper::Conformant { key } => conformant(key, trim_uid(raw)),
            UidMapper::Legacy { project } => {
                let value = match kind {
                    UidKind::Study => trim_uid(raw).to_string(),
                    UidKind::Other => {
                        let t = trim_uid(raw);
                        if t.len() % 2 == 1 {
                            format!("{t}\0")
                        } else {
                            t.to_string()
                        }
                    }
                };
                let digits = legacy_digits(format!("{value}{project}").as_bytes());
                let mut out = format!("{LEGACY_ROOT}.{digits}");
                out.truncate(63);
                out
            }
        }
    }
}

fn conformant(key: &[u8; 32], uid: &str) -> String {
    let tag = super::keyed_hash(key, b"fiona-uid-v1\0", uid.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&tag[..16]);
    // RFC 9562: version 8 (custom) in the high nibble of byte 6, variant 10 in byte 8.
    b[6] = (b[6] & 0x0F) | 0x80;
    b[8] = (b[8] & 0x3F) | 0x80;
    format!("2.25.{}", u128::from_be_bytes(b))
}

/// The legacy tool's "decimal digest": sha256, hex digits a..f mapped to 0..5.
pub fn legacy_digits(input: &[u8]) -> String {
    let d = Sha256::digest(input);
    let mut out = String::with_capacity(64);
    for byte in d.iter() {
        for nibble in [byte >> 4, byte & 0x0F] {
            out.push(char::from(b'0' + (nibble % 10)));
        }
    }
    out
}

/// Whether a string is a valid UID (PS3.5 9.1): at most 64 characters, components of digits
/// separated by dots, no empty component, no leading zero in a multi-digit component.
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && !(c.len() > 1 && c.starts_with('0'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn conformant_is_valid_deterministic_and_per_project() {
        let a = UidMapper::Conformant { key: key(1) };
        let b = UidMapper::Conformant { key: key(2) };
        let u = "1.2.826.0.1.3680043.8.498.1";
        let x = a.map(u, UidKind::Study);
        assert!(is_valid_uid(&x), "{x}");
        assert!(x.starts_with("2.25.") && x.len() <= 44);
        assert_eq!(x, a.map(u, UidKind::Other), "kind does not matter");
        assert_eq!(
            x,
            a.map(&format!("{u}\0"), UidKind::Study),
            "padding ignored"
        );
        assert_ne!(x, b.map(u, UidKind::Study));
        assert_ne!(x, a.map("1.2.826.0.1.3680043.8.498.2", UidKind::Study));
    }

    #[derive(serde::Deserialize)]
    struct Vectors {
        project: String,
        vectors: Vec<serde_json::Value>,
    }

    /// Every identifier vector of the legacy system is reproduced.
    #[test]
    fn legacy_matches_vectors() {
        let text = include_str!("../../data/fiona-legacy/uid-vectors.json");
        let v: Vectors = serde_json::from_str(text).unwrap();
        let m = UidMapper::Legacy {
            project: v.project.clone(),
        };
        let mut checked = 0;
        for vec in &v.vectors {
            let tag = vec["tag"].as_str().unwrap();
            let out = vec["output"].as_str().unwrap();
            match tag {
                "StudyInstanceUID"
                | "SeriesInstanceUID"
                | "SOPInstanceUID"
                | "FrameOfReferenceUID" => {
                    let kind = if tag == "StudyInstanceUID" {
                        UidKind::Study
                    } else {
                        UidKind::Other
                    };
                    assert_eq!(m.map(vec["input"].as_str().unwrap(), kind), out, "{vec}");
                }
                "StudyID" => {
                    let study = vec["input_study_uid"].as_str().unwrap();
                    let d = legacy_digits(format!("{study}{}", v.project).as_bytes());
                    assert_eq!(&d[..16], out);
                }
                "AccessionNumber" => {
                    let d = legacy_digits(vec["input"].as_str().unwrap().as_bytes());
                    assert_eq!(&d[..16], out);
                }
                other => panic!("unknown vector kind {other}"),
            }
            checked += 1;
        }
        assert_eq!(checked, v.vectors.len());
        assert!(checked >= 9);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn conformant_always_valid(uid in "[0-9]{1,5}(\\.[0-9]{1,8}){0,12}", k in any::<u8>()) {
            let m = UidMapper::Conformant { key: key(k) };
            let out = m.map(&uid, UidKind::Other);
            prop_assert!(is_valid_uid(&out), "{}", out);
            prop_assert_eq!(out.clone(), m.map(&uid, UidKind::Other));
        }
    }

    /// Injective on a large sample (no two of 200,000 distinct UIDs collide).
    #[test]
    fn conformant_injective_on_a_large_sample() {
        let m = UidMapper::Conformant { key: key(7) };
        let mut seen = std::collections::HashSet::new();
        for i in 0..200_000u32 {
            let u = format!("1.2.826.0.1.3680043.8.498.{}.{}", i / 1000, i % 1000);
            assert!(seen.insert(m.map(&u, UidKind::Other)), "collision at {u}");
        }
    }
}
