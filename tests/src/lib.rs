//! Shared helpers for fiona's integration tests: a synthetic DICOM corpus
//! (synthetic patients only) and a harness that runs the real `fiona` binary.

pub mod burned;
pub mod corpus;
pub mod glyphs;
pub mod harness;
pub mod orthanc;
pub mod pki;
pub mod scu;
