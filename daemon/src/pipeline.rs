//! The pipeline: what happens to a transfer after assignment, without anyone acting.
//!
//! Three stages run: **de-identification into the outbound area**, **sending** to the
//! project's destinations (C-STORE, plain or TLS, `forward.rs`) and **verification** by
//! C-FIND. Each destination's progress (instances it confirmed, attempts, next attempt,
//! reason, duplicates it answered 0x0111 for) is kept on the transfer and written while an
//! attempt runs; failures and network errors retry with exponential backoff and jitter up to
//! the destination's `max_attempts` (an attempt counts from when it begins), then the
//! transfer is `failed` with the reason; when every destination has every instance it is
//! `sent`, and `verified` once every destination's C-FIND lists them (what is missing is sent
//! again, up to three times).
//!
//! De-identification: a
//! transfer in state `requested` whose study has arrived (no new instance for the quiet
//! period) is taken through the pixel stage and the header engine of its project, instance by
//! instance on rayon (never on the async runtime's threads). Each output goes to
//! `outbound/<transfer>/<instance key>.dcm` inside the data directory (written unnamed and
//! linked into place, then fsynced with its directory): no image is written outside the
//! quarantine's file system tree, and file names are fiona's own keys.
//!
//! An instance the pixel stage cannot scrub (undecodable, text still read after the masking
//! rounds) or the header engine cannot process is **parked**: it gets no output, and the
//! transfer records its key and the reason, which `fiona transfers`, `fiona parked` and the
//! status show. It is never forwarded unscrubbed and never silently dropped. Images the
//! project drops (secondary captures, by its settings) are counted apart. A transfer left
//! with no output and at least one parked instance is `parked`, not `deidentified`: there is
//! nothing to send or verify, and a person must look (`fiona resend` de-identifies it again,
//! e.g. after the project's settings changed; a correction cancels it). A transfer with some
//! outputs goes on with what it has, its parked count shown.
//!
//! Write then acknowledge: the outputs are durable before the transfer moves to
//! `deidentified` (one index transaction, with its audit record). A crash before that leaves
//! the transfer `requested`, and the next pass writes the same outputs again (the engine is
//! deterministic), so a replay never sends a different result. A transfer cancelled by a
//! correction meanwhile is left cancelled and its outputs removed; one whose study gained
//! instances meanwhile is done again on the next pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::assign::{AuditRecord, TransferRecord, TransferState};
use crate::config::Config;
use crate::deid::{engine, file};
use crate::forward::{self, Outgoing, Peer, Stored};
use crate::index::Store;
use crate::pixel::scrub::Stage;
use crate::project::DestinationConfig;
use crate::quarantine::{sync_dir, Quarantine};

pub use crate::assign::{Delivery, Parked};

/// DIMSE status: Duplicate SOP Instance (PS3.7 C.4.2.1.4 / PS3.4 B.2.3, refused).
const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;

/// How often delivery progress is written to the index during an attempt: a crash re-sends
/// at most this much.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Re-sends after a failed verification before the transfer is marked failed.
const MAX_VERIFY_RESENDS: u32 = 3;

/// What de-identifying one transfer gave.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub deidentified: u64,
    pub dropped: u64,
    pub parked: Vec<Parked>,
    /// The transfer was no longer `requested` (cancelled), or changed meanwhile: nothing
    /// recorded.
    pub skipped: bool,
}

