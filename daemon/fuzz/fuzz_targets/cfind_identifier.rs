//! Fuzz target for the C-FIND response identifier reader (`fiona::forward::parse_identifier`):
//! bounded check, then dicom-object. Properties: see `fiona_fuzz::cfind_identifier`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fiona_fuzz::cfind_identifier(data);
});
