//! Housekeeping of the data directory: disk-pressure eviction and retention.
//!
//! A pass (every `eviction.interval_secs`, and `fiona evict`) surveys the index, then:
//!
//! * **retention**, whatever the free space: unassigned studies older than
//!   `unassigned_retention_days` and rejected files older than `rejected_retention_days`;
//! * **pressure**, when the data file system has less than `high_water_free_percent` free:
//!   until `target_free_percent` is free, oldest first and in this order: (1) studies whose
//!   every transfer is verified at every destination, `grace_hours` after the last
//!   verification (originals and outbound copies); (2) unassigned studies past the assign
//!   list's window (`unassigned_visible_days`); (3) rejected files past `grace_hours`.
//!
//! Never evicted: a study with a transfer that is not verified (requested, de-identified,
//! sent, failed: a failed transfer waits for a person), a study with a parked instance, a
//! study still receiving (within its quiet period).
//!
//! # Crash-safe order
//!
//! One index transaction marks every chosen study evicted (its instance, series and
//! transfer-instance records removed, the SOP Instance UIDs freed so the study can be sent
//! again, the [`Eviction`] kept on the study record), marks chosen rejected records evicted
//! and appends one audit record for the pass; the conditions are checked again inside it.
//! Only after the commit are files unlinked. A crash in between leaves files the index no
//! longer names: start-up recovery deletes them (`quarantine::recover` for objects and
//! rejected files, [`recover`] for outbound copies). No index entry ever names a missing
//! file, and nothing that was not chosen is touched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::deid::outbound;
use crate::index::{Store, StoreError, Tables};
use crate::model::{
    AssignmentRecord, AuditRecord, EvictReason, Eviction, RejectRecord, StudyRecord,
    TransferRecord, TransferState,
};
use crate::quarantine::Quarantine;

const DAY_MS: f64 = 86_400_000.0;

/// The rules of a pass, from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Evict when free space is below this fraction of the file system.
    pub high_water: f64,
    /// ... until this fraction is free.
    pub target: f64,
    pub grace_ms: i64,
    pub visible_ms: i64,
    pub unassigned_retention_ms: i64,
    pub rejected_retention_ms: i64,
    /// A study with an instance this recent is still receiving.
    pub quiet_ms: i64,
    pub interval: Duration,
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        let e = &c.eviction;
        Settings {
            high_water: e.high_water_free_percent / 100.0,
            target: e.target_free_percent / 100.0,
            grace_ms: (e.grace_hours * 3_600_000.0) as i64,
            visible_ms: (c.unassigned_visible_days * DAY_MS) as i64,
            unassigned_retention_ms: (c.unassigned_retention_days * DAY_MS) as i64,
            rejected_retention_ms: (c.rejected_retention_days * DAY_MS) as i64,
            quiet_ms: c.quiet_period().as_millis() as i64,
            interval: Duration::from_secs_f64(e.interval_secs),
        }
    }
}

/// Where a study's bytes stand for housekeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Evicted, nothing arrived since: no bytes.
    Evicted,
    /// An instance arrived within the quiet period.
    Receiving,
    /// No assignment; the time of its last instance.
    Unassigned { since_ms: i64 },
    /// A transfer with a parked instance, or parked as a whole: a person must look.
    Parked,
    /// A transfer not yet verified at every destination (requested, de-identified, sent,
    /// failed), or an assignment without a live transfer.
    Unsent,
    /// Every transfer verified at every destination; the last verification.
    Verified { at_ms: i64 },
}

