//! `fiona deid`: de-identify a file or a directory tree offline, without the daemon, with a
//! project's settings from `--config` (header engine, then the pixel stage), files in
//! parallel on rayon; `--report` writes what became of every input as JSON.

use std::path::{Path, PathBuf};

use clap::Args;

use super::Global;
use crate::config::Config;

#[derive(Args, Debug)]
pub struct DeidArgs {
    #[command(flatten)]
    to: super::Target,
    /// A file, or a directory searched recursively.
    input: PathBuf,
    /// The output file (for a file input) or directory.
    output: PathBuf,
    /// Also write, as JSON, what became of every input file: its output path, or why
    /// it has none (failed or parked, with the reason; dropped by the project's
    /// settings), the text boxes blanked and the seconds it took.
    #[arg(long)]
    report: Option<PathBuf>,
}

pub fn deid(g: &Global, a: DeidArgs) -> Result<(), String> {
    g.no_json("deid")?;
    let cfg = g.config()?;
    crate::header::InflateLimits {
        max_bytes: cfg.max_inflated_bytes,
        max_ratio: cfg.max_inflation_ratio,
    }
    .install();
    run(
        &cfg,
        a.to.project,
        a.to.participant,
        a.to.event,
        &a.input,
        &a.output,
        a.report.as_deref(),
    )
}

/// What became of one input file of `fiona deid` (its `--report`).
#[derive(serde::Serialize)]
struct DeidFileReport {
    input: PathBuf,
    /// The file written; absent when there is none.
    output: Option<PathBuf>,
    /// `ok`, `failed` (parked: nothing written, the reason says why) or `dropped` (the
    /// project's settings want no output).
    result: &'static str,
    reason: Option<String>,
    /// Text boxes the pixel stage blanked, and pixels blanked in all frames.
    ocr_words: u64,
    pixels_masked: u64,
    seconds: f64,
}

#[derive(serde::Serialize)]
struct DeidReport {
    files: Vec<DeidFileReport>,
}

fn deid_one(
    input: &Path,
    output: crate::deid::file::Output<'_>,
    engine: &crate::deid::engine::Engine,
    pixels: &crate::pixel::scrub::Stage,
) -> DeidFileReport {
    use crate::deid::file;
    let t = std::time::Instant::now();
    let r = file::deidentify_file_with(input, output, engine, Some(pixels));
    let mut rep = DeidFileReport {
        input: input.to_path_buf(),
        output: None,
        result: "ok",
        reason: None,
        ocr_words: 0,
        pixels_masked: 0,
        seconds: 0.0,
    };
    match r {
        Ok((report, path)) => {
            rep.output = Some(path);
            rep.ocr_words = report.ocr_words;
            rep.pixels_masked = report.pixels_masked;
        }
        Err(file::FileError::Dropped(why)) => {
            rep.result = "dropped";
            rep.reason = Some(why.to_string());
        }
        Err(e) => {
            rep.result = "failed";
            rep.reason = Some(e.to_string());
        }
    }
    rep.seconds = t.elapsed().as_secs_f64();
    rep
}

fn run(
    cfg: &Config,
    project: String,
    participant: String,
    event: String,
    input: &Path,
    output: &Path,
    report: Option<&Path>,
) -> Result<(), String> {
    use crate::deid::{engine, file};
    use rayon::prelude::*;
    crate::project::validate_project_name(&project)?;
    let (deid_cfg, pixel_cfg) = match cfg.projects.get(&project) {
        Some(p) => {
            // A configured project's IDs and events are checked as on assignment.
            let projects = cfg.compile_projects().map_err(|e| e.to_string())?;
            let compiled = projects.get(&project).map_err(|e| e.to_string())?;
            compiled
                .check_participant(&participant)
                .and_then(|()| compiled.check_event(&event))
                .map_err(|e| e.to_string())?;
            (p.deid.clone(), p.pixel.clone())
        }
        None => Default::default(),
    };
    let engine = deid_cfg.engine(
        &cfg.data_dir,
        engine::Assignment {
            project,
            participant,
            event,
        },
    )?;
    // The pixel stage: known regions (the project's library or fiona's default), the
    // project's exclusions and drops, and OCR as the project selects it.
    let pixels = crate::pixel::scrub::Stage::from_config(&pixel_cfg)?;
    let meta = std::fs::metadata(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let write_report = |files: Vec<DeidFileReport>| -> Result<(), String> {
        let Some(path) = report else { return Ok(()) };
        let body = serde_json::to_vec_pretty(&DeidReport { files }).map_err(|e| e.to_string())?;
        std::fs::write(path, body).map_err(|e| format!("{}: {e}", path.display()))
    };
    if meta.is_file() {
        let r = deid_one(input, file::Output::File(output), &engine, &pixels);
        let outcome = match (r.result, &r.reason) {
            ("dropped", Some(why)) => {
                println!("{}: no output: {why}", input.display());
                Ok(())
            }
            ("failed", Some(why)) => Err(format!("{}: {why}", input.display())),
            _ => Ok(()),
        };
        write_report(vec![r])?;
        return outcome;
    }
    let mut files = Vec::new();
    collect_files(input, &mut files).map_err(|e| format!("{}: {e}", input.display()))?;
    files.sort();
    std::fs::create_dir_all(output).map_err(|e| format!("{}: {e}", output.display()))?;
    let results: Vec<DeidFileReport> = files
        .par_iter()
        .map(|f| deid_one(f, file::Output::Dir(output), &engine, &pixels))
        .collect();
    let mut failures = Vec::new();
    let mut dropped = 0usize;
    for r in &results {
        let why = r.reason.as_deref().unwrap_or_default();
        match r.result {
            "failed" => failures.push(format!("{}: {why}", r.input.display())),
            "dropped" => {
                dropped += 1;
                println!("fiona deid: no output: {}: {why}", r.input.display());
            }
            _ => {}
        }
    }
    for f in &failures {
        eprintln!("fiona deid: FAILED {f}");
    }
    println!(
        "{} de-identified, {} failed{}",
        files.len() - failures.len() - dropped,
        failures.len(),
        if dropped > 0 {
            format!(", {dropped} dropped by the project's settings")
        } else {
            String::new()
        }
    );
    write_report(results)?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} files failed",
            failures.len(),
            files.len()
        ))
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            collect_files(&e.path(), out)?;
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}
