//! Assignment: tying a quarantined study to a research project, a participant pseudonym and
//! an event, and the transfer records that drive the pipeline after it.
//!
//! Ways a study gets assigned, all through [`assign`]:
//!
//! * by hand (`fiona assign`, [`Via::Manual`]);
//! * on arrival, in the same index transaction that stores the instance ([`on_arrival`]):
//!   a derived series whose StudyInstanceUID fiona issued ([`Via::Derived`]), a coupling list
//!   row for its accession number or StudyInstanceUID ([`Via::Coupling`]), a routing rule
//!   ([`Via::Routing`]), or an auto-ID project's AE title ([`Via::AutoId`]);
//! * by importing a coupling list, for studies already waiting ([`coupling::import`]).
//!
//! # Invariants
//!
//! * At most one current assignment per (study, project); a study may be assigned to several
//!   projects. Re-assigning with another participant or event is a *correction*: the
//!   assignment changes, its still-unstarted transfers are cancelled, and a new transfer is
//!   created. Re-assigning with the same values changes nothing.
//! * Every assignment, correction, refusal, rule match, series that follows and coupling
//!   import appends one [`AuditRecord`]; audit records are never changed or removed.
//! * Every participant ID stored matched its project's pattern when it was stored.
//! * Everything here happens inside one index write transaction ([`Tables`]), so an instance,
//!   the assignment it triggers, its transfer and the audit record commit together or not
//!   at all.
//! * No patient data goes to logs: log lines name projects, keys and mechanisms only.

pub mod coupling;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::deid::secret::{parse_configured, SecretStore};
use crate::deid::settings::UidMode;
use crate::deid::uid::{UidKind, UidMapper};
pub use crate::index::{Arrival, Tables};
use crate::index::{NewInstance, OnArrival, SeriesRecord, StoreError};
pub use crate::model::{
    AssignmentRecord, AuditRecord, CouplingEntry, Delivery, KeyKind, Parked, ParticipantRecord,
    TransferKind, TransferRecord, TransferState, Via,
};
use crate::project::{auto_id_string, Project, Projects, Refusal};

/// Projects plus what is derived from their secrets: everything assignment decides with.
#[derive(Clone, Default)]
pub struct Policy {
    pub projects: Projects,
    keys: BTreeMap<String, [u8; 32]>,
    mappers: BTreeMap<String, UidMapper>,
    /// How long an unassigned study stays in the assign list, in milliseconds.
    pub unassigned_visible_ms: i64,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field(
                "projects",
                &self.projects.projects.keys().collect::<Vec<_>>(),
            )
            .field("rules", &self.projects.rules.len())
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Load (or generate once) every project's secret.
    pub fn new(projects: Projects, data_dir: &Path, visible_days: f64) -> Result<Policy, String> {
        let store = SecretStore::new(data_dir);
        let mut keys = BTreeMap::new();
        let mut mappers = BTreeMap::new();
        for (name, p) in &projects.projects {
            let key = match &p.config.deid.secret {
                Some(s) => parse_configured(s).ok_or_else(|| {
                    format!("project `{name}`: deid.secret: expected 64 hex digits")
                })?,
                None => store
                    .get_or_create(name)
                    .map_err(|e| format!("project `{name}`: {e}"))?,
            };
            let mapper = match p.config.deid.uid_mode {
                UidMode::Conformant => UidMapper::Conformant { key },
                UidMode::Legacy => UidMapper::Legacy {
                    project: name.clone(),
                },
            };
            keys.insert(name.clone(), key);
            mappers.insert(name.clone(), mapper);
        }
        Ok(Policy {
            projects,
            keys,
            mappers,
            unassigned_visible_ms: (visible_days * 86_400_000.0) as i64,
        })
    }

    /// The de-identified StudyInstanceUID the research PACS will see for `uid`.
    pub fn research_study_uid(&self, project: &str, uid: &str) -> String {
        match self.mappers.get(project) {
            Some(m) => m.map(uid, UidKind::Study),
            None => String::new(),
        }
    }

    /// Keyed hash of an original patient ID (hex): the auto-ID table never holds the ID.
    fn patient_hash(&self, project: &str, patient_id: &str) -> Option<(String, u128)> {
        let key = self.keys.get(project)?;
        let h = crate::deid::keyed_hash(key, b"fiona-auto-id-v1\0", patient_id.as_bytes());
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        let mut n = [0u8; 16];
        n.copy_from_slice(&h[..16]);
        Some((hex, u128::from_be_bytes(n)))
    }
}

