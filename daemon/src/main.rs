//! The `fiona` command: `serve` runs the daemon; the other subcommands are admin tools that
//! talk to the running daemon through its control socket.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

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
    /// List the studies in the quarantine, with their assignments.
    ///
    /// Unassigned studies older than `unassigned_visible_days` (default 7) are left out;
    /// `--all` shows them too, marked hidden.
    Studies {
        #[command(flatten)]
        loc: Location,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Include unassigned studies past the visibility period.
        #[arg(long)]
        all: bool,
    },
    /// Assign a study to a research project, participant and event (or correct it).
    ///
    /// The participant ID must match the project's pattern; a new ID that matches is
    /// remembered for the project. Assigning the same study to another project adds a second
    /// assignment; assigning it again to the same project with another participant or event
    /// is a correction (recorded, with a new transfer).
    Assign {
        /// The study's key (from `fiona studies`) or its accession number.
        study: String,
        #[arg(long)]
        project: String,
        #[arg(long)]
        participant: String,
        #[arg(long)]
        event: String,
        /// The participant ID is already used for another PatientID, and that is the same
        /// person (e.g. a hospital ID that changed). Without it such an assignment is refused.
        #[arg(long)]
        allow_other_patient: bool,
        #[command(flatten)]
        loc: Location,
        #[arg(long)]
        json: bool,
    },
    /// Coupling lists: accession number or StudyInstanceUID -> project, participant, event.
    Coupling {
        #[command(subcommand)]
        cmd: CouplingCmd,
    },
    /// Transfers (one per assignment, correction or later addition) and their state.
    Transfers {
        #[command(flatten)]
        loc: Location,
        #[arg(long)]
        project: Option<String>,
        /// requested, deidentified, sent, verified, failed, cancelled or parked (nothing could
        /// be passed on; see `fiona parked`).
        #[arg(long)]
        state: Option<String>,
        /// Created on or after this date (YYYY-MM-DD, UTC).
        #[arg(long)]
        since: Option<String>,
        /// Created on or before this date (YYYY-MM-DD, UTC).
        #[arg(long)]
        until: Option<String>,
        /// Only this study (quarantine key).
        #[arg(long)]
        study: Option<String>,
        /// Write the records as CSV or JSON (for the project's own records).
        #[arg(long, value_parser = ["csv", "json"])]
        export: Option<String>,
        /// With --export: write to this file instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The configured projects: pattern, events, approval, whether they take assignments now.
    Projects {
        #[command(flatten)]
        loc: Location,
        #[arg(long)]
        json: bool,
    },
    /// The audit trail: every assignment, correction, refusal, rule match and coupling import.
    Audit {
        #[command(flatten)]
        loc: Location,
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
    /// Whether the running daemon is healthy (the index works). Exit status 0 when healthy,
    /// 1 otherwise, with the problems on stderr: for monitors and the watchdog.
    Health {
        #[command(flatten)]
        loc: Location,
        #[arg(long)]
        json: bool,
    },
    /// Send transfers again (e.g. after the research PACS lost data): a study's, or a
    /// project's (optionally those created since a date). The PACS keeps one copy per SOP
    /// Instance UID. A parked transfer is de-identified again (e.g. after its project's
    /// settings changed).
    Resend {
        #[command(flatten)]
        loc: Location,
        /// A study: quarantine key or accession number.
        #[arg(long, conflicts_with = "project")]
        study: Option<String>,
        #[arg(long, required_unless_present = "study")]
        project: Option<String>,
        /// With --project: transfers created on or after this date (YYYY-MM-DD, UTC).
        #[arg(long, requires = "project")]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Ask the research PACS (C-FIND) what it holds of a project's sent studies and report
    /// what it is missing. Exit status 1 when anything is missing or a PACS cannot be asked.
    Verify {
        #[command(flatten)]
        loc: Location,
        #[arg(long)]
        project: String,
        #[arg(long)]
        json: bool,
    },
    /// Instances the pipeline parked (could not scrub or de-identify), with the reasons.
    Parked {
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
    /// De-identify a file or a directory tree: header profile, and the pixel stage (known
    /// regions and OCR) as the project sets it.
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
        /// Also write, as JSON, what became of every input file: its output path, or why
        /// it has none (failed or parked, with the reason; dropped by the project's
        /// settings), the text boxes blanked and the seconds it took.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum CouplingCmd {
    /// Load a coupling list (CSV). The whole file is checked first; if any line is bad,
    /// every bad line is reported and nothing is loaded. Studies already waiting that match
    /// are assigned at once; later arrivals are assigned when they come.
    Import {
        file: PathBuf,
        /// Let rows change the participant or event of keys already coupled.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        loc: Location,
        #[arg(long)]
        json: bool,
    },
    /// The coupling rows loaded so far.
    List {
        #[command(flatten)]
        loc: Location,
        #[arg(long)]
        json: bool,
    },
}

/// `GET path` from the daemon; print the JSON as is (`--json`) or hand it parsed to `print`.
fn show<T: serde::de::DeserializeOwned>(
    loc: &Location,
    path: &str,
    json: bool,
    print: impl FnOnce(T),
) -> Result<(), String> {
    let body = fetch(&load_config(loc)?.data_dir, path)?;
    if json {
        return print_raw(&body);
    }
    print(parse(&body)?);
    Ok(())
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
    // `fiona studies | head`: a reader that stops early ends the listing quietly instead of
    // a panic ("failed printing to stdout") from println!.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
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
        Cmd::Studies { loc, json, all } => {
            let dir = load_config(&loc)?.data_dir;
            let body = fetch(
                &dir,
                if all {
                    "/v1/studies?all=true"
                } else {
                    "/v1/studies"
                },
            )?;
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
            show(&loc, "/v1/status", json, |s: StatusView| print_status(&s))
        }
        Cmd::Health { loc, json } => {
            let dir = load_config(&loc)?.data_dir;
            // 503 carries the same body as 200: the daemon answered, it is just unhealthy.
            let body = match control::request(&dir, "/v1/health") {
                Ok(b) => b,
                Err(control::ClientError::Status { status: 503, body }) => body.into_bytes(),
                Err(e) => return Err(e.to_string()),
            };
            let h: control::HealthView = parse(&body)?;
            if json {
                print_raw(&body)?;
            } else if h.healthy {
                println!("healthy");
            }
            if h.healthy {
                Ok(())
            } else {
                Err(format!("unhealthy: {}", h.problems.join("; ")))
            }
        }
        Cmd::Resend {
            loc,
            study,
            project,
            since,
            json,
        } => {
            let dir = load_config(&loc)?.data_dir;
            let body = serde_json::to_vec(&control::ResendBody {
                study,
                project,
                since,
            })
            .map_err(|e| e.to_string())?;
            let out = control::run_job(&dir, "/v1/resend", &body, |j| {
                show_progress(j, "transfers looked at")
            })
            .map_err(|e| match e {
                control::ClientError::Status { body, .. } => format!("resend refused: {body}"),
                other => format!("resend: {other}"),
            })?;
            if json {
                return print_raw(&out);
            }
            let o: control::ResendOutcome = parse(&out)?;
            println!("{} transfers re-queued", o.transfers.len());
            for t in o.transfers {
                println!("  {t}");
            }
            Ok(())
        }
        Cmd::Verify { loc, project, json } => {
            let dir = load_config(&loc)?.data_dir;
            let body =
                serde_json::to_vec(&control::VerifyBody { project }).map_err(|e| e.to_string())?;
            // A job in the daemon: progress on stderr, the report on stdout.
            let out = control::run_job(&dir, "/v1/verify", &body, |j| {
                show_progress(j, "transfers checked")
            })
            .map_err(|e| match e {
                control::ClientError::Status { body, .. } => format!("verify refused: {body}"),
                other => format!("verify: {other}"),
            })?;
            let rows: Vec<fiona::pipeline::VerifyRow> = parse(&out)?;
            if json {
                print_raw(&out)?;
            } else {
                println!(
                    "{:<26} {:<20} {:<12} {:<16} {:>6} {:>6} {:>8}  PROBLEM",
                    "TRANSFER", "PARTICIPANT", "EVENT", "DESTINATION", "SENT", "HELD", "MISSING"
                );
                for r in &rows {
                    println!(
                        "{:<26} {:<20} {:<12} {:<16} {:>6} {:>6} {:>8}  {}",
                        r.transfer,
                        r.participant,
                        r.event,
                        r.destination,
                        r.sent,
                        r.held,
                        r.missing,
                        r.error.as_deref().unwrap_or_default()
                    );
                }
            }
            let missing: u64 = rows.iter().map(|r| r.missing).sum();
            let errors = rows.iter().filter(|r| r.error.is_some()).count();
            if !json {
                println!(
                    "{} transfers checked, {missing} instances missing, {errors} destinations not answering",
                    rows.len()
                );
            }
            if missing > 0 || errors > 0 {
                Err(format!(
                    "{missing} instances missing, {errors} destinations not answering"
                ))
            } else {
                Ok(())
            }
        }
        Cmd::Parked { loc, json } => show(
            &loc,
            "/v1/transfers",
            json,
            |v: Vec<fiona::assign::TransferRecord>| print_parked(&v),
        ),
        Cmd::Rejected { loc, json } => show(&loc, "/v1/rejected", json, |v: Vec<RejectRecord>| {
            print_rejected(&v)
        }),
        Cmd::Deid {
            project,
            participant,
            event,
            loc,
            input,
            output,
            report,
        } => {
            let cfg = load_config(&loc)?;
            fiona::header::InflateLimits {
                max_bytes: cfg.max_inflated_bytes,
                max_ratio: cfg.max_inflation_ratio,
            }
            .install();
            deid(
                &cfg,
                project,
                participant,
                event,
                &input,
                &output,
                report.as_deref(),
            )
        }
        Cmd::Assign {
            study,
            project,
            participant,
            event,
            allow_other_patient,
            loc,
            json,
        } => {
            let dir = load_config(&loc)?.data_dir;
            let body = serde_json::to_vec(&control::AssignBody {
                study,
                project,
                participant,
                event,
                allow_other_patient,
            })
            .map_err(|e| e.to_string())?;
            let (status, answer) =
                control::request_post(&dir, "/v1/assign", "application/json", &body)
                    .map_err(|e| e.to_string())?;
            let answer = control::check_status(status, answer).map_err(|e| match e {
                control::ClientError::Status { body, .. } => format!("assignment refused: {body}"),
                other => other.to_string(),
            })?;
            if json {
                return print_raw(&answer);
            }
            let o: fiona::assign::AssignOutcome = parse(&answer)?;
            match o.result.as_str() {
                "unchanged" => println!(
                    "study {} is already assigned to {} participant {} event {} (transfer {})",
                    o.study_key,
                    o.project,
                    o.participant,
                    o.event,
                    o.transfer.unwrap_or_default()
                ),
                r => println!(
                    "study {} {} to {} participant {}{} event {} (transfer {})",
                    o.study_key,
                    if r == "corrected" {
                        "re-assigned"
                    } else {
                        "assigned"
                    },
                    o.project,
                    o.participant,
                    if o.new_participant { " (new)" } else { "" },
                    o.event,
                    o.transfer.unwrap_or_default()
                ),
            }
            Ok(())
        }
        Cmd::Coupling { cmd } => coupling(cmd),
        Cmd::Transfers {
            loc,
            project,
            state,
            since,
            until,
            study,
            export,
            output,
            json,
        } => {
            let dir = load_config(&loc)?.data_dir;
            let mut q = Vec::new();
            for (k, v) in [
                ("project", project),
                ("state", state),
                ("since", since),
                ("until", until),
                ("study", study),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", control::encode_query(&v)));
                }
            }
            let path = if q.is_empty() {
                "/v1/transfers".to_string()
            } else {
                format!("/v1/transfers?{}", q.join("&"))
            };
            if export.is_some() && !q.iter().any(|x| x.starts_with("project=")) {
                return Err("--export writes one project's records: name it with --project".into());
            }
            let body = fetch(&dir, &path)?;
            let v: Vec<fiona::assign::TransferRecord> = parse(&body)?;
            match export.as_deref() {
                Some(format) => {
                    let rows: Vec<ExportRow> = v.iter().map(ExportRow::from).collect();
                    let bytes = if format == "csv" {
                        transfers_csv(&rows)?
                    } else {
                        let mut b = serde_json::to_vec_pretty(&rows).map_err(|e| e.to_string())?;
                        b.push(b'\n');
                        b
                    };
                    match output {
                        Some(p) => std::fs::write(&p, bytes)
                            .map_err(|e| format!("{}: {e}", p.display()))?,
                        None => {
                            use std::io::Write;
                            std::io::stdout()
                                .write_all(&bytes)
                                .map_err(|e| e.to_string())?
                        }
                    }
                    Ok(())
                }
                None if json => print_raw(&body),
                None => {
                    print_transfers(&v);
                    Ok(())
                }
            }
        }
        Cmd::Projects { loc, json } => show(
            &loc,
            "/v1/projects",
            json,
            |v: Vec<control::ProjectView>| {
                if v.is_empty() {
                    println!("no projects configured (see docs/CONFIG.md, [projects.NAME])");
                }
                for p in v {
                    println!(
                        "{}  [{}{}]",
                        p.name,
                        p.state,
                        p.refusal
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_else(|| ", takes assignments".into())
                    );
                    println!(
                        "  participant IDs  {} ({} known)",
                        p.participant_pattern, p.participants
                    );
                    println!("  events           {}", p.events.join(", "));
                    println!(
                        "  approval         {} {} .. {}",
                        p.approval,
                        p.approval_start.as_deref().unwrap_or("-"),
                        p.approval_end.as_deref().unwrap_or("-")
                    );
                    if let Some(ae) = &p.auto_id_ae_title {
                        println!("  auto-ID AE title {ae}");
                    }
                    if !p.destinations.is_empty() {
                        println!("  destinations     {}", p.destinations.join(", "));
                    }
                    let t: Vec<String> = p
                        .transfers
                        .iter()
                        .map(|(k, v)| format!("{v} {k}"))
                        .collect();
                    println!(
                        "  transfers        {}",
                        if t.is_empty() {
                            "none".into()
                        } else {
                            t.join(", ")
                        }
                    );
                }
            },
        ),
        Cmd::Audit { loc, json } => show(
            &loc,
            "/v1/audit",
            json,
            |v: Vec<fiona::assign::AuditRecord>| {
                for a in v {
                    println!(
                        "{:>5} {} {:<16} {:<18} {} {} {} {} {}",
                        a.seq,
                        iso_ms(a.time_ms),
                        a.action,
                        a.actor,
                        a.study_key.as_deref().unwrap_or("-"),
                        a.project.as_deref().unwrap_or("-"),
                        a.participant
                            .as_deref()
                            .filter(|p| !p.is_empty())
                            .unwrap_or("-"),
                        a.event.as_deref().filter(|p| !p.is_empty()).unwrap_or("-"),
                        a.detail
                    );
                }
            },
        ),
        Cmd::CheckConfig { config } => {
            let cfg = Config::from_file(&config).map_err(|e| e.to_string())?;
            fiona::pipeline::build_stages(&cfg)?;
            println!("{config:?}: valid");
            println!("{cfg:#?}");
            Ok(())
        }
    }
}

fn coupling(cmd: CouplingCmd) -> Result<(), String> {
    match cmd {
        CouplingCmd::Import {
            file,
            replace,
            loc,
            json,
        } => {
            let dir = load_config(&loc)?.data_dir;
            let text = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            if std::str::from_utf8(&text).is_err() {
                return Err(format!(
                    "{}: not UTF-8 text; save the list as CSV (UTF-8)",
                    file.display()
                ));
            }
            let path = format!("/v1/coupling?replace={replace}");
            let (status, body) =
                control::request_post(&dir, &path, "text/csv", &text).map_err(|e| e.to_string())?;
            if status != 200 && status != 422 {
                control::check_status(status, body).map_err(|e| e.to_string())?;
                return Err("unexpected answer".into());
            }
            let r: fiona::assign::coupling::ImportReport = parse(&body)?;
            if json {
                print_raw(&body)?;
            } else if r.errors.is_empty() {
                println!(
                    "{}: {} rows loaded ({} unchanged, {} replaced), import {}",
                    file.display(),
                    r.rows,
                    r.unchanged,
                    r.replaced,
                    r.import_id
                );
                for a in &r.assigned {
                    println!(
                        "  assigned study {} to {} participant {} event {}",
                        a.study_key, a.project, a.participant, a.event
                    );
                }
                for f in &r.refused {
                    println!("  not assigned: {f}");
                }
            }
            if r.errors.is_empty() {
                Ok(())
            } else {
                if !json {
                    for e in &r.errors {
                        eprintln!("{}:{}: {}", file.display(), e.line, e.message);
                    }
                }
                Err(format!(
                    "{}: {} bad lines; nothing was loaded",
                    file.display(),
                    r.errors.len()
                ))
            }
        }
        CouplingCmd::List { loc, json } => show(
            &loc,
            "/v1/coupling",
            json,
            |v: Vec<fiona::assign::CouplingEntry>| {
                println!(
                    "{:<18} {:<40} {:<20} {:<20} {:<12} IMPORT",
                    "KIND", "KEY", "PROJECT", "PARTICIPANT", "EVENT"
                );
                for e in v {
                    let kind = match e.kind {
                        fiona::assign::KeyKind::AccessionNumber => "accession_number",
                        fiona::assign::KeyKind::StudyInstanceUid => "study_instance_uid",
                    };
                    println!(
                        "{:<18} {:<40} {:<20} {:<20} {:<12} {}:{}",
                        kind, e.key, e.project, e.participant, e.event, e.import_id, e.line
                    );
                }
            },
        ),
    }
}

/// RFC 3339 UTC time of a millisecond timestamp.
fn iso_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// One transfer in an export for the project's own records: pseudonym, event, research
/// StudyInstanceUID and counts; nothing from the clinical side but the quarantine key.
#[derive(Debug, serde::Serialize)]
struct ExportRow {
    transfer_id: String,
    study_key: String,
    project: String,
    participant: String,
    event: String,
    kind: String,
    via: String,
    actor: String,
    created: String,
    state: String,
    state_changed: String,
    series: usize,
    instances: u64,
    deidentified: u64,
    parked: usize,
    dropped: u64,
    sent: u64,
    verified: String,
    research_study_uid: String,
    replaces: String,
}

impl From<&fiona::assign::TransferRecord> for ExportRow {
    fn from(t: &fiona::assign::TransferRecord) -> Self {
        ExportRow {
            transfer_id: t.id.clone(),
            study_key: t.study_key.clone(),
            project: t.project.clone(),
            participant: t.participant.clone(),
            event: t.event.clone(),
            kind: format!("{:?}", t.kind).to_lowercase(),
            via: t.via.to_string(),
            actor: t.actor.clone(),
            created: iso_ms(t.created_ms),
            state: t.state.as_str().to_string(),
            state_changed: iso_ms(t.state_ms),
            series: t.series.len(),
            instances: t.instances,
            deidentified: t.deidentified,
            parked: t.parked.len(),
            dropped: t.dropped,
            sent: t.sent,
            verified: t.verified_ms.map(iso_ms).unwrap_or_default(),
            research_study_uid: t.research_study_uid.clone(),
            replaces: t.replaces.clone().unwrap_or_default(),
        }
    }
}

fn transfers_csv(rows: &[ExportRow]) -> Result<Vec<u8>, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(|e| e.to_string())?;
    }
    w.into_inner().map_err(|e| e.to_string())
}

