//! Fuzz target for the streaming data set checker (`fiona::header::Checker` / `Scanner`).
//!
//! Input layout:
//! * byte 0: transfer syntax (`% 4`): implicit VR LE, explicit VR LE, explicit VR BE,
//!   deflated explicit VR LE;
//! * byte 1: chunk size (see [`chunk_size`]);
//! * the rest: the data set bytes, as they would arrive in P-DATA fragments.
//!
//! Properties (a violation panics, which libFuzzer reports as a crash):
//! * the checker never panics;
//! * the result does not depend on how the bytes are chunked: feeding them whole and feeding
//!   them in chunks give equal `Result<HeaderFields, HeaderError>`;
//! * memory stays bounded: run with `-rss_limit_mb=512 -malloc_limit_mb=64` so an allocation
//!   sized from a declared length is reported.
#![no_main]

use fiona::header::{Checker, HeaderError, HeaderFields};
use libfuzzer_sys::fuzz_target;

const TRANSFER_SYNTAXES: [&str; 4] = [
    "1.2.840.10008.1.2",      // implicit VR little endian
    "1.2.840.10008.1.2.1",    // explicit VR little endian
    "1.2.840.10008.1.2.2",    // explicit VR big endian
    "1.2.840.10008.1.2.1.99", // deflated explicit VR little endian
];

/// 0..=239 give chunks of 1..=240 bytes (every header split); 240..=255 give powers of two
/// from 256 bytes to 8 MiB (larger than any input, i.e. one chunk, and around the
/// inflater's 64 KiB output buffer).
fn chunk_size(b: u8) -> usize {
    if b < 240 {
        usize::from(b) + 1
    } else {
        1usize << (8 + u32::from(b - 240))
    }
}

/// Feed every chunk until the first error (as the SCP does: it stops feeding a failed
/// checker), then finish.
fn check<'a>(ts: &str, chunks: impl Iterator<Item = &'a [u8]>) -> Result<HeaderFields, HeaderError> {
    let mut checker = Checker::new(ts).expect("transfer syntax is supported");
    for c in chunks {
        checker.feed(c)?;
    }
    checker.finish()
}

/// `HeaderFields`' own `Debug` hides values (patient data); fuzz inputs are not patient data,
/// so show everything on a mismatch.
fn show(r: &Result<HeaderFields, HeaderError>) -> String {
    match r {
        Err(e) => format!("Err({e:?})"),
        Ok(f) => format!(
            "Ok(sop_class={:?} sop_inst={:?} study={:?} series={:?} date={:?} time={:?} acc={:?} \
             modality={:?} study_desc={:?} series_desc={:?} series_no={:?} name={:?} pid={:?} \
             frames={:?})",
            f.sop_class_uid,
            f.sop_instance_uid,
            f.study_instance_uid,
            f.series_instance_uid,
            f.study_date,
            f.study_time,
            f.accession_number,
            f.modality,
            f.study_description,
            f.series_description,
            f.series_number,
            f.patient_name,
            f.patient_id,
            f.number_of_frames
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let [ts, chunk, body @ ..] = data else {
        return;
    };
    let ts = TRANSFER_SYNTAXES[usize::from(*ts % 4)];
    let chunk = chunk_size(*chunk);

    let whole = check(ts, std::iter::once(body));
    let chunked = check(ts, body.chunks(chunk));
    if whole != chunked {
        panic!(
            "result depends on chunking (ts {ts}, chunk {chunk}, {} bytes):\n  whole:   {}\n  chunked: {}",
            body.len(),
            show(&whole),
            show(&chunked)
        );
    }
});
