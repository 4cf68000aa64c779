//! The pixel stage (issue 5): burned-in annotation scrubbing.
//!
//! * [`signatures`]: the known-region library (conditions on header values, rectangles);
//! * [`mask`]: blanking rectangles in decoded frames with the value that renders black;
//! * [`decode`]: every frame of an instance as native samples (dicom-pixeldata: native,
//!   deflate, RLE, JPEG, JPEG-LS via CharLS, JPEG 2000 via openjp2), with decoder panics,
//!   absurd sizes and 12-bit JPEG Extended refused as errors.
//!
//! Still to come: OCR detection and the check after masking, re-encoding, parking what cannot
//! be scrubbed, and the wiring into `fiona deid` and the daemon.
pub mod decode;
pub mod mask;
pub mod signatures;
