//! What one de-identified output holds, for its project's review inventory (issue 17): every
//! element at every depth, as a [`ReviewBatch`] of one instance (path, keyword, VR, a hash of
//! each value, the first distinct values as samples, the private creators). Collected from the
//! output data set in memory, after the engine ran and before it is written
//! ([`super::file::deidentify_file_reviewed`]); the pixel stage's caller merges the batches of
//! a transfer and the index merges them into the project's inventory.
//!
//! * Paths: `(gggg,eeee)` at the top level; inside a sequence's items the sequence's path,
//!   `[]`, `.` and the element: `(0040,A730)[].(0040,A160)`. A sequence is an element too
//!   (its value `<N items>`).
//! * Bulk and binary VRs (OB, OW, OF, OD, OL, OV, UN) and encapsulated pixel data are shown as
//!   `<N bytes>`, never their bytes. Their distinct count is by content (a hash) up to
//!   [`HASHED_BULK_BYTES`], by length beyond it and always for the pixel data elements.
//! * Other values: as dicom-rs reads them (multiple values joined by `\`), trailing padding
//!   trimmed, cut to [`REVIEW_VALUE_CHARS`](crate::model::REVIEW_VALUE_CHARS) characters for
//!   the samples; distinct by the whole value.
//! * The file meta group is not collected: it is not sent (C-STORE carries the data set).
//!
//! The values are de-identified values that left the box; they go to the index and to the
//! control API's answer, never to a log line.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::value::Value;
use dicom_core::{Tag, VR};
use dicom_object::InMemDicomObject;
use sha2::{Digest, Sha256};

use crate::model::{review_sample, ReviewBatch};

/// Bulk values up to this size are told apart by their content; larger ones by their length.
pub const HASHED_BULK_BYTES: usize = 1 << 20;

/// Sequences deeper than this are not entered (the receive stage refuses deeper nesting).
const MAX_DEPTH: usize = crate::header::MAX_DEPTH;

/// The review batch of one output data set (header and, when in memory, pixel data).
pub fn collect(obj: &InMemDicomObject) -> ReviewBatch {
    let mut batch = ReviewBatch::instance();
    walk(obj, "", 0, &mut batch);
    batch
}

/// Add a top-level Pixel Data element that was copied through without being read: `bytes`
/// of value with `vr`.
pub fn add_copied_pixel_data(batch: &mut ReviewBatch, vr: VR, bytes: u64) {
    let shown = bulk(bytes);
    batch.element(
        path("", Tag(0x7FE0, 0x0010)),
        "PixelData",
        vr.to_string(),
        hash(shown.as_bytes()),
        || shown.clone(),
    );
}

fn path(prefix: &str, tag: Tag) -> String {
    if prefix.is_empty() {
        format!("({:04X},{:04X})", tag.group(), tag.element())
    } else {
        format!("{prefix}.({:04X},{:04X})", tag.group(), tag.element())
    }
}

/// The first 8 bytes of SHA-256: enough to tell a thousand values apart.
fn hash(bytes: &[u8]) -> u64 {
    let d = Sha256::digest(bytes);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

fn bulk(bytes: u64) -> String {
    format!("<{bytes} bytes>")
}

fn is_bulk(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN
    )
}

fn is_pixel_data(tag: Tag) -> bool {
    tag.group() == 0x7FE0 && matches!(tag.element(), 0x0008 | 0x0009 | 0x0010)
}

fn keyword(tag: Tag) -> String {
    if tag.group() % 2 == 1 {
        return if (0x0010..=0x00FF).contains(&tag.element()) {
            "PrivateCreator".into()
        } else {
            String::new()
        };
    }
    dicom_dictionary_std::StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.alias().to_string())
        .unwrap_or_default()
}

