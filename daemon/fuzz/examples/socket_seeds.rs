//! Writes the `socket` target's seeds to `seeds/socket/`:
//! `cargo run --manifest-path daemon/fuzz/Cargo.toml --example socket_seeds`.
//!
//! Each seed is the bytes of one whole TCP session as an SCU would send them.

use fiona_fuzz::socket::{associate_rq, echo_session, element, p_data, pdu, store_session};

fn dataset(sop: &str) -> Vec<u8> {
    let even = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        v
    };
    [
        element(0x0008, 0x0016, &even("1.2.840.10008.5.1.4.1.1.2")),
        element(0x0008, 0x0018, &even(sop)),
        element(0x0008, 0x0060, b"CT"),
        element(0x0010, 0x0010, b"Fuzz^Seed "),
        element(0x0010, 0x0020, b"FUZZ01"),
        element(0x0020, 0x000D, &even("1.2.826.0.1.3680043.10.1045.77")),
        element(0x0020, 0x000E, &even("1.2.826.0.1.3680043.10.1045.77.1")),
        element(0x0028, 0x0010, &4u16.to_le_bytes()),
        element(0x0028, 0x0011, &4u16.to_le_bytes()),
        element(0x7FE0, 0x0010, &[7u8; 32]),
    ]
    .concat()
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/socket");
    std::fs::create_dir_all(&dir).unwrap();
    let sop = "1.2.826.0.1.3680043.10.1045.77.1.1";
    let store = store_session(sop, &dataset(sop));
    // A data set first, without an association (issue 14, item 1).
    let p_data_first = p_data(0x02, &dataset(sop));
    // A request without presentation contexts: the fixed part and the application context.
    let rq = associate_rq("1.2.840.10008.1.1");
    let no_context = {
        let mut body = rq[6..74].to_vec();
        body.extend_from_slice(&[0x10, 0, 0, 21]);
        body.extend_from_slice(b"1.2.840.10008.3.1.1.1");
        pdu(0x01, &body)
    };
    // An association released at once, and one aborted mid-command.
    let release = [rq.clone(), pdu(0x05, &[0; 4])].concat();
    let abort = [rq, pdu(0x07, &[0; 4])].concat();
    for (name, bytes) in [
        ("echo", echo_session()),
        ("store", store),
        ("p_data_first", p_data_first),
        ("no_context", no_context),
        ("release", release),
        ("abort", abort),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
