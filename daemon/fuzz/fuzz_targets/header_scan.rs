//! Fuzz target for the streaming data set checker (`fiona::header::Checker` / `Scanner`).
//!
//! Input: byte 0 selects the transfer syntax (`% 4`: implicit VR LE, explicit VR LE, explicit
//! VR BE, deflated), byte 1 the chunk size, the rest is the data set as it arrives in P-DATA
//! fragments. Properties (see `fiona_fuzz::header_scan`): no panic; the result is the same
//! fed whole or chunked; memory stays bounded (run with `-rss_limit_mb=512
//! -malloc_limit_mb=64`, so an allocation sized from a declared length is reported).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fiona_fuzz::header_scan(data);
});
