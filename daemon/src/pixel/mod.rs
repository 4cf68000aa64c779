//! The pixel stage (issue 5): burned-in annotation scrubbing.
//!
//! * [`signatures`]: the known-region library (conditions on header values, rectangles);
//! * [`mask`]: blanking rectangles in decoded frames with the value that renders black.
//!
//! Still to come: decoding every transfer syntax (dicom-pixeldata, with decoder panics and
//! absurd sizes contained), OCR detection and the check after masking, re-encoding, parking
//! what cannot be scrubbed, and the wiring into `fiona deid` and the daemon.
pub mod mask;
pub mod signatures;