fn print_parked(v: &[fiona::assign::TransferRecord]) {
    let rows: Vec<_> = v
        .iter()
        .flat_map(|t| t.parked.iter().map(move |p| (t, p)))
        .collect();
    if rows.is_empty() {
        println!("no parked instances");
        return;
    }
    println!(
        "{:<26} {:<26} {:<20} {:<26}  REASON",
        "TRANSFER", "STUDY", "PROJECT", "INSTANCE"
    );
    for (t, p) in rows {
        println!(
            "{:<26} {:<26} {:<20} {:<26}  {}",
            t.id, t.study_key, t.project, p.instance, p.reason
        );
    }
}

fn print_transfers(v: &[fiona::assign::TransferRecord]) {
    if v.is_empty() {
        println!("no transfers");
        return;
    }
    println!(
        "{:<26} {:<26} {:<20} {:<20} {:<12} {:<10} {:<12} {:>6} {:>9} {:>6} {:>6} {:>6}  ACTOR",
        "TRANSFER",
        "STUDY",
        "PROJECT",
        "PARTICIPANT",
        "EVENT",
        "KIND",
        "STATE",
        "SERIES",
        "INSTANCES",
        "DEID",
        "PARKED",
        "SENT"
    );
    for t in v {
        println!(
            "{:<26} {:<26} {:<20} {:<20} {:<12} {:<10} {:<12} {:>6} {:>9} {:>6} {:>6} {:>6}  {}{}",
            t.id,
            t.study_key,
            t.project,
            t.participant,
            t.event,
            format!("{:?}", t.kind).to_lowercase(),
            t.state.as_str(),
            t.series.len(),
            t.instances,
            t.deidentified,
            t.parked.len(),
            t.sent,
            t.actor,
            t.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .or_else(|| {
                    // A delivery being retried: its last problem.
                    t.deliveries
                        .iter()
                        .find(|d| {
                            !d.failed && !d.done && d.verified_ms.is_none() && d.reason.is_some()
                        })
                        .map(|d| {
                            format!(
                                " ({}: attempt {} failed: {})",
                                d.destination,
                                d.attempts,
                                d.reason.as_deref().unwrap_or_default()
                            )
                        })
                })
                .or_else(|| {
                    // A note on a delivery that went through (duplicates answered 0x0111).
                    t.deliveries
                        .iter()
                        .find(|d| d.done && d.reason.is_some())
                        .map(|d| {
                            format!(
                                " ({}: {})",
                                d.destination,
                                d.reason.as_deref().unwrap_or_default()
                            )
                        })
                })
                .unwrap_or_default()
        );
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
    output: fiona::deid::file::Output<'_>,
    engine: &fiona::deid::engine::Engine,
    pixels: &fiona::pixel::scrub::Stage,
) -> DeidFileReport {
    use fiona::deid::file;
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

fn deid(
    cfg: &Config,
    project: String,
    participant: String,
    event: String,
    input: &Path,
    output: &Path,
    report: Option<&Path>,
) -> Result<(), String> {
    use fiona::deid::{engine, file};
    use rayon::prelude::*;
    fiona::project::validate_project_name(&project)?;
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
    let pixels = fiona::pixel::scrub::Stage::from_config(&pixel_cfg)?;
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

fn fetch(dir: &Path, path: &str) -> Result<Vec<u8>, String> {
    control::request(dir, path).map_err(|e| e.to_string())
}

fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    serde_json::from_slice(b).map_err(|e| format!("unexpected answer from daemon: {e}"))
}

fn print_raw(b: &[u8]) -> Result<(), String> {
    // Pretty-print so the output is stable for people and scripts alike.
    let v: serde_json::Value = parse(b)?;
    let mut text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
    text.push('\n');
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // A reader that stops early (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| e.to_string()),
    }
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
        "{:<26} {:<16} {:<10} {:<10} {:>6} {:>9} {:>10} {:<9} {:>6}  ASSIGNED",
        "KEY", "ACCESSION", "DATE", "MODALITY", "SERIES", "INSTANCES", "BYTES", "STATE", "AGE"
    );
    for s in v {
        let assigned = if s.assignments.is_empty() {
            if s.hidden {
                "- (hidden: unassigned past the visibility period)".to_string()
            } else {
                "-".to_string()
            }
        } else {
            s.assignments
                .iter()
                .map(|a| format!("{} {} {} [{}]", a.project, a.participant, a.event, a.state))
                .collect::<Vec<_>>()
                .join("; ")
        };
        println!(
            "{:<26} {:<16} {:<10} {:<10} {:>6} {:>9} {:>10} {:<9} {:>6}  {}",
            s.key,
            s.accession_number,
            s.study_date,
            s.modalities.join(","),
            s.series,
            s.instances,
            human_bytes(s.bytes),
            s.state,
            human_age(s.age_secs),
            assigned
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
    if s.assignments.is_empty() {
        println!("assigned     no");
    }
    for a in &s.assignments {
        println!(
            "assigned     {} participant {} event {} via {} by {} [{}]{}",
            a.project,
            a.participant,
            a.event,
            a.via,
            a.actor,
            a.state,
            a.derived_from
                .as_deref()
                .map(|d| format!(" (derived from study {d})"))
                .unwrap_or_default()
        );
    }
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

/// A job's progress on stderr (stdout keeps the result, for scripts).
fn show_progress(j: &fiona::jobs::JobView, what: &str) {
    if j.total > 0 {
        eprintln!(
            "fiona: {} {}: {} of {} {what}",
            j.kind, j.id, j.done, j.total
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
    if s.instances_parked > 0 {
        println!(
            "parked       {} instances not passed on, {} transfers with nothing to send (see `fiona parked`)",
            s.instances_parked, s.transfers_parked
        );
    }
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
    let ix = &s.index;
    match ix.failing {
        None if ix.io_errors == 0 => println!("index        ok"),
        None => println!(
            "index        ok ({} I/O errors since start, reopened {} times; last: {})",
            ix.io_errors,
            ix.reopened,
            ix.last_error.as_deref().unwrap_or("-")
        ),
        Some(kind) => println!(
            "index        FAILING ({}{}) for {}: {} I/O errors; last: {}",
            if ix.usable { "" } else { "cannot be opened, " },
            match kind {
                fiona::index::IoFailure::DiskFull => "disk full",
                fiona::index::IoFailure::Other => "I/O error",
            },
            human_age(
                ix.failing_since_ms
                    .map(|t| (time::OffsetDateTime::now_utc().unix_timestamp() * 1000 - t) / 1000)
                    .unwrap_or(0)
            ),
            ix.io_errors,
            ix.last_error.as_deref().unwrap_or("-")
        ),
    }
    if let Some(e) = &s.index_error {
        println!("             (counts above unavailable: {e})");
    }
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
