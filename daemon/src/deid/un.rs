//! Standard attributes encoded as UN, read with the dictionary's VR (PS3.5 6.2.2).
//!
//! A sender (or a converter on its way) may encode a standard attribute with VR UN in
//! explicit VR, e.g. when its own dictionary did not know it. The value of a UN element is
//! always encoded as implicit VR little endian, so the element can be read again as what the
//! dictionary says it is. Without this, the engine would see bytes where it expects a UID, a
//! name or a date, and pass them through (or write them as numbers into a UI element).
//!
//! [`resolve`] rewrites, at every depth, each UN element whose tag the standard dictionary
//! knows into an element with the dictionary's VR, decoded with the data set's Specific
//! Character Set; a UN sequence becomes SQ with its items read the same way. What cannot be
//! interpreted is removed, never passed on:
//!
//! * a value that does not parse as its dictionary VR (bad lengths, truncated items);
//! * a UI value that is not a valid UID after padding is trimmed;
//! * a UN element of undefined length whose tag is not a sequence.
//!
//! Private and unknown UN elements are left for the engine's private-attribute and
//! unknown-tag rules (which remove them unless the project keeps a safe private attribute).
//!
//! # Why the bytes are checked by hand first
//!
//! dicom-rs reserves memory from declared lengths, so a UN value (sender's bytes) is run
//! through the bounded [`Scanner`] as an implicit VR data set before dicom-rs parses it.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_encoding::text::SpecificCharacterSet;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;

use crate::header::{Encoding, Scanner};

/// What [`resolve`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// UN elements now read with their dictionary VR.
    pub reinterpreted: u64,
    /// UN elements removed because they could not be interpreted.
    pub removed: u64,
}

/// Rewrite every known UN element of `obj` (at every depth) into its dictionary VR; remove
/// the ones that cannot be interpreted. The character set is the data set's own (its
/// Specific Character Set is resolved first when it is itself UN).
pub fn resolve(obj: &mut InMemDicomObject) -> Resolved {
    let mut done = Resolved::default();
    let cs_tag = Tag(0x0008, 0x0005);
    if obj.get(cs_tag).is_some_and(|e| e.vr() == VR::UN) {
        resolve_one(obj, cs_tag, &SpecificCharacterSet::default(), &mut done);
    }
    let charset = obj
        .get(cs_tag)
        .and_then(|e| e.to_multi_str().ok())
        .and_then(|v| {
            // The first value names the default repertoire; extensions are left to the
            // decoder's default when not known.
            v.iter()
                .find(|s| !s.trim().is_empty())
                .and_then(|s| SpecificCharacterSet::from_code(s.trim()))
        })
        .unwrap_or_default();
    walk(obj, &charset, &mut done);
    done
}

fn walk(obj: &mut InMemDicomObject, charset: &SpecificCharacterSet, done: &mut Resolved) {
    let tags: Vec<Tag> = obj.tags().collect();
    for tag in tags {
        if obj.get(tag).is_some_and(|e| e.vr() == VR::UN) {
            resolve_one(obj, tag, charset, done);
        }
        // Items (also of a sequence just resolved) are walked in turn, in place: a second
        // pass over a resolved data set (the engine's, after the pixel stage's) only reads
        // tags.
        if obj.get(tag).is_some_and(|e| e.vr() == VR::SQ) {
            obj.update_value(tag, |v| {
                if let Some(items) = v.items_mut() {
                    for item in items.iter_mut() {
                        walk(item, charset, done);
                    }
                }
            });
        }
    }
}

/// The dictionary's VR for a standard tag, with ambiguous VRs resolved to the one implicit
/// VR readers use (US for US/SS, OW for OB/OW).
fn dictionary_vr(tag: Tag) -> Option<VR> {
    if tag.group() % 2 == 1 {
        return None;
    }
    let entry = StandardDataDictionary.by_tag(tag)?;
    Some(match entry.vr() {
        VirtualVr::Exact(vr) => vr,
        other => other.relaxed(),
    })
}

fn resolve_one(
    obj: &mut InMemDicomObject,
    tag: Tag,
    charset: &SpecificCharacterSet,
    done: &mut Resolved,
) {
    let Some(vr) = dictionary_vr(tag) else {
        return; // private or unknown: the engine's rules remove it
    };
    let Some(e) = obj.take(tag) else { return };
    match interpret(e, vr, charset) {
        Some(e) => {
            done.reinterpreted += 1;
            obj.put(e);
        }
        None => done.removed += 1,
    }
}

