//! Fuzz target for the provisioning bundle reader and verifier (`fiona::bundle::verify`: the
//! tar, the signature, the manifest, the files). Properties: see `fiona_fuzz::bundle`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fiona_fuzz::bundle(data);
});