/// A new ULID (time-ordered ID) for a record made at `now` (ms).
pub(crate) fn ulid_at(now: i64) -> String {
    ulid::Ulid::from_datetime(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(now.max(0) as u64),
    )
    .to_string()
}

/// The UTC calendar date of a time in milliseconds.
pub fn utc_date(ms: i64) -> time::Date {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN)
}

/// Why an assignment did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("no study with key {0}")]
    NoStudy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`assign`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignOutcome {
    pub study_key: String,
    pub project: String,
    pub participant: String,
    pub event: String,
    /// `assigned`, `corrected` or `unchanged`.
    pub result: String,
    pub transfer: Option<String>,
    /// The participant ID was new to the project (and is now remembered).
    pub new_participant: bool,
    pub research_study_uid: String,
}

/// An assignment request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub study_key: &'a str,
    pub project: &'a str,
    pub participant: &'a str,
    pub event: &'a str,
    pub via: Via,
    pub actor: &'a str,
    pub derived_from: Option<&'a str>,
    /// The admin confirmed that a participant ID already used for another PatientID is the
    /// same person.
    pub allow_other_patient: bool,
}

fn audit(
    t: &mut dyn Tables,
    now: i64,
    actor: &str,
    action: &str,
    r: Option<&Request>,
    transfer: Option<&str>,
    detail: String,
) -> Result<u64, StoreError> {
    t.append_audit(AuditRecord {
        seq: 0,
        time_ms: now,
        actor: actor.to_string(),
        action: action.to_string(),
        study_key: r.map(|r| r.study_key.to_string()),
        project: r.map(|r| r.project.to_string()),
        participant: r.map(|r| r.participant.to_string()),
        event: r.map(|r| r.event.to_string()),
        transfer: transfer.map(String::from),
        detail,
    })
}

