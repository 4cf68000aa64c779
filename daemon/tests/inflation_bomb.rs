//! Issue 14, item 4: decompression bombs. A Deflated Explicit VR Little Endian data set of
//! about 1 MB that inflates to 1 GiB (and one of 4 MB declaring 4 GiB) is refused while it is
//! received (0xC000, kept in the rejected area with the reason), in bounded memory: the
//! daemon's peak RSS is reported and must stay far below the inflated size. A data set that
//! compresses ordinarily but inflates beyond `max_inflated_bytes` is refused the same way, and
//! `fiona deid` refuses a bomb file without inflating it whole.
//!
//! The bombs are made here: deflate blocks after a full flush do not refer back, so the
//! compressed form of 1 MiB of zeros is repeated as often as needed.

use fiona_tests::fiona_bin;

use fiona_tests::corpus::TS_DEFLATED_EXPLICIT_VR_LE;
use fiona_tests::harness::{fiona_deid, Daemon, Options};
use fiona_tests::scu::{ele, write_part10, RawScu, CT_IMAGE_STORAGE};
use flate2::{Compress, Compression, FlushCompress};

const STUDY: &str = "1.2.826.0.1.3680043.10.1045.14.4";

fn header(sop: &str) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(ele(0x0008, 0x0016, b"UI", CT_IMAGE_STORAGE.as_bytes()));
    d.extend(ele(0x0008, 0x0018, b"UI", sop.as_bytes()));
    d.extend(ele(0x0008, 0x0060, b"CS", b"CT"));
    d.extend(ele(0x0010, 0x0010, b"PN", b"Bombe^Berta"));
    d.extend(ele(0x0010, 0x0020, b"LO", b"BOMB-14-4"));
    d.extend(ele(0x0020, 0x000D, b"UI", STUDY.as_bytes()));
    d.extend(ele(0x0020, 0x000E, b"UI", format!("{STUDY}.1").as_bytes()));
    d
}

fn deflate(c: &mut Compress, input: &[u8], flush: FlushCompress) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 100 + 1024);
    let mut at = 0;
    loop {
        out.reserve(64 * 1024);
        let before = c.total_in();
        let status = c.compress_vec(&input[at..], &mut out, flush).unwrap();
        at += (c.total_in() - before) as usize;
        let done = flush != FlushCompress::Finish || status == flate2::Status::StreamEnd;
        if at == input.len() && out.len() < out.capacity() && done {
            return out;
        }
    }
}

/// A deflated data set: the header, then an OB element of `mib` MiB of `fill`, deflated.
fn bomb(sop: &str, mib: u32, fill: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), false);
    let mut head = header(sop);
    head.extend_from_slice(&[0x09, 0x00, 0x10, 0x10, b'O', b'B', 0, 0]); // (0009,1010) OB
    head.extend_from_slice(&(mib << 20).to_le_bytes());
    let mut out = deflate(&mut c, &head, FlushCompress::Full);
    let chunk: Vec<u8> = (0..1 << 20).map(&fill).collect();
    let a = deflate(&mut c, &chunk, FlushCompress::Full);
    let b = deflate(&mut c, &chunk, FlushCompress::Full);
    let unit = if a == b {
        // Independent blocks: repeat the compressed MiB.
        out.extend_from_slice(&a);
        out.extend_from_slice(&b);
        for _ in 2..mib {
            out.extend_from_slice(&b);
        }
        out.extend(deflate(&mut c, &[], FlushCompress::Finish));
        return out;
    } else {
        [a, b].concat()
    };
    // Data that does not repeat (small bombs only): compress the rest as it is.
    out.extend(unit);
    for _ in 2..mib {
        out.extend(deflate(&mut c, &chunk, FlushCompress::None));
    }
    out.extend(deflate(&mut c, &[], FlushCompress::Finish));
    out
}

fn inflated_len(deflated: &[u8]) -> u64 {
    let mut d = flate2::Decompress::new(false);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    loop {
        let before = d.total_in();
        let st = d
            .decompress(&deflated[at..], &mut buf, flate2::FlushDecompress::None)
            .unwrap();
        at += (d.total_in() - before) as usize;
        if st == flate2::Status::StreamEnd {
            return d.total_out();
        }
    }
}

