//! The `fiona` command: `serve` runs the daemon; the other subcommands are admin tools that
//! talk to the running daemon through its control socket.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use fiona::config::Config;
use fiona::control::{self, StatusView, StudyDetail, StudyView};
use fiona::index::RejectRecord;

#[derive(Parser, Debug)]
#[command(
    name = "fiona",
    version,
    about = "Research-imaging gateway: DICOM node with a crash-safe quarantine"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where to find the data directory: `--data-dir`, else the config file's, else
/// `$FIONA_DATA_DIR`, else `./fiona-data`.
#[derive(Args, Debug, Clone)]
struct Location {
    /// TOML configuration file.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Data directory (overrides the config file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the DICOM node (C-ECHO, C-STORE) and the control API.
    Serve {
        #[command(flatten)]
        loc: Location,
        /// Listen address, HOST:PORT (overrides the config file).
        #[arg(long)]
        listen: Option<String>,
        /// Our AE title (overrides the config file).
        #[arg(long)]
        ae_title: Option<String>,
    },
    /// List the studies in the quarantine.
    Studies {
        #[command(flatten)]
        loc: Location,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show one study and its series.
    Study {
        /// The study's key, as `fiona studies` prints it.
        key: String,
        #[command(flatten)]
        loc: Location,
        #[arg(long)]
        json: bool,
        /// List the study's instances (key, SOP Instance UID, bytes, file) instead.
        #[arg(long)]
        instances: bool,
    },
    /// Counts, bytes, free disk and associations of the running daemon.
    Status {
        #[command(flatten)]
        loc: Location,
        #[arg(long)]
        json: bool,
    },
    /// Instances that were refused and kept in the rejected area, with the reason.
    Rejected {
        #[command(flatten)]
        loc: Location,
        #[arg(long)]
        json: bool,
    },
    /// De-identify a file or a directory tree (header profile; pixel data copied unchanged).
    ///
    /// Uses the project's `[projects.NAME.deid]` settings from `--config`, else the default
    /// profile: basic profile, dates shifted per participant, private attributes removed, and
    /// the project secret kept in the data directory (generated on first use). A directory's
    /// outputs are named by their new SOP Instance UID.
    Deid {
        /// Research project (names the secret and is written as the protocol).
        #[arg(long)]
        project: String,
        /// Pseudonymized participant ID.
        #[arg(long)]
        participant: String,
        /// Event name, e.g. baseline.
        #[arg(long)]
        event: String,
        #[command(flatten)]
        loc: Location,
        /// A file, or a directory searched recursively.
        input: PathBuf,
        /// The output file (for a file input) or directory.
        output: PathBuf,
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
}

fn load_config(loc: &Location) -> Result<Config, String> {
    let mut cfg = match &loc.config {
        Some(p) => Config::from_file(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(d) = &loc.data_dir {
        cfg.data_dir = d.clone();
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fiona: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Serve {
            loc,
            listen,
            ae_title,
        } => {
            let mut cfg = load_config(&loc)?;
            if let Some(l) = listen {
                cfg.listen = l.parse().map_err(|_| {
                    format!("invalid --listen `{l}`: expected HOST:PORT, e.g. 127.0.0.1:11112")
                })?;
            }
            if let Some(ae) = ae_title {
                cfg.ae_title = ae;
            }
            cfg.validate().map_err(|e| e.to_string())?;
            serve(cfg)
        }
        Cmd::Studies { loc, json } => {
            let dir = load_config(&loc)?.data_dir;
            let body = fetch(&dir, "/v1/studies")?;
            if json {
                return print_raw(&body);
            }
            let v: Vec<StudyView> = parse(&body)?;
            print_studies(&v);
            Ok(())
        }
        Cmd::Study {
            key,
            loc,
            json,
            instances,
        } => {
            let dir = load_config(&loc)?.data_dir;
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!(
                    "`{key}` is not a study key (as printed by `fiona studies`)"
                ));
            }
            if instances {
                let body = fetch(&dir, &format!("/v1/studies/{key}/instances"))?;
                if json {
                    return print_raw(&body);
                }
                let v: Vec<fiona::index::InstanceRecord> = parse(&body)?;
                println!(
                    "{:<26} {:>10}  {:<40} FILE",
                    "KEY", "BYTES", "SOP INSTANCE UID"
                );
                for i in v {
                    println!(
                        "{:<26} {:>10}  {:<40} {}",
                        i.key, i.bytes, i.sop_instance_uid, i.file
                    );
                }
                return Ok(());
            }
            let body = fetch(&dir, &format!("/v1/studies/{key}"))?;
            if json {
                return print_raw(&body);
            }
            let d: StudyDetail = parse(&body)?;
            print_study(&d);
            Ok(())
        }
        Cmd::Status { loc, json } => {
            let dir = load_config(&loc)?.data_dir;
            let body = fetch(&dir, "/v1/status")?;
            if json {
                return print_raw(&body);
            }
            let s: StatusView = parse(&body)?;
            print_status(&s);
            Ok(())
        }
        Cmd::Rejected { loc, json } => {
            let dir = load_config(&loc)?.data_dir;
            let body = fetch(&dir, "/v1/rejected")?;
            if json {
                return print_raw(&body);
            }
            let v: Vec<RejectRecord> = parse(&body)?;
            print_rejected(&v);
            Ok(())
        }
        Cmd::Deid {
            project,
            participant,
            event,
            loc,
            input,
            output,
        } => deid(
            &load_config(&loc)?,
            project,
            participant,
            event,
            &input,
            &output,
        ),
        Cmd::CheckConfig { config } => {
            let cfg = Config::from_file(&config).map_err(|e| e.to_string())?;
            println!("{config:?}: valid");
            println!("{cfg:#?}");
            Ok(())
        }
    }
}

fn serve(cfg: Config) -> Result<(), String> {
    let sink = fiona::logging::init();
    tracing::debug!(?sink, "logging initialised");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fiona-rt")
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    rt.block_on(async move {
        let daemon = tokio::task::spawn_blocking(move || fiona::serve::Daemon::open(cfg))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let shutdown = CancellationToken::new();
        let s2 = shutdown.clone();
        tokio::spawn(async move {
            fiona::serve::termination_signal().await;
            s2.cancel();
        });
        daemon.run(shutdown).await.map_err(|e| e.to_string())
    })
}

fn deid(
    cfg: &Config,
    project: String,
    participant: String,
    event: String,
    input: &Path,
    output: &Path,
) -> Result<(), String> {
    use fiona::deid::{engine, file};
    use rayon::prelude::*;
    let deid_cfg = cfg
        .projects
        .get(&project)
        .map(|p| p.deid.clone())
        .unwrap_or_default();
    let engine = deid_cfg.engine(
        &cfg.data_dir,
        engine::Assignment {
            project,
            participant,
            event,
        },
    )?;
    let meta = std::fs::metadata(input).map_err(|e| format!("{}: {e}", input.display()))?;
    if meta.is_file() {
        return file::deidentify_file(input, file::Output::File(output), &engine)
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", input.display()));
    }
    let mut files = Vec::new();
    collect_files(input, &mut files).map_err(|e| format!("{}: {e}", input.display()))?;
    files.sort();
    std::fs::create_dir_all(output).map_err(|e| format!("{}: {e}", output.display()))?;
    let failures: Vec<String> = files
        .par_iter()
        .filter_map(|f| {
            file::deidentify_file(f, file::Output::Dir(output), &engine)
                .err()
                .map(|e| format!("{}: {e}", f.display()))
        })
        .collect();
    for f in &failures {
        eprintln!("fiona deid: FAILED {f}");
    }
    println!(
        "{} de-identified, {} failed",
        files.len() - failures.len(),
        failures.len()
    );
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

fn fetch(dir: &Path, path: &str) -> Result<Vec<u8>, String> {
    control::request(dir, path).map_err(|e| e.to_string())
}

fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    serde_json::from_slice(b).map_err(|e| format!("unexpected answer from daemon: {e}"))
}

fn print_raw(b: &[u8]) -> Result<(), String> {
    // Pretty-print so the output is stable for people and scripts alike.
    let v: serde_json::Value = parse(b)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn print_studies(v: &[StudyView]) {
    if v.is_empty() {
        println!("no studies in the quarantine");
        return;
    }
    println!(
        "{:<26} {:<16} {:<10} {:<10} {:>6} {:>9} {:>10} {:<9} {:>6}",
        "KEY", "ACCESSION", "DATE", "MODALITY", "SERIES", "INSTANCES", "BYTES", "STATE", "AGE"
    );
    for s in v {
        println!(
            "{:<26} {:<16} {:<10} {:<10} {:>6} {:>9} {:>10} {:<9} {:>6}",
            s.key,
            s.accession_number,
            s.study_date,
            s.modalities.join(","),
            s.series,
            s.instances,
            human_bytes(s.bytes),
            s.state,
            human_age(s.age_secs)
        );
    }
}

fn print_study(d: &StudyDetail) {
    let s = &d.study;
    println!("study        {}", s.key);
    println!("accession    {}", s.accession_number);
    println!("date/time    {} {}", s.study_date, s.study_time);
    println!("description  {}", s.study_description);
    println!("patient      {} ({})", d.patient_name, d.patient_id);
    println!("modalities   {}", s.modalities.join(","));
    println!(
        "from         {} -> {} ({})",
        s.calling_ae, s.called_ae, s.peer
    );
    println!(
        "state        {} ({} series, {} instances, {})",
        s.state,
        s.series,
        s.instances,
        human_bytes(s.bytes)
    );
    println!();
    println!(
        "{:>6} {:<8} {:>9} {:>10}  DESCRIPTION",
        "SERIES", "MODALITY", "INSTANCES", "BYTES"
    );
    for se in &d.series {
        println!(
            "{:>6} {:<8} {:>9} {:>10}  {}",
            se.series_number.map(|n| n.to_string()).unwrap_or_default(),
            se.modality,
            se.instances,
            human_bytes(se.bytes),
            se.series_description
        );
    }
}

fn print_status(s: &StatusView) {
    println!("fiona {} ({} on {})", s.version, s.ae_title, s.listen);
    println!("data dir     {}", s.data_dir);
    println!("uptime       {}", human_age(s.uptime_secs as i64));
    println!(
        "quarantine   {} studies ({} receiving, {} arrived), {} series, {} instances, {}",
        s.totals.studies,
        s.studies_receiving,
        s.studies_arrived,
        s.totals.series,
        s.totals.instances,
        human_bytes(s.totals.bytes)
    );
    println!(
        "rejected     {} instances, {}",
        s.totals.rejected,
        human_bytes(s.totals.rejected_bytes)
    );
    println!(
        "disk         {} free of {} (floor {})",
        human_bytes(s.free_bytes),
        human_bytes(s.total_bytes),
        human_bytes(s.min_free_bytes)
    );
    println!(
        "associations {} active, {} since start, {} refused",
        s.associations_active, s.associations_total, s.associations_refused
    );
    println!(
        "since start  {} stored, {} duplicates, {} rejected, {} refused for space",
        s.instances_stored_since_start,
        s.instances_duplicate_since_start,
        s.instances_rejected_since_start,
        s.instances_out_of_resources_since_start
    );
}

fn print_rejected(v: &[RejectRecord]) {
    if v.is_empty() {
        println!("no rejected instances");
        return;
    }
    println!(
        "{:<26} {:>7} {:>10} {:<12} REASON",
        "KEY", "STATUS", "BYTES", "FROM"
    );
    for r in v {
        println!(
            "{:<26} {:>7} {:>10} {:<12} {}",
            r.key,
            format!("{:#06x}", r.status),
            human_bytes(r.bytes),
            r.origin.calling_ae,
            r.reason
        );
    }
}
