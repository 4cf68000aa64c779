//! Replays the committed seeds on the stable toolchain, without libFuzzer:
//! `cargo test --manifest-path daemon/fuzz/Cargo.toml`.

use std::fs;
use std::path::PathBuf;

fn files(dir: &str) -> Vec<(String, Vec<u8>)> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out: Vec<_> = fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Every header_scan seed is a valid data set with the identifying UIDs, whatever the
/// chunking (so the fuzzer starts from inputs that reach the end of the parser).
#[test]
fn header_scan_seeds_are_valid_in_every_chunking() {
    let seeds = files("seeds/header_scan");
    assert!(!seeds.is_empty());
    for (name, data) in seeds {
        for chunk in 0..=255u8 {
            let mut d = data.clone();
            d[1] = chunk;
            let r = fiona_fuzz::header_scan(&d).unwrap();
            let f = r.unwrap_or_else(|e| panic!("{name} (chunk byte {chunk}): {e}"));
            f.check_required().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!f.sop_class_uid.is_empty(), "{name}");
            assert!(!f.patient_name.is_empty(), "{name}");
            assert!(f.series_number.is_some(), "{name}");
        }
    }
}

#[test]
fn dimse_command_seeds_parse() {
    let seeds = files("seeds/dimse_command");
    assert!(!seeds.is_empty());
    for (name, data) in seeds {
        assert!(fiona_fuzz::dimse_command(&data).is_some(), "{name}");
    }
}

/// Every saved reproducer holds the targets' full properties (the findings in
/// docs/FUZZING.md stay fixed).
#[test]
fn regressions_hold_the_properties() {
    for (name, data) in files("regressions/header_scan") {
        eprintln!("header_scan {name}");
        fiona_fuzz::header_scan(&data);
    }
    for (name, data) in files("regressions/dimse_command") {
        eprintln!("dimse_command {name}");
        fiona_fuzz::dimse_command(&data);
    }
}

/// Every socket seed runs a whole session against a real node, which afterwards still
/// answers C-ECHO (the target's properties); the store seed is acknowledged.
#[test]
fn socket_seeds_hold_the_properties() {
    let seeds = files("seeds/socket");
    assert!(seeds.len() >= 6, "{}", seeds.len());
    // The fuzzer starts deep: the echo and store seeds go all the way through.
    for name in ["echo", "store"] {
        let (_, data) = seeds.iter().find(|(n, _)| n == name).unwrap();
        let a = fiona_fuzz::socket::answer(data);
        assert!(fiona_fuzz::socket::echo_answer_ok(&a), "{name}: {a:?}");
    }
    // The no-context seed is refused (A-ASSOCIATE-RJ), the data set sent first is not read.
    let (_, data) = seeds.iter().find(|(n, _)| n == "no_context").unwrap();
    assert_eq!(fiona_fuzz::socket::answer(data).first(), Some(&0x03));
    for (name, data) in &seeds {
        eprintln!("socket seed {name}");
        fiona_fuzz::socket::socket(data);
    }
    let regressions = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("regressions/socket");
    if regressions.is_dir() {
        for (name, data) in files("regressions/socket") {
            eprintln!("socket regression {name}");
            fiona_fuzz::socket::socket(&data);
        }
    }
}

/// The C-FIND identifier seeds parse (the one with a sequence included) and give the UIDs.
#[test]
fn cfind_identifier_seeds_parse() {
    let seeds = files("seeds/cfind_identifier");
    assert!(seeds.len() >= 3);
    for (name, data) in seeds {
        let id = fiona_fuzz::cfind_identifier(&data).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(id[&(0x0020, 0x000D)], "1.2.3", "{name}");
    }
    // Found by the fuzzer: a 6-byte UL put dicom-rs out of step (775 MB reserved). Refused
    // by the check before dicom-rs sees it.
    for (name, data) in files("regressions/cfind_identifier") {
        assert!(fiona_fuzz::cfind_identifier(&data).is_none(), "{name}");
    }
}

/// The signed bundle seed verifies (so the fuzzer starts from a bundle that passes every
/// check), and the manifest alone is refused as no archive; saved reproducers hold the
/// target's properties.
#[test]
fn bundle_seeds_verify_and_regressions_hold() {
    let seeds = files("seeds/bundle");
    let (_, signed) = seeds.iter().find(|(n, _)| n == "signed").unwrap();
    let v = fiona_fuzz::bundle(signed).unwrap_or_else(|r| panic!("the signed seed: {r}"));
    assert_eq!(v.manifest.serial, 7);
    let (_, alone) = seeds.iter().find(|(n, _)| n == "manifest-alone").unwrap();
    assert!(fiona_fuzz::bundle(alone).is_err());
    // One byte of the signed manifest changed: the signature no longer holds.
    let mut tampered = signed.clone();
    let at = signed.windows(9).position(|w| w == b"fuzz-seed").unwrap();
    tampered[at] = b'F';
    assert_eq!(
        fiona_fuzz::bundle(&tampered).unwrap_err().code(),
        "bad_signature"
    );
    for (name, data) in files("regressions/bundle") {
        eprintln!("bundle {name}");
        let _ = fiona_fuzz::bundle(&data);
    }
}

/// Without libFuzzer: 20,000 mutations of the signed seed (one to four bytes changed, or the
/// file cut short, at positions from a fixed pseudo-random sequence). None panics, and a
/// mutation that is still accepted (a byte the signature does not cover: a tar header's
/// mode or time, padding) yields exactly the seed's files: nothing unsigned gets through.
#[test]
fn bundle_mutations_never_change_what_is_accepted() {
    let seeds = files("seeds/bundle");
    let (_, signed) = seeds.iter().find(|(n, _)| n == "signed").unwrap();
    let good = fiona_fuzz::bundle(signed).unwrap();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..20_000 {
        let mut m = signed.clone();
        if next() % 10 == 0 {
            m.truncate((next() as usize) % m.len());
        } else {
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % m.len();
                m[at] = next() as u8;
            }
        }
        match fiona_fuzz::bundle(&m) {
            Ok(v) => {
                assert_eq!(
                    v.files, good.files,
                    "an accepted mutation changed the files"
                );
                assert_eq!(v.manifest, good.manifest);
                accepted += 1;
            }
            Err(_) => refused += 1,
        }
    }
    eprintln!("mutations: {accepted} accepted unchanged, {refused} refused");
    assert!(refused > 10_000, "{refused}");
}