/// Assign a study to a project (or correct its assignment). Refusals are audited by the
/// caller ([`assign_audited`]) so a refused request leaves a trace too.
pub fn assign(
    t: &mut dyn Tables,
    policy: &Policy,
    r: &Request,
    now: i64,
) -> Result<AssignOutcome, AssignError> {
    let project: &Project = policy.projects.get(r.project)?;
    project.check_assignment(r.participant, r.event, utc_date(now))?;
    let study = t
        .study(r.study_key)?
        .ok_or_else(|| AssignError::NoStudy(r.study_key.to_string()))?;
    let existing = t
        .assignments_of(r.study_key)?
        .into_iter()
        .find(|a| a.project == r.project);
    let research_study_uid = match (&existing, r.via) {
        (Some(a), _) => a.research_study_uid.clone(),
        // A derived series already carries the research UID.
        (None, Via::Derived) => study.study_instance_uid.clone(),
        (None, _) => policy.research_study_uid(r.project, &study.study_instance_uid),
    };
    let mut outcome = AssignOutcome {
        study_key: r.study_key.to_string(),
        project: r.project.to_string(),
        participant: r.participant.to_string(),
        event: r.event.to_string(),
        result: "unchanged".into(),
        transfer: existing.as_ref().and_then(|a| a.transfers.last().cloned()),
        new_participant: false,
        research_study_uid: research_study_uid.clone(),
    };
    if let Some(a) = &existing {
        if a.participant == r.participant && a.event == r.event {
            return Ok(outcome);
        }
    }
    // One participant ID is one patient: compare keyed hashes of the PatientIDs. A derived
    // series carries the pseudonym as PatientID, so it is not compared.
    let pid = study.patient_id.trim_end_matches([' ', '\0']);
    let hash = match r.via {
        Via::Derived => None,
        _ if pid.is_empty() => None,
        _ => policy.patient_hash(r.project, pid).map(|(h, _)| h),
    };
    match t.participant(r.project, r.participant)? {
        None => {
            t.put_participant(&ParticipantRecord {
                project: r.project.to_string(),
                participant: r.participant.to_string(),
                first_ms: now,
                actor: r.actor.to_string(),
                patient_hashes: hash.into_iter().collect(),
            })?;
            outcome.new_participant = true;
        }
        Some(mut p) => {
            if let Some(h) = hash {
                if !p.patient_hashes.contains(&h) {
                    if !p.patient_hashes.is_empty() && !r.allow_other_patient {
                        return Err(AssignError::Refused(Refusal::OtherPatient {
                            project: r.project.to_string(),
                            participant: r.participant.to_string(),
                        }));
                    }
                    p.patient_hashes.push(h);
                    t.put_participant(&p)?;
                }
            }
        }
    }
    let series: Vec<SeriesRecord> = t.series_of(r.study_key)?;
    let id = ulid_at(now);
    let mut transfer = TransferRecord {
        id: id.clone(),
        study_key: r.study_key.to_string(),
        project: r.project.to_string(),
        participant: r.participant.to_string(),
        event: r.event.to_string(),
        kind: TransferKind::Assignment,
        via: r.via,
        actor: r.actor.to_string(),
        created_ms: now,
        series: series
            .iter()
            .map(|s| s.series_instance_uid.clone())
            .collect(),
        instances: series.iter().map(|s| s.instance_count).sum(),
        state: TransferState::Requested,
        state_ms: now,
        reason: None,
        research_study_uid: research_study_uid.clone(),
        replaces: None,
        sent: 0,
        verified_ms: None,
        deidentified: 0,
        dropped: 0,
        parked: Vec::new(),
        deliveries: Vec::new(),
        deid_attempts: 0,
        next_deid_ms: 0,
    };
    let assignment = match existing {
        Some(mut a) => {
            // A correction: cancel what has not been sent yet (requested, de-identified and
            // still queued for a destination, or parked with nothing to send), then a new
            // transfer. A partly sent one says how much went out under the old assignment.
            for old_id in &a.transfers {
                if let Some(mut old) = t.transfer(old_id)? {
                    if matches!(
                        old.state,
                        TransferState::Requested
                            | TransferState::Deidentified
                            | TransferState::Parked
                    ) {
                        let already = old
                            .deliveries
                            .iter()
                            .map(|d| d.stored.len())
                            .max()
                            .unwrap_or(0);
                        old.move_to(TransferState::Cancelled, now)
                            .map_err(StoreError::from)?;
                        old.reason = Some(if already > 0 {
                            format!("superseded by correction {id}; {already} instances had already been sent")
                        } else {
                            format!("superseded by correction {id}")
                        });
                        t.put_transfer(&old)?;
                    }
                }
            }
            transfer.kind = TransferKind::Correction;
            transfer.replaces = a.transfers.last().cloned();
            let detail = format!(
                "corrected from participant {} event {}",
                a.participant, a.event
            );
            a.participant = r.participant.to_string();
            a.event = r.event.to_string();
            a.via = r.via;
            a.actor = r.actor.to_string();
            a.assigned_ms = now;
            a.corrections += 1;
            a.transfers.push(id.clone());
            audit(t, now, r.actor, "reassign", Some(r), Some(&id), detail)?;
            outcome.result = "corrected".into();
            a
        }
        None => {
            if r.via != Via::Derived {
                t.put_issued_study(&research_study_uid, r.study_key, r.project)?;
            }
            let action = match r.via {
                Via::Manual | Via::Coupling => "assign",
                Via::Routing => "rule_match",
                Via::AutoId => "auto_id",
                Via::Derived => "derived",
            };
            let mut detail = format!(
                "via {}; {} series, {} instances",
                r.via,
                transfer.series.len(),
                transfer.instances
            );
            if let Some(d) = r.derived_from {
                detail.push_str(&format!("; derived from study {d}"));
            }
            if outcome.new_participant {
                detail.push_str("; new participant");
            }
            audit(t, now, r.actor, action, Some(r), Some(&id), detail)?;
            outcome.result = "assigned".into();
            AssignmentRecord {
                study_key: r.study_key.to_string(),
                project: r.project.to_string(),
                participant: r.participant.to_string(),
                event: r.event.to_string(),
                via: r.via,
                actor: r.actor.to_string(),
                assigned_ms: now,
                research_study_uid,
                derived_from: r.derived_from.map(String::from),
                transfers: vec![id.clone()],
                corrections: 0,
            }
        }
    };
    t.put_transfer(&transfer)?;
    t.add_transfer_instances(&id, &t.instance_keys_of(r.study_key)?)?;
    t.put_assignment(&assignment)?;
    outcome.transfer = Some(id);
    if outcome.result == "corrected" {
        // Derived studies in the same research study follow the correction.
        for d in t.all_assignments()? {
            if d.project == r.project && d.derived_from.as_deref() == Some(r.study_key) {
                let actor = format!("derived:{}", r.study_key);
                assign(
                    t,
                    policy,
                    &Request {
                        study_key: &d.study_key,
                        project: r.project,
                        participant: r.participant,
                        event: r.event,
                        via: Via::Derived,
                        actor: &actor,
                        derived_from: Some(r.study_key),
                        allow_other_patient: false,
                    },
                    now,
                )?;
            }
        }
    }
    Ok(outcome)
}

