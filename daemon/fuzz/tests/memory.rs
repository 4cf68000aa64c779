//! The checker's memory must not grow with the data set (header.rs: "The scanner holds at
//! most one element header and the few short values it keeps, whatever the instance size").
//! A counting global allocator measures the peak heap use of one check. Its own test binary,
//! and its tests hold `SERIAL`: other tests' allocations would blur the figure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

struct Counting;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = NOW.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        NOW.fetch_sub(l.size(), Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Peak heap growth (bytes) while checking `body` fed in 16 KiB chunks.
fn peak_while_checking(ts: &str, body: &[u8]) -> usize {
    let base = NOW.load(Relaxed);
    PEAK.store(base, Relaxed);
    let r = fiona_fuzz::check(ts, body.chunks(16 * 1024));
    let peak = PEAK.load(Relaxed) - base;
    drop(r);
    peak
}

/// Explicit VR LE (0008,0060) Modality, CS, length 0: 8 bytes, one `kept` entry each.
const EMPTY_MODALITY: [u8; 8] = [0x08, 0x00, 0x60, 0x00, b'C', b'S', 0, 0];

/// Finding 3 (docs/FUZZING.md), fixed in 98f8855: every top-level wanted element used to be
/// pushed to `Scanner::kept` however often it repeated, so memory grew with the data set
/// (32 bytes kept per 8-byte element; through deflate about 5,000 bytes allocated per byte
/// received). Reproducer: `regressions/header_scan/memory-repeated-wanted-deflated` (12 KB
/// on the wire, 8 MiB inflated, a 64 MiB allocation before the fix).
#[test]
fn memory_does_not_grow_with_repeated_wanted_elements() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let small = EMPTY_MODALITY.repeat(1_000);
    let large = EMPTY_MODALITY.repeat(1_000_000);
    let ts = "1.2.840.10008.1.2.1";
    let p_small = peak_while_checking(ts, &small);
    let p_large = peak_while_checking(ts, &large);
    assert!(
        p_large <= p_small + 64 * 1024,
        "peak heap {p_small} B for 8 KB of data set, {p_large} B for 8 MB"
    );

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/regressions/header_scan/memory-repeated-wanted-deflated"
    );
    let data = std::fs::read(path).unwrap();
    let p = peak_while_checking("1.2.840.10008.1.2.1.99", &data[2..]);
    assert!(
        p < 8 << 20,
        "peak heap {p} B for a {} B deflated input",
        data.len()
    );
}

/// Passes today: values longer than MAX_KEPT_VALUE and declared lengths are never allocated.
#[test]
fn memory_is_not_taken_from_declared_lengths() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // (0010,0010) UT of 0xFFFFFFF0 bytes declared, a few sent
    let mut d = vec![0x10, 0x00, 0x10, 0x00, b'U', b'T', 0, 0];
    d.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    d.extend_from_slice(&[b'x'; 4096]);
    let p = peak_while_checking("1.2.840.10008.1.2.1", &d);
    assert!(p < 64 * 1024, "peak heap {p} B");
}