/// One known UN element as its dictionary VR, or `None` when it cannot be interpreted.
fn interpret(e: InMemElement, vr: VR, charset: &SpecificCharacterSet) -> Option<InMemElement> {
    let tag = e.tag();
    let (_, value) = e.into_parts();
    let bytes = match value {
        // A UN of undefined length was read as a sequence (implicit VR items).
        Value::Sequence(seq) => {
            if vr != VR::SQ {
                return None;
            }
            let items: Vec<InMemDicomObject> = seq.into_items().into_iter().collect();
            return Some(DataElement::new(
                tag,
                VR::SQ,
                DataSetSequence::new(items, Length::UNDEFINED),
            ));
        }
        Value::Primitive(PrimitiveValue::U8(b)) => b.into_vec(),
        Value::Primitive(PrimitiveValue::Empty) => Vec::new(),
        Value::Primitive(p) => p.to_bytes().into_owned(),
        Value::PixelSequence(_) => return None,
    };
    if bytes.is_empty() {
        return Some(DataElement::new(tag, vr, PrimitiveValue::Empty));
    }
    // Binary numbers come in whole values (dicom-rs would drop a partial one silently).
    let width = match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::UL | VR::SL | VR::FL | VR::AT | VR::OL | VR::OF => 4,
        VR::FD | VR::UV | VR::SV | VR::OD | VR::OV => 8,
        _ => 1,
    };
    if bytes.len() % width != 0 {
        return None;
    }
    let len = u32::try_from(bytes.len()).ok()?;
    // The element as implicit VR little endian: tag, length, the UN value's bytes.
    let mut encoded = Vec::with_capacity(bytes.len() + 8);
    encoded.extend_from_slice(&tag.group().to_le_bytes());
    encoded.extend_from_slice(&tag.element().to_le_bytes());
    encoded.extend_from_slice(&len.to_le_bytes());
    encoded.extend_from_slice(&bytes);
    // Bounded check before dicom-rs sees the bytes (see the module header).
    let mut scanner = Scanner::new(Encoding::ImplicitLittle);
    scanner.feed(&encoded).ok()?;
    scanner.finish().ok()?;
    let ts = dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let parsed =
        InMemDicomObject::read_dataset_with_ts_cs(encoded.as_slice(), &ts, charset.clone()).ok()?;
    let e = parsed.get(tag)?.clone();
    if e.vr() != vr {
        return None;
    }
    if vr == VR::UI {
        let values = e.to_multi_str().ok()?;
        if !values.iter().all(|u| {
            let u = super::uid::trim_uid(u);
            u.is_empty() || super::uid::is_valid_uid(u)
        }) {
            return None;
        }
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(g: u16, e: u16, bytes: &[u8]) -> InMemElement {
        DataElement::new(Tag(g, e), VR::UN, PrimitiveValue::from(bytes.to_vec()))
    }

    fn implicit(tag: (u16, u16), value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.0.to_le_bytes());
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    fn str_of(obj: &InMemDicomObject, g: u16, e: u16) -> String {
        obj.get(Tag(g, e)).unwrap().to_str().unwrap().to_string()
    }

    #[test]
    fn known_un_elements_take_the_dictionary_vr() {
        // A Referenced SOP sequence of defined length whose item is implicit VR.
        let mut item = Vec::new();
        item.extend(implicit(
            (0x0008, 0x1150),
            b"1.2.840.10008.5.1.4.1.1.481.5\0",
        ));
        item.extend(implicit((0x0008, 0x1155), b"1.2.3.4.5.6\0"));
        let mut seq = Vec::new();
        seq.extend_from_slice(&0xFFFEu16.to_le_bytes());
        seq.extend_from_slice(&0xE000u16.to_le_bytes());
        seq.extend_from_slice(&(item.len() as u32).to_le_bytes());
        seq.extend(item);
        let mut obj = InMemDicomObject::from_element_iter([
            un(0x0008, 0x0005, b"ISO_IR 100"),
            un(0x0008, 0x0018, b"1.2.826.0.1.3680043.8.498.1\0"),
            un(0x0010, 0x0010, b"\xd8rjansen^\xc5se"),
            un(0x0008, 0x0020, b"20150304"),
            un(0x0028, 0x0010, &512u16.to_le_bytes()),
            un(0x0020, 0x0032, b"0\\0\\-121"),
            un(0x300C, 0x0002, &seq),
            un(0x0013, 0x1010, b"private"),
        ]);
        let done = resolve(&mut obj);
        assert_eq!(done.reinterpreted, 7);
        assert_eq!(done.removed, 0);
        assert_eq!(obj.get(Tag(0x0008, 0x0018)).unwrap().vr(), VR::UI);
        assert_eq!(str_of(&obj, 0x0008, 0x0018), "1.2.826.0.1.3680043.8.498.1");
        assert_eq!(obj.get(Tag(0x0010, 0x0010)).unwrap().vr(), VR::PN);
        assert_eq!(str_of(&obj, 0x0010, 0x0010), "Ørjansen^Åse");
        assert_eq!(obj.get(Tag(0x0008, 0x0020)).unwrap().vr(), VR::DA);
        assert_eq!(
            obj.get(Tag(0x0028, 0x0010))
                .unwrap()
                .to_int::<u16>()
                .unwrap(),
            512
        );
        assert_eq!(obj.get(Tag(0x0020, 0x0032)).unwrap().vr(), VR::DS);
        let sq = obj.get(Tag(0x300C, 0x0002)).unwrap();
        assert_eq!(sq.vr(), VR::SQ);
        let items = sq.items().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(str_of(&items[0], 0x0008, 0x1155), "1.2.3.4.5.6");
        // Private UN is left to the engine's private rules.
        assert_eq!(obj.get(Tag(0x0013, 0x1010)).unwrap().vr(), VR::UN);
    }

    #[test]
    fn what_cannot_be_interpreted_is_removed() {
        let mut obj = InMemDicomObject::from_element_iter([
            // Not a UID.
            un(0x0008, 0x0018, b"Nordmann^Kari"),
            // US of 3 bytes.
            un(0x0028, 0x0010, &[1, 2, 3]),
            // A sequence whose item declares more than it holds.
            un(
                0x0008,
                0x1140,
                &[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0x7F, 1, 2],
            ),
            un(0x0008, 0x0020, b"20150304"),
        ]);
        let done = resolve(&mut obj);
        assert_eq!(done.removed, 3);
        assert_eq!(done.reinterpreted, 1);
        assert!(obj.get(Tag(0x0008, 0x0018)).is_none());
        assert!(obj.get(Tag(0x0028, 0x0010)).is_none());
        assert!(obj.get(Tag(0x0008, 0x1140)).is_none());
    }
}
