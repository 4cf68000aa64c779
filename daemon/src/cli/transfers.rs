//! `fiona transfers` (the transfers and their state; `--export` writes a project's records as
//! CSV or JSON), `fiona parked` (instances the pipeline could not pass on), and the two jobs
//! that act on transfers: `fiona resend` and `fiona verify` (progress on stderr, the result
//! on stdout).

use std::path::PathBuf;

use clap::Args;

use super::output::{iso_ms, print_json, write_stdout};
use super::table::{Align, Table};
use super::{parse, show, Global};
use crate::control::api::{
    JobView, ResendBody, ResendOutcome, TransferQuery, TransferRecord, VerifyBody, VerifyRow,
};
use crate::control::client::{call, ClientError};

#[derive(Args, Debug)]
pub struct TransfersArgs {
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
}

#[derive(Args, Debug)]
pub struct ResendArgs {
    /// A study: quarantine key or accession number.
    #[arg(long, conflicts_with = "project")]
    study: Option<String>,
    #[arg(long, required_unless_present = "study")]
    project: Option<String>,
    /// With --project: transfers created on or after this date (YYYY-MM-DD, UTC).
    #[arg(long, requires = "project")]
    since: Option<String>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[arg(long)]
    project: String,
}

pub fn transfers(g: &Global, a: TransfersArgs) -> Result<(), String> {
    let client = g.client()?;
    if a.export.is_some() && a.project.is_none() {
        return Err("--export writes one project's records: name it with --project".into());
    }
    let query = TransferQuery {
        project: a.project,
        state: a.state,
        since: a.since,
        until: a.until,
        study: a.study,
    };
    let Some(format) = a.export else {
        return show(g, call::transfers(&query), |v| print_transfers(&v));
    };
    let v = client
        .send(&call::transfers(&query))
        .map_err(|e| e.to_string())?;
    let rows: Vec<ExportRow> = v.iter().map(ExportRow::from).collect();
    let bytes = if format == "csv" {
        transfers_csv(&rows)?
    } else {
        let mut b = serde_json::to_vec_pretty(&rows).map_err(|e| e.to_string())?;
        b.push(b'\n');
        b
    };
    match a.output {
        Some(p) => std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display())),
        None => write_stdout(&bytes),
    }
}

pub fn parked(g: &Global) -> Result<(), String> {
    show(g, call::transfers(&TransferQuery::default()), |v| {
        print_parked(&v)
    })
}

pub fn resend(g: &Global, a: ResendArgs) -> Result<(), String> {
    let client = g.client()?;
    let job = call::resend(&ResendBody {
        study: a.study,
        project: a.project,
        since: a.since,
    });
    let out = client
        .run_job(&job.json(), |j| show_progress(j, "transfers looked at"))
        .map_err(|e| job_error("resend", e))?;
    if g.json {
        return print_json(&out);
    }
    let o: ResendOutcome = parse(out)?;
    println!("{} transfers re-queued", o.transfers.len());
    for t in o.transfers {
        println!("  {t}");
    }
    Ok(())
}

