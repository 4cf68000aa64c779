//! `fiona assign` (a study to a project, participant and event, or a correction) and
//! `fiona coupling import|list` (coupling lists).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::output::print_json;
use super::table::{Align, Table};
use super::{show, Global};
use crate::control::api::{AssignBody, AssignOutcome, CouplingEntry, ImportReport};
use crate::control::client::{call, ClientError};
use crate::model::KeyKind;

#[derive(Args, Debug)]
pub struct AssignArgs {
    /// The study's key (from `fiona studies`) or its accession number.
    study: String,
    #[command(flatten)]
    to: super::Target,
    /// The participant ID is already used for another PatientID, and that is the same
    /// person (e.g. a hospital ID that changed). Without it such an assignment is refused.
    #[arg(long)]
    allow_other_patient: bool,
}

#[derive(Subcommand, Debug)]
pub enum CouplingCmd {
    /// Load a coupling list (CSV). The whole file is checked first; if any line is bad,
    /// every bad line is reported and nothing is loaded. Studies already waiting that match
    /// are assigned at once; later arrivals are assigned when they come.
    Import {
        file: PathBuf,
        /// Let rows change the participant or event of keys already coupled.
        #[arg(long)]
        replace: bool,
    },
    /// The coupling rows loaded so far.
    List,
}

pub fn assign(g: &Global, a: AssignArgs) -> Result<(), String> {
    let body = AssignBody {
        study: a.study,
        project: a.to.project,
        participant: a.to.participant,
        event: a.to.event,
        allow_other_patient: a.allow_other_patient,
    };
    let refused = |e: ClientError| match e {
        ClientError::Status { body, .. } => format!("assignment refused: {body}"),
        other => other.to_string(),
    };
    let client = g.client()?;
    let call = call::assign(&body);
    if g.json {
        return print_json(&client.send(&call.json()).map_err(refused)?);
    }
    print_outcome(&client.send(&call).map_err(refused)?);
    Ok(())
}

fn print_outcome(o: &AssignOutcome) {
    let transfer = o.transfer.as_deref().unwrap_or_default();
    match o.result.as_str() {
        "unchanged" => println!(
            "study {} is already assigned to {} participant {} event {} (transfer {transfer})",
            o.study_key, o.project, o.participant, o.event,
        ),
        r => println!(
            "study {} {} to {} participant {}{} event {} (transfer {transfer})",
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
        ),
    }
}

pub fn coupling(g: &Global, cmd: CouplingCmd) -> Result<(), String> {
    match cmd {
        CouplingCmd::Import { file, replace } => import(g, &file, replace),
        CouplingCmd::List => show(g, call::couplings(), |v| print_couplings(&v)),
    }
}

fn import(g: &Global, file: &std::path::Path, replace: bool) -> Result<(), String> {
    let client = g.client()?;
    let text = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if std::str::from_utf8(&text).is_err() {
        return Err(format!(
            "{}: not UTF-8 text; save the list as CSV (UTF-8)",
            file.display()
        ));
    }
    // The report comes back also when lines are bad (then nothing was loaded).
    let answer = client
        .send(&call::import_coupling(text, replace).json())
        .map_err(|e| e.to_string())?;
    let r: ImportReport = super::parse(answer.clone())?;
    if g.json {
        print_json(&answer)?;
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
        return Ok(());
    }
    if !g.json {
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

fn print_couplings(v: &[CouplingEntry]) {
    let mut t = Table::new(&[
        ("KIND", Align::Left),
        ("KEY", Align::Left),
        ("PROJECT", Align::Left),
        ("PARTICIPANT", Align::Left),
        ("EVENT", Align::Left),
        ("IMPORT", Align::Left),
    ]);
    for e in v {
        let kind = match e.kind {
            KeyKind::AccessionNumber => "accession_number",
            KeyKind::StudyInstanceUid => "study_instance_uid",
        };
        t.row([
            kind.to_string(),
            e.key.clone(),
            e.project.clone(),
            e.participant.clone(),
            e.event.clone(),
            format!("{}:{}", e.import_id, e.line),
        ]);
    }
    t.print();
}
