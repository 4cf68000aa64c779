//! Coupling lists: CSV files, uploaded in advance, that map an accession number or a
//! StudyInstanceUID to a project, participant ID and event.
//!
//! ```text
//! accession_number,project,participant,event
//! A2024-0001,PROJ1,PROJ1-0001,baseline
//! ```
//!
//! The header names the columns, in any order: `project`, `participant`, `event`, and
//! `accession_number` and/or `study_instance_uid` (each row fills exactly one of them).
//! A semicolon-separated file (as spreadsheet programs write it in many locales) is
//! recognised by its header; a UTF-8 byte-order mark is ignored; blank lines are skipped.
//!
//! A file is loaded whole or not at all: every bad row is reported with its line number
//! (wrong number of columns, unknown project, archived project, ID not matching the
//! pattern, unknown event, bad key, the same key twice in the file, or a key already coupled
//! to something else in the same project unless `replace`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    assign_audited, audit, utc_date, AssignError, CouplingEntry, KeyKind, Policy, Request, Tables,
    Via,
};
use crate::index::StoreError;

/// One validated row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub line: u64,
    pub kind: KeyKind,
    pub key: String,
    pub project: String,
    pub participant: String,
    pub event: String,
}

/// A problem with one line of the file (line 1 is the header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    pub import_id: String,
    pub rows: u64,
    /// Rows already stored with the same values.
    pub unchanged: u64,
    /// Rows that replaced an earlier coupling of the same key and project (`replace`).
    pub replaced: u64,
    /// Studies already in the quarantine that were assigned by this import.
    pub assigned: Vec<super::AssignOutcome>,
    /// Matching studies that could not be assigned, with why.
    pub refused: Vec<String>,
    /// Non-empty when nothing was loaded.
    pub errors: Vec<LineError>,
}

/// Accession numbers are SH: at most 16 characters of the default repertoire. Printable ASCII
/// without backslash or quote marks: a stray quote or an invisible character would load a row
/// that can never match a study.
fn valid_accession(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 16
        && s.bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'\\' && b != b'"')
}

/// The 1-based line at byte `offset`, skipping to the first non-blank line from there.
fn line_of(text: &str, offset: u64) -> u64 {
    let offset = (offset as usize).min(text.len());
    let mut line = text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
        + 1;
    for l in text.get(offset..).unwrap_or("").split('\n') {
        if !l.trim().is_empty() {
            break;
        }
        line += 1;
    }
    line
}