pub fn verify(g: &Global, a: VerifyArgs) -> Result<(), String> {
    let client = g.client()?;
    let job = call::verify(&VerifyBody { project: a.project });
    // A job in the daemon: progress on stderr, the report on stdout.
    let out = client
        .run_job(&job.json(), |j| show_progress(j, "transfers checked"))
        .map_err(|e| job_error("verify", e))?;
    let rows: Vec<VerifyRow> = parse(out.clone())?;
    if g.json {
        print_json(&out)?;
    } else {
        let mut t = Table::new(&[
            ("TRANSFER", Align::Left),
            ("PARTICIPANT", Align::Left),
            ("EVENT", Align::Left),
            ("DESTINATION", Align::Left),
            ("SENT", Align::Right),
            ("HELD", Align::Right),
            ("MISSING", Align::Right),
            ("PROBLEM", Align::Left),
        ]);
        for r in &rows {
            t.row([
                r.transfer.clone(),
                r.participant.clone(),
                r.event.clone(),
                r.destination.clone(),
                r.sent.to_string(),
                r.held.to_string(),
                r.missing.to_string(),
                r.error.clone().unwrap_or_default(),
            ]);
        }
        t.print();
    }
    let missing: u64 = rows.iter().map(|r| r.missing).sum();
    let errors = rows.iter().filter(|r| r.error.is_some()).count();
    if !g.json {
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

/// A job's error for the console: a refusal of the request, or what else went wrong.
fn job_error(what: &str, e: ClientError) -> String {
    match e {
        ClientError::Status { body, .. } => format!("{what} refused: {body}"),
        other => format!("{what}: {other}"),
    }
}

/// A job's progress on stderr (stdout keeps the result, for scripts).
fn show_progress(j: &JobView, what: &str) {
    if j.total > 0 {
        eprintln!(
            "fiona: {} {}: {} of {} {what}",
            j.kind, j.id, j.done, j.total
        );
    }
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

impl From<&TransferRecord> for ExportRow {
    fn from(t: &TransferRecord) -> Self {
        ExportRow {
            transfer_id: t.id.clone(),
            study_key: t.study_key.clone(),
            project: t.project.clone(),
            participant: t.participant.clone(),
            event: t.event.clone(),
            kind: kind(t),
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

/// The transfer's kind in lower case (`assignment`, `correction`, ...).
fn kind(t: &TransferRecord) -> String {
    format!("{:?}", t.kind).to_lowercase()
}

fn transfers_csv(rows: &[ExportRow]) -> Result<Vec<u8>, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(|e| e.to_string())?;
    }
    w.into_inner().map_err(|e| e.to_string())
}

fn print_parked(v: &[TransferRecord]) {
    let mut t = Table::new(&[
        ("TRANSFER", Align::Left),
        ("STUDY", Align::Left),
        ("PROJECT", Align::Left),
        ("INSTANCE", Align::Left),
        ("REASON", Align::Left),
    ]);
    for tr in v {
        for p in &tr.parked {
            t.row([
                tr.id.as_str(),
                tr.study_key.as_str(),
                tr.project.as_str(),
                p.instance.as_str(),
                p.reason.as_str(),
            ]);
        }
    }
    if t.is_empty() {
        println!("no parked instances");
    } else {
        t.print();
    }
}

fn print_transfers(v: &[TransferRecord]) {
    if v.is_empty() {
        println!("no transfers");
        return;
    }
    let mut table = Table::new(&[
        ("TRANSFER", Align::Left),
        ("STUDY", Align::Left),
        ("PROJECT", Align::Left),
        ("PARTICIPANT", Align::Left),
        ("EVENT", Align::Left),
        ("KIND", Align::Left),
        ("STATE", Align::Left),
        ("SERIES", Align::Right),
        ("INSTANCES", Align::Right),
        ("DEID", Align::Right),
        ("PARKED", Align::Right),
        ("SENT", Align::Right),
        ("ACTOR", Align::Left),
    ]);
    for t in v {
        table.row([
            t.id.clone(),
            t.study_key.clone(),
            t.project.clone(),
            t.participant.clone(),
            t.event.clone(),
            kind(t),
            t.state.as_str().to_string(),
            t.series.len().to_string(),
            t.instances.to_string(),
            t.deidentified.to_string(),
            t.parked.len().to_string(),
            t.sent.to_string(),
            format!("{}{}", t.actor, note(t)),
        ]);
    }
    table.print();
}

/// What the transfers table says after the actor: the transfer's reason, else the last
/// problem of a delivery being retried, else a note on a delivery that went through
/// (duplicates answered 0x0111).
fn note(t: &TransferRecord) -> String {
    if let Some(r) = &t.reason {
        return format!(" ({r})");
    }
    let retried = t
        .deliveries
        .iter()
        .find(|d| !d.failed && !d.done && d.verified_ms.is_none() && d.reason.is_some());
    if let Some(d) = retried {
        return format!(
            " ({}: attempt {} failed: {})",
            d.destination,
            d.attempts,
            d.reason.as_deref().unwrap_or_default()
        );
    }
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
        .unwrap_or_default()
}