fn walk(obj: &InMemDicomObject, prefix: &str, depth: usize, batch: &mut ReviewBatch) {
    for e in obj.iter() {
        let tag = e.header().tag;
        let vr = e.vr();
        let vr_s = vr.to_string();
        let p = path(prefix, tag);
        let kw = keyword(tag);
        match e.value() {
            Value::Sequence(seq) => {
                let shown = format!("<{} items>", seq.items().len());
                batch.element(p.clone(), &kw, vr_s, hash(shown.as_bytes()), || {
                    shown.clone()
                });
                if depth < MAX_DEPTH {
                    let inner = format!("{p}[]");
                    for item in seq.items() {
                        walk(item, &inner, depth + 1, batch);
                    }
                }
            }
            Value::PixelSequence(ps) => {
                // Basic offset table item, fragment items, sequence delimiter: what is sent.
                let bytes = 8
                    + 4 * ps.offset_table().len() as u64
                    + ps.fragments()
                        .iter()
                        .map(|f| 8 + f.len() as u64)
                        .sum::<u64>()
                    + 8;
                let shown = bulk(bytes);
                batch.element(p, &kw, vr_s, hash(shown.as_bytes()), || shown.clone());
            }
            Value::Primitive(v) if is_bulk(vr) => {
                let n = v.calculate_byte_len();
                let shown = bulk(n as u64);
                let h = if is_pixel_data(tag) || n > HASHED_BULK_BYTES {
                    hash(shown.as_bytes())
                } else {
                    hash(&v.to_bytes())
                };
                batch.element(p, &kw, vr_s, h, || shown.clone());
            }
            Value::Primitive(v) => {
                let s = v.to_str();
                let s = s.trim_end_matches(['\0', ' ']);
                if tag.group() % 2 == 1 && (0x0010..=0x00FF).contains(&tag.element()) {
                    batch.creator(tag.group(), s.trim());
                }
                batch.element(p, &kw, vr_s, hash(s.as_bytes()), || review_sample(s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::{DataSetSequence, PixelFragmentSequence, PrimitiveValue};
    use dicom_core::{DataElement, Length};

    fn s(g: u16, e: u16, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
        DataElement::new(Tag(g, e), vr, PrimitiveValue::from(v))
    }

    fn seq(g: u16, e: u16, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
        DataElement::new(
            Tag(g, e),
            VR::SQ,
            DataSetSequence::new(items, Length::UNDEFINED),
        )
    }

    /// Every element at every depth, with keyword, VR and value; binary values as their
    /// size only; long values cut; private creators listed.
    #[test]
    fn every_element_at_every_depth() {
        let long = "x".repeat(100);
        let item = |code: &str| {
            InMemDicomObject::from_element_iter([
                s(0x0040, 0xA040, VR::CS, "CODE"),
                s(0x0040, 0xA160, VR::UT, code),
            ])
        };
        let obj = InMemDicomObject::from_element_iter([
            s(0x0010, 0x0010, VR::PN, "PROJ1-0042"),
            s(0x0008, 0x103E, VR::LO, &long),
            s(0x0009, 0x0010, VR::LO, "ACME 1.0 "),
            DataElement::new(
                Tag(0x0009, 0x1001),
                VR::OB,
                PrimitiveValue::from(vec![0x41u8; 10]),
            ),
            DataElement::new(Tag(0x0028, 0x0010), VR::US, PrimitiveValue::from(512u16)),
            seq(0x0040, 0xA730, vec![item("first"), item("second")]),
            DataElement::new(
                Tag(0x7FE0, 0x0010),
                VR::OB,
                PixelFragmentSequence::new(vec![], vec![vec![0u8; 100]]),
            ),
        ]);
        let b = collect(&obj);
        assert_eq!(b.instances, 1);
        let t = |p: &str| b.tags.get(p).unwrap_or_else(|| panic!("{p} in {b:?}"));
        assert_eq!(t("(0010,0010)").keyword, "PatientName");
        assert_eq!(t("(0010,0010)").vr, "PN");
        assert_eq!(t("(0010,0010)").samples, ["PROJ1-0042"]);
        let cut = &t("(0008,103E)").samples[0];
        assert_eq!(cut.chars().count(), 64);
        assert!(cut.ends_with('…'));
        assert_eq!(t("(0009,0010)").keyword, "PrivateCreator");
        assert_eq!(t("(0009,1001)").samples, ["<10 bytes>"]);
        assert_eq!(t("(0009,1001)").keyword, "");
        assert_eq!(t("(0028,0010)").samples, ["512"]);
        assert_eq!(t("(0040,A730)").samples, ["<2 items>"]);
        assert_eq!(t("(0040,A730)").vr, "SQ");
        let text = t("(0040,A730)[].(0040,A160)");
        assert_eq!(text.samples, ["first", "second"]);
        assert_eq!(text.hashes.len(), 2);
        assert_eq!(text.instances, 1, "once per instance, whatever the items");
        assert_eq!(t("(0040,A730)[].(0040,A040)").hashes.len(), 1);
        assert_eq!(t("(7FE0,0010)").samples, ["<124 bytes>"]);
        assert_eq!(
            b.creators.keys().collect::<Vec<_>>(),
            [&("0009".to_string(), "ACME 1.0".to_string())]
        );
        // No binary value's bytes anywhere in what is shown.
        assert!(!format!("{b:?}").contains("AAAA"));
    }

    /// Pixel data copied through unread is listed by its size.
    #[test]
    fn copied_pixel_data_by_size() {
        let mut b = collect(&InMemDicomObject::new_empty());
        add_copied_pixel_data(&mut b, VR::OW, 32768);
        let t = &b.tags["(7FE0,0010)"];
        assert_eq!((t.keyword.as_str(), t.vr.as_str()), ("PixelData", "OW"));
        assert_eq!(t.samples, ["<32768 bytes>"]);
    }
}
