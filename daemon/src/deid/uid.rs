//! UID remapping: every identifying UID is replaced by a deterministic function of the
//! original UID and the project's secret, and UIDs fiona itself issued are recognised and kept.
//!
//! # Conformant mode (default)
//!
//! `2.25.<n>`, where `n` is the decimal value of a 128-bit UUID (RFC 9562 version 8, the
//! "custom" version) whose 122 free bits are an 80-bit *body*, the first bits of
//! `HMAC-SHA256(project secret, "fiona-uid-v2\0" || uid)`, followed by a 42-bit *mark*, the
//! first bits of `HMAC-SHA256(project secret, "fiona-uid-mark-v2\0" || body)`. So:
//!
//! * the same UID always maps to the same output within a project, in any order, in any
//!   process, on any box with the same secret;
//! * different projects (different secrets) get unrelated outputs;
//! * without the secret the original cannot be recovered or guessed from the output;
//! * every output is a valid UID: `2.25.` plus at most 39 digits (at most 44 characters),
//!   digits and dots only, and no component with a leading zero (a decimal integer has none);
//! * two different inputs collide with probability about 2^-80 per pair (a project with a
//!   billion UIDs: about 4 in 10 million that any two collide);
//! * **fiona recognises its own outputs** ([`UidMapper::is_issued`]): the mark verifies only
//!   under the project's secret, and a UID fiona did not issue passes for one with probability
//!   2^-42 (and only if it already is a version-8 `2.25` UUID). An issued UID is kept as it
//!   is, never mapped again: a series a workstation derives from research data and sends
//!   back keeps the research Study Instance UID, Frame of Reference and references, and
//!   joins the research study (issue 12 item 8). Keeping it reveals nothing: it is
//!   already a pseudonymous value of this project.
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
//! and an unpadded copy of one UID map differently. Its outputs carry no mark: a UID of its
//! exact shape (the root, one component of 45 digits, 63 characters) counts as issued, so
//! derived series from a legacy research PACS are matched; the root belongs to the old
//! system's organisation, and nothing else it issues has that shape.

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
    /// A UID this mapper issued is returned as it is.
    pub fn map(&self, raw: &str, kind: UidKind) -> String {
        if self.is_issued(raw) {
            return trim_uid(raw).to_string();
        }
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

    /// Whether `raw` (padding ignored) is a UID this mapper issued: in conformant mode its
    /// mark verifies under the project secret; in legacy mode it has the old system's shape.
    pub fn is_issued(&self, raw: &str) -> bool {
        let uid = trim_uid(raw);
        match self {
            UidMapper::Conformant { key } => {
                let Some(n) = uid
                    .strip_prefix("2.25.")
                    .filter(|d| is_valid_uid(d) && !d.contains('.'))
                    .and_then(|d| d.parse::<u128>().ok())
                else {
                    return false;
                };
                let Some(free) = free_bits(n) else {
                    return false;
                };
                let body = free >> MARK_BITS;
                free & MARK_MASK == mark(key, body)
            }
            UidMapper::Legacy { .. } => uid
                .strip_prefix(LEGACY_ROOT)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|d| uid.len() == 63 && d.bytes().all(|b| b.is_ascii_digit())),
        }
    }
}

/// Bits of the mark in a conformant UID's 122 free bits; the body has the other 80.
const MARK_BITS: u32 = 42;
const MARK_MASK: u128 = (1 << MARK_BITS) - 1;
const BODY_BITS: u32 = 122 - MARK_BITS;

/// The mark of an 80-bit body: the first 42 bits of its keyed hash.
fn mark(key: &[u8; 32], body: u128) -> u128 {
    let h = super::keyed_hash(key, b"fiona-uid-mark-v2\0", &body.to_be_bytes()[6..]);
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    u128::from_be_bytes(b) >> (128 - MARK_BITS)
}

