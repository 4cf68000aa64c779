//! The pixel stage: burned-in annotation scrubbing (known regions, and later OCR).
pub mod signatures;
