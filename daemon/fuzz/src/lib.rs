//! The properties checked by the fuzz targets, shared with the replay tests in `tests/`.
//!
//! Each function panics when a property is violated; the fuzz targets in `fuzz_targets/`
//! only call them, so a crash found by libFuzzer can be replayed on the stable toolchain with
//! `cargo test` (see `docs/FUZZING.md`).

pub mod socket;

use fiona::dimse::{encode_response, Command, NO_DATA_SET};
use fiona::header::{Checker, HeaderError, HeaderFields};

/// Transfer syntaxes selected by the first input byte of `header_scan` (`% 4`).
pub const TRANSFER_SYNTAXES: [&str; 4] = [
    "1.2.840.10008.1.2",      // 0: implicit VR little endian
    "1.2.840.10008.1.2.1",    // 1: explicit VR little endian
    "1.2.840.10008.1.2.2",    // 2: explicit VR big endian
    "1.2.840.10008.1.2.1.99", // 3: deflated explicit VR little endian
];

/// Chunk size selected by the second input byte of `header_scan`: 0..=239 give chunks of
/// 1..=240 bytes (every element header split every way); 240..=255 give powers of two from
/// 256 bytes to 8 MiB (one chunk for any input; sizes around the inflater's 64 KiB buffer).
pub fn chunk_size(b: u8) -> usize {
    if b < 240 {
        usize::from(b) + 1
    } else {
        1usize << (8 + u32::from(b - 240))
    }
}

/// Feed every chunk until the first error (as the SCP does: it stops feeding a failed
/// checker), then finish.
pub fn check<'a>(
    ts: &str,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<HeaderFields, HeaderError> {
    let mut checker = Checker::new(ts).expect("transfer syntax is supported");
    for c in chunks {
        checker.feed(c)?;
    }
    checker.finish()
}

/// Everything in a result. `HeaderFields`' own `Debug` hides values (they are patient data);
/// fuzz inputs are not, and a mismatch report needs them.
pub fn show(r: &Result<HeaderFields, HeaderError>) -> String {
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

/// `header_scan`: byte 0 selects the transfer syntax, byte 1 the chunk size, the rest is the
/// data set. The checker must not panic, and feeding the bytes whole or chunked must give
/// equal results. Returns the (whole) result.
pub fn header_scan(data: &[u8]) -> Option<Result<HeaderFields, HeaderError>> {
    let [ts, chunk, body @ ..] = data else {
        return None;
    };
    let ts = TRANSFER_SYNTAXES[usize::from(*ts % 4)];
    let chunk = chunk_size(*chunk);

    let whole = check(ts, [body]);
    let chunked = check(ts, body.chunks(chunk));
    if whole != chunked {
        panic!(
            "result depends on chunking (ts {ts}, chunk {chunk}, {} bytes):\n  whole:   {}\n  chunked: {}",
            body.len(),
            show(&whole),
            show(&chunked)
        );
    }
    Some(whole)
}

/// `dimse_command`: `Command::parse` must not panic; when it parses, the response the SCP
/// would build from the command's fields with `encode_response` must parse again and carry
/// those fields back. Returns the parsed command.
pub fn dimse_command(data: &[u8]) -> Option<Command> {
    let cmd = Command::parse(data).ok()?;
    // As the SCP answers: the response field, the request's message id, its SOP class and
    // instance echoed back, and some status (the priority is as good a u16 as any).
    let rsp_field = cmd.command_field | 0x8000;
    let status = cmd.priority;
    let encoded = encode_response(
        rsp_field,
        cmd.message_id,
        &cmd.affected_sop_class_uid,
        Some(&cmd.affected_sop_instance_uid),
        status,
    );
    assert!(
        encoded.len().is_multiple_of(2),
        "odd-length response ({} bytes)",
        encoded.len()
    );
    let back = match Command::parse(&encoded) {
        Ok(b) => b,
        Err(e) => panic!(
            "response built from a parsed command does not parse: {e} \
             (request {} bytes, response {} bytes, class uid {} bytes, instance uid {} bytes)",
            data.len(),
            encoded.len(),
            cmd.affected_sop_class_uid.len(),
            cmd.affected_sop_instance_uid.len()
        ),
    };
    assert_eq!(back.command_field, rsp_field);
    assert!(!back.has_data_set());
    assert_eq!(back.data_set_type, NO_DATA_SET);
    assert_eq!(back.affected_sop_class_uid, cmd.affected_sop_class_uid);
    assert_eq!(
        back.affected_sop_instance_uid,
        cmd.affected_sop_instance_uid
    );
    Some(cmd)
}

/// `cfind_identifier`: `fiona::forward::parse_identifier` on a C-FIND response identifier as
/// a PACS sends it. Properties: no panic; memory bounded (run with `-malloc_limit_mb=64`: the
/// identifier is checked before dicom-object parses it, so nothing is allocated from a
/// declared length); a value it returns is text without trailing padding.
pub fn cfind_identifier(data: &[u8]) -> Option<fiona::forward::Identifier> {
    let id = fiona::forward::parse_identifier(data).ok()?;
    for v in id.values() {
        assert!(!v.ends_with(['\0', ' ']), "value keeps its padding");
    }
    Some(id)
}

/// The public key the committed bundle seeds are signed with (`seeds/bundle/signed`, made by
/// `fiona bundle manifest|pack` and `minisign -Sm`; the secret key was thrown away).
pub const BUNDLE_SEED_KEY: &str = "untrusted comment: minisign public key 6B75BAE7D36920FC\n\
                                   RWT8IGnT57p1a1p7hqD5rlIXcBIcITiCUha3LhzR1zuuMUoTYLppnxK3\n";

/// The time the bundle target checks against (ms since the epoch): inside the seed's validity.
pub const BUNDLE_SEED_NOW_MS: i64 = 1_796_670_000_000;

/// `bundle`: `fiona::bundle::verify` on a bundle file's bytes as the box receives them
/// (control socket, inbox), trusting the seeds' key. Properties: no panic; memory bounded by
/// the input (run with `-malloc_limit_mb=64`: nothing is allocated from a declared size);
/// the archive reader returns no more bytes than it was given; the manifest parser, run on
/// whatever `manifest.json` holds, does not panic either (past the signature only the seeds'
/// own manifest is reachable by the fuzzer).
pub fn bundle(data: &[u8]) -> Result<fiona::bundle::Verified, fiona::bundle::Refusal> {
    use fiona::bundle::format::{parse_manifest, read_archive, MANIFEST};
    if let Ok(files) = read_archive(data) {
        let held: usize = files.values().map(Vec::len).sum();
        assert!(held <= data.len(), "the archive reader made up bytes");
        if let Some(m) = files.get(MANIFEST) {
            let _ = parse_manifest(m);
        }
    }
    let key = fiona::bundle::TrustedKey::parse(BUNDLE_SEED_KEY).expect("the seeds' key");
    fiona::bundle::verify(
        data,
        &[key],
        &fiona::bundle::Context {
            box_id: "fiona-000000000000".into(),
            version: "0.1.0".into(),
            now_ms: BUNDLE_SEED_NOW_MS,
            highest_serial: 0,
        },
    )
}