/// RFC 9562 version 8 layout: custom_a (48 bits), version 0b1000 (4), custom_b (12),
/// variant 0b10 (2), custom_c (62). 122 free bits in, the UUID out.
fn uuid_v8(free: u128) -> u128 {
    ((free >> 74) << 80)
        | (0x8 << 76)
        | (((free >> 62) & 0xFFF) << 64)
        | (0b10 << 62)
        | (free & ((1 << 62) - 1))
}

/// The 122 free bits of a version-8 UUID, or None when version or variant differ.
fn free_bits(u: u128) -> Option<u128> {
    if (u >> 76) & 0xF != 0x8 || (u >> 62) & 0b11 != 0b10 {
        return None;
    }
    Some(((u >> 80) << 74) | (((u >> 64) & 0xFFF) << 62) | (u & ((1 << 62) - 1)))
}

fn conformant(key: &[u8; 32], uid: &str) -> String {
    let h = super::keyed_hash(key, b"fiona-uid-v2\0", uid.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    let body = u128::from_be_bytes(b) >> (128 - BODY_BITS);
    let free = (body << MARK_BITS) | mark(key, body);
    format!("2.25.{}", uuid_v8(free))
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

pub use crate::part10::is_valid_uid;

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

    /// Every output is recognised as issued by its own project and by no other; originals,
    /// other 2.25 UUIDs and near misses (one digit changed) are not.
    #[test]
    fn issued_uids_are_recognised_and_kept() {
        let a = UidMapper::Conformant { key: key(1) };
        let b = UidMapper::Conformant { key: key(2) };
        let mut near_misses = 0;
        for i in 0..2_000u32 {
            let orig = format!("1.2.826.0.1.3680043.8.498.{i}");
            let x = a.map(&orig, UidKind::Other);
            assert!(a.is_issued(&x), "{x}");
            assert!(a.is_issued(&format!("{x}\0")), "padding ignored");
            assert!(!b.is_issued(&x), "another project's secret");
            assert!(!a.is_issued(&orig));
            assert_eq!(a.map(&x, UidKind::Study), x, "never mapped twice");
            assert_eq!(a.map(&x, UidKind::Other), x);
            // Change the last digit: the mark no longer verifies (or the UUID is not v8).
            let mut d = x.clone().into_bytes();
            let last = d.len() - 1;
            d[last] = if d[last] == b'9' { b'0' } else { d[last] + 1 };
            let y = String::from_utf8(d).unwrap();
            if !a.is_issued(&y) {
                near_misses += 1;
            }
        }
        assert_eq!(near_misses, 2_000);
        // A random version-4 UUID, a version-8 UUID with a wrong mark, and junk.
        let v4 = "2.25.329800735698586629295641978511506172918";
        assert!(!a.is_issued(v4));
        let forged = format!("2.25.{}", uuid_v8(12345 << MARK_BITS));
        assert!(!a.is_issued(&forged));
        for junk in [
            "",
            "2.25.",
            "2.25.01",
            "2.25.1.2",
            "2.25.999999999999999999999999999999999999999999",
        ] {
            assert!(!a.is_issued(junk), "{junk}");
        }
        // Legacy: its own shape only.
        let l = UidMapper::Legacy {
            project: "PROJ".into(),
        };
        let x = l.map("1.2.826.0.1.3680043.8.498.1", UidKind::Study);
        assert!(l.is_issued(&x));
        assert_eq!(l.map(&x, UidKind::Other), x);
        assert!(!l.is_issued("1.3.6.1.4.1.45037.12"));
        assert!(!l.is_issued("1.2.826.0.1.3680043.8.498.1"));
    }

    /// The UUID layout round-trips and sets version 8 and variant 10.
    #[test]
    fn uuid_layout_round_trips() {
        for free in [
            0u128,
            1,
            (1 << 122) - 1,
            0x2AAA_AAAA_AAAA_AAAA_AAAA_AAAA_AAAA_AAAA >> 6,
        ] {
            let u = uuid_v8(free);
            assert_eq!((u >> 76) & 0xF, 8);
            assert_eq!((u >> 62) & 0b11, 0b10);
            assert_eq!(free_bits(u), Some(free));
        }
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