/// Classify a study from its assignments and their transfers (`transfer` looks one up).
pub fn classify(
    s: &StudyRecord,
    assignments: &[&AssignmentRecord],
    transfer: &dyn Fn(&str) -> Option<TransferRecord>,
    now_ms: i64,
    quiet_ms: i64,
) -> Class {
    if s.is_evicted() {
        return Class::Evicted;
    }
    if now_ms.saturating_sub(s.last_received_ms) < quiet_ms {
        return Class::Receiving;
    }
    if assignments.is_empty() {
        return Class::Unassigned {
            since_ms: s.last_received_ms,
        };
    }
    let mut last_verified = i64::MIN;
    let mut live = 0;
    let mut unsent = false;
    for id in assignments.iter().flat_map(|a| a.transfers.iter()) {
        let Some(t) = transfer(id) else {
            // A transfer the assignment names is missing: keep the data.
            return Class::Unsent;
        };
        if !t.parked.is_empty() || t.state == TransferState::Parked {
            return Class::Parked;
        }
        match t.state {
            TransferState::Cancelled => {}
            TransferState::Verified => {
                live += 1;
                last_verified = last_verified.max(t.verified_ms.unwrap_or(t.state_ms));
            }
            _ => {
                live += 1;
                unsent = true;
            }
        }
    }
    if unsent || live == 0 {
        Class::Unsent
    } else {
        Class::Verified {
            at_ms: last_verified,
        }
    }
}

/// What a pass may evict: a study's files or a rejected file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// `study` or `rejected`.
    pub kind: String,
    /// Study key or rejected instance key.
    pub key: String,
    pub reason: EvictReason,
    /// Bytes it frees (a study's originals and outbound copies).
    pub bytes: u64,
    /// Since when it qualifies for its category (verification, last arrival, rejection).
    pub since_ms: i64,
}

/// The data directory's bytes by what may happen to them, and the last pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskReport {
    /// When this was surveyed (Unix ms); 0 before the first pass.
    pub surveyed_ms: i64,
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// Below this many free bytes a pass evicts (the high-water mark).
    pub high_water_free_bytes: u64,
    /// ... until this many are free.
    pub target_free_bytes: u64,
    /// Originals and rejected files the index names (outbound copies not counted).
    pub held_bytes: u64,
    /// What a pass may take now: retention due, and under pressure every category.
    pub evictable_bytes: u64,
    /// Held by transfers not verified at every destination (never evicted).
    pub unsent_bytes: u64,
    /// Held by studies with parked instances (never evicted).
    pub parked_bytes: u64,
    /// Held by studies still receiving.
    pub receiving_bytes: u64,
    /// Held until a time passes (verification grace, the assign list's window, rejected
    /// files' grace).
    pub waiting_bytes: u64,
    /// Studies evicted (their records kept).
    pub studies_evicted: u64,
    /// Set when free space is below the high-water mark and nothing may go: why, in words.
    pub pressure: Option<String>,
    /// The last pass that evicted something.
    pub last_pass: Option<PassSummary>,
}

/// What one pass evicted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassSummary {
    pub at_ms: i64,
    pub studies: u64,
    pub instances: u64,
    pub rejected_files: u64,
    /// Bytes of originals, outbound copies and rejected files removed.
    pub bytes: u64,
    /// Counts by reason (`verified`, `unassigned_retention`, ...).
    pub by_reason: Vec<(EvictReason, u64)>,
    /// Free bytes after the pass.
    pub free_bytes_after: u64,
}

/// The survey of one pass: every study's class and bytes, every rejected file.
struct Survey {
    studies: Vec<(StudyRecord, Class)>,
    rejected: Vec<RejectRecord>,
    transfers_of: HashMap<String, Vec<String>>,
}

fn survey(store: &dyn Store, s: &Settings, now_ms: i64) -> Result<Survey, StoreError> {
    let transfers: HashMap<String, TransferRecord> = store
        .transfers()?
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    let mut by_study: HashMap<String, Vec<AssignmentRecord>> = HashMap::new();
    for a in store.assignments(None)? {
        by_study.entry(a.study_key.clone()).or_default().push(a);
    }
    let lookup = |id: &str| transfers.get(id).cloned();
    let mut studies = Vec::new();
    let mut transfers_of = HashMap::new();
    for st in store.studies()? {
        let a: Vec<&AssignmentRecord> = by_study
            .get(&st.key)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        let class = classify(&st, &a, &lookup, now_ms, s.quiet_ms);
        if matches!(class, Class::Verified { .. }) {
            transfers_of.insert(
                st.key.clone(),
                a.iter().flat_map(|a| a.transfers.iter().cloned()).collect(),
            );
        }
        studies.push((st, class));
    }
    let rejected = store
        .rejections()?
        .into_iter()
        .filter(|r| r.evicted_ms.is_none())
        .collect();
    Ok(Survey {
        studies,
        rejected,
        transfers_of,
    })
}