/// [`assign`], and on refusal an audit record saying why (the refusal is returned).
/// `hide_candidate`: the participant came from patient data (a routing rule's capture), so a
/// refused candidate is not written to the trail.
pub fn assign_audited(
    t: &mut dyn Tables,
    policy: &Policy,
    r: &Request,
    now: i64,
    hide_candidate: bool,
) -> Result<AssignOutcome, AssignError> {
    match assign(t, policy, r, now) {
        Err(AssignError::Refused(why)) => {
            // A refused ID is not written to the permanent trail: it may be a real patient
            // ID (taken from the data by a rule, or pasted by mistake).
            let source = if hide_candidate {
                "the value taken from the data"
            } else {
                "the participant ID given"
            };
            let (detail, hide) = match &why {
                Refusal::Pattern { project, .. } => (
                    format!(
                        "via {}: {source} does not match project `{project}`'s pattern",
                        r.via
                    ),
                    true,
                ),
                Refusal::Syntax(_) => (format!("via {}: {source} is not a usable ID", r.via), true),
                _ => (format!("via {}: {why}", r.via), hide_candidate),
            };
            let shown = Request {
                participant: if hide { "" } else { r.participant },
                ..r.clone()
            };
            audit(t, now, r.actor, "refused", Some(&shown), None, detail)?;
            Err(AssignError::Refused(why))
        }
        other => other,
    }
}

