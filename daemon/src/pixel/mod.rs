//! The pixel stage (issue 5): burned-in annotation scrubbing.
//!
//! * [`signatures`]: the known-region library (conditions on header values, rectangles);
//! * [`mask`]: blanking rectangles in decoded frames with the value that renders black;
//! * [`decode`]: every frame of an instance as native samples (dicom-pixeldata: native,
//!   deflate, RLE, JPEG, JPEG-LS via CharLS, JPEG 2000 via openjp2), with decoder panics,
//!   absurd sizes and 12-bit JPEG Extended refused as errors;
//! * [`scrub`]: known regions applied to one instance: matching signatures, every frame
//!   masked, pixels written back as Explicit VR Little Endian with consistent attributes.
//!
//! Still to come: OCR detection and the check after masking, lossless compressed output,
//! parking what cannot be scrubbed, per-project settings (which images, exclusions, dropping
//! secondary captures), and the wiring into `fiona deid` and the daemon.
pub mod decode;
pub mod mask;
pub mod scrub;
pub mod signatures;
