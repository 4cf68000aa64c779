//! DICOM PS3.15 Annex E, Table E.1-1: the Basic Application Level Confidentiality Profile and
//! its options, as data (`daemon/data/ps3.15/`, 621 rows, MIT licence, provenance in its
//! README) interpreted here.
//!
//! # From table row to one action
//!
//! A row has a basic-profile code and, for some options, an option code. For a project's
//! [`ProfileOptions`]:
//!
//! 1. The codes of the selected options that name this row are collected. If any is `C`
//!    (clean) it wins, else `K` (keep) wins: when a descriptor is also device identity, and
//!    a project both retains device identity and cleans descriptors, cleaning is the safer
//!    reading and still keeps the attribute. The two date options exclude each other
//!    ([`ProfileOptions::validate`]).
//! 2. Without an option code the basic code applies. Combined codes are resolved to the
//!    strongest action that keeps the attribute present, because without knowing the IOD's
//!    type for the attribute (1, 2 or 3) that is the only choice that can never make a valid
//!    instance invalid (a removed Type 1 or 2 attribute would):
//!
//!    | code     | resolved | PS3.15 meaning                                              |
//!    |----------|----------|-------------------------------------------------------------|
//!    | `X/Z`    | `Z`      | X unless Z is needed for IOD conformance (Type 2)          |
//!    | `X/D`    | `D`      | X unless D is needed (Type 1)                               |
//!    | `Z/D`    | `D`      | Z unless D is needed (Type 1)                               |
//!    | `X/Z/D`  | `D`      | X unless Z or D is needed (Type 2 or 1)                     |
//!    | `X/Z/U*` | `U`      | X unless Z or replacing the contained UIDs is needed        |
//!
//!    These apply only to attributes present in the input: an absent attribute is never
//!    added.
//!
//! Masked rows (`(50XX,XXXX)` curves, `(60XX,3000)`/`(60XX,4000)` overlays) match every group
//! of their range. Private attributes (odd groups) are removed unless the project lists them
//! as safe (the `rtnSafePrivOpt` row); attributes the table does not list are handled by the
//! engine's policy for unknown attributes, not here.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

/// One de-identification action (PS3.15 Table E.1-1 codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// X: remove.
    Remove,
    /// Z: replace with a zero-length value (or a dummy if the VR cannot be empty).
    Zero,
    /// D: replace with a non-zero-length dummy value consistent with the VR.
    Dummy,
    /// K: keep (and, for sequences, apply the profile inside).
    Keep,
    /// C: clean: replace with values of similar meaning known not to identify.
    Clean,
    /// U: replace UIDs with the mapped UIDs (inside sequences: the contained UIDs).
    Uid,
}

pub use crate::project::deid::ProfileOptions;

impl ProfileOptions {
    /// (table column, selected) for every option.
    fn columns(&self) -> [(&'static str, bool); 10] {
        [
            ("rtnSafePrivOpt", self.retain_safe_private),
            ("rtnUIDsOpt", self.retain_uids),
            ("rtnDevIdOpt", self.retain_device_identity),
            ("rtnInstIdOpt", self.retain_institution_identity),
            ("rtnPatCharsOpt", self.retain_patient_characteristics),
            ("rtnLongFullDatesOpt", self.retain_full_dates),
            ("rtnLongModifDatesOpt", self.retain_modified_dates),
            ("cleanDescOpt", self.clean_descriptors),
            ("cleanStructContOpt", self.clean_structured_content),
            ("cleanGraphOpt", self.clean_graphics),
        ]
    }
}

/// One row of Table E.1-1 as vendored.
#[derive(Debug, Clone, Deserialize)]
pub struct Row {
    pub name: String,
    pub tag: String,
    #[serde(rename = "basicProfile")]
    pub basic: String,
    #[serde(flatten)]
    pub options: HashMap<String, serde_json::Value>,
}

/// A tag pattern: `value` matched under `mask` (mask bits 1 = must match).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagPattern {
    pub value: u32,
    pub mask: u32,
}

impl TagPattern {
    /// `(gggg,eeee)` with `X` for any hex digit.
    pub fn parse(s: &str) -> Option<TagPattern> {
        let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
        let (g, e) = inner.split_once(',')?;
        if g.len() != 4 || e.len() != 4 {
            return None;
        }
        let mut value = 0u32;
        let mut mask = 0u32;
        for c in g.chars().chain(e.chars()) {
            value <<= 4;
            mask <<= 4;
            if c == 'x' || c == 'X' {
                continue;
            }
            value |= c.to_digit(16)?;
            mask |= 0xF;
        }
        Some(TagPattern { value, mask })
    }

