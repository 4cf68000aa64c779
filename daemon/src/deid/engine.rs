//! The header de-identification engine: applies a project's profile to a data set (the
//! header part, held as a dicom-object `InMemDicomObject`) at every sequence depth, then
//! writes the identity of the assignment.
//!
//! # Rules, in order, for each element
//!
//! 1. **Private elements** (odd groups) are removed, unless the project retains safe private
//!    attributes and lists `(private creator, element)`; a private creator element stays when
//!    one of its block's elements is kept.
//! 2. **Listed attributes** get the action of PS3.15 Table E.1-1 under the project's options
//!    (see `profile`). The date policy selects the date option: keep = Retain Longitudinal
//!    Full Dates, shift = Retain Longitudinal Modified Dates (dates are then *cleaned* by
//!    shifting), remove = neither.
//! 3. **Unlisted attributes** (the explicit policy for what the table does not name): a
//!    standard attribute whose VR cannot carry free text (numbers, codes, dates, UIDs,
//!    binary) is kept and still goes through rules 4 and 5; standard free text (LO, LT, SH,
//!    ST, UT, UC, PN) is emptied (zero length, so a Type 2 attribute stays valid) unless it is
//!    technical: in the acquisition, image relationship, image presentation or nuclear
//!    medicine groups (0018, 0020, 0028, 0054), whose identifying attributes the table lists,
//!    the Code Sequence Macro (coded terminology), or Manufacturer / Manufacturer's Model
//!    Name. Tags the dictionary does not know are
//!    removed. Nothing unlisted passes as free text unless it is known to be safe.
//! 4. **UIDs** (VR UI) that stay are mapped (`uid`), unless they are well-known UIDs under
//!    the DICOM root `1.2.840.10008.` (SOP classes, transfer syntaxes, coding schemes); with
//!    Retain UIDs they are kept.
//! 5. **Dates** (DA, DT) that stay are shifted by the project's offset when the policy shifts.
//!
//! Overlays (groups 6000-601E) go whole when their Overlay Data may not stay (removed in the
//! basic profile; "cleaned" with Clean Graphics, which fiona cannot do for a bitmap), so no
//! overlay module is left half. Curves (50xx) are masked rows and go element by element.
//!
//! Actions on values: Z gives a zero-length value; D a dummy valid for the VR (`values`);
//! C on a date shifts it, on text removes every occurrence of the instance's own identifying
//! strings (name components, patient ID, other IDs, accession number, birth date), on a
//! sequence applies the profile inside; K keeps (a sequence is still processed inside); U maps
//! UIDs (inside sequences too).

use std::collections::HashMap;

use dicom_core::dictionary::DataDictionary;
use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;
use serde::{Deserialize, Serialize};

use super::dates::{shift_da, shift_dt};
use super::profile::{Action, ProfileOptions, Table};
use super::uid::{UidKind, UidMapper};
use super::values;

/// Who the instance now belongs to.
#[derive(Clone, PartialEq, Eq)]
pub struct Assignment {
    pub project: String,
    pub participant: String,
    pub event: String,
}

impl std::fmt::Debug for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assignment")
            .field("project", &self.project)
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

/// What happens to dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum DatePolicy {
    Remove,
    Keep,
    /// Shift by `days` (from the project secret and the participant, or fixed).
    Shift {
        days: i32,
    },
}

pub use crate::project::deid::SafePrivate;

/// What a project's own rule does to one standard attribute, before the table is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    /// Keep it (still cleaned like K: UIDs mapped, dates per the date policy, sequences
    /// processed inside).
    Keep,
    Remove,
    /// Zero-length value.
    Empty,
    /// This fixed value (a text VR; fitted to the VR's length limit).
    Replace(String),
}

/// A project's extra rule for one standard attribute, at every depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraRule {
    pub tag: u32,
    pub action: RuleAction,
}

/// A project's header de-identification settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub options: ProfileOptions,
    pub dates: DatePolicy,
    pub safe_private: Vec<SafePrivate>,
    /// The project's extra keep/remove/empty/replace rules; they win over the table and the
    /// unlisted-attribute policy (identity and clinical-trial attributes are written after).
    pub rules: Vec<ExtraRule>,
    /// Clinical Trial Sponsor Name (0012,0010); the project name when empty.
    pub sponsor: String,
    /// Clinical Trial Site ID and Name (0012,0030/0031).
    pub site_id: String,
    pub site_name: String,
}

/// Counts of what was done, for the log (no values).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub removed: u64,
    pub zeroed: u64,
    pub dummied: u64,
    pub cleaned: u64,
    pub uids_mapped: u64,
    /// UIDs fiona had issued for this project (research data coming back), kept.
    pub issued_uids_kept: u64,
    pub dates_shifted: u64,
    pub private_kept: u64,
    /// Standard attributes that arrived as UN, read with their dictionary VR.
    pub un_reinterpreted: u64,
    /// Known burned-in regions blanked (the pixel stage), and pixels blanked in all frames.
    pub pixel_regions: u64,
    pub pixels_masked: u64,
    /// Word boxes OCR found and blanked.
    pub ocr_words: u64,
}

/// Why an instance could not be de-identified. Carries tags, never values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeidError {
    #[error("profile table unavailable: {0}")]
    Table(String),
    #[error("invalid settings: {0}")]
    Settings(String),
}

/// The engine for one project and one assignment.
pub struct Engine {
    table: &'static Table,
    /// `table.action(tag, options)` for every exact tag of the table, sorted by tag: the
    /// lookup for each element of each instance, resolved once per engine.
    exact_actions: Vec<(u32, Option<Action>)>,
    options: ProfileOptions,
    settings: Settings,
    uids: UidMapper,
    assignment: Assignment,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("assignment", &self.assignment)
            .finish_non_exhaustive()
    }
}

/// What one `apply` call carries down the data set: the instance's identifying strings and
/// the date policy for this instance.
struct Cx<'a> {
    needles: &'a [String],
    dates: DatePolicy,
}

const TEXT_VRS: [VR; 7] = [VR::LO, VR::LT, VR::SH, VR::ST, VR::UT, VR::UC, VR::PN];

/// Standard free-text attributes that Table E.1-1 does not list and that describe equipment
/// or technique, not the patient: kept as they are.
const SAFE_UNLISTED_TEXT: [u32; 3] = [
    0x0008_0070, // Manufacturer
    0x0008_1090, // Manufacturer's Model Name
    0x0010_2201, // Patient Species Description (Type 1C for animals; a species, not a person)
];

