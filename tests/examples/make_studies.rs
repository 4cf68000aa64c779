//! Writes COUNT synthetic studies of one small instance each (CT, 16x16, Explicit VR Little
//! Endian, about 1.4 KB per file) and a coupling list that assigns every one of them to a
//! project. Used by `bench/verify_scale.sh` (project-scale control API).
//!
//! ```sh
//! cargo run --release -p fiona-tests --example make_studies -- OUTDIR COUNT PROJECT EVENT
//! ```
//!
//! Writes `OUTDIR/dicom/NNNN/` (1000 studies per directory) and `OUTDIR/coupling.csv`
//! (`accession_number,project,participant,event`; participant `PROJECT-NNNNN`, the study's
//! number, five digits). The files go into `OUTDIR.partial` first, which is renamed to
//! OUTDIR, so an interrupted run never leaves a directory that looks complete. OUTDIR must
//! not exist. Everything is synthetic (`fiona_tests::corpus`, study numbers from 100000 on so
//! the corpus does not share UIDs with the tests' studies); the same arguments always give the
//! same files.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use fiona_tests::corpus::{write_study, Modality, StudySpec};

/// The first study number (keeps the corpus's UIDs apart from those the tests use).
const FIRST: u32 = 100_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count = args.get(1).and_then(|c| c.parse::<u32>().ok());
    let (4, Some(count @ 1..=99_999)) = (args.len(), count) else {
        eprintln!("usage: make_studies OUTDIR COUNT PROJECT EVENT  (COUNT 1..=99999)");
        return ExitCode::from(2);
    };
    let (out, project, event) = (PathBuf::from(&args[0]), &args[2], &args[3]);
    if out.exists() {
        eprintln!("make_studies: {} already exists", out.display());
        return ExitCode::FAILURE;
    }
    let mut partial = out.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    if partial.exists() {
        if let Err(e) = std::fs::remove_dir_all(&partial) {
            eprintln!("make_studies: cannot remove {}: {e}", partial.display());
            return ExitCode::FAILURE;
        }
    }
    let mut csv = String::from("accession_number,project,participant,event\n");
    for n in 0..count {
        let mut spec = StudySpec::new(FIRST + n, Modality::Ct);
        spec.series = 1;
        spec.instances_per_series = 1;
        spec.rows = 16;
        spec.cols = 16;
        let dir = partial
            .join("dicom")
            .join(format!("{:04}", n / 1000))
            .join(n.to_string());
        if let Err(e) = write_study(&spec, &dir) {
            eprintln!("make_studies: {e}");
            return ExitCode::FAILURE;
        }
        let _ = writeln!(csv, "{},{project},{project}-{n:05},{event}", spec.accession);
    }
    if let Err(e) = std::fs::write(partial.join("coupling.csv"), csv) {
        eprintln!("make_studies: coupling.csv: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = std::fs::rename(&partial, &out) {
        eprintln!("make_studies: cannot rename {}: {e}", partial.display());
        return ExitCode::FAILURE;
    }
    println!(
        "{count} one-instance studies and coupling.csv in {}",
        out.display()
    );
    ExitCode::SUCCESS
}
