//! The pixel stage (issue 5): burned-in annotation scrubbing.
//!
//! * [`image`]: the frame layout, photometric and palette types the others share;
//! * [`signatures`]: the known-region library (conditions on header values, rectangles);
//! * [`mask`]: blanking rectangles in decoded frames with the value that renders black;
//! * [`decode`]: every frame of an instance as native samples (dicom-pixeldata: native,
//!   deflate, RLE, JPEG, JPEG-LS via CharLS, JPEG 2000 via openjp2), with decoder panics,
//!   absurd sizes and 12-bit JPEG Extended refused as errors;
//! * [`scrub`]: known regions applied to one instance: matching signatures, every frame
//!   masked, pixels written back as Explicit VR Little Endian with consistent attributes;
//! * [`detect`]: the learned text detector (issue 13) and [`ocr`]: Tesseract, the independent
//!   check after masking;
//!
//! `fiona deid` and the daemon's pipeline run it per project; what cannot be scrubbed is
//! parked with its reason, never passed on. Output is Explicit VR Little Endian (lossless
//! compressed output is not done).
pub mod decode;
pub mod detect;
pub mod image;
pub mod mask;
pub mod ocr;
pub mod scrub;
pub mod signatures;

/// A small in-memory image for the stage's unit tests.
#[cfg(test)]
pub(crate) mod test_image {
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, Tag, VR};
    use dicom_object::meta::FileMetaTableBuilder;
    use dicom_object::{FileDicomObject, InMemDicomObject};

    /// The image attributes and Pixel Data of an instance of `sop_class` in `ts`.
    pub struct Image<'a> {
        pub ts: &'a str,
        pub sop_class: &'a str,
        pub photometric: &'a str,
        pub rows: u16,
        pub columns: u16,
        pub samples_per_pixel: u16,
        pub bits: u16,
        pub signed: bool,
        pub frames: u32,
        pub pixels: Vec<u8>,
    }

    impl Image<'_> {
        pub fn build(self) -> FileDicomObject<InMemDicomObject> {
            let mut obj = InMemDicomObject::new_empty();
            let us = |g, e, v: u16| DataElement::new(Tag(g, e), VR::US, PrimitiveValue::from(v));
            let text = |g, e, vr, v: &str| DataElement::new(Tag(g, e), vr, PrimitiveValue::from(v));
            obj.put(text(0x0008, 0x0016, VR::UI, self.sop_class));
            obj.put(text(0x0008, 0x0018, VR::UI, "1.2.3.4"));
            obj.put(us(0x0028, 0x0010, self.rows));
            obj.put(us(0x0028, 0x0011, self.columns));
            obj.put(us(0x0028, 0x0002, self.samples_per_pixel));
            obj.put(us(0x0028, 0x0100, self.bits));
            obj.put(us(0x0028, 0x0101, self.bits));
            obj.put(us(0x0028, 0x0102, self.bits - 1));
            obj.put(us(0x0028, 0x0103, u16::from(self.signed)));
            if self.samples_per_pixel == 3 {
                obj.put(us(0x0028, 0x0006, 0));
            }
            obj.put(text(0x0028, 0x0004, VR::CS, self.photometric));
            if self.frames > 1 {
                obj.put(text(0x0028, 0x0008, VR::IS, &self.frames.to_string()));
            }
            let vr = if self.bits > 8 { VR::OW } else { VR::OB };
            obj.put(DataElement::new(
                Tag(0x7FE0, 0x0010),
                vr,
                PrimitiveValue::from(self.pixels),
            ));
            obj.with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(self.ts)
                    .media_storage_sop_class_uid(self.sop_class)
                    .media_storage_sop_instance_uid("1.2.3.4"),
            )
            .unwrap()
        }
    }
}
