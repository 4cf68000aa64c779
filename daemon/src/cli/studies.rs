//! `fiona studies` (the quarantine's studies with their assignments) and `fiona study KEY`
//! (one study: its head, assignments and series, or its instances).

use clap::Args;

use super::output::{human_age, human_bytes};
use super::table::{Align, Table};
use super::{show, Global};
use crate::control::api::{InstanceRecord, StudyDetail, StudyView};
use crate::control::client::call;

#[derive(Args, Debug)]
pub struct StudiesArgs {
    /// Include unassigned studies past the visibility period.
    #[arg(long)]
    all: bool,
}

#[derive(Args, Debug)]
pub struct StudyArgs {
    /// The study's key, as `fiona studies` prints it.
    key: String,
    /// List the study's instances (key, SOP Instance UID, bytes, file) instead.
    #[arg(long)]
    instances: bool,
}

pub fn studies(g: &Global, a: StudiesArgs) -> Result<(), String> {
    show(g, call::studies(a.all), |v| print_studies(&v))
}

pub fn study(g: &Global, a: StudyArgs) -> Result<(), String> {
    let key = a.key;
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "`{key}` is not a study key (as printed by `fiona studies`)"
        ));
    }
    if a.instances {
        show(g, call::instances(&key), |v| print_instances(&v))
    } else {
        show(g, call::study(&key), |d| print_study(&d))
    }
}

fn print_studies(v: &[StudyView]) {
    if v.is_empty() {
        println!("no studies in the quarantine");
        return;
    }
    let mut t = Table::new(&[
        ("KEY", Align::Left),
        ("ACCESSION", Align::Left),
        ("DATE", Align::Left),
        ("MODALITY", Align::Left),
        ("SERIES", Align::Right),
        ("INSTANCES", Align::Right),
        ("BYTES", Align::Right),
        ("STATE", Align::Left),
        ("AGE", Align::Right),
        ("ASSIGNED", Align::Left),
    ]);
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
        t.row([
            s.key.clone(),
            s.accession_number.clone(),
            s.study_date.clone(),
            s.modalities.join(","),
            s.series.to_string(),
            s.instances.to_string(),
            human_bytes(s.bytes),
            s.state.clone(),
            human_age(s.age_secs),
            assigned,
        ]);
    }
    t.print();
}

fn print_instances(v: &[InstanceRecord]) {
    let mut t = Table::new(&[
        ("KEY", Align::Left),
        ("BYTES", Align::Right),
        ("SOP INSTANCE UID", Align::Left),
        ("FILE", Align::Left),
    ]);
    for i in v {
        t.row([
            i.key.clone(),
            i.bytes.to_string(),
            i.sop_instance_uid.clone(),
            i.file.clone(),
        ]);
    }
    t.print();
}

fn print_study(d: &StudyDetail) {
    let s = &d.study;
    let mut head = Table::headless(&[Align::Left, Align::Left]);
    head.row(["study", s.key.as_str()]);
    head.row(["accession", s.accession_number.as_str()]);
    head.row([
        "date/time".to_string(),
        format!("{} {}", s.study_date, s.study_time),
    ]);
    head.row(["description", s.study_description.as_str()]);
    head.row([
        "patient".to_string(),
        format!("{} ({})", d.patient_name, d.patient_id),
    ]);
    head.row(["modalities".to_string(), s.modalities.join(",")]);
    head.row([
        "from".to_string(),
        format!("{} -> {} ({})", s.calling_ae, s.called_ae, s.peer),
    ]);
    head.row([
        "state".to_string(),
        format!(
            "{} ({} series, {} instances, {})",
            s.state,
            s.series,
            s.instances,
            human_bytes(s.bytes)
        ),
    ]);
    if s.assignments.is_empty() {
        head.row(["assigned", "no"]);
    }
    for a in &s.assignments {
        head.row([
            "assigned".to_string(),
            format!(
                "{} participant {} event {} via {} by {} [{}]{}",
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
            ),
        ]);
    }
    head.print();
    println!();
    let mut series = Table::new(&[
        ("SERIES", Align::Right),
        ("MODALITY", Align::Left),
        ("INSTANCES", Align::Right),
        ("BYTES", Align::Right),
        ("DESCRIPTION", Align::Left),
    ]);
    for se in &d.series {
        series.row([
            se.series_number.map(|n| n.to_string()).unwrap_or_default(),
            se.modality.clone(),
            se.instances.to_string(),
            human_bytes(se.bytes),
            se.series_description.clone(),
        ]);
    }
    series.print();
}
