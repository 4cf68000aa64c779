//! Writes a synthetic MR study for the de-identification benchmark: COUNT uncompressed
//! 256x256 16-bit MR instances (about 0.13 MB each, Explicit VR Little Endian), split into
//! SERIES series (default 2). Used by `bench/deid.sh` next to the CT study of
//! `make_corpus`, so the benchmark corpus has two modalities and two sizes of file.
//!
//! ```sh
//! cargo run --release -p fiona-tests --example make_mr_corpus -- OUTDIR COUNT [SERIES]
//! ```
//!
//! As with `make_corpus`, the files go into `OUTDIR.partial` first, which is renamed to
//! `OUTDIR` at the end; OUTDIR must not exist yet. Everything is synthetic (see
//! `fiona_tests::corpus`), and the same arguments always give byte-identical files. The
//! study UID differs from the CT corpus's (other modality and study number), so the two
//! can share a directory tree without UID clashes.

use std::path::PathBuf;
use std::process::ExitCode;

use fiona_tests::corpus::{write_study, Modality, StudySpec};

/// Study number passed to [`StudySpec::new`]; fixed so the corpus is reproducible.
const STUDY_NUMBER: u32 = 256;
/// Matrix size (rows = columns).
const MATRIX: u16 = 256;

fn usage() -> ExitCode {
    eprintln!(
        "usage: make_mr_corpus OUTDIR COUNT [SERIES]  (COUNT a multiple of SERIES, default 2)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 || args.len() > 3 {
        return usage();
    }
    let out = PathBuf::from(&args[0]);
    let Ok(count) = args[1].parse::<u32>() else {
        return usage();
    };
    let series = match args.get(2).map(|s| s.parse::<u32>()) {
        None => 2,
        Some(Ok(s)) => s,
        Some(Err(_)) => return usage(),
    };
    if count == 0 || series == 0 || count % series != 0 || count / series > 9999 {
        eprintln!(
            "make_mr_corpus: COUNT ({count}) must be a positive multiple of SERIES ({series}), \
             with at most 9999 instances per series"
        );
        return ExitCode::from(2);
    }
    if out.exists() {
        eprintln!("make_mr_corpus: {} already exists", out.display());
        return ExitCode::FAILURE;
    }

    let mut spec = StudySpec::new(STUDY_NUMBER, Modality::Mr);
    spec.rows = MATRIX;
    spec.cols = MATRIX;
    spec.series = series;
    spec.instances_per_series = count / series;

    let mut partial = out.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    if partial.exists() {
        if let Err(e) = std::fs::remove_dir_all(&partial) {
            eprintln!("make_mr_corpus: cannot remove {}: {e}", partial.display());
            return ExitCode::FAILURE;
        }
    }
    let paths = match write_study(&spec, &partial) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("make_mr_corpus: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut bytes = 0u64;
    for p in &paths {
        match std::fs::metadata(p) {
            Ok(m) => bytes += m.len(),
            Err(e) => {
                eprintln!("make_mr_corpus: {}: {e}", p.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = std::fs::rename(&partial, &out) {
        eprintln!(
            "make_mr_corpus: cannot rename {} to {}: {e}",
            partial.display(),
            out.display()
        );
        return ExitCode::FAILURE;
    }
    println!(
        "{} instances ({} series x {}, {}x{} MR, {} bytes) in {}",
        paths.len(),
        spec.series,
        spec.instances_per_series,
        spec.rows,
        spec.cols,
        bytes,
        out.display()
    );
    ExitCode::SUCCESS
}