/// The pipeline's state: the index, the data directory and each project's stage.
pub struct Pipeline {
    store: Arc<dyn Store>,
    quarantine: Quarantine,
    config: Arc<Config>,
    stages: BTreeMap<String, Arc<Stage>>,
    /// Wakes the de-identification loop before its next tick (an assignment, a re-send).
    wake: Arc<tokio::sync::Notify>,
    /// Wakes the destination tasks after a de-identification pass.
    sendable: tokio::sync::Notify,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl Pipeline {
    /// Build every configured project's pixel stage (a bad library or a missing OCR model is
    /// a start-up error).
    pub fn new(
        store: Arc<dyn Store>,
        quarantine: Quarantine,
        config: Arc<Config>,
        wake: Arc<tokio::sync::Notify>,
    ) -> Result<Pipeline, String> {
        let mut stages = BTreeMap::new();
        for (name, p) in &config.projects {
            let stage = Stage::from_config(&p.pixel).map_err(|e| format!("project {name}: {e}"))?;
            stages.insert(name.clone(), Arc::new(stage));
        }
        for (name, d) in &config.destinations {
            if let Some(t) = &d.tls {
                crate::tls::client_config(t)
                    .map_err(|e| format!("destination {name}: tls: {e}"))?;
            }
        }
        Ok(Pipeline {
            store,
            quarantine,
            config,
            stages,
            wake,
            sendable: tokio::sync::Notify::new(),
        })
    }

    /// The outbound directory of a transfer.
    pub fn outbound_dir(&self, transfer: &str) -> PathBuf {
        self.quarantine.root().join("outbound").join(transfer)
    }

    /// Transfers ready for de-identification: `requested`, their study quiet.
    pub fn ready(&self, now_ms: i64) -> Result<Vec<TransferRecord>, String> {
        let quiet = self.config.quiet_period().as_millis() as i64;
        let mut out = Vec::new();
        for t in self.store.transfers().map_err(|e| e.to_string())? {
            if t.state != TransferState::Requested || t.next_deid_ms > now_ms {
                continue;
            }
            let Some(study) = self.store.study(&t.study_key).map_err(|e| e.to_string())? else {
                continue;
            };
            if now_ms - study.last_received_ms >= quiet {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// De-identify one transfer into its outbound directory and record the result. Runs on
    /// the calling thread and rayon; call it from a blocking context.
    pub fn deidentify(&self, t: &TransferRecord) -> Result<Outcome, String> {
        let project = self
            .config
            .projects
            .get(&t.project)
            .ok_or_else(|| format!("project {} is not configured", t.project))?;
        let stage = self
            .stages
            .get(&t.project)
            .ok_or_else(|| format!("project {} has no pixel stage", t.project))?;
        let engine = project.deid.engine(
            self.quarantine.root(),
            engine::Assignment {
                project: t.project.clone(),
                participant: t.participant.clone(),
                event: t.event.clone(),
            },
        )?;
        let keys = self
            .store
            .transfer_instances(&t.id)
            .map_err(|e| e.to_string())?;
        let files: BTreeMap<String, String> = self
            .store
            .instances_of(&t.study_key)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|i| (i.key, i.file))
            .collect();
        let dir = self.outbound_dir(&t.id);
        // A replay starts clean: outputs of an earlier, interrupted pass (or of instances
        // parked or dropped this time) must not be taken for this pass's.
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        enum One {
            Done,
            Dropped,
            Parked(Parked),
        }
        let results: Vec<One> = keys
            .par_iter()
            .map(|key| {
                let park = |reason: String| {
                    One::Parked(Parked {
                        instance: key.clone(),
                        reason,
                    })
                };
                let Some(rel) = files.get(key) else {
                    return park("instance not in the index".into());
                };
                let input = self.quarantine.object_path(rel);
                let output = dir.join(format!("{key}.dcm"));
                match file::deidentify_file_with(
                    &input,
                    file::Output::File(&output),
                    &engine,
                    Some(stage),
                ) {
                    Ok(_) => One::Done,
                    Err(file::FileError::Dropped(_)) => One::Dropped,
                    Err(e) => park(e.to_string()),
                }
            })
            .collect();
        // Every output durable before the transfer says so: one flush of the file system
        // (one journal commit) instead of one fsync per output; an error fails the whole pass,
        // which is then replayed.
        let flush = || -> std::io::Result<()> {
            nix::unistd::syncfs(std::fs::File::open(&dir)?).map_err(std::io::Error::from)?;
            sync_dir(&dir)
        };
        flush().map_err(|e| format!("{}: outputs not durable: {e}", dir.display()))?;
        let mut outcome = Outcome::default();
        for r in results {
            match r {
                One::Done => outcome.deidentified += 1,
                One::Dropped => outcome.dropped += 1,
                One::Parked(p) => outcome.parked.push(p),
            }
        }
        for p in &outcome.parked {
            tracing::warn!(transfer = %t.id, instance = %p.instance, reason = %p.reason, "instance parked");
        }
        self.record(t, keys.len() as u64, &mut outcome)?;
        if outcome.skipped {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(outcome)
    }

    /// Move the transfer to `deidentified` with its counts (`parked` when it has no output
    /// and parked instances), if it is still the transfer we processed.
    fn record(
        &self,
        t: &TransferRecord,
        processed: u64,
        outcome: &mut Outcome,
    ) -> Result<(), String> {
        let now = now_ms();
        let mut skipped = false;
        let o = outcome.clone();
        self.store
            .write_assign(&mut |tables| {
                let Some(mut cur) = tables.transfer(&t.id)? else {
                    skipped = true;
                    return Ok(());
                };
                if cur.state != TransferState::Requested || cur.instances != processed {
                    skipped = true;
                    return Ok(());
                }
                // Nothing to send and something parked: it waits for a person, instead of
                // going through sending and verification with nothing in it.
                let parked_only = o.deidentified == 0 && !o.parked.is_empty();
                cur.move_to(
                    if parked_only {
                        TransferState::Parked
                    } else {
                        TransferState::Deidentified
                    },
                    now,
                )?;
                cur.deidentified = o.deidentified;
                cur.dropped = o.dropped;
                cur.parked = o.parked.clone();
                cur.reason = None;
                cur.next_deid_ms = 0;
                tables.put_transfer(&cur)?;
                tables.append_audit(transfer_audit(
                    &cur,
                    "pipeline",
                    if parked_only {
                        "parked"
                    } else {
                        "deidentified"
                    },
                    format!(
                        "{} de-identified, {} parked, {} dropped by the project's settings",
                        o.deidentified,
                        o.parked.len(),
                        o.dropped
                    ),
                    now,
                ))?;
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        outcome.skipped = skipped;
        Ok(())
    }

    /// Mark a transfer failed with the reason (if it is still `requested`).
    fn fail(&self, t: &TransferRecord, reason: &str) -> Result<(), String> {
        self.fail_from(t, TransferState::Requested, reason)
    }

    /// Mark a transfer that is still in `expect` failed, with the reason, audited.
    fn fail_from(
        &self,
        t: &TransferRecord,
        expect: TransferState,
        reason: &str,
    ) -> Result<(), String> {
        let now = now_ms();
        self.store
            .write_assign(&mut |tables| {
                let Some(mut cur) = tables.transfer(&t.id)? else {
                    return Ok(());
                };
                if cur.state != expect {
                    return Ok(());
                }
                cur.move_to(TransferState::Failed, now)?;
                cur.reason = Some(reason.to_string());
                tables.put_transfer(&cur)?;
                tables.append_audit(transfer_audit(
                    &cur,
                    "pipeline",
                    "failed",
                    reason.to_string(),
                    now,
                ))?;
                Ok(())
            })
            .map_err(|e| e.to_string())
    }

    /// Run until `shutdown`: every second, de-identify the transfers that are ready, then send
    /// what is de-identified and due.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        // One task per destination, sending and verifying with one association at a time: a
        // destination that is down or hangs holds only its own queue, never the others, the
        // de-identification or the receive side.
        let mut senders = tokio::task::JoinSet::new();
        for name in self.config.destinations.keys() {
            let p = self.clone();
            let stop = shutdown.clone();
            let name = name.clone();
            senders.spawn(async move { p.destination_loop(&name, stop).await });
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.wake.notified() => {}
            }
            let p = self.clone();
            let stop = shutdown.clone();
            let pass = tokio::task::spawn_blocking(move || p.pass(&stop)).await;
            if let Err(e) = pass {
                tracing::error!(error = %e, "pipeline pass failed");
            }
            self.sendable.notify_waiters();
        }
        while let Some(r) = senders.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "destination task failed");
            }
        }
    }

    /// Send and verify for one destination every second (or right after a de-identification
    /// pass) until `shutdown`.
    async fn destination_loop(&self, name: &str, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.sendable.notified() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.send_pass(Some(name)) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.verify_pass(Some(name)) => {}
            }
        }
    }

    /// The de-identified files of a transfer, by instance key. When they cannot be read or
    /// are not what was recorded, the transfer fails with the reason (logged once), so it is
    /// never sent or verified short.
    fn outgoing_logged(&self, t: &TransferRecord) -> Option<Vec<(String, Outgoing)>> {
        match outgoing_files(self.quarantine.root(), t) {
            Ok(f) => Some(f),
            Err(Outbound::Io(e)) => {
                // Perhaps passing (EMFILE, a busy disk): tried again on the next tick.
                tracing::error!(transfer = %t.id, error = %e, "outbound files unreadable");
                None
            }
            Err(Outbound::Mismatch(e)) => {
                tracing::error!(transfer = %t.id, error = %e, "outbound files unusable");
                let why = format!(
                    "{e}; `fiona resend --study {}` de-identifies it again",
                    t.study_key
                );
                if let Err(e) = self.fail_from(t, t.state, &why) {
                    tracing::error!(transfer = %t.id, error = %e, "failure not recorded");
                }
                None
            }
        }
    }

    /// Every transfer; `None` (logged) when the index cannot be read.
    fn transfers_logged(&self) -> Option<Vec<TransferRecord>> {
        self.store
            .transfers()
            .map_err(|e| tracing::error!(error = %e, "pipeline: cannot list transfers"))
            .ok()
    }

    /// Send every de-identified transfer to each of its project's destinations that is due
    /// (`only` that destination when given).
    pub async fn send_pass(&self, only: Option<&str>) {
        let now = now_ms();
        let Some(transfers) = self.transfers_logged() else {
            return;
        };
        for t in transfers
            .into_iter()
            .filter(|t| t.state == TransferState::Deidentified)
        {
            let Some(project) = self.config.projects.get(&t.project) else {
                continue;
            };
            if project.destinations.is_empty() {
                continue;
            }
            // Destinations due now; the outbound files are read only when there is one.
            let due: Vec<(&DestinationConfig, Delivery)> = project
                .destinations
                .iter()
                .filter(|name| only.is_none_or(|o| o == name.as_str()))
                .filter_map(|name| {
                    let dest = self.config.destinations.get(name)?;
                    let d = t
                        .deliveries
                        .iter()
                        .find(|d| &d.destination == name)
                        .cloned()
                        .unwrap_or_else(|| Delivery {
                            destination: name.clone(),
                            ..Delivery::default()
                        });
                    (!d.done && !d.failed && now >= d.next_attempt_ms).then_some((dest, d))
                })
                .collect();
            if due.is_empty() {
                continue;
            }
            let Some(files) = self.outgoing_logged(&t) else {
                continue;
            };
            for (dest, mut d) in due {
                self.deliver(&t, dest, &files, &mut d).await;
                if let Err(e) = self.record_delivery(&t, d, files.len() as u64) {
                    tracing::error!(transfer = %t.id, error = %e, "delivery not recorded");
                }
            }
        }
    }

    /// Verify each destination's delivery once it is done (`only` that destination when
    /// given): the research PACS must hold every instance sent (C-FIND on the research
    /// StudyInstanceUID: study level, then series and image level when the count is missing
    /// or differs). Missing instances are sent again (the transfer goes back to
    /// `deidentified`), up to three times, then it is `failed`; the transfer is `verified`
    /// when every destination's delivery is.
    pub async fn verify_pass(&self, only: Option<&str>) {
        let now = now_ms();
        let Some(transfers) = self.transfers_logged() else {
            return;
        };
        // Whether or not the transfer's other destinations are done (a slow one does not
        // hold the others' check).
        for t in transfers
            .into_iter()
            .filter(|t| matches!(t.state, TransferState::Sent | TransferState::Deidentified))
        {
            let Some(project) = self.config.projects.get(&t.project) else {
                continue;
            };
            // Deliveries due for verification (a destination that cannot answer C-FIND
            // leaves its transfers `sent`); the outbound files are read only when there is one.
            let due: Vec<(&DestinationConfig, &Delivery)> = t
                .deliveries
                .iter()
                .filter(|d| {
                    only.is_none_or(|o| o == d.destination)
                        && project.destinations.contains(&d.destination)
                        && d.done
                        && !d.failed
                        && d.verified_ms.is_none()
                        && now >= d.next_attempt_ms
                })
                .filter_map(|d| {
                    let dest = self.config.destinations.get(&d.destination)?;
                    dest.verify.then_some((dest, d))
                })
                .collect();
            if due.is_empty() {
                continue;
            }
            let Some(files) = self.outgoing_logged(&t) else {
                continue;
            };
            for (dest, d) in due {
                let mut d = d.clone();
                self.verify_one(&t, dest, &files, &mut d).await;
                if let Err(e) = self.record_verification(&t, d) {
                    tracing::error!(transfer = %t.id, error = %e, "verification not recorded");
                }
            }
        }
    }

    async fn verify_one(
        &self,
        t: &TransferRecord,
        dest: &DestinationConfig,
        files: &[(String, Outgoing)],
        d: &mut Delivery,
    ) {
        let peer = query_peer(dest, &self.config.ae_title);
        let sent: Vec<&str> = files
            .iter()
            .map(|(_, o)| o.sop_instance_uid.as_str())
            .collect();
        // The whole check is bounded: a query AE that hangs must not hold the pipeline.
        let ask = |list| {
            tokio::time::timeout(
                forward::PEER_TIMEOUT * 2,
                forward::holdings(&peer, &t.research_study_uid, list),
            )
        };
        let mut h = match ask(false).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return self.verify_error(t, dest, d, &e.0),
            Err(_) => return self.verify_error(t, dest, d, "no answer to C-FIND"),
        };
        if h.study_count != Some(sent.len() as u64) && h.instances.is_none() {
            match ask(true).await {
                Ok(Ok(list)) => h = list,
                Ok(Err(e)) => return self.verify_error(t, dest, d, &e.0),
                Err(_) => return self.verify_error(t, dest, d, "no answer to C-FIND"),
            }
        }
        let missing: Vec<String> = match &h.instances {
            None => Vec::new(),
            Some(held) => files
                .iter()
                .filter(|(_, o)| !held.contains(&o.sop_instance_uid))
                .map(|(k, _)| k.clone())
                .collect(),
        };
        if missing.is_empty() {
            d.verified_ms = Some(now_ms());
            d.reason = (!d.duplicates.is_empty()).then(|| {
                format!(
                    "{} instances answered duplicate (0x0111); C-FIND confirmed the destination holds them",
                    d.duplicates.len()
                )
            });
            tracing::info!(transfer = %t.id, destination = %d.destination, instances = files.len(), "transfer verified");
            return;
        }
        tracing::warn!(transfer = %t.id, destination = %d.destination, missing = missing.len(), "verification: instances missing at the destination");
        let (lacks, of) = (missing.len(), files.len());
        d.reason = Some(if d.resent_after_verify >= MAX_VERIFY_RESENDS {
            format!(
                "verification: the destination lacks {lacks} of {of} instances after {MAX_VERIFY_RESENDS} re-sends"
            )
        } else {
            format!(
                "verification: the destination lacks {lacks} of {of} instances (re-send {} of {MAX_VERIFY_RESENDS})",
                d.resent_after_verify + 1
            )
        });
        d.stored.retain(|k| !missing.contains(k));
        d.duplicates.retain(|k| !missing.contains(k));
        d.done = false;
        // The re-send gets its own attempts, now.
        d.attempts = 0;
        d.next_attempt_ms = 0;
        d.resent_after_verify += 1;
        if d.resent_after_verify > MAX_VERIFY_RESENDS {
            d.failed = true;
        }
    }

    /// The destination could not be asked: retry with backoff, and give up (the transfer
    /// fails, with the reason) after the destination's `max_attempts`.
    fn verify_error(
        &self,
        t: &TransferRecord,
        dest: &DestinationConfig,
        d: &mut Delivery,
        why: &str,
    ) {
        d.verify_errors += 1;
        d.reason = Some(format!("verification: {why}"));
        if d.verify_errors >= dest.max_attempts {
            d.failed = true;
            // Failed, not done: the transfer's outcome counts it as a destination that gave up.
            d.done = false;
            tracing::warn!(transfer = %t.id, destination = %d.destination, attempts = d.verify_errors, reason = %why, "verification failed");
        } else {
            let wait = backoff(dest, d.verify_errors);
            d.next_attempt_ms = now_ms() + wait.as_millis() as i64;
            tracing::warn!(transfer = %t.id, destination = %d.destination, attempts = d.verify_errors, retry_in_s = wait.as_secs(), reason = %why, "verification attempt failed");
        }
    }

    /// Store a verification: `verified` when every destination is; back to `deidentified`
    /// (to send what is missing) or `failed` otherwise.
    fn record_verification(&self, t: &TransferRecord, d: Delivery) -> Result<(), String> {
        let now = now_ms();
        self.update_delivery(t, t.state, d, &mut |cur, names, d| {
            let of = |n: &String| cur.deliveries.iter().find(|x| &x.destination == n);
            if d.failed && cur.state == TransferState::Deidentified {
                // Other destinations are still sending: the transfer fails once they finish
                // (see `record_delivery`).
                Some((
                    "verify_failed",
                    format!(
                        "{}: {}",
                        d.destination,
                        d.reason.clone().unwrap_or_default()
                    ),
                ))
            } else if d.failed {
                cur.state = TransferState::Failed;
                cur.reason = Some(format!(
                    "{}: {}",
                    d.destination,
                    d.reason.clone().unwrap_or_default()
                ));
                Some(("failed", cur.reason.clone().unwrap_or_default()))
            } else if !d.done {
                cur.state = TransferState::Deidentified;
                Some(("resend", d.reason.clone().unwrap_or_default()))
            } else if names
                .iter()
                .all(|n| of(n).is_some_and(|x| x.verified_ms.is_some()))
            {
                cur.state = TransferState::Verified;
                cur.verified_ms = Some(now);
                let dups: usize = cur.deliveries.iter().map(|x| x.duplicates.len()).sum();
                let note = if dups > 0 {
                    format!(" ({dups} of them answered duplicate 0x0111, confirmed by C-FIND)")
                } else {
                    String::new()
                };
                Some((
                    "verified",
                    format!("{} instances held at {}{note}", cur.sent, names.join(", ")),
                ))
            } else {
                None
            }
        })
        .map(|_| ())
    }

    /// Replace one delivery on a transfer that is still in `expect`, let `decide` move the
    /// transfer on (returning the audit action and detail), and record it all in one
    /// transaction. Returns the transfer's state when it was not `expect` (nothing done).
    fn update_delivery(
        &self,
        t: &TransferRecord,
        expect: TransferState,
        d: Delivery,
        decide: &mut Decide<'_>,
    ) -> Result<Option<TransferState>, String> {
        let now = now_ms();
        let mut other = None;
        let names: Vec<String> = self
            .config
            .projects
            .get(&t.project)
            .map(|p| p.destinations.clone())
            .unwrap_or_default();
        self.store
            .write_assign(&mut |tables| {
                other = None;
                let Some(mut cur) = tables.transfer(&t.id)? else {
                    return Ok(());
                };
                if cur.state != expect {
                    other = Some(cur.state);
                    return Ok(());
                }
                cur.deliveries.retain(|x| x.destination != d.destination);
                cur.deliveries.push(d.clone());
                let before = cur.state;
                if let Some((action, detail)) = decide(&mut cur, &names, &d) {
                    // The decision set the new state: checked against the table.
                    let next = cur.state;
                    if next != before {
                        cur.state = before;
                        cur.move_to(next, now)?;
                    }
                    cur.state_ms = now;
                    tables.append_audit(transfer_audit(&cur, "pipeline", action, detail, now))?;
                }
                tables.put_transfer(&cur)?;
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        Ok(other)
    }

    /// Write a delivery's progress during an attempt (the transfer's state unchanged).
    fn record_progress(&self, t: &TransferRecord, d: &Delivery) {
        if let Err(e) =
            self.update_delivery(t, TransferState::Deidentified, d.clone(), &mut |_, _, _| {
                None
            })
        {
            tracing::error!(transfer = %t.id, error = %e, "delivery progress not recorded");
        }
    }

    /// One attempt: send what the destination has not confirmed yet.
    ///
    /// The attempt is counted (and written) before anything is sent, so an attempt that a
    /// crash interrupts still counts towards `max_attempts`; what the destination confirms
    /// is written every [`PROGRESS_EVERY`] while the attempt runs, so a crash re-sends
    /// little. What it then answers 0x0111 (duplicate) for is taken as stored when the
    /// destination is verified by C-FIND, which confirms it.
    async fn deliver(
        &self,
        t: &TransferRecord,
        dest: &DestinationConfig,
        files: &[(String, Outgoing)],
        d: &mut Delivery,
    ) {
        if d.attempts >= dest.max_attempts {
            // The last attempts were interrupted (a crash or a kill): give up as if they had
            // failed, rather than loop.
            d.failed = true;
            let why = format!(
                "gave up after {} attempts, the last interrupted before it finished",
                d.attempts
            );
            tracing::warn!(transfer = %t.id, destination = %d.destination, attempts = d.attempts, reason = %why, "transfer failed");
            d.reason = Some(why);
            return;
        }
        d.attempts += 1;
        self.record_progress(t, d);
        let todo: Vec<&(String, Outgoing)> = files
            .iter()
            .filter(|(k, _)| !d.stored.contains(k))
            .collect();
        let peer = store_peer(dest, &self.config.ae_title);
        let outs: Vec<Outgoing> = todo.iter().map(|(_, o)| o.clone()).collect();
        // A destination that hangs must not hold the others: a bound on the whole attempt.
        let limit = Duration::from_secs(30 + 5 * outs.len() as u64);
        // What the peer confirmed before a timeout still counts.
        let results = std::sync::Mutex::new(Vec::with_capacity(outs.len()));
        // A correction may cancel the transfer meanwhile: then nothing more goes out.
        let still_wanted = || {
            self.store
                .transfer(&t.id)
                .map(|cur| cur.is_some_and(|c| c.state == TransferState::Deidentified))
                .unwrap_or(true)
        };
        let link = {
            let attempt =
                forward::store_into(&peer, &outs, self.config.max_pdu, &results, &still_wanted);
            tokio::pin!(attempt);
            let deadline = tokio::time::sleep(limit);
            tokio::pin!(deadline);
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut written = 0;
            loop {
                tokio::select! {
                    r = &mut attempt => break r.err().map(|e| e.0),
                    _ = &mut deadline => break Some(format!("no answer within {} s", limit.as_secs())),
                    _ = tick.tick() => {
                        let progress = {
                            let r = results.lock().unwrap_or_else(|p| p.into_inner());
                            (r.len() > written).then(|| {
                                written = r.len();
                                let mut p = d.clone();
                                take_results(&mut p, dest, &todo, &r);
                                p
                            })
                        };
                        if let Some(p) = progress {
                            self.record_progress(t, &p);
                        }
                    }
                }
            }
        };
        let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut problems = take_results(d, dest, &todo, &results);
        if let Some(e) = link {
            problems.push(e);
        }
        if d.stored.len() == files.len() {
            d.done = true;
            d.reason = (!d.duplicates.is_empty()).then(|| {
                format!(
                    "{} instances answered duplicate (0x0111): held already, to be confirmed by C-FIND",
                    d.duplicates.len()
                )
            });
            // Verification waits a little: the PACS may index what it received later.
            d.next_attempt_ms = now_ms() + (dest.verify_after_secs * 1000) as i64;
            tracing::info!(transfer = %t.id, destination = %d.destination, instances = files.len(), duplicates = d.duplicates.len(), attempts = d.attempts, "transfer sent");
            return;
        }
        let mut why = problems.join("; ");
        if why.len() > 2000 {
            why.truncate(why.floor_char_boundary(2000));
            why.push_str(" ...");
        }
        if d.attempts >= dest.max_attempts {
            d.failed = true;
            tracing::warn!(transfer = %t.id, destination = %d.destination, attempts = d.attempts, reason = %why, "transfer failed");
        } else {
            let wait = backoff(dest, d.attempts);
            d.next_attempt_ms = now_ms() + wait.as_millis() as i64;
            tracing::warn!(transfer = %t.id, destination = %d.destination, attempts = d.attempts, retry_in_s = wait.as_secs(), reason = %why, "transfer attempt failed");
        }
        d.reason = Some(why);
    }

    /// Store a delivery's progress on its transfer; the transfer becomes `sent` when every
    /// destination has every instance, `failed` when one gave up and the rest are finished.
    fn record_delivery(&self, t: &TransferRecord, d: Delivery, files: u64) -> Result<(), String> {
        let state = self.update_delivery(
            t,
            TransferState::Deidentified,
            d.clone(),
            &mut |cur, names, _| {
                let of = |n: &String| cur.deliveries.iter().find(|x| &x.destination == n);
                let all_done = names.iter().all(|n| of(n).is_some_and(|x| x.done));
                let finished = names
                    .iter()
                    .all(|n| of(n).is_some_and(|x| x.done || x.failed));
                if all_done {
                    cur.state = TransferState::Sent;
                    cur.sent = files;
                    Some((
                        "sent",
                        format!("{files} instances stored at {}", names.join(", ")),
                    ))
                } else if finished {
                    cur.state = TransferState::Failed;
                    let why: Vec<String> = cur
                        .deliveries
                        .iter()
                        .filter(|x| x.failed)
                        .map(|x| {
                            format!(
                                "{}: {}",
                                x.destination,
                                x.reason.clone().unwrap_or_default()
                            )
                        })
                        .collect();
                    cur.reason = Some(why.join("; "));
                    cur.sent = cur
                        .deliveries
                        .iter()
                        .map(|x| x.stored.len() as u64)
                        .min()
                        .unwrap_or(0);
                    Some(("failed", cur.reason.clone().unwrap_or_default()))
                } else {
                    None
                }
            },
        )?;
        if state == Some(TransferState::Cancelled) {
            self.record_cancelled_send(t, d)?;
        }
        Ok(())
    }

    /// A correction cancelled the transfer while this attempt ran: keep on the cancelled
    /// transfer what went out under the old assignment, audited.
    fn record_cancelled_send(&self, t: &TransferRecord, d: Delivery) -> Result<(), String> {
        let now = now_ms();
        self.store
            .write_assign(&mut |tables| {
                let Some(mut cur) = tables.transfer(&t.id)? else {
                    return Ok(());
                };
                let before = cur
                    .deliveries
                    .iter()
                    .find(|x| x.destination == d.destination)
                    .map_or(0, |x| x.stored.len());
                if cur.state != TransferState::Cancelled || d.stored.len() <= before {
                    return Ok(());
                }
                cur.deliveries.retain(|x| x.destination != d.destination);
                cur.deliveries.push(d.clone());
                let detail = format!(
                    "{} instances had been sent to {} when the correction stopped it",
                    d.stored.len(),
                    d.destination
                );
                tables.append_audit(transfer_audit(
                    &cur,
                    "pipeline",
                    "cancelled_send",
                    detail,
                    now,
                ))?;
                tables.put_transfer(&cur)
            })
            .map_err(|e| e.to_string())
    }

    /// One pass over the ready transfers.
    pub fn pass(&self, stop: &CancellationToken) {
        let ready = match self.ready(now_ms()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "pipeline: cannot list transfers");
                return;
            }
        };
        for t in ready {
            if stop.is_cancelled() {
                return;
            }
            if !self.config.projects.contains_key(&t.project) {
                // Removed from the configuration: nothing can de-identify it.
                let why = format!("project {} is no longer configured", t.project);
                if let Err(e) = self.fail(&t, &why) {
                    tracing::error!(transfer = %t.id, error = %e, "cannot mark transfer failed");
                }
                continue;
            }
            let started = std::time::Instant::now();
            match self.deidentify(&t) {
                Ok(o) if o.skipped => {
                    tracing::info!(transfer = %t.id, "transfer changed while de-identified; done again next pass");
                }
                Ok(o) if o.deidentified == 0 && !o.parked.is_empty() => tracing::warn!(
                    transfer = %t.id,
                    project = %t.project,
                    parked = o.parked.len(),
                    dropped = o.dropped,
                    "transfer parked: no instance could be passed on; see `fiona parked`"
                ),
                Ok(o) => tracing::info!(
                    transfer = %t.id,
                    project = %t.project,
                    deidentified = o.deidentified,
                    parked = o.parked.len(),
                    dropped = o.dropped,
                    ms = started.elapsed().as_millis() as u64,
                    "transfer de-identified"
                ),
                Err(e) => {
                    if let Err(e2) = self.deid_failed(&t, &e) {
                        tracing::error!(transfer = %t.id, error = %e2, "de-identification failure not recorded");
                    }
                }
            }
        }
    }

    /// A de-identification pass failed as a whole: count it, and retry later with backoff,
    /// or fail the transfer with the reason once `deid_max_attempts` passes have failed.
    fn deid_failed(&self, t: &TransferRecord, why: &str) -> Result<(), String> {
        let now = now_ms();
        let max = self.config.deid_max_attempts;
        let base = Duration::from_secs(self.config.deid_retry_base_secs);
        self.store
            .write_assign(&mut |tables| {
                let Some(mut cur) = tables.transfer(&t.id)? else {
                    return Ok(());
                };
                if cur.state != TransferState::Requested {
                    return Ok(());
                }
                cur.deid_attempts += 1;
                let n = cur.deid_attempts;
                if n >= max {
                    cur.move_to(TransferState::Failed, now)?;
                    cur.reason = Some(format!("de-identification failed {n} times; last: {why}"));
                    tracing::error!(transfer = %t.id, attempts = n, error = %why, "transfer failed: de-identification keeps failing");
                    tables.put_transfer(&cur)?;
                    tables.append_audit(transfer_audit(
                        &cur,
                        "pipeline",
                        "failed",
                        cur.reason.clone().unwrap_or_default(),
                        now,
                    ))?;
                    return Ok(());
                }
                let wait = base
                    .saturating_mul(1u32 << (n - 1).min(16))
                    .min(Duration::from_secs(600));
                cur.next_deid_ms = now + wait.as_millis() as i64;
                cur.reason = Some(format!(
                    "de-identification attempt {n} of {max} failed: {why}"
                ));
                tracing::warn!(transfer = %t.id, attempts = n, retry_in_s = wait.as_secs(), error = %why, "transfer not de-identified; retried later");
                tables.put_transfer(&cur)
            })
            .map_err(|e| e.to_string())
    }
}