/// Unlisted free text that is Type 1 or 1C in the IODs that carry it: the unlisted-attribute
/// policy gives it a dummy value (as the profile's D action does) instead of emptying it, so
/// the output stays valid. Text Value is cleaned instead when the project keeps structured
/// content (Clean Structured Content Option).
const REQUIRED_UNLISTED_TEXT: [u32; 5] = [
    0x0040_A160, // Text Value (SR content items, Type 1C)
    0x0062_0005, // Segment Label (SEG, Type 1)
    0x0062_0009, // Segment Algorithm Name (SEG, Type 1C)
    0x0040_9210, // LUT Label (Real World Value Mapping, Type 1)
    0x0070_0006, // Unformatted Text Value (annotations, Type 1C)
];
const TEXT_VALUE: Tag = Tag(0x0040, 0xA160);

/// Sequences Table E.1-1 empties (X/Z) that are Type 3 wherever storage IODs use them: removed
/// rather than left with zero items.
const TYPE3_EMPTIED_SEQUENCES: [u32; 1] = [
    0x0008_1110, // Referenced Study Sequence (General Study, SR Document General: Type 3)
];

/// Groups whose unlisted free-text attributes are technical (acquisition 0018, image
/// relationship 0020, image presentation 0028, nuclear medicine 0054): Table E.1-1 lists the
/// identifying attributes of these groups (protocol name, device serial number, comments ...),
/// so what it leaves out here (e.g. Rescale Type, Position Reference Indicator, Sequence
/// Name) is kept, which also keeps Type 1 attributes valid.
const SAFE_UNLISTED_TEXT_GROUPS: [u16; 4] = [0x0018, 0x0020, 0x0028, 0x0054];

/// The Code Sequence Macro (PS3.3 Table 8.8-1: Code Value, Coding Scheme Designator, Code
/// Meaning ...): coded terminology, not free text about the patient.
const CODE_MACRO: std::ops::RangeInclusive<u32> = 0x0008_0100..=0x0008_0124;

fn safe_unlisted_text(tag: Tag) -> bool {
    let t = tag_u32(tag);
    SAFE_UNLISTED_TEXT.contains(&t)
        || CODE_MACRO.contains(&t)
        || SAFE_UNLISTED_TEXT_GROUPS.contains(&tag.group())
}

fn tag_u32(t: Tag) -> u32 {
    (u32::from(t.group()) << 16) | u32::from(t.element())
}

