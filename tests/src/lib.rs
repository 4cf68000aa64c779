//! Shared helpers for fiona's integration tests: a synthetic DICOM corpus
//! (synthetic patients only) and a harness that runs the real `fiona` binary.

pub mod bundle;
pub mod burned;
pub mod corpus;
pub mod glyphs;
pub mod harness;
pub mod ldap;
pub mod orthanc;
pub mod pki;
pub mod scu;
pub mod web;

/// The `fiona` binary Cargo built for the calling integration test (`CARGO_BIN_EXE_fiona` is
/// set for the daemon package's tests, so this expands in the caller).
#[macro_export]
macro_rules! fiona_bin {
    () => {
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_fiona"))
    };
}