/// Re-queue transfers that were sent, verified, failed or parked (e.g. after the research
/// PACS lost data, or the project's settings changed): those of `study`, or of `project`
/// created at or after `since_ms`. A parked transfer has no outputs, so it is de-identified
/// again. A transfer whose
/// outputs are still in the outbound area is sent again (every destination, every instance;
/// the PACS keeps one copy per SOP Instance UID); one whose outputs are gone is de-identified
/// again first (same bytes: the engine is deterministic). Returns the transfer IDs.
// The selection (study, project, since), who and when, and the job's progress: a struct for
// them would be built at its one call site only.
#[allow(clippy::too_many_arguments)]
pub fn resend(
    store: &dyn Store,
    data_dir: &Path,
    study: Option<&str>,
    project: Option<&str>,
    since_ms: Option<i64>,
    actor: &str,
    now: i64,
    progress: &crate::jobs::Progress,
) -> Result<Vec<String>, String> {
    // Which transfers still have their outputs as recorded: read before the write
    // transaction (it would hold up receiving while files are opened). Every outbound file
    // is opened, so at project scale this is the long part: `progress` counts the transfers
    // looked at.
    let wanted = |t: &TransferRecord| {
        study.is_none_or(|s| s == t.study_key)
            && project.is_none_or(|p| p == t.project)
            && since_ms.is_none_or(|s| t.created_ms >= s)
            && matches!(
                t.state,
                TransferState::Sent
                    | TransferState::Verified
                    | TransferState::Failed
                    | TransferState::Parked
            )
    };
    let candidates: Vec<TransferRecord> = store
        .transfers()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|t| wanted(t))
        .collect();
    progress.set_total(candidates.len() as u64);
    let complete: BTreeMap<String, u64> = candidates
        .into_iter()
        .filter(|t| {
            let ok = t.deidentified > 0 && outgoing_files(data_dir, t).is_ok();
            progress.advance();
            ok
        })
        .map(|t| (t.id, t.deidentified))
        .collect();
    let mut ids = Vec::new();
    store
        .write_assign(&mut |tables| {
            ids.clear();
            let candidates: Vec<TransferRecord> = tables
                .all_assignments()?
                .iter()
                .flat_map(|a| a.transfers.clone())
                .filter_map(|id| tables.transfer(&id).ok().flatten())
                .collect();
            for mut t in candidates {
                if !wanted(&t) || ids.contains(&t.id) {
                    continue;
                }
                // Outputs as recorded are sent again; otherwise the study is de-identified
                // again (deterministic: the same UIDs and values).
                let have = complete.get(&t.id) == Some(&t.deidentified);
                t.move_to(
                    if have {
                        TransferState::Deidentified
                    } else {
                        TransferState::Requested
                    },
                    now,
                )?;
                t.reason = None;
                t.sent = 0;
                t.verified_ms = None;
                t.deliveries.clear();
                t.deid_attempts = 0;
                t.next_deid_ms = 0;
                tables.put_transfer(&t)?;
                tables.append_audit(transfer_audit(
                    &t,
                    actor,
                    "resend",
                    format!("re-queued as {}", t.state.as_str()),
                    now,
                ))?;
                ids.push(t.id.clone());
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(ids)
}

/// Why a transfer's outbound files cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// They could not be read (perhaps passing).
    Io(String),
    /// They are not what was recorded: missing, extra or unreadable as DICOM.
    Mismatch(String),
}

impl std::fmt::Display for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outbound::Io(m) | Outbound::Mismatch(m) => f.write_str(m),
        }
    }
}