/// Bytes of the files under a directory (outbound copies of a transfer); 0 when absent.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// The free-space picture a plan starts from.
#[derive(Debug, Clone, Copy)]
pub struct Space {
    pub free: u64,
    pub total: u64,
}

impl Space {
    pub fn of(q: &Quarantine) -> std::io::Result<Space> {
        Ok(Space {
            free: q.free_bytes()?,
            total: q.total_bytes()?,
        })
    }
}

/// Choose what a pass evicts, and report where the bytes stand.
fn plan(
    sv: &Survey,
    s: &Settings,
    space: Space,
    data_dir: &Path,
    now_ms: i64,
) -> (Vec<Candidate>, DiskReport) {
    let high = (space.total as f64 * s.high_water) as u64;
    let target = (space.total as f64 * s.target) as u64;
    let mut r = DiskReport {
        surveyed_ms: now_ms,
        free_bytes: space.free,
        total_bytes: space.total,
        high_water_free_bytes: high,
        target_free_bytes: target,
        ..DiskReport::default()
    };
    let mut retention = Vec::new();
    // Pressure categories, each oldest first.
    let mut verified = Vec::new();
    let mut hidden = Vec::new();
    let mut rejected = Vec::new();
    for (st, class) in &sv.studies {
        r.held_bytes += st.bytes;
        match *class {
            Class::Evicted => r.studies_evicted += 1,
            Class::Receiving => r.receiving_bytes += st.bytes,
            Class::Parked => r.parked_bytes += st.bytes,
            Class::Unsent => r.unsent_bytes += st.bytes,
            Class::Unassigned { since_ms } => {
                let age = now_ms.saturating_sub(since_ms);
                if age >= s.unassigned_retention_ms {
                    retention.push(study(st, EvictReason::UnassignedRetention, since_ms));
                } else if age >= s.visible_ms {
                    hidden.push(study(st, EvictReason::UnassignedHidden, since_ms));
                } else {
                    r.waiting_bytes += st.bytes;
                }
            }
            Class::Verified { at_ms } => {
                if now_ms.saturating_sub(at_ms) >= s.grace_ms {
                    verified.push(study(st, EvictReason::Verified, at_ms));
                } else {
                    r.waiting_bytes += st.bytes;
                }
            }
        }
    }
    for rej in &sv.rejected {
        r.held_bytes += rej.bytes;
        let age = now_ms.saturating_sub(rej.received_ms);
        let c = |reason| Candidate {
            kind: "rejected".into(),
            key: rej.key.clone(),
            reason,
            bytes: rej.bytes,
            since_ms: rej.received_ms,
        };
        if age >= s.rejected_retention_ms {
            retention.push(c(EvictReason::RejectedRetention));
        } else if age >= s.grace_ms {
            rejected.push(c(EvictReason::Rejected));
        } else {
            r.waiting_bytes += rej.bytes;
        }
    }
    for v in [&mut verified, &mut hidden, &mut rejected] {
        v.sort_by_key(|c| (c.since_ms, c.key.clone()));
    }
    let mut chosen = retention;
    let mut freed: u64 = chosen.iter().map(|c| c.bytes).sum();
    let below = space.free < high;
    let mut evictable = freed;
    for mut c in verified.into_iter().chain(hidden).chain(rejected) {
        let take = below && space.free + freed < target;
        if take && c.reason == EvictReason::Verified {
            // The outbound copies go with the originals (walked only for what is taken).
            for t in sv.transfers_of.get(&c.key).into_iter().flatten() {
                c.bytes += dir_bytes(&outbound::transfer_dir(data_dir, t));
            }
        }
        evictable += c.bytes;
        if take {
            freed += c.bytes;
            chosen.push(c);
        }
    }
    r.evictable_bytes = evictable;
    if below && evictable == 0 {
        r.pressure = Some(format!(
            "{} free, below the high-water mark of {}: {} held by unsent transfers, {} by parked instances, {} receiving, {} waiting, 0 evictable",
            human_bytes(space.free),
            human_bytes(high),
            human_bytes(r.unsent_bytes),
            human_bytes(r.parked_bytes),
            human_bytes(r.receiving_bytes),
            human_bytes(r.waiting_bytes),
        ));
    }
    (chosen, r)
}

