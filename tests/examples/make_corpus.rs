//! Writes a synthetic benchmark corpus: one study of COUNT uncompressed 16-bit instances
//! (Explicit VR Little Endian), split into SERIES series (default 4): CT 512x512 (about
//! 0.5 MB each, the default) or MR 256x256 (about 0.13 MB each). Used by `bench/receive.sh`
//! and `bench/deid.sh`.
//!
//! ```sh
//! cargo run --release -p fiona-tests --example make_corpus -- OUTDIR COUNT [SERIES [ct|mr]]
//! ```
//!
//! The files are written into `OUTDIR.partial` first, which is then renamed to `OUTDIR`,
//! so an interrupted run never leaves a directory that looks complete. OUTDIR must not
//! exist yet. Everything is synthetic (see `fiona_tests::corpus`); the same arguments
//! always give byte-identical files.

use std::path::PathBuf;
use std::process::ExitCode;

use fiona_tests::corpus::{write_study, Modality, StudySpec};

/// (modality, study number for [`StudySpec::new`], matrix size): fixed so the corpus is
/// reproducible; the study numbers differ so corpora of both kinds can share a tree.
const KINDS: [(&str, Modality, u32, u16); 2] = [
    ("ct", Modality::Ct, 512, 512),
    ("mr", Modality::Mr, 256, 256),
];

fn usage() -> ExitCode {
    eprintln!(
        "usage: make_corpus OUTDIR COUNT [SERIES [ct|mr]]  (COUNT a multiple of SERIES, \
         default 4; ct: 512x512, the default; mr: 256x256)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 || args.len() > 4 {
        return usage();
    }
    let kind = args.get(3).map(String::as_str).unwrap_or("ct");
    let Some(&(_, modality, study_number, matrix)) = KINDS.iter().find(|k| k.0 == kind) else {
        return usage();
    };
    let out = PathBuf::from(&args[0]);
    let Ok(count) = args[1].parse::<u32>() else {
        return usage();
    };
    let series = match args.get(2).map(|s| s.parse::<u32>()) {
        None => 4,
        Some(Ok(s)) => s,
        Some(Err(_)) => return usage(),
    };
    if count == 0 || series == 0 || count % series != 0 || count / series > 9999 {
        eprintln!(
            "make_corpus: COUNT ({count}) must be a positive multiple of SERIES ({series}), \
             with at most 9999 instances per series"
        );
        return ExitCode::from(2);
    }
    if out.exists() {
        eprintln!("make_corpus: {} already exists", out.display());
        return ExitCode::FAILURE;
    }

    let mut spec = StudySpec::new(study_number, modality);
    spec.rows = matrix;
    spec.cols = matrix;
    spec.series = series;
    spec.instances_per_series = count / series;

    let mut partial = out.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    if partial.exists() {
        if let Err(e) = std::fs::remove_dir_all(&partial) {
            eprintln!("make_corpus: cannot remove {}: {e}", partial.display());
            return ExitCode::FAILURE;
        }
    }
    let paths = match write_study(&spec, &partial) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("make_corpus: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut bytes = 0u64;
    for p in &paths {
        match std::fs::metadata(p) {
            Ok(m) => bytes += m.len(),
            Err(e) => {
                eprintln!("make_corpus: {}: {e}", p.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = std::fs::rename(&partial, &out) {
        eprintln!(
            "make_corpus: cannot rename {} to {}: {e}",
            partial.display(),
            out.display()
        );
        return ExitCode::FAILURE;
    }
    println!(
        "{} instances ({} series x {}, {}x{} {}, {} bytes) in {}",
        paths.len(),
        spec.series,
        spec.instances_per_series,
        spec.rows,
        spec.cols,
        kind.to_uppercase(),
        bytes,
        out.display()
    );
    ExitCode::SUCCESS
}