/// The de-identified files of a transfer in `data_dir`'s outbound area, by instance key; an
/// error unless there are as many as were recorded de-identified.
pub fn outgoing_files(
    data_dir: &Path,
    t: &TransferRecord,
) -> Result<Vec<(String, Outgoing)>, Outbound> {
    let dir = data_dir.join("outbound").join(&t.id);
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Outbound::Mismatch(format!("{}: the outbound files are gone", dir.display()))
        }
        _ => Outbound::Io(format!("{}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(io)? {
        let path = e.map_err(io)?.path();
        let Some(key) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".dcm"))
            .map(str::to_string)
        else {
            continue;
        };
        out.push((key, Outgoing::open(&path).map_err(Outbound::Mismatch)?));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if out.len() as u64 != t.deidentified {
        return Err(Outbound::Mismatch(format!(
            "the outbound area holds {} files of the {} de-identified (changed outside fiona)",
            out.len(),
            t.deidentified
        )));
    }
    Ok(out)
}

/// One line of `fiona verify`: what a destination holds of one transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRow {
    pub transfer: String,
    pub study_key: String,
    pub participant: String,
    pub event: String,
    pub destination: String,
    /// Instances fiona sent.
    pub sent: u64,
    /// Of those, how many the destination lists.
    pub held: u64,
    pub missing: u64,
    /// Why the destination could not be asked.
    pub error: Option<String>,
}