/// Identifying strings of an instance, removed from text by the Clean action.
fn identifying_strings(obj: &InMemDicomObject) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |s: &str| {
        let s = s.trim();
        if s.chars().count() >= 2 {
            out.push(s.to_lowercase());
        }
    };
    for t in [
        Tag(0x0010, 0x0010), // PatientName
        Tag(0x0010, 0x0020), // PatientID
        Tag(0x0010, 0x1000), // OtherPatientIDs
        Tag(0x0010, 0x1001), // OtherPatientNames
        Tag(0x0010, 0x0030), // PatientBirthDate
        Tag(0x0008, 0x0050), // AccessionNumber
    ] {
        if let Some(v) = obj.get(t).and_then(|e| e.to_str().ok()) {
            add(&v);
            for part in v.split(['^', '=', '\\', ' ']) {
                add(part);
            }
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

fn remove_all_ci(text: &str, needles: &[String]) -> String {
    let mut out = text.to_string();
    for n in needles {
        loop {
            let lower = out.to_lowercase();
            // Only ASCII-case-insensitive positions are byte-compatible; for others match as is.
            let pos = if lower.len() == out.len() {
                lower.find(n.as_str())
            } else {
                out.find(n.as_str())
            };
            match pos {
                Some(i) => out.replace_range(i..i + n.len(), ""),
                None => break,
            }
        }
    }
    out
}

impl Engine {
    pub fn new(
        settings: Settings,
        uids: UidMapper,
        assignment: Assignment,
    ) -> Result<Engine, DeidError> {
        let table = Table::standard().map_err(DeidError::Table)?;
        let mut options = settings.options;
        options.retain_full_dates = settings.dates == DatePolicy::Keep;
        options.retain_modified_dates = matches!(settings.dates, DatePolicy::Shift { .. });
        options.validate().map_err(DeidError::Settings)?;
        // Sorted: exact_tags() yields the tags in order.
        let exact_actions = table
            .exact_tags()
            .map(|t| (t, table.action(t, &options)))
            .collect();
        Ok(Engine {
            table,
            exact_actions,
            options,
            settings,
            uids,
            assignment,
        })
    }

    /// De-identify the data set in place.
    pub fn apply(&self, obj: &mut InMemDicomObject) -> Report {
        let mut report = Report::default();
        // Standard attributes encoded as UN go through the same rules as any other.
        let un = super::un::resolve(obj);
        report.un_reinterpreted = un.reinterpreted;
        report.removed += un.removed;
        let needles = identifying_strings(obj);
        let original = |t: Tag| -> String {
            obj.get(t)
                .and_then(|e| {
                    e.to_str()
                        .ok()
                        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
                })
                .unwrap_or_default()
        };
        let (study_uid, accession) = (original(Tag(0x0020, 0x000D)), original(Tag(0x0008, 0x0050)));
        // Research data coming back (a series a workstation derived from what fiona sent, in
        // the research study fiona issued): its dates were shifted on the way out, so they are
        // not shifted again, and the study stays on one time line.
        let research = !study_uid.is_empty() && self.uids.is_issued(&study_uid);
        let cx = Cx {
            needles: &needles,
            dates: match self.settings.dates {
                DatePolicy::Shift { .. } if research => DatePolicy::Shift { days: 0 },
                d => d,
            },
        };
        self.process(obj, &cx, &mut report);
        self.write_identity(obj);
        if let UidMapper::Legacy { project } = &self.uids {
            self.write_legacy_identifiers(obj, project, &study_uid, &accession);
        }
        report
    }

    /// The table's action for `tag` under the engine's options (as `Table::action`).
    fn action(&self, tag: u32) -> Option<Action> {
        match self.exact_actions.binary_search_by_key(&tag, |(t, _)| *t) {
            Ok(i) => self.exact_actions[i].1,
            Err(_) => self.table.action(tag, &self.options),
        }
    }

    /// What the old system wrote besides UIDs (shared/fiona-legacy/uid-vectors.json):
    /// StudyID and AccessionNumber as 16 digits of its digest (the accession unsalted, so
    /// reversible by brute force: legacy mode only), the project as InstitutionName, and the
    /// event in ReferringPhysicianName (its research PACS viewer shows that column).
    fn write_legacy_identifiers(
        &self,
        obj: &mut InMemDicomObject,
        project: &str,
        study_uid: &str,
        accession: &str,
    ) {
        use super::uid::legacy_digits;
        let put = |obj: &mut InMemDicomObject, g: u16, e: u16, vr: VR, v: &str| {
            obj.put(DataElement::new(
                Tag(g, e),
                vr,
                PrimitiveValue::from(values::fit(vr.to_string(), v)),
            ));
        };
        if !study_uid.is_empty() {
            let d = legacy_digits(format!("{study_uid}{project}").as_bytes());
            put(obj, 0x0020, 0x0010, VR::SH, &d[..16]);
        }
        if !accession.is_empty() {
            let d = legacy_digits(accession.as_bytes());
            put(obj, 0x0008, 0x0050, VR::SH, &d[..16]);
        }
        put(obj, 0x0008, 0x0080, VR::LO, project);
        put(
            obj,
            0x0008,
            0x0090,
            VR::PN,
            &format!("EventName:{}", self.assignment.event),
        );
    }

    fn process(&self, obj: &mut InMemDicomObject, cx: &Cx<'_>, r: &mut Report) {
        // Private creators of this data set: (group, block) -> creator.
        let mut creators: HashMap<(u16, u8), String> = HashMap::new();
        for e in obj.iter() {
            let t = e.tag();
            if t.group() % 2 == 1 && (0x10..=0xFF).contains(&t.element()) {
                if let Ok(s) = e.to_str() {
                    creators.insert((t.group(), t.element() as u8), s.trim().to_string());
                }
            }
        }
        // Overlays: an overlay whose data cannot stay (removed, or "cleaned", which fiona
        // cannot do for a bitmap) goes whole, so no overlay module is left without its data.
        let overlay_groups: Vec<u16> = obj
            .tags()
            .filter(|t| (0x6000..=0x601E).contains(&t.group()) && t.group() % 2 == 0)
            .map(|t| t.group())
            .collect();
        for g in overlay_groups {
            let action = self.action(u32::from(g) << 16 | 0x3000);
            if matches!(action, Some(Action::Remove) | Some(Action::Clean)) {
                let in_group: Vec<Tag> = obj.tags().filter(|t| t.group() == g).collect();
                for t in in_group {
                    obj.remove_element(t);
                    r.removed += 1;
                }
            }
        }
        let mut kept_blocks: Vec<(u16, u8)> = Vec::new();
        let tags: Vec<Tag> = obj.tags().collect();
        for tag in &tags {
            if tag.group() % 2 == 1 && tag.element() > 0xFF {
                let block = (tag.element() >> 8) as u8;
                let keep = self.options.retain_safe_private
                    && creators.get(&(tag.group(), block)).is_some_and(|c| {
                        self.settings
                            .safe_private
                            .iter()
                            .any(|s| &s.creator == c && s.element == tag.element() as u8)
                    });
                if keep {
                    kept_blocks.push((tag.group(), block));
                    r.private_kept += 1;
                    // Safe private attributes are kept cleaned (rtnSafePrivOpt: C): text
                    // loses the identifying strings, values the project listed as safe
                    // (binary vendor blocks, numbers) are kept, UIDs mapped, dates shifted.
                    if let Some(e) = obj.take(*tag) {
                        let e = if TEXT_VRS.contains(&e.vr()) {
                            self.clean(e, cx, r)
                        } else {
                            self.generic(e, cx, r)
                        };
                        if let Some(e) = e {
                            obj.put(e);
                        }
                    }
                } else {
                    obj.remove_element(*tag);
                    r.removed += 1;
                }
            }
        }
        for tag in tags {
            if tag.group() % 2 == 1 {
                if tag.element() > 0xFF {
                    continue; // handled above
                }
                let is_kept_creator = (0x10..=0xFF).contains(&tag.element())
                    && kept_blocks.contains(&(tag.group(), tag.element() as u8));
                if !is_kept_creator && obj.remove_element(tag) {
                    r.removed += 1;
                }
                continue;
            }
            if tag.group() == 0x0002 {
                continue;
            }
            if tag.element() == 0x0000 {
                // Group lengths (retired) would be stale after any change: removed.
                if obj.remove_element(tag) {
                    r.removed += 1;
                }
                continue;
            }
            let Some(elem) = obj.take(tag) else { continue };
            if let Some(e) = self.transform(elem, cx, r) {
                obj.put(e);
            }
        }
    }

    /// Rules 2 and 3 for one standard element.
    fn transform(&self, e: InMemElement, cx: &Cx<'_>, r: &mut Report) -> Option<InMemElement> {
        let tag = e.tag();
        let vr = e.vr();
        if let Some(rule) = self.settings.rules.iter().find(|x| x.tag == tag_u32(tag)) {
            return match &rule.action {
                RuleAction::Keep => self.generic(e, cx, r),
                RuleAction::Remove => {
                    r.removed += 1;
                    None
                }
                RuleAction::Empty => {
                    r.zeroed += 1;
                    Some(empty(tag, vr))
                }
                RuleAction::Replace(v) => {
                    r.dummied += 1;
                    let v = values::fit(vr.to_string(), v);
                    Some(DataElement::new(tag, vr, PrimitiveValue::from(v)))
                }
            };
        }
        let action = match self.action(tag_u32(tag)) {
            Some(a) => a,
            None => {
                let known = dicom_dictionary_std::StandardDataDictionary
                    .by_tag(tag)
                    .is_some();
                if !known {
                    r.removed += 1;
                    return None;
                }
                if TEXT_VRS.contains(&vr)
                    && REQUIRED_UNLISTED_TEXT.contains(&tag_u32(tag))
                    && e.to_str().is_ok_and(|v| !v.trim().is_empty())
                {
                    if tag == TEXT_VALUE && self.options.clean_structured_content {
                        return self.clean(e, cx, r);
                    }
                    r.dummied += 1;
                    let d = values::dummy(vr.to_string()).unwrap_or("ANONYMIZED");
                    return Some(DataElement::new(tag, vr, PrimitiveValue::from(d)));
                }
                if TEXT_VRS.contains(&vr) && !safe_unlisted_text(tag) {
                    // Free text nothing says is safe: emptied, but kept present so a Type 2
                    // attribute stays valid.
                    r.zeroed += 1;
                    return Some(empty(tag, vr));
                }
                Action::Keep
            }
        };
        match action {
            Action::Remove => {
                r.removed += 1;
                None
            }
            // A sequence the profile empties (X/Z) that is Type 3 in the storage IODs is
            // removed instead: an empty Type 3 sequence is invalid. Type 2 ones (Acquisition
            // Context Sequence, and Z sequences) stay, empty.
            Action::Zero if vr == VR::SQ && TYPE3_EMPTIED_SEQUENCES.contains(&tag_u32(tag)) => {
                r.removed += 1;
                None
            }
            Action::Zero => {
                r.zeroed += 1;
                Some(empty(tag, vr))
            }
            Action::Dummy => {
                if vr == VR::SQ || vr == VR::UI {
                    // A sequence keeps its structure, cleaned inside; a UID is mapped.
                    return self.generic(e, cx, r);
                }
                r.dummied += 1;
                match values::dummy(vr.to_string()) {
                    Some(d) => Some(DataElement::new(tag, vr, PrimitiveValue::from(d))),
                    None => Some(empty(tag, vr)),
                }
            }
            Action::Clean => self.clean(e, cx, r),
            Action::Keep | Action::Uid => self.generic(e, cx, r),
        }
    }

    /// The C action: text loses the instance's identifying strings; anything else goes
    /// through rules 4 and 5 (dates shifted, UIDs mapped, sequences processed).
    fn clean(&self, e: InMemElement, cx: &Cx<'_>, r: &mut Report) -> Option<InMemElement> {
        r.cleaned += 1;
        let (tag, vr) = (e.tag(), e.vr());
        if tag == Tag(0x0008, 0x0201) {
            // Timezone Offset From UTC: temporal, kept when it is an offset (&ZZXX), else
            // emptied: a free-text value there is not kept.
            let v = e.to_str().map(|v| v.trim().to_string()).unwrap_or_default();
            let ok = v.len() == 5
                && (v.starts_with('+') || v.starts_with('-'))
                && v[1..].bytes().all(|b| b.is_ascii_digit());
            return Some(if ok { e } else { empty(tag, vr) });
        }
        if matches!(
            vr,
            VR::OB | VR::OW | VR::OD | VR::OF | VR::OL | VR::OV | VR::UN
        ) {
            // A binary value (e.g. Frame Origin Timestamp) cannot be cleaned or shifted here:
            // emptied rather than passed on.
            return Some(empty(tag, vr));
        }
        if TEXT_VRS.contains(&vr) {
            let cleaned = e
                .to_str()
                .map(|s| remove_all_ci(&s, cx.needles))
                .unwrap_or_default();
            return Some(DataElement::new(
                tag,
                vr,
                PrimitiveValue::from(values::fit(vr.to_string(), cleaned.trim())),
            ));
        }
        self.generic(e, cx, r)
    }

    /// Rules 4 and 5 for a kept element; sequences are processed item by item.
    fn generic(&self, e: InMemElement, cx: &Cx<'_>, r: &mut Report) -> Option<InMemElement> {
        let tag = e.tag();
        let vr = e.vr();
        match vr {
            VR::SQ => {
                let (header, value) = e.into_parts();
                let Value::Sequence(seq) = value else {
                    return Some(DataElement::new(
                        tag,
                        vr,
                        Value::from(PrimitiveValue::Empty),
                    ));
                };
                // The items are owned here: processed in place, not copied.
                let mut seq = seq;
                for item in seq.items_mut().iter_mut() {
                    self.process(item, cx, r);
                }
                let items: Vec<InMemDicomObject> = seq.items_mut().drain(..).collect();
                let _ = header;
                Some(DataElement::new(
                    tag,
                    VR::SQ,
                    DataSetSequence::new(items, Length::UNDEFINED),
                ))
            }
            VR::UI if !self.options.retain_uids => {
                let Ok(values) = e.to_multi_str() else {
                    // Not readable as text: never passed on.
                    r.removed += 1;
                    return None;
                };
                let mapped: Vec<String> = values
                    .iter()
                    .map(|u| {
                        let u = u.trim_end_matches(['\0', ' ']);
                        if u.is_empty()
                            || (u.starts_with("1.2.840.10008.") && super::uid::is_valid_uid(u))
                        {
                            u.to_string()
                        } else if self.uids.is_issued(u) {
                            // Issued by fiona for this project: kept, never mapped twice.
                            r.issued_uids_kept += 1;
                            u.to_string()
                        } else {
                            r.uids_mapped += 1;
                            let kind = if tag == Tag(0x0020, 0x000D) {
                                UidKind::Study
                            } else {
                                UidKind::Other
                            };
                            self.uids.map(u, kind)
                        }
                    })
                    .collect();
                Some(DataElement::new(
                    tag,
                    vr,
                    PrimitiveValue::Strs(mapped.into()),
                ))
            }
            VR::DA | VR::DT => match cx.dates {
                DatePolicy::Shift { days } => {
                    let s = e.to_str().map(|s| s.to_string()).unwrap_or_default();
                    let shifted = if vr == VR::DA {
                        shift_da(&s, days)
                    } else {
                        shift_dt(&s, days)
                    };
                    match shifted {
                        Ok(v) => {
                            r.dates_shifted += 1;
                            Some(DataElement::new(tag, vr, PrimitiveValue::from(v)))
                        }
                        // Not a date we can shift: never pass it on unshifted.
                        Err(_) => {
                            r.removed += 1;
                            Some(empty(tag, vr))
                        }
                    }
                }
                DatePolicy::Keep => Some(e),
                DatePolicy::Remove => {
                    r.zeroed += 1;
                    Some(empty(tag, vr))
                }
            },
            _ => Some(e),
        }
    }

    fn write_identity(&self, obj: &mut InMemDicomObject) {
        let a = &self.assignment;
        let put = |obj: &mut InMemDicomObject, g: u16, e: u16, vr: VR, v: &str| {
            obj.put(DataElement::new(
                Tag(g, e),
                vr,
                PrimitiveValue::from(values::fit(vr.to_string(), v)),
            ));
        };
        put(obj, 0x0010, 0x0010, VR::PN, &a.participant);
        put(obj, 0x0010, 0x0020, VR::LO, &a.participant);
        let sponsor = if self.settings.sponsor.is_empty() {
            &a.project
        } else {
            &self.settings.sponsor
        };
        put(obj, 0x0012, 0x0010, VR::LO, sponsor);
        put(obj, 0x0012, 0x0020, VR::LO, &a.project);
        put(obj, 0x0012, 0x0021, VR::LO, &a.project);
        put(obj, 0x0012, 0x0030, VR::LO, &self.settings.site_id);
        put(obj, 0x0012, 0x0031, VR::LO, &self.settings.site_name);
        put(obj, 0x0012, 0x0040, VR::LO, &a.participant);
        put(obj, 0x0012, 0x0050, VR::LO, &a.event);
        put(obj, 0x0012, 0x0051, VR::ST, &a.event);
        put(obj, 0x0012, 0x0062, VR::CS, "YES");
        let codes = self.method_codes();
        // One value per code: each fits LO's 64 characters (VM 1-n).
        let description = codes
            .iter()
            .map(|(_, meaning)| *meaning)
            .collect::<Vec<_>>()
            .join("\\");
        let description = if self.settings.rules.is_empty() {
            description
        } else {
            format!(
                "{description}\\fiona project rules: {}",
                self.settings.rules.len()
            )
        };
        put(obj, 0x0012, 0x0063, VR::LO, &description);
        let items: Vec<InMemDicomObject> = codes
            .iter()
            .map(|(value, meaning)| {
                InMemDicomObject::from_element_iter([
                    DataElement::new(Tag(0x0008, 0x0100), VR::SH, PrimitiveValue::from(*value)),
                    DataElement::new(Tag(0x0008, 0x0102), VR::SH, PrimitiveValue::from("DCM")),
                    DataElement::new(Tag(0x0008, 0x0104), VR::LO, PrimitiveValue::from(*meaning)),
                ])
            })
            .collect();
        obj.put(DataElement::new(
            Tag(0x0012, 0x0064),
            VR::SQ,
            DataSetSequence::new(items, Length::UNDEFINED),
        ));
        let longitudinal = match self.settings.dates {
            DatePolicy::Keep => "UNMODIFIED",
            DatePolicy::Shift { .. } => "MODIFIED",
            DatePolicy::Remove => "REMOVED",
        };
        put(obj, 0x0028, 0x0303, VR::CS, longitudinal);
    }

    /// DCM codes (PS3.16 CID 7050) of the profile and options applied.
    fn method_codes(&self) -> Vec<(&'static str, &'static str)> {
        let o = &self.options;
        let mut v = vec![("113100", "Basic Application Confidentiality Profile")];
        let opts: [(bool, &str, &str); 10] = [
            (o.clean_graphics, "113103", "Clean Graphics Option"),
            (
                o.clean_structured_content,
                "113104",
                "Clean Structured Content Option",
            ),
            (o.clean_descriptors, "113105", "Clean Descriptors Option"),
            (
                o.retain_full_dates,
                "113106",
                "Retain Longitudinal Temporal Information Full Dates Option",
            ),
            (
                o.retain_modified_dates,
                "113107",
                "Retain Longitudinal Temporal Information Modified Dates Option",
            ),
            (
                o.retain_patient_characteristics,
                "113108",
                "Retain Patient Characteristics Option",
            ),
            (
                o.retain_device_identity,
                "113109",
                "Retain Device Identity Option",
            ),
            (o.retain_uids, "113110", "Retain UIDs Option"),
            (
                o.retain_safe_private,
                "113111",
                "Retain Safe Private Option",
            ),
            (
                o.retain_institution_identity,
                "113112",
                "Retain Institution Identity Option",
            ),
        ];
        v.extend(
            opts.iter()
                .filter(|(on, _, _)| *on)
                .map(|(_, c, m)| (*c, *m)),
        );
        v
    }
}

fn empty(tag: Tag, vr: VR) -> InMemElement {
    if vr == VR::SQ {
        DataElement::new(tag, vr, DataSetSequence::<InMemDicomObject>::empty())
    } else {
        DataElement::new(tag, vr, PrimitiveValue::Empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(g: u16, e: u16, vr: VR, v: &str) -> InMemElement {
        DataElement::new(Tag(g, e), vr, PrimitiveValue::from(v))
    }

    fn seq(g: u16, e: u16, items: Vec<InMemDicomObject>) -> InMemElement {
        DataElement::new(
            Tag(g, e),
            VR::SQ,
            DataSetSequence::new(items, Length::UNDEFINED),
        )
    }

    /// An instance with identifying values at the top, in private blocks and in sequences
    /// three deep.
    fn planted() -> InMemDicomObject {
        let deep = InMemDicomObject::from_element_iter([
            s(0x0008, 0x1155, VR::UI, "1.2.826.0.1.3680043.8.498.77.3"),
            s(0x0010, 0x0010, VR::PN, "Nordmann^Kari"),
            s(0x0008, 0x0020, VR::DA, "20240229"),
        ]);
        let mid = InMemDicomObject::from_element_iter([
            seq(0x0008, 0x1199, vec![deep]),
            s(0x0008, 0x1150, VR::UI, "1.2.840.10008.5.1.4.1.1.2"),
        ]);
        let top_item = InMemDicomObject::from_element_iter([
            seq(0x0040, 0xA730, vec![mid]),
            s(0x0020, 0x000D, VR::UI, "1.2.826.0.1.3680043.8.498.99"),
        ]);
        InMemDicomObject::from_element_iter([
            s(0x0008, 0x0005, VR::CS, "ISO_IR 192"),
            s(0x0008, 0x0016, VR::UI, "1.2.840.10008.5.1.4.1.1.2"),
            s(0x0008, 0x0018, VR::UI, "1.2.826.0.1.3680043.8.498.5.1"),
            s(0x0008, 0x0020, VR::DA, "20240229"),
            s(0x0008, 0x0030, VR::TM, "101530"),
            s(0x0008, 0x0050, VR::SH, "ACC12345"),
            s(0x0008, 0x0080, VR::LO, "Haukeland Universitetssjukehus"),
            s(0x0008, 0x0081, VR::ST, "Jonas Lies vei 65, Bergen"),
            s(0x0008, 0x0090, VR::PN, "Lege^Lise"),
            s(0x0008, 0x1030, VR::LO, "MR caput Nordmann"),
            s(0x0008, 0x103E, VR::LO, "T1 MPRAGE Kari"),
            s(0x0010, 0x0010, VR::PN, "Nordmann^Kari"),
            s(0x0010, 0x0020, VR::LO, "01017012345"),
            s(0x0010, 0x0030, VR::DA, "19700101"),
            s(0x0010, 0x1000, VR::LO, "OTHER-99"),
            s(0x0010, 0x1040, VR::LO, "Storgata 1, Oslo"),
            s(0x0018, 0x1000, VR::LO, "SN-4711"),
            s(0x0020, 0x000D, VR::UI, "1.2.826.0.1.3680043.8.498.1"),
            s(0x0020, 0x000E, VR::UI, "1.2.826.0.1.3680043.8.498.3"),
            s(0x0020, 0x0052, VR::UI, "1.2.826.0.1.3680043.8.498.4"),
            s(0x0028, 0x0010, VR::US, "4"),
            s(0x0029, 0x0010, VR::LO, "SIEMENS CSA HEADER"),
            s(0x0029, 0x1010, VR::OB, "Nordmann"),
            s(0x0029, 0x0011, VR::LO, "SIEMENS MEDCOM HEADER"),
            s(0x0029, 0x1120, VR::LO, "Nordmann Kari"),
            seq(0x0008, 0x1140, vec![top_item]),
            seq(
                0x0008,
                0x1110,
                vec![InMemDicomObject::from_element_iter([s(
                    0x0008,
                    0x1155,
                    VR::UI,
                    "1.2.826.0.1.3680043.8.498.55",
                )])],
            ),
            s(0x0040, 0xA124, VR::UI, "1.2.826.0.1.3680043.8.498.123"),
            DataElement::new(Tag(0x0010, 0x0000), VR::UL, PrimitiveValue::from(64u32)),
        ])
    }

    fn engine(settings: Settings) -> Engine {
        Engine::new(
            settings,
            UidMapper::Conformant { key: [9; 32] },
            Assignment {
                project: "PROJ".into(),
                participant: "PROJ001".into(),
                event: "baseline".into(),
            },
        )
        .unwrap()
    }

    fn default_settings() -> Settings {
        Settings {
            rules: Vec::new(),
            options: ProfileOptions::default(),
            dates: DatePolicy::Shift { days: -100 },
            safe_private: vec![],
            sponsor: String::new(),
            site_id: "SITE1".into(),
            site_name: "Bergen".into(),
        }
    }

    /// Every string value anywhere in the data set.
    fn all_strings(obj: &InMemDicomObject, out: &mut Vec<String>) {
        for e in obj.iter() {
            match e.value() {
                Value::Sequence(sq) => {
                    for it in sq.items() {
                        all_strings(it, out);
                    }
                }
                _ => {
                    if let Ok(s) = e.to_str() {
                        out.push(s.to_string());
                    }
                }
            }
        }
    }

    #[test]
    fn nothing_identifying_survives_at_any_depth() {
        let mut obj = planted();
        let r = engine(default_settings()).apply(&mut obj);
        let mut strings = Vec::new();
        all_strings(&obj, &mut strings);
        let text = strings.join("|");
        for planted in [
            "Nordmann",
            "Kari",
            "01017012345",
            "OTHER-99",
            "ACC12345",
            "Haukeland",
            "Jonas Lies",
            "Lege",
            "Storgata",
            "SN-4711",
            "19700101",
            "20240229",
            "1.2.826.0.1.3680043.8.498",
            "SIEMENS",
        ] {
            assert!(!text.contains(planted), "{planted} survived: {text}");
        }
        assert!(r.removed > 5, "{r:?}");
        // UIDs three sequences deep are mapped (Referenced Image Sequence > Content Sequence >
        // Referenced SOP Sequence > Referenced SOP Instance UID), names there removed.
        let m = UidMapper::Conformant { key: [9; 32] };
        let deep = &obj.get(Tag(0x0008, 0x1140)).unwrap().items().unwrap()[0];
        let deep = &deep.get(Tag(0x0040, 0xA730)).unwrap().items().unwrap()[0];
        let deep = &deep.get(Tag(0x0008, 0x1199)).unwrap().items().unwrap()[0];
        assert_eq!(
            deep.get(Tag(0x0008, 0x1155)).unwrap().to_str().unwrap(),
            m.map("1.2.826.0.1.3680043.8.498.77.3", UidKind::Other)
        );
        assert_eq!(r.uids_mapped, 7, "5 at the top, 2 in sequences: {r:?}");
        // Referenced Study Sequence (X/Z) is removed: empty, it would be an invalid Type 3
        // sequence.
        assert!(obj.get(Tag(0x0008, 0x1110)).is_none());
        // Well-known UIDs stay; identity is the pseudonym.
        assert!(text.contains("1.2.840.10008.5.1.4.1.1.2"));
        assert_eq!(
            obj.get(Tag(0x0010, 0x0010)).unwrap().to_str().unwrap(),
            "PROJ001"
        );
        assert_eq!(
            obj.get(Tag(0x0012, 0x0040)).unwrap().to_str().unwrap(),
            "PROJ001"
        );
        assert_eq!(
            obj.get(Tag(0x0012, 0x0050)).unwrap().to_str().unwrap(),
            "baseline"
        );
        assert_eq!(
            obj.get(Tag(0x0012, 0x0062)).unwrap().to_str().unwrap(),
            "YES"
        );
        // Technical attributes not in the table stay; stale group lengths go.
        assert!(obj.get(Tag(0x0028, 0x0010)).is_some());
        assert!(obj.get(Tag(0x0010, 0x0000)).is_none());
    }

    /// A series derived from research data and sent back (issue 12 item 8): the UIDs fiona
    /// issued (study, frame of reference, references to the research instances) are kept,
    /// the workstation's new UIDs are mapped, and dates are not shifted a second time.
    #[test]
    fn research_data_coming_back_keeps_issued_uids_and_dates() {
        let e = engine(default_settings());
        let mut research = planted();
        e.apply(&mut research);
        let get = |o: &InMemDicomObject, g: u16, el: u16| {
            o.get(Tag(g, el)).map(|x| {
                x.to_str()
                    .unwrap()
                    .trim_end_matches(['\0', ' '])
                    .to_string()
            })
        };
        let deep_ref = |o: &InMemDicomObject| {
            let d = &o.get(Tag(0x0008, 0x1140)).unwrap().items().unwrap()[0];
            let d = &d.get(Tag(0x0040, 0xA730)).unwrap().items().unwrap()[0];
            let d = &d.get(Tag(0x0008, 0x1199)).unwrap().items().unwrap()[0];
            get(d, 0x0008, 0x1155).unwrap()
        };
        // The workstation's derived instance: new series and instance UIDs, a new content
        // date; everything else as fiona sent it.
        let mut derived = research.clone();
        derived.put(DataElement::new(
            Tag(0x0020, 0x000E),
            VR::UI,
            PrimitiveValue::from("1.2.826.0.1.3680043.8.498.999.1"),
        ));
        derived.put(DataElement::new(
            Tag(0x0008, 0x0018),
            VR::UI,
            PrimitiveValue::from("1.2.826.0.1.3680043.8.498.999.2"),
        ));
        let r = e.apply(&mut derived);
        assert!(r.issued_uids_kept >= 2, "{r:?}");
        assert_eq!(
            get(&derived, 0x0020, 0x000D),
            get(&research, 0x0020, 0x000D)
        );
        assert_eq!(deep_ref(&derived), deep_ref(&research), "reference kept");
        assert_eq!(
            get(&derived, 0x0020, 0x0052),
            get(&research, 0x0020, 0x0052)
        );
        let m = UidMapper::Conformant { key: [9; 32] };
        assert_eq!(
            get(&derived, 0x0020, 0x000E).unwrap(),
            m.map("1.2.826.0.1.3680043.8.498.999.1", UidKind::Other),
            "the new series UID is mapped"
        );
        assert_ne!(
            get(&derived, 0x0008, 0x0018),
            get(&research, 0x0008, 0x0018)
        );
        // Dates as the research study has them (shifted once, not twice).
        let date_tags = [(0x0008, 0x0020), (0x0008, 0x0021), (0x0008, 0x0023)];
        let mut compared = 0;
        for (g, el) in date_tags {
            if let Some(v) = get(&research, g, el).filter(|v| !v.is_empty()) {
                assert_eq!(
                    get(&derived, g, el).as_deref(),
                    Some(v.as_str()),
                    "({g:04x},{el:04x})"
                );
                compared += 1;
            }
        }
        assert!(compared >= 1, "planted() has a date to compare");
        // The research copy was shifted once (so equality above means "not shifted again").
        assert_ne!(get(&research, 0x0008, 0x0020).as_deref(), Some("20240229"));
    }

    #[test]
    fn uids_consistent_and_references_follow() {
        let mut a = planted();
        let mut b = planted();
        let e = engine(default_settings());
        e.apply(&mut a);
        e.apply(&mut b);
        let ga = |o: &InMemDicomObject, t: Tag| o.get(t).unwrap().to_str().unwrap().to_string();
        assert_eq!(ga(&a, Tag(0x0020, 0x000D)), ga(&b, Tag(0x0020, 0x000D)));
        let study = ga(&a, Tag(0x0020, 0x000D));
        assert!(super::super::uid::is_valid_uid(&study), "{study}");
        // SOP Instance UID .5.1 referenced nowhere here, but the mapping is the mapper's.
        assert_eq!(
            ga(&a, Tag(0x0008, 0x0018)),
            UidMapper::Conformant { key: [9; 32] }
                .map("1.2.826.0.1.3680043.8.498.5.1", UidKind::Other)
        );
    }

    #[test]
    fn dates_shift_per_policy() {
        let mut obj = planted();
        engine(default_settings()).apply(&mut obj);
        // Study Date: basic Z, but the shift policy selects modified dates (C = shift).
        assert_eq!(
            obj.get(Tag(0x0008, 0x0020)).unwrap().to_str().unwrap(),
            "20231121"
        );
        let mut keep = planted();
        engine(Settings {
            dates: DatePolicy::Keep,
            ..default_settings()
        })
        .apply(&mut keep);
        assert_eq!(
            keep.get(Tag(0x0008, 0x0020)).unwrap().to_str().unwrap(),
            "20240229"
        );
        let mut removed = planted();
        engine(Settings {
            dates: DatePolicy::Remove,
            ..default_settings()
        })
        .apply(&mut removed);
        assert_eq!(
            removed.get(Tag(0x0008, 0x0020)).unwrap().to_str().unwrap(),
            ""
        );
        assert_eq!(
            removed.get(Tag(0x0028, 0x0303)).unwrap().to_str().unwrap(),
            "REMOVED"
        );
    }

    #[test]
    fn safe_private_and_clean_descriptors() {
        let mut obj = planted();
        engine(Settings {
            rules: Vec::new(),
            options: ProfileOptions {
                retain_safe_private: true,
                clean_descriptors: true,
                ..Default::default()
            },
            safe_private: vec![SafePrivate {
                creator: "SIEMENS MEDCOM HEADER".into(),
                element: 0x20,
            }],
            ..default_settings()
        })
        .apply(&mut obj);
        assert!(
            obj.get(Tag(0x0029, 0x0011)).is_some(),
            "creator of a kept block stays"
        );
        // kept, cleaned of the patient's name
        assert_eq!(obj.get(Tag(0x0029, 0x1120)).unwrap().to_str().unwrap(), "");
        assert!(obj.get(Tag(0x0029, 0x0010)).is_none());
        assert!(obj.get(Tag(0x0029, 0x1010)).is_none());
        // The description is kept, with the patient's name removed from it.
        let d = obj
            .get(Tag(0x0008, 0x103E))
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(d, "T1 MPRAGE");
        // Codes name the options applied.
        let codes = obj.get(Tag(0x0012, 0x0064)).unwrap().items().unwrap().len();
        assert_eq!(
            codes,
            1 + 3,
            "basic + safe private + clean descriptors + modified dates"
        );
    }

    #[test]
    fn project_rules_win_over_the_table() {
        let mut obj = planted();
        // Deep inside a sequence too.
        let mut item = InMemDicomObject::new_empty();
        item.put(s(0x0008, 0x0080, VR::LO, "Haukeland deep"));
        obj.put(seq(0x0040, 0x0275, vec![item]));
        engine(Settings {
            rules: vec![
                ExtraRule {
                    tag: 0x0008_1030,
                    action: RuleAction::Keep,
                },
                ExtraRule {
                    tag: 0x0008_0080,
                    action: RuleAction::Replace("Research site".into()),
                },
                ExtraRule {
                    tag: 0x0018_1000,
                    action: RuleAction::Empty,
                },
                ExtraRule {
                    tag: 0x0008_0018,
                    action: RuleAction::Keep,
                },
                // A kept sequence is still processed inside.
                ExtraRule {
                    tag: 0x0040_0275,
                    action: RuleAction::Keep,
                },
            ],
            ..default_settings()
        })
        .apply(&mut obj);
        let get = |o: &InMemDicomObject, g, e| {
            o.get(Tag(g, e))
                .map(|x| x.to_str().unwrap().trim_end().to_string())
        };
        // Kept although the table removes it (the project decided; its text is kept as is).
        assert_eq!(
            get(&obj, 0x0008, 0x1030).as_deref(),
            Some("MR caput Nordmann")
        );
        assert_eq!(get(&obj, 0x0008, 0x0080).as_deref(), Some("Research site"));
        let deep = obj.get(Tag(0x0040, 0x0275)).unwrap().items().unwrap()[0].clone();
        assert_eq!(get(&deep, 0x0008, 0x0080).as_deref(), Some("Research site"));
        assert_eq!(get(&obj, 0x0018, 0x1000).as_deref(), Some(""));
        // A kept UID is still mapped.
        let sop = get(&obj, 0x0008, 0x0018).unwrap();
        assert!(sop.starts_with("2.25."), "{sop}");
        let desc = get(&obj, 0x0012, 0x0063).unwrap();
        assert!(desc.contains("fiona project rules: 5"), "{desc}");
    }

    /// Plants an identifying value in every attribute of Table E.1-1 (exact tags, with the
    /// dictionary's VR; sequences get an item holding a planted name and UID) plus a private
    /// block, de-identifies with the default settings, and finds no planted value left:
    /// text, UIDs and dates are all gone or replaced. Times (TM) are kept by design under the
    /// shift policy, so they are planted with a recognisable but non-identifying value.
    #[test]
    fn no_planted_value_survives_any_table_row() {
        use dicom_core::dictionary::DataDictionaryEntry;
        let table = Table::standard().unwrap();
        let mut obj = InMemDicomObject::new_empty();
        obj.put(s(0x0008, 0x0005, VR::CS, "ISO_IR 192"));
        let mut planted = 0;
        for (i, tag) in table.exact_tags().enumerate() {
            let t = Tag((tag >> 16) as u16, tag as u16);
            if t.group() == 0x0002 || t == Tag(0x0008, 0x0005) {
                continue;
            }
            let Some(entry) = dicom_dictionary_std::StandardDataDictionary.by_tag(t) else {
                continue;
            };
            let vr = entry.vr().relaxed();
            let e = match vr {
                VR::SQ => seq(
                    t.group(),
                    t.element(),
                    vec![InMemDicomObject::from_element_iter([
                        s(0x0010, 0x0010, VR::PN, &format!("PLANTED{i}^Seq")),
                        s(0x0008, 0x1155, VR::UI, &format!("1.2.3.999.{i}")),
                        s(0x0008, 0x0020, VR::DA, "19990909"),
                    ])],
                ),
                VR::UI => s(t.group(), t.element(), VR::UI, &format!("1.2.3.999.{i}")),
                VR::DA => s(t.group(), t.element(), VR::DA, "19990909"),
                VR::DT => s(t.group(), t.element(), VR::DT, "19990909101010"),
                VR::TM => s(t.group(), t.element(), VR::TM, "101010"),
                VR::AE
                | VR::AS
                | VR::CS
                | VR::DS
                | VR::IS
                | VR::LO
                | VR::LT
                | VR::PN
                | VR::SH
                | VR::ST
                | VR::UC
                | VR::UT
                | VR::UR => s(t.group(), t.element(), vr, &format!("PLANTED{i}")),
                VR::OB | VR::UN => DataElement::new(
                    t,
                    vr,
                    PrimitiveValue::U8(format!("PLANTED{i}").into_bytes().into()),
                ),
                _ => continue, // numeric VRs cannot hold text
            };
            obj.put(e);
            planted += 1;
        }
        obj.put(s(0x0011, 0x0010, VR::LO, "ACME PRIVATE"));
        obj.put(s(0x0011, 0x1001, VR::LO, "PLANTEDPRIVATE"));
        assert!(planted > 450, "planted in {planted} attributes");
        engine(default_settings()).apply(&mut obj);
        let mut strings = Vec::new();
        all_strings(&obj, &mut strings);
        for v in &strings {
            assert!(!v.contains("PLANTED"), "planted text survived: {v}");
            assert!(!v.contains("1.2.3.999."), "planted UID survived: {v}");
            assert!(!v.contains("19990909"), "planted date survived: {v}");
        }
        // Binary values too.
        for e in obj.iter() {
            if let Ok(b) = e.to_bytes() {
                assert!(!b.windows(7).any(|w| w == b"PLANTED"), "{:?}", e.tag());
            }
        }
    }

    /// Legacy mode writes the old system's StudyID, AccessionNumber, InstitutionName and
    /// ReferringPhysicianName, matching its vectors.
    #[test]
    fn legacy_identifiers_match_vectors() {
        let e = Engine::new(
            default_settings(),
            UidMapper::Legacy {
                project: "PROJ".into(),
            },
            Assignment {
                project: "PROJ".into(),
                participant: "PROJ001".into(),
                event: "baseline".into(),
            },
        )
        .unwrap();
        let mut obj = InMemDicomObject::from_element_iter([
            s(0x0008, 0x0050, VR::SH, "ACC12345"),
            s(0x0020, 0x000D, VR::UI, "1.2.826.0.1.3680043.8.498.1"),
            s(0x0008, 0x0018, VR::UI, "1.2.826.0.1.3680043.8.498.5.1"),
        ]);
        e.apply(&mut obj);
        let g = |t: Tag| obj.get(t).unwrap().to_str().unwrap().to_string();
        assert_eq!(g(Tag(0x0020, 0x0010)), "9445552525315212");
        assert_eq!(g(Tag(0x0008, 0x0050)), "1150646018409075");
        assert_eq!(
            g(Tag(0x0020, 0x000D)),
            "1.3.6.1.4.1.45037.944555252531521250140041433123464122221272275"
        );
        assert_eq!(
            g(Tag(0x0008, 0x0018)),
            "1.3.6.1.4.1.45037.757558451308842891313517209503025801735865131"
        );
        assert_eq!(g(Tag(0x0008, 0x0080)), "PROJ");
        assert_eq!(g(Tag(0x0008, 0x0090)), "EventName:baseline");
    }

    /// An overlay goes whole (rows, columns, type, origin, data), never half.
    #[test]
    fn overlays_are_removed_whole() {
        let mut obj = planted();
        obj.put(s(0x6000, 0x0010, VR::US, "8"));
        obj.put(s(0x6000, 0x0011, VR::US, "8"));
        obj.put(s(0x6000, 0x0040, VR::CS, "G"));
        obj.put(s(0x6000, 0x0022, VR::LO, "Nordmann"));
        obj.put(DataElement::new(
            Tag(0x6000, 0x3000),
            VR::OW,
            PrimitiveValue::from(vec![0xFFu8; 8]),
        ));
        engine(default_settings()).apply(&mut obj);
        assert!(
            obj.tags().all(|t| t.group() != 0x6000),
            "overlay group left"
        );
        let mut graphics = planted();
        graphics.put(s(0x6002, 0x0010, VR::US, "8"));
        graphics.put(DataElement::new(
            Tag(0x6002, 0x3000),
            VR::OW,
            PrimitiveValue::from(vec![0xFFu8; 8]),
        ));
        engine(Settings {
            rules: Vec::new(),
            options: ProfileOptions {
                clean_graphics: true,
                ..Default::default()
            },
            ..default_settings()
        })
        .apply(&mut graphics);
        assert!(graphics.tags().all(|t| t.group() != 0x6002));
    }
}