fn study(st: &StudyRecord, reason: EvictReason, since_ms: i64) -> Candidate {
    Candidate {
        kind: "study".into(),
        key: st.key.clone(),
        reason,
        bytes: st.bytes,
        since_ms,
    }
}

/// `1.5 MiB`; bytes below 1 KiB as `N B` (log lines, the pressure note, the CLI).
pub fn human_bytes(n: u64) -> String {
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

/// What a pass would evict now and why, without evicting (`fiona evict --dry-run`).
pub fn dry_run(
    store: &dyn Store,
    q: &Quarantine,
    s: &Settings,
    now_ms: i64,
) -> Result<(Vec<Candidate>, DiskReport), String> {
    let space = Space::of(q).map_err(|e| format!("free space of the data directory: {e}"))?;
    dry_run_in(store, q.root(), s, now_ms, space)
}

/// [`dry_run`] with the free space given (tests).
pub fn dry_run_in(
    store: &dyn Store,
    data_dir: &Path,
    s: &Settings,
    now_ms: i64,
    space: Space,
) -> Result<(Vec<Candidate>, DiskReport), String> {
    let sv = survey(store, s, now_ms).map_err(|e| e.to_string())?;
    Ok(plan(&sv, s, space, data_dir, now_ms))
}

/// Files to delete after the commit.
#[derive(Debug, Default)]
struct Doomed {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

/// One housekeeping pass: survey, choose, record in the index, then delete the files.
/// Returns the report (with this pass's summary when it evicted something).
pub fn pass(
    store: &dyn Store,
    q: &Quarantine,
    s: &Settings,
    actor: &str,
    now_ms: i64,
) -> Result<DiskReport, String> {
    let space = Space::of(q).map_err(|e| format!("free space of the data directory: {e}"))?;
    pass_in(store, q, s, actor, now_ms, space)
}

/// [`pass`] with the free space given (tests).
pub fn pass_in(
    store: &dyn Store,
    q: &Quarantine,
    s: &Settings,
    actor: &str,
    now_ms: i64,
    space: Space,
) -> Result<DiskReport, String> {
    let started = std::time::Instant::now();
    let (chosen, mut report) = dry_run_in(store, q.root(), s, now_ms, space)?;
    if chosen.is_empty() {
        return Ok(report);
    }
    let mut summary = PassSummary {
        at_ms: now_ms,
        ..PassSummary::default()
    };
    let mut doomed = Doomed::default();
    let root = q.root().to_owned();
    store
        .write_assign(&mut |t| {
            summary = PassSummary {
                at_ms: now_ms,
                ..PassSummary::default()
            };
            doomed = Doomed::default();
            let mut by_reason: HashMap<EvictReason, u64> = HashMap::new();
            for c in &chosen {
                let done = if c.kind == "study" {
                    evict_study(t, s, &root, c, now_ms, &mut summary, &mut doomed)?
                } else {
                    evict_rejected(t, &root, c, now_ms, &mut summary, &mut doomed)?
                };
                if done {
                    *by_reason.entry(c.reason).or_default() += 1;
                }
            }
            let mut by: Vec<(EvictReason, u64)> = by_reason.into_iter().collect();
            by.sort();
            summary.by_reason = by;
            if summary.studies + summary.rejected_files == 0 {
                return Ok(());
            }
            t.append_audit(AuditRecord {
                seq: 0,
                time_ms: now_ms,
                actor: actor.to_string(),
                action: "evict".into(),
                study_key: None,
                project: None,
                participant: None,
                event: None,
                transfer: None,
                detail: describe(&summary),
            })?;
            Ok(())
        })
        .map_err(|e| format!("recording the eviction in the index: {e}"))?;
    if summary.studies + summary.rejected_files == 0 {
        return Ok(report);
    }
    let m = crate::metrics::global();
    m.evicted_studies.inc_by(summary.studies);
    m.evicted_rejected.inc_by(summary.rejected_files);
    m.evicted_bytes.inc_by(summary.bytes);
    pause_before_unlink(q);
    delete(&doomed);
    summary.free_bytes_after = q.free_bytes().unwrap_or(0);
    tracing::info!(
        studies = summary.studies,
        instances = summary.instances,
        rejected_files = summary.rejected_files,
        bytes = summary.bytes,
        free_after = summary.free_bytes_after,
        ms = started.elapsed().as_millis() as u64,
        "evicted: {}",
        describe(&summary)
    );
    report.free_bytes = summary.free_bytes_after;
    report.last_pass = Some(summary);
    Ok(report)
}

/// The audit record's words for a pass: counts, bytes, reasons; no patient data.
fn describe(p: &PassSummary) -> String {
    let reasons: Vec<String> = p
        .by_reason
        .iter()
        .map(|(r, n)| format!("{n} {}", r.as_str()))
        .collect();
    format!(
        "{} studies ({} instances), {} rejected files, {} freed; reasons: {}",
        p.studies,
        p.instances,
        p.rejected_files,
        human_bytes(p.bytes),
        reasons.join(", ")
    )
}

/// Evict one study inside the transaction, if it still qualifies.
fn evict_study(
    t: &mut dyn Tables,
    s: &Settings,
    root: &Path,
    c: &Candidate,
    now_ms: i64,
    summary: &mut PassSummary,
    doomed: &mut Doomed,
) -> Result<bool, StoreError> {
    let Some(mut st) = t.study(&c.key)? else {
        return Ok(false);
    };
    let assignments = t.assignments_of(&c.key)?;
    let mut transfers = HashMap::new();
    for id in assignments.iter().flat_map(|a| a.transfers.iter()) {
        if let Some(tr) = t.transfer(id)? {
            transfers.insert(id.clone(), tr);
        }
    }
    let refs: Vec<&AssignmentRecord> = assignments.iter().collect();
    let class = classify(
        &st,
        &refs,
        &|id| transfers.get(id).cloned(),
        now_ms,
        s.quiet_ms,
    );
    let still = match (c.reason, class) {
        (EvictReason::Verified, Class::Verified { at_ms }) => {
            now_ms.saturating_sub(at_ms) >= s.grace_ms
        }
        (EvictReason::UnassignedHidden, Class::Unassigned { since_ms }) => {
            now_ms.saturating_sub(since_ms) >= s.visible_ms
        }
        (EvictReason::UnassignedRetention, Class::Unassigned { since_ms }) => {
            now_ms.saturating_sub(since_ms) >= s.unassigned_retention_ms
        }
        _ => false,
    };
    if !still {
        return Ok(false);
    }
    let removed = t.remove_instances_of(&c.key)?;
    let mut ids: Vec<String> = transfers.keys().cloned().collect();
    ids.sort();
    for id in &ids {
        t.remove_transfer_instances(id)?;
        doomed.dirs.push(outbound::transfer_dir(root, id));
    }
    let mut bytes = 0;
    for r in &removed {
        bytes += r.bytes;
        doomed.files.push(root.join(&r.file));
    }
    summary.studies += 1;
    summary.instances += removed.len() as u64;
    summary.bytes += c.bytes.max(bytes);
    st.evicted = Some(Eviction {
        at_ms: now_ms,
        reason: c.reason,
        series: st.series_count,
        instances: removed.len() as u64,
        bytes,
        transfers: ids,
    });
    st.series_count = 0;
    st.instance_count = 0;
    st.bytes = 0;
    // The record keeps what finds the study again in the PACS (UID, accession number, date,
    // description), not who the patient is; instances sent again fill these in anew.
    st.patient_name.clear();
    st.patient_id.clear();
    if c.reason == EvictReason::UnassignedRetention {
        // Identifiable data is not kept forever: nothing of an unassigned study stays
        // but its UID, date and counts.
        st.accession_number.clear();
        st.study_description.clear();
    }
    t.put_study(&st)?;
    Ok(true)
}

fn evict_rejected(
    t: &mut dyn Tables,
    root: &Path,
    c: &Candidate,
    now_ms: i64,
    summary: &mut PassSummary,
    doomed: &mut Doomed,
) -> Result<bool, StoreError> {
    let Some(mut r) = t.rejection(&c.key)? else {
        return Ok(false);
    };
    if r.evicted_ms.is_some() {
        return Ok(false);
    }
    r.evicted_ms = Some(now_ms);
    t.put_rejection(&r)?;
    doomed.files.push(root.join(&r.file));
    summary.rejected_files += 1;
    summary.bytes += r.bytes;
    Ok(true)
}

/// Delete what the index no longer names, then make the directory entries durable.
fn delete(d: &Doomed) {
    let files = d.files.iter().map(|f| (f, std::fs::remove_file(f)));
    let dirs = d.dirs.iter().map(|p| (p, std::fs::remove_dir_all(p)));
    let mut parents: Vec<PathBuf> = Vec::new();
    for (path, removed) in files.chain(dirs) {
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Recovery at the next start deletes what is left (the index does not name it).
            Err(e) => tracing::warn!(error = %e, "evicted data could not be deleted"),
        }
        if let Some(p) = path.parent() {
            if !parents.iter().any(|x| x == p) {
                parents.push(p.to_owned());
            }
        }
    }
    for p in parents {
        let _ = crate::quarantine::sync_dir(&p);
    }
}

/// Start-up: delete the outbound copies of evicted studies that a crash left behind (the
/// objects and rejected files are `quarantine::recover`'s). Returns how many directories.
pub fn recover(store: &dyn Store, data_dir: &Path) -> Result<u64, StoreError> {
    let out = data_dir.join("outbound");
    if !out.is_dir() {
        return Ok(0);
    }
    let mut n = 0;
    for st in store.studies()? {
        let Some(e) = &st.evicted else { continue };
        for id in &e.transfers {
            let dir = outbound::transfer_dir(data_dir, id);
            if dir.exists() && std::fs::remove_dir_all(&dir).is_ok() {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// The last report, shared by the housekeeping task, status and metrics.
#[derive(Debug, Default)]
pub struct Housekeeping {
    report: Mutex<DiskReport>,
    /// Keeps a manual pass (`fiona evict`) and the periodic one apart.
    running: Mutex<()>,
}

impl Housekeeping {
    pub fn report(&self) -> DiskReport {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Run a pass and keep its report (and the last pass that evicted something).
    pub fn run_pass(
        &self,
        store: &dyn Store,
        q: &Quarantine,
        s: &Settings,
        actor: &str,
        now_ms: i64,
    ) -> Result<DiskReport, String> {
        let _one = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut r = pass(store, q, s, actor, now_ms)?;
        if let Ok(mut kept) = self.report.lock() {
            if r.last_pass.is_none() {
                r.last_pass = kept.last_pass.clone();
            }
            *kept = r.clone();
        }
        Ok(r)
    }
}

/// Test switch: with `FIONA_TEST_EVICT_PAUSE_MS` set, wait that long after the index commit
/// and before unlinking, so a crash test can kill the daemon in between. Honoured in every
/// build because the tests run the release binary (CI runs `cargo test --release`); all it can
/// do is delay the unlink of files the index no longer names, which start-up recovery would
/// delete anyway. It is logged so a set switch never goes unnoticed.
fn pause_before_unlink(_q: &Quarantine) {
    if let Some(ms) = std::env::var("FIONA_TEST_EVICT_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tracing::warn!(
            ms,
            "eviction recorded, pausing before unlinking (test switch)"
        );
        std::thread::sleep(Duration::from_millis(ms));
    }
}

#[cfg(test)]
mod tests;