fn store(d: &Daemon, sop: &str, ds: &[u8]) -> u16 {
    let mut scu = RawScu::connect(
        d.addr,
        "BOMBSCU",
        "FIONA",
        CT_IMAGE_STORAGE,
        TS_DEFLATED_EXPLICIT_VR_LE,
    )
    .expect("associate");
    let st = scu.store_raw(CT_IMAGE_STORAGE, sop, ds).unwrap();
    scu.release().unwrap();
    st
}

#[test]
fn deflate_bombs_are_refused_on_receive_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&fiona_bin!(), &tmp.path().join("data"), &Options::default());
    let before = d.peak_rss_kib().unwrap();

    let gib = bomb(&format!("{STUDY}.1.1"), 1024, |_| 0);
    assert!(gib.len() < 1_100_000, "about 1 MB: {}", gib.len());
    let four = bomb(&format!("{STUDY}.1.2"), 4095, |_| 0);
    assert!(four.len() < 4_400_000, "about 4 MB: {}", four.len());
    // The bombs are what they say: the 1 GiB one inflates to its header and 1 GiB.
    assert!(inflated_len(&gib) > 1 << 30);

    for (sop, ds, what) in [
        (format!("{STUDY}.1.1"), &gib, "1 GiB"),
        (format!("{STUDY}.1.2"), &four, "4 GiB"),
    ] {
        let st = store(&d, &sop, ds);
        assert_eq!(st, 0xC000, "{what}: status {st:#06x}\n{}", d.log());
    }
    let peak = d.peak_rss_kib().unwrap();
    eprintln!(
        "daemon peak RSS: {before} KiB at start, {peak} KiB after a 1 GiB and a 4 GiB bomb ({} and {} bytes sent)",
        gib.len(),
        four.len()
    );
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB");
    let status = d.json(&["status"]);
    assert_eq!(status["totals"]["instances"], 0, "{status:#}");
    assert_eq!(status["totals"]["rejected"], 2, "{status:#}");
    let rejected = d.json(&["rejected"]);
    for r in rejected.as_array().unwrap() {
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.contains("max_inflation_ratio"), "{reason}");
        assert_eq!(r["status"], 0xC000);
    }
    // An ordinary deflated instance still goes through.
    let small = bomb(&format!("{STUDY}.1.3"), 2, |i| (i % 251) as u8);
    assert_eq!(store(&d, &format!("{STUDY}.1.3"), &small), 0x0000);

    // `fiona deid` refuses the bomb file, without inflating it whole.
    let file = tmp.path().join("bomb.dcm");
    write_part10(
        &file,
        CT_IMAGE_STORAGE,
        &format!("{STUDY}.1.1"),
        TS_DEFLATED_EXPLICIT_VR_LE,
        &gib,
    );
    let out = fiona_deid(
        &fiona_bin!(),
        ("--data-dir", &tmp.path().join("deid-data")),
        &file,
        &tmp.path().join("out.dcm"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("max_inflation_ratio"), "{err}");
    assert!(!tmp.path().join("out.dcm").exists());
    let child = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .unwrap()
        .max_rss();
    eprintln!("fiona deid peak RSS (largest child so far): {child} KiB");
    assert!(child < 256 * 1024, "{child} KiB");
}

/// Four random bits per byte: deflates to about half.
fn noise(i: usize) -> u8 {
    ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as u8
}

/// Data that compresses like an image (to about half) but inflates beyond the configured
/// `max_inflated_bytes` is refused by size.
#[test]
fn inflated_size_above_the_configured_limit_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: "max_inflated_bytes = 4194304\n".into(),
            ..Options::default()
        },
    );
    let ds = bomb(&format!("{STUDY}.2.1"), 6, noise);
    let st = store(&d, &format!("{STUDY}.2.1"), &ds);
    assert_eq!(st, 0xC000, "status {st:#06x}");
    let rejected = d.json(&["rejected"]);
    let reason = rejected[0]["reason"].as_str().unwrap();
    assert!(reason.contains("more than 4194304 bytes"), "{reason}");
    let small = bomb(&format!("{STUDY}.2.2"), 3, noise);
    assert_eq!(store(&d, &format!("{STUDY}.2.2"), &small), 0x0000);
}