    pub fn matches(&self, tag: u32) -> bool {
        tag & self.mask == self.value
    }
}

/// The action of one basic-profile code, with combined codes resolved (module doc).
pub fn resolve_code(code: &str) -> Option<Action> {
    Some(match code.trim() {
        "X" => Action::Remove,
        "Z" => Action::Zero,
        "D" => Action::Dummy,
        "K" => Action::Keep,
        "C" => Action::Clean,
        "U" => Action::Uid,
        "X/Z" => Action::Zero,
        "X/D" | "Z/D" | "X/Z/D" => Action::Dummy,
        "X/Z/U*" => Action::Uid,
        _ => return None,
    })
}

/// The table, parsed once.
pub struct Table {
    exact: HashMap<u32, Row>,
    masked: Vec<(TagPattern, Row)>,
    private: Row,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("exact", &self.exact.len())
            .field("masked", &self.masked.len())
            .finish_non_exhaustive()
    }
}

const TABLE_JSON: &str = include_str!("../../data/ps3.15/confidentiality_profile_attributes.json");

static STANDARD: LazyLock<Result<Table, String>> = LazyLock::new(|| Table::parse(TABLE_JSON));

impl Table {
    /// The vendored PS3.15 table.
    pub fn standard() -> Result<&'static Table, String> {
        STANDARD.as_ref().map_err(Clone::clone)
    }

    pub fn parse(json: &str) -> Result<Table, String> {
        let rows: Vec<Row> =
            serde_json::from_str(json).map_err(|e| format!("profile table: {e}"))?;
        let mut exact = HashMap::new();
        let mut masked = Vec::new();
        let mut private = None;
        for r in rows {
            if resolve_code(&r.basic).is_none() {
                return Err(format!("row `{}`: unknown code {}", r.name, r.basic));
            }
            if r.tag.contains("WHERE GGGG IS ODD") {
                private = Some(r);
                continue;
            }
            let p = TagPattern::parse(&r.tag)
                .ok_or_else(|| format!("row `{}`: bad tag {}", r.name, r.tag))?;
            if p.mask == u32::MAX {
                if exact.insert(p.value, r).is_some() {
                    return Err(format!("duplicate tag {:08X}", p.value));
                }
            } else {
                masked.push((p, r));
            }
        }
        Ok(Table {
            exact,
            masked,
            private: private.ok_or("no private-attributes row")?,
        })
    }

    /// Every exact tag the table lists.
    pub fn exact_tags(&self) -> impl Iterator<Item = u32> + '_ {
        let mut v: Vec<u32> = self.exact.keys().copied().collect();
        v.sort_unstable();
        v.into_iter()
    }

    /// Number of rows (exact, masked and the private row).
    pub fn len(&self) -> usize {
        self.exact.len() + self.masked.len() + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The row that governs `tag`, if the table lists it.
    pub fn row(&self, tag: u32) -> Option<&Row> {
        if (tag >> 16) % 2 == 1 {
            return Some(&self.private);
        }
        self.exact.get(&tag).or_else(|| {
            self.masked
                .iter()
                .find(|(p, _)| p.matches(tag))
                .map(|(_, r)| r)
        })
    }

    /// The action for `tag` under `opts`, or `None` when the table does not list it.
    pub fn action(&self, tag: u32, opts: &ProfileOptions) -> Option<Action> {
        let row = self.row(tag)?;
        let mut chosen: Option<Action> = None;
        for (col, on) in opts.columns() {
            if !on {
                continue;
            }
            if let Some(code) = row.options.get(col).and_then(|v| v.as_str()) {
                match (resolve_code(code), chosen) {
                    (Some(Action::Clean), _) => chosen = Some(Action::Clean),
                    (Some(a), None) => chosen = Some(a),
                    _ => {}
                }
            }
        }
        chosen.or_else(|| resolve_code(&row.basic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> &'static Table {
        Table::standard().unwrap()
    }

    #[test]
    fn all_621_rows_load() {
        assert_eq!(t().len(), 621);
        // every basic code is known (parse checks), and every row resolves without options
        for tag in t().exact.keys() {
            assert!(t().action(*tag, &ProfileOptions::default()).is_some());
        }
    }

    #[test]
    fn basic_profile_examples() {
        let o = ProfileOptions::default();
        assert_eq!(t().action(0x0008_0050, &o), Some(Action::Zero)); // Accession Number
        assert_eq!(t().action(0x0010_0010, &o), Some(Action::Zero)); // Patient's Name
        assert_eq!(t().action(0x0020_000D, &o), Some(Action::Uid)); // Study Instance UID
        assert_eq!(t().action(0x0008_103E, &o), Some(Action::Remove)); // Series Description
        assert_eq!(t().action(0x0018_1000, &o), Some(Action::Dummy)); // Device Serial: X/Z/D
        assert_eq!(t().action(0x0008_1140, &o), Some(Action::Uid)); // Ref. Image Seq: X/Z/U*
        assert_eq!(t().action(0x0010_1010, &o), Some(Action::Remove)); // Patient's Age
        assert_eq!(
            t().action(0x0028_0010, &o),
            None,
            "Rows is not in the table"
        );
    }

    #[test]
    fn options_change_actions() {
        let full = ProfileOptions {
            retain_full_dates: true,
            ..Default::default()
        };
        let modif = ProfileOptions {
            retain_modified_dates: true,
            ..Default::default()
        };
        assert_eq!(t().action(0x0008_0020, &full), Some(Action::Keep)); // Study Date
        assert_eq!(t().action(0x0008_0020, &modif), Some(Action::Clean));
        let uids = ProfileOptions {
            retain_uids: true,
            ..Default::default()
        };
        assert_eq!(t().action(0x0020_000D, &uids), Some(Action::Keep));
        let chars = ProfileOptions {
            retain_patient_characteristics: true,
            ..Default::default()
        };
        assert_eq!(t().action(0x0010_1010, &chars), Some(Action::Keep));
        let desc = ProfileOptions {
            clean_descriptors: true,
            ..Default::default()
        };
        assert_eq!(t().action(0x0008_103E, &desc), Some(Action::Clean));
        assert!(ProfileOptions {
            retain_full_dates: true,
            retain_modified_dates: true,
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn masks_and_private() {
        let o = ProfileOptions::default();
        assert_eq!(t().action(0x5002_3000, &o), Some(Action::Remove)); // curve data
        assert_eq!(t().action(0x6002_3000, &o), Some(Action::Remove)); // overlay data
        assert_eq!(t().action(0x601E_4000, &o), Some(Action::Remove)); // overlay comments
        assert_eq!(
            t().action(0x6000_0010, &o),
            None,
            "overlay rows are not listed"
        );
        assert_eq!(t().action(0x0009_1001, &o), Some(Action::Remove)); // private
        let graphics = ProfileOptions {
            clean_graphics: true,
            ..Default::default()
        };
        assert_eq!(t().action(0x6004_3000, &graphics), Some(Action::Clean));
        let safe = ProfileOptions {
            retain_safe_private: true,
            ..Default::default()
        };
        assert_eq!(t().action(0x0029_1010, &safe), Some(Action::Clean));
    }

    #[test]
    fn clean_wins_over_keep() {
        let tbl = Table::parse(
            r#"[{"name":"A","tag":"(0008,1010)","basicProfile":"X/Z/D","rtnDevIdOpt":"K","cleanDescOpt":"C"},
                {"name":"P","tag":"(GGGG,EEEE) WHERE GGGG IS ODD","basicProfile":"X"}]"#,
        )
        .unwrap();
        let both = ProfileOptions {
            retain_device_identity: true,
            clean_descriptors: true,
            ..Default::default()
        };
        assert_eq!(tbl.action(0x0008_1010, &both), Some(Action::Clean));
    }

    #[test]
    fn combined_codes_resolve_to_presence_keeping_actions() {
        assert_eq!(resolve_code("X/Z"), Some(Action::Zero));
        assert_eq!(resolve_code("X/D"), Some(Action::Dummy));
        assert_eq!(resolve_code("Z/D"), Some(Action::Dummy));
        assert_eq!(resolve_code("X/Z/D"), Some(Action::Dummy));
        assert_eq!(resolve_code("X/Z/U*"), Some(Action::Uid));
        assert_eq!(resolve_code("Q"), None);
    }
}