/// Ask every destination of `project` what it holds of each sent or verified transfer (the
/// C-FIND check on demand; changes nothing). Runs as a job (`jobs.rs`): `progress` counts the
/// transfers checked. Each query is bounded; a destination that let a query wait out the peer
/// bound ([`forward::PEER_TIMEOUT`]) is not asked again in this check (its remaining rows say
/// so), so a hung PACS costs one bound per check, not one per study.
pub async fn verify_report(
    config: &Config,
    store: Arc<dyn Store>,
    data_dir: &Path,
    project: &str,
    progress: &crate::jobs::Progress,
) -> Result<Vec<VerifyRow>, String> {
    let p = config
        .projects
        .get(project)
        .ok_or_else(|| format!("project {project} is not configured"))?;
    let transfers: Vec<TransferRecord> = {
        let project = project.to_string();
        tokio::task::spawn_blocking(move || store.transfers())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|t| {
                t.project == project
                    && matches!(t.state, TransferState::Sent | TransferState::Verified)
            })
            .collect()
    };
    progress.set_total(transfers.len() as u64);
    // Destinations that did not answer within the peer bound in this check.
    let mut silent: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for t in transfers {
        let files = {
            let dir = data_dir.to_path_buf();
            let t = t.clone();
            tokio::task::spawn_blocking(move || outgoing_files(&dir, &t))
                .await
                .map_err(|e| e.to_string())?
        };
        for name in &p.destinations {
            let Some(dest) = config.destinations.get(name) else {
                continue;
            };
            let mut row = VerifyRow {
                transfer: t.id.clone(),
                study_key: t.study_key.clone(),
                participant: t.participant.clone(),
                event: t.event.clone(),
                destination: name.clone(),
                sent: t.sent,
                held: 0,
                missing: 0,
                error: None,
            };
            let files = match &files {
                Ok(f) => f,
                Err(e) => {
                    // Without the outputs there is no list of what was sent to compare.
                    row.error = Some(format!("the transfer's outbound files cannot be read: {e}"));
                    rows.push(row);
                    continue;
                }
            };
            row.sent = files.len() as u64;
            if silent.contains(name) {
                row.error = Some(format!(
                    "not asked: {name} did not answer an earlier query of this check"
                ));
                rows.push(row);
                continue;
            }
            let asked = std::time::Instant::now();
            let answer = tokio::time::timeout(
                forward::PEER_TIMEOUT * 2,
                forward::holdings(
                    &query_peer(dest, &config.ae_title),
                    &t.research_study_uid,
                    true,
                ),
            )
            .await;
            match answer {
                Ok(Ok(h)) => {
                    let held = h.instances.unwrap_or_default();
                    row.held = files
                        .iter()
                        .filter(|(_, o)| held.contains(&o.sop_instance_uid))
                        .count() as u64;
                    row.missing = row.sent - row.held;
                }
                Ok(Err(e)) => {
                    row.error = Some(e.0);
                    if asked.elapsed() >= forward::PEER_TIMEOUT {
                        silent.push(name.clone());
                    }
                }
                Err(_) => {
                    row.error = Some(format!(
                        "no answer to C-FIND within {} s",
                        (forward::PEER_TIMEOUT * 2).as_secs()
                    ));
                    silent.push(name.clone());
                }
            }
            rows.push(row);
        }
        progress.advance();
    }
    Ok(rows)
}