/// Parse and validate a whole file against the projects as of `today`.
pub fn parse(text: &str, policy: &Policy, today: time::Date) -> Result<Vec<Row>, Vec<LineError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Old spreadsheet programs end lines with CR alone: make every line end LF, so line
    // numbers count the way an editor shows them.
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let text = text.as_str();
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let delimiter = if first.contains(';') && !first.contains(',') {
        b';'
    } else {
        b','
    };
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut errors = Vec::new();
    let mut records = rdr.records();
    let header = match records.next() {
        Some(Ok(h)) if h.iter().all(|f| f.is_empty()) => {
            return Err(vec![LineError {
                line: 1,
                message: "the file is empty".into(),
            }])
        }
        Some(Ok(h)) => h,
        Some(Err(e)) => {
            return Err(vec![LineError {
                line: 1,
                message: format!("unreadable header: {e}"),
            }])
        }
        None => {
            return Err(vec![LineError {
                line: 1,
                message: "the file is empty".into(),
            }])
        }
    };
    let header_line = header
        .position()
        .map(|p| line_of(text, p.byte()))
        .unwrap_or(1);
    let mut col: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, name) in header.iter().enumerate() {
        let n = name.to_ascii_lowercase();
        let known = match n.as_str() {
            "accession_number" | "accessionnumber" | "accession" => "accession_number",
            "study_instance_uid" | "studyinstanceuid" => "study_instance_uid",
            "project" => "project",
            "participant" | "participant_id" => "participant",
            "event" => "event",
            _ => {
                errors.push(LineError {
                    line: header_line,
                    message: format!("unknown column `{name}` (expected accession_number or study_instance_uid, project, participant, event)"),
                });
                continue;
            }
        };
        if col.insert(known, i).is_some() {
            errors.push(LineError {
                line: header_line,
                message: format!("column `{known}` appears twice"),
            });
        }
    }
    for needed in ["project", "participant", "event"] {
        if !col.contains_key(needed) {
            errors.push(LineError {
                line: header_line,
                message: format!("missing column `{needed}`"),
            });
        }
    }
    if !col.contains_key("accession_number") && !col.contains_key("study_instance_uid") {
        errors.push(LineError {
            line: header_line,
            message: "missing key column: accession_number or study_instance_uid".into(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let width = header.len();
    let mut rows = Vec::new();
    let mut seen: BTreeMap<(KeyKind, String), u64> = BTreeMap::new();
    for rec in records {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| line_of(text, p.byte())).unwrap_or(0);
                errors.push(LineError {
                    line,
                    message: format!("unreadable row: {e}"),
                });
                continue;
            }
        };
        // The reader's own line count drifts after blank lines: count from the byte offset.
        let line = rec.position().map(|p| line_of(text, p.byte())).unwrap_or(0);
        if rec.iter().all(|f| f.is_empty()) {
            continue;
        }
        if rec.len() != width {
            errors.push(LineError {
                line,
                message: format!("{} columns, the header has {width}", rec.len()),
            });
            continue;
        }
        let get = |name: &str| col.get(name).and_then(|&i| rec.get(i)).unwrap_or("");
        let (acc, uid) = (get("accession_number"), get("study_instance_uid"));
        let (kind, key) = match (acc.is_empty(), uid.is_empty()) {
            (false, true) => (KeyKind::AccessionNumber, acc),
            (true, false) => (KeyKind::StudyInstanceUid, uid),
            (true, true) => {
                errors.push(LineError {
                    line,
                    message: "no accession number or StudyInstanceUID".into(),
                });
                continue;
            }
            (false, false) => {
                errors.push(LineError {
                    line,
                    message: "both an accession number and a StudyInstanceUID; give one".into(),
                });
                continue;
            }
        };
        let key_ok = match kind {
            KeyKind::AccessionNumber => valid_accession(key),
            KeyKind::StudyInstanceUid => crate::deid::uid::is_valid_uid(key),
        };
        if !key_ok {
            errors.push(LineError {
                line,
                message: match kind {
                    KeyKind::AccessionNumber => {
                        "accession number must be 1 to 16 characters without backslash".into()
                    }
                    KeyKind::StudyInstanceUid => "StudyInstanceUID is not a valid UID".into(),
                },
            });
            continue;
        }
        let (project, participant, event) = (get("project"), get("participant"), get("event"));
        let check = policy
            .projects
            .get(project)
            .and_then(|p| p.check_assignment(participant, event, today));
        if let Err(why) = check {
            errors.push(LineError {
                line,
                message: why.to_string(),
            });
            continue;
        }
        if let Some(first) = seen.insert((kind, key.to_string()), line) {
            errors.push(LineError {
                line,
                message: format!(
                    "duplicate key: the same {} is on line {first}",
                    match kind {
                        KeyKind::AccessionNumber => "accession number",
                        KeyKind::StudyInstanceUid => "StudyInstanceUID",
                    }
                ),
            });
            continue;
        }
        rows.push(Row {
            line,
            kind,
            key: key.to_string(),
            project: project.to_string(),
            participant: participant.to_string(),
            event: event.to_string(),
        });
    }
    if rows.is_empty() && errors.is_empty() {
        errors.push(LineError {
            line: header_line + 1,
            message: "the file has a header but no rows".into(),
        });
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

/// Load a coupling list (all or nothing) and assign the matching studies already waiting.
/// On `Ok` with `errors` non-empty nothing was stored except the audit record of the refusal.
pub fn import(
    t: &mut dyn Tables,
    policy: &Policy,
    text: &str,
    actor: &str,
    replace: bool,
    now: i64,
) -> Result<ImportReport, StoreError> {
    let digest = Sha256::digest(text.as_bytes());
    let short: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let import_id = super::ulid_at(now);
    let mut report = ImportReport {
        import_id: import_id.clone(),
        ..Default::default()
    };
    let rows = match parse(text, policy, utc_date(now)) {
        Ok(r) => r,
        Err(errors) => {
            report.errors = errors;
            Vec::new()
        }
    };
    // Conflicts with what is stored.
    let mut writes = Vec::new();
    let mut replaced_from: BTreeMap<(KeyKind, String, String), CouplingEntry> = BTreeMap::new();
    if report.errors.is_empty() {
        for r in &rows {
            let existing = t
                .coupling(r.kind, &r.key)?
                .into_iter()
                .find(|e| e.project == r.project);
            match existing {
                Some(e) if e.participant == r.participant && e.event == r.event => {
                    report.unchanged += 1;
                }
                Some(e) if !replace => report.errors.push(LineError {
                    line: r.line,
                    message: format!(
                        "this key is already coupled in project {} to participant {} event {} (line {} of import {}); import with --replace to change it",
                        e.project, e.participant, e.event, e.line, e.import_id
                    ),
                }),
                Some(e) => {
                    report.replaced += 1;
                    replaced_from.insert((r.kind, r.key.clone(), r.project.clone()), e);
                    writes.push(r);
                }
                None => writes.push(r),
            }
        }
    }
    if !report.errors.is_empty() {
        audit(
            t,
            now,
            actor,
            "coupling_refused",
            None,
            None,
            format!(
                "list sha256 {short}...: {} bad lines, nothing loaded",
                report.errors.len()
            ),
        )?;
        return Ok(report);
    }
    report.rows = rows.len() as u64;
    for r in &writes {
        t.put_coupling(&CouplingEntry {
            kind: r.kind,
            key: r.key.clone(),
            project: r.project.clone(),
            participant: r.participant.clone(),
            event: r.event.clone(),
            import_id: import_id.clone(),
            line: r.line,
        })?;
    }
    audit(
        t,
        now,
        actor,
        "coupling_import",
        None,
        None,
        format!(
            "import {import_id}: list sha256 {short}..., {} rows, {} new or replaced, {} unchanged",
            rows.len(),
            writes.len(),
            report.unchanged
        ),
    )?;
    // Studies already waiting.
    let studies = t.all_studies()?;
    let mut by_acc: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in &studies {
        let acc = s.accession_number.trim();
        if !acc.is_empty() {
            by_acc.entry(acc).or_default().push(s.key.as_str());
        }
    }
    let coupling_actor = format!("coupling:{import_id}");
    for r in &rows {
        let keys: Vec<String> = match r.kind {
            KeyKind::AccessionNumber => by_acc
                .get(r.key.as_str())
                .map(|v| v.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
            KeyKind::StudyInstanceUid => t.study_key_by_uid(&r.key)?.into_iter().collect(),
        };
        for key in keys {
            let existing = t
                .assignments_of(&key)?
                .into_iter()
                .find(|a| a.project == r.project);
            if let Some(a) = &existing {
                if a.participant == r.participant && a.event == r.event {
                    continue;
                }
                // Only a coupling this list replaced may be corrected; anything else (a
                // manual assignment, a correction, a rule) is left for the admin.
                let old = replaced_from.get(&(r.kind, r.key.clone(), r.project.clone()));
                let ours = old.is_some_and(|o| {
                    a.via == Via::Coupling && a.participant == o.participant && a.event == o.event
                });
                if !ours {
                    report.refused.push(format!(
                        "study {key} (line {}): already assigned to {} participant {} event {} via {}; not changed",
                        r.line, a.project, a.participant, a.event, a.via
                    ));
                    continue;
                }
            }
            let req = Request {
                study_key: &key,
                project: &r.project,
                participant: &r.participant,
                event: &r.event,
                via: Via::Coupling,
                actor: &coupling_actor,
                derived_from: None,
                allow_other_patient: false,
            };
            match assign_audited(t, policy, &req, now, false) {
                Ok(o) if o.result != "unchanged" => report.assigned.push(o),
                Ok(_) => {}
                Err(AssignError::Store(e)) => return Err(e),
                Err(e) => report
                    .refused
                    .push(format!("study {key} (line {}): {e}", r.line)),
            }
        }
    }
    Ok(report)
}