/// Run inside the transaction that indexed `n`: later series follow their study's
/// assignments, and a study not yet assigned to a project is assigned automatically when a
/// derived-study UID, coupling row, routing rule or auto-ID AE title says so.
pub fn on_arrival(
    t: &mut dyn Tables,
    policy: &Policy,
    n: &NewInstance,
    a: &Arrival,
    now: i64,
) -> Result<(), StoreError> {
    let study_key = a.study.key.as_str();
    let assignments = t.assignments_of(study_key)?;
    for asg in &assignments {
        follow(t, policy, asg, n, a.series_new, now)?;
    }
    if !(a.study_new || a.series_new) || policy.projects.projects.is_empty() {
        return Ok(());
    }
    let mut assigned: Vec<String> = assignments.iter().map(|x| x.project.clone()).collect();
    let attempt = |t: &mut dyn Tables,
                   assigned: &mut Vec<String>,
                   r: Request,
                   hide: bool|
     -> Result<(), StoreError> {
        if assigned.iter().any(|p| p == r.project) {
            return Ok(());
        }
        match assign_audited(t, policy, &r, now, hide) {
            Ok(o) => {
                tracing::info!(study = %o.study_key, project = %o.project, via = %r.via, transfer = ?o.transfer, "study assigned on arrival");
                assigned.push(r.project.to_string());
                Ok(())
            }
            Err(AssignError::Store(e)) => Err(e),
            Err(AssignError::Refused(why)) => {
                tracing::warn!(study = %study_key, project = %r.project, via = %r.via, reason = refusal_kind(&why), "automatic assignment refused");
                Ok(())
            }
            Err(AssignError::NoStudy(_)) => Ok(()),
        }
    };

    // 1. A derived series: its StudyInstanceUID is one fiona issued.
    if let Some((orig_key, project)) = t.issued_study(&a.study.study_instance_uid)? {
        if orig_key != study_key {
            if let Some(orig) = t
                .assignments_of(&orig_key)?
                .into_iter()
                .find(|x| x.project == project)
            {
                let actor = format!("derived:{orig_key}");
                attempt(
                    t,
                    &mut assigned,
                    Request {
                        study_key,
                        project: &orig.project,
                        participant: &orig.participant,
                        event: &orig.event,
                        via: Via::Derived,
                        actor: &actor,
                        derived_from: Some(&orig_key),
                        allow_other_patient: false,
                    },
                    false,
                )?;
            }
        }
        // Research data never goes through the clinical mechanisms below.
        return Ok(());
    }

    // 2. Coupling lists, by StudyInstanceUID, then accession number.
    let mut rows = t.coupling(KeyKind::StudyInstanceUid, &a.study.study_instance_uid)?;
    let acc = a.study.accession_number.trim();
    if !acc.is_empty() {
        rows.extend(t.coupling(KeyKind::AccessionNumber, acc)?);
    }
    for row in &rows {
        let actor = format!("coupling:{}", row.import_id);
        attempt(
            t,
            &mut assigned,
            Request {
                study_key,
                project: &row.project,
                participant: &row.participant,
                event: &row.event,
                via: Via::Coupling,
                actor: &actor,
                derived_from: None,
                allow_other_patient: false,
            },
            false,
        )?;
    }

    // 3. Routing rules for data that arrives pseudonymized.
    let o = &n.origin;
    for rule in &policy.projects.rules {
        let Some(id) = rule.participant_for(
            &o.called_ae,
            &o.calling_ae,
            &n.header.patient_id,
            &n.header.patient_name,
        ) else {
            continue;
        };
        let actor = format!("rule:{}", rule.name);
        attempt(
            t,
            &mut assigned,
            Request {
                study_key,
                project: &rule.config.project,
                participant: &id,
                event: &rule.config.event,
                via: Via::Routing,
                actor: &actor,
                derived_from: None,
                allow_other_patient: false,
            },
            true,
        )?;
    }

    // 4. Auto-ID projects, by the AE title the sender called.
    if let Some(p) = policy.projects.auto_id_project(&o.called_ae) {
        if assigned.iter().any(|x| x == &p.name) {
            return Ok(());
        }
        let pid = n.header.patient_id.trim_end_matches([' ', '\0']);
        // A project that takes no assignments gets no generated ID either.
        let open = p.accepts(utc_date(now)).is_ok();
        let generated = if open {
            auto_participant(t, policy, p, pid, now)?
        } else {
            None
        };
        match generated {
            Some(id) => {
                let event = p
                    .config
                    .auto_id
                    .as_ref()
                    .map(|x| x.event.clone())
                    .unwrap_or_default();
                attempt(
                    t,
                    &mut assigned,
                    Request {
                        study_key,
                        project: &p.name,
                        participant: &id,
                        event: &event,
                        via: Via::AutoId,
                        actor: "auto_id",
                        derived_from: None,
                        allow_other_patient: false,
                    },
                    false,
                )?;
            }
            None => {
                let r = Request {
                    study_key,
                    project: &p.name,
                    participant: "",
                    event: "",
                    via: Via::AutoId,
                    actor: "auto_id",
                    derived_from: None,
                    allow_other_patient: false,
                };
                let detail = match p.accepts(utc_date(now)) {
                    Err(why) => format!("via auto_id: {why}"),
                    Ok(()) => {
                        "via auto_id: the study has no PatientID, or the project's ID space is full"
                            .into()
                    }
                };
                audit(t, now, "auto_id", "refused", Some(&r), None, detail)?;
                tracing::warn!(study = %study_key, project = %p.name, "auto-ID not possible");
            }
        }
    }
    Ok(())
}

/// The index runs this inside the transaction that indexes each new instance.
impl OnArrival for Policy {
    fn on_arrival(
        &self,
        t: &mut dyn Tables,
        n: &NewInstance,
        a: &Arrival<'_>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        on_arrival(t, self, n, a, now_ms)
    }
}

/// A short, data-free name of a refusal for log lines.
pub fn refusal_kind(r: &Refusal) -> &'static str {
    match r {
        Refusal::UnknownProject(_) => "unknown project",
        Refusal::Archived(_) => "project archived",
        Refusal::NotYetApproved { .. } => "approval not started",
        Refusal::ApprovalEnded { .. } => "approval ended",
        Refusal::Pattern { .. } => "participant ID does not match the pattern",
        Refusal::Syntax(_) => "unusable participant ID",
        Refusal::UnknownEvent { .. } => "unknown event",
        Refusal::OtherPatient { .. } => "participant ID already used for another patient",
    }
}