/// Moves a transfer on after a delivery changed: the new state set on it, and the audit
/// action and detail (given the project's destination names and the delivery).
type Decide<'a> =
    dyn FnMut(&mut TransferRecord, &[String], &Delivery) -> Option<(&'static str, String)> + 'a;

/// An audit record about a transfer.
fn transfer_audit(
    t: &TransferRecord,
    actor: impl Into<String>,
    action: impl Into<String>,
    detail: impl Into<String>,
    now: i64,
) -> AuditRecord {
    AuditRecord {
        seq: 0,
        time_ms: now,
        actor: actor.into(),
        action: action.into(),
        study_key: Some(t.study_key.clone()),
        project: Some(t.project.clone()),
        participant: Some(t.participant.clone()),
        event: Some(t.event.clone()),
        transfer: Some(t.id.clone()),
        detail: detail.into(),
    }
}

/// The destination's storage side as a peer.
pub fn store_peer(dest: &DestinationConfig, our_ae: &str) -> Peer {
    Peer {
        host: dest.host.clone(),
        port: dest.port,
        called_ae_title: dest.ae_title.clone(),
        calling_ae_title: dest
            .calling_ae_title
            .clone()
            .unwrap_or_else(|| our_ae.to_string()),
        tls: dest.tls.clone(),
    }
}

/// The destination's query side as a peer (same TLS settings).
pub fn query_peer(dest: &DestinationConfig, our_ae: &str) -> Peer {
    Peer {
        port: dest.query_port.unwrap_or(dest.port),
        called_ae_title: dest
            .query_ae_title
            .clone()
            .unwrap_or_else(|| dest.ae_title.clone()),
        ..store_peer(dest, our_ae)
    }
}

/// Add an attempt's results (one per instance of `todo`, in order, possibly fewer) to a
/// delivery; returns the problems, in words.
fn take_results(
    d: &mut Delivery,
    dest: &DestinationConfig,
    todo: &[&(String, Outgoing)],
    results: &[Stored],
) -> Vec<String> {
    let mut problems = Vec::new();
    for ((key, _), r) in todo.iter().zip(results) {
        if d.stored.contains(key) {
            continue;
        }
        match r {
            Stored::Stored(_) => d.stored.push(key.clone()),
            Stored::Refused(DUPLICATE_SOP_INSTANCE) if dest.verify => {
                d.stored.push(key.clone());
                if !d.duplicates.contains(key) {
                    d.duplicates.push(key.clone());
                }
            }
            Stored::Refused(DUPLICATE_SOP_INSTANCE) => problems.push(format!(
                "instance {key} refused with status 0x0111 (duplicate SOP instance); not \
                 counted as stored because the destination is not verified by C-FIND \
                 (verify = true would confirm it)"
            )),
            Stored::Refused(status) => {
                problems.push(format!("instance {key} refused with status {status:#06x}"))
            }
            Stored::NotSent(why) => problems.push(format!("instance {key} not sent: {why}")),
        }
    }
    problems
}

/// The wait before attempt `attempts + 1`: the base doubled per attempt, capped, with up to
/// a quarter of it added or taken at random (so many transfers do not retry in step).
fn backoff(dest: &DestinationConfig, attempts: u32) -> Duration {
    let base = dest.retry_base_secs.max(1);
    let exp = base.saturating_mul(1u64 << attempts.saturating_sub(1).min(20));
    let secs = exp.min(dest.retry_max_secs.max(base)) as f64;
    let r = getrandom::u64().unwrap_or(0) as f64 / u64::MAX as f64;
    Duration::from_secs_f64(secs * (0.75 + 0.5 * r))
}
