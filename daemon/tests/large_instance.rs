//! Scenario: a multi-frame instance of hundreds of MB passes through with flat memory: the
//! daemon's peak RSS stays far below the instance size, and the stored data set is identical.

use fiona_tests::fiona_bin;
use std::io::Read;

use fiona_tests::corpus;
use fiona_tests::harness::{stored_files, storescu, Daemon, Options};

/// Compare two files' data sets in 1 MiB chunks (the test itself stays small too).
fn same_tail(a: &std::path::Path, a_off: u64, b: &std::path::Path, b_off: u64) -> bool {
    use std::io::{Seek, SeekFrom};
    let mut fa = std::fs::File::open(a).unwrap();
    let mut fb = std::fs::File::open(b).unwrap();
    if fa.metadata().unwrap().len() - a_off != fb.metadata().unwrap().len() - b_off {
        return false;
    }
    fa.seek(SeekFrom::Start(a_off)).unwrap();
    fb.seek(SeekFrom::Start(b_off)).unwrap();
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// Offset of the data set: 132 + 12 + group length of the meta group.
fn dataset_offset(p: &std::path::Path) -> u64 {
    let mut f = std::fs::File::open(p).unwrap();
    let mut head = [0u8; 144];
    f.read_exact(&mut head).unwrap();
    assert_eq!(&head[128..132], b"DICM");
    144 + u32::from_le_bytes([head[140], head[141], head[142], head[143]]) as u64
}

#[test]
fn large_multiframe_with_flat_memory() {
    let tmp = tempfile::tempdir().unwrap();
    // 512 x 512 x 16 bit = 512 KiB per frame: 640 frames = 320 MiB. FIONA_LARGE_FRAMES=2048
    // sends a 1 GiB instance (see docs/BENCHMARKS.md for the figure).
    let frames = std::env::var("FIONA_LARGE_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(640);
    let (file, size) = corpus::write_large_multiframe(tmp.path(), frames).unwrap();
    assert!(size > 300 << 20);
    let d = Daemon::start(&fiona_bin!(), &tmp.path().join("data"), &Options::default());
    let rss_idle = d.peak_rss_kib().unwrap();
    let out = storescu(d.addr, "FIONA", &["-R", "-xe"], std::slice::from_ref(&file));
    assert!(
        out.status.success(),
        "storescu: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let rss_peak = d.peak_rss_kib().unwrap();
    eprintln!(
        "instance {} MiB: daemon peak RSS {} MiB (idle {} MiB)",
        size >> 20,
        rss_peak / 1024,
        rss_idle / 1024
    );
    // Flat: the peak is a small fraction of the instance (PDU buffers, not the instance).
    assert!(
        rss_peak < 96 * 1024,
        "peak RSS {rss_peak} KiB for a {} MiB instance",
        size >> 20
    );
    let stored = stored_files(&d.data_dir);
    assert_eq!(stored.len(), 1);
    assert!(same_tail(
        &file,
        dataset_offset(&file),
        &stored[0],
        dataset_offset(&stored[0])
    ));
    let status = d.json(&["status"]);
    assert_eq!(status["totals"]["instances"], 1);
}