/// The generated participant ID of the patient with `patient_id` in an auto-ID project: the
/// one given before, else a new one from the keyed hash (probing past IDs already taken).
fn auto_participant(
    t: &mut dyn Tables,
    policy: &Policy,
    p: &Project,
    patient_id: &str,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let Some(cfg) = &p.config.auto_id else {
        return Ok(None);
    };
    if patient_id.is_empty() {
        return Ok(None);
    }
    let Some((hash, n)) = policy.patient_hash(&p.name, patient_id) else {
        return Ok(None);
    };
    if let Some(id) = t.auto_id(&p.name, &hash)? {
        return Ok(Some(id));
    }
    let space = 10u128.pow(cfg.digits);
    let start = n % space;
    // Probe at most a bounded number of slots: a nearly full ID space is a configuration
    // problem to report, not a loop to run forever.
    for i in 0..space.min(100_000) {
        let candidate = auto_id_string(cfg, ((start + i) % space) as u64);
        if t.participant(&p.name, &candidate)?.is_none() {
            // Reserve the ID for this patient at once, so no other patient can get it even if
            // this assignment is refused.
            t.put_auto_id(&p.name, &hash, &candidate)?;
            t.put_participant(&ParticipantRecord {
                project: p.name.clone(),
                participant: candidate.clone(),
                first_ms: now,
                actor: "auto_id".into(),
                patient_hashes: vec![hash.clone()],
            })?;
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// A new instance of an assigned study joins the assignment's current transfer while it has
/// not started; otherwise it goes into an addition transfer (one open addition per assignment
/// collects every later instance). A project that no longer takes assignments (archived,
/// approval ended, removed from the configuration) takes no later instances either.
fn follow(
    t: &mut dyn Tables,
    policy: &Policy,
    asg: &AssignmentRecord,
    n: &NewInstance,
    series_new: bool,
    now: i64,
) -> Result<(), StoreError> {
    let series_uid = n.header.series_instance_uid.as_str();
    let open = policy
        .projects
        .get(&asg.project)
        .and_then(|p| p.accepts(utc_date(now)));
    if let Err(why) = open {
        if series_new {
            let r = Request {
                actor: "follow",
                ..follow_request(asg)
            };
            audit(
                t,
                now,
                "follow",
                "refused",
                Some(&r),
                None,
                format!("a later series was not added: {why}"),
            )?;
            tracing::warn!(study = %asg.study_key, project = %asg.project, reason = refusal_kind(&why), "later series not added to the assignment");
        }
        return Ok(());
    }
    let Some(current_id) = asg.transfers.last() else {
        return Ok(());
    };
    let Some(mut current) = t.transfer(current_id)? else {
        return Err(StoreError::Corrupt(
            "transfers".into(),
            "a transfer of an assignment is missing".into(),
        ));
    };
    if current.state == TransferState::Requested {
        let new_series = !current.series.iter().any(|s| s == series_uid);
        if new_series {
            current.series.push(series_uid.to_string());
        }
        current.instances += 1;
        t.put_transfer(&current)?;
        t.add_transfer_instances(&current.id, std::slice::from_ref(&n.key))?;
        if new_series {
            let detail = if current.kind == TransferKind::Addition {
                "a later series joins the addition"
            } else {
                "a later series joins the study's transfer"
            };
            follow_audit(t, asg, &current.id, detail, now)?;
        }
        return Ok(());
    }
    // The current transfer has started (or ended): an addition to the same research study.
    let id = ulid_at(now);
    let add = TransferRecord {
        id: id.clone(),
        kind: TransferKind::Addition,
        actor: "follow".into(),
        created_ms: now,
        series: vec![series_uid.to_string()],
        instances: 1,
        state: TransferState::Requested,
        state_ms: now,
        reason: None,
        replaces: None,
        sent: 0,
        verified_ms: None,
        deidentified: 0,
        dropped: 0,
        parked: Vec::new(),
        deliveries: Vec::new(),
        ..current
    };
    t.put_transfer(&add)?;
    t.add_transfer_instances(&id, std::slice::from_ref(&n.key))?;
    let mut updated = asg.clone();
    updated.transfers.push(id.clone());
    t.put_assignment(&updated)?;
    follow_audit(
        t,
        asg,
        &id,
        "a later instance goes out as an addition to the research study",
        now,
    )
}

fn follow_request(asg: &AssignmentRecord) -> Request<'_> {
    Request {
        study_key: &asg.study_key,
        project: &asg.project,
        participant: &asg.participant,
        event: &asg.event,
        via: asg.via,
        actor: "follow",
        derived_from: None,
        allow_other_patient: false,
    }
}

fn follow_audit(
    t: &mut dyn Tables,
    asg: &AssignmentRecord,
    transfer: &str,
    detail: &str,
    now: i64,
) -> Result<(), StoreError> {
    let r = follow_request(asg);
    audit(
        t,
        now,
        "follow",
        "series_follow",
        Some(&r),
        Some(transfer),
        detail.into(),
    )?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod memory;

#[cfg(test)]
mod tests;
