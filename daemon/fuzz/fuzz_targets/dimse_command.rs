//! Fuzz target for the DIMSE command set codec (`fiona::dimse`).
//!
//! Properties (see `fiona_fuzz::dimse_command`): `Command::parse` never panics; when a command
//! parses, `encode_response` of its fields parses again and carries them back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fiona_fuzz::dimse_command(data);
});
