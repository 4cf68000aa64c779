//! Fuzz target for the whole receive path over a socket: a real fiona node on 127.0.0.1 gets
//! the input as the bytes of one TCP connection (PDUs, negotiation, commands, data sets), then
//! must still answer a C-ECHO. Properties: see `fiona_fuzz::socket`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fiona_fuzz::socket::socket(data);
});
