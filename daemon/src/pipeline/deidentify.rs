//! The de-identification stage: a `requested` transfer whose study has arrived (no new
//! instance for the quiet period) is taken through the pixel stage and the header engine of
//! its project, instance by instance on rayon (never on the async runtime's threads). Each
//! output goes to the outbound area (`deid::outbound`: `outbound/<transfer>/<instance
//! key>.dcm` inside the data directory, written unnamed and linked into place): no image is
//! written outside the quarantine's file system tree, and file names are fiona's own keys.
//!
//! An instance the pixel stage cannot scrub (undecodable, text still read after the masking
//! rounds) or the header engine cannot process is **parked**: it gets no output, and the
//! transfer records its key and the reason, which `fiona transfers`, `fiona parked` and the
//! status show. It is never forwarded unscrubbed and never silently dropped. Images the
//! project drops (secondary captures, by its settings) are counted apart. A transfer left
//! with no output and at least one parked instance is `parked` ([`Step::Parked`]): there is
//! nothing to send or verify, and a person must look (`fiona resend` de-identifies it again;
//! a correction cancels it). A transfer with some outputs goes on with what it has.
//!
//! Review (issue 17): what each output holds (every element at every depth, hashed and
//! sampled: `deid::review`) is collected from the output data set as it is written, folded
//! into one batch for the transfer, and merged into the project's review inventory in the
//! transaction that moves the transfer to `deidentified`, so the inventory is exactly what
//! was released; a transfer de-identified again counts its instances once
//! (`index::merge_review`).
//!
//! Write then acknowledge: the outputs are durable before the transfer moves to
//! `deidentified` (one index transaction, with its audit record). A crash before that leaves
//! the transfer `requested`, and the next pass writes the same outputs again. A transfer
//! cancelled by a correction meanwhile is left cancelled and its outputs removed; one whose
//! study gained instances meanwhile is done again on the next pass. A pass that fails as a
//! whole is retried with backoff ([`Step::RetryAt`]) and the transfer fails with the reason
//! after `deid_max_attempts` ([`Step::Failed`]).

use std::collections::BTreeMap;
use std::time::Duration;

use rayon::prelude::*;
use tokio_util::sync::CancellationToken;

use super::{transfer_audit, Parked, Pipeline, Step};
use crate::deid::{engine, file, outbound};
use crate::model::{ReviewBatch, TransferRecord, TransferState};
use crate::quarantine::sync_dir;

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

impl Pipeline {
    /// Transfers ready for de-identification now: `requested`, due, their study quiet.
    pub fn ready(&self) -> Result<Vec<TransferRecord>, String> {
        let now_ms = self.now();
        let quiet = self.config.quiet_period().as_millis() as i64;
        let mut out = Vec::new();
        for t in self
            .store
            .transfers_in(&[TransferState::Requested])
            .map_err(|e| e.to_string())?
        {
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
        // The instances' outcomes in key order, and what their outputs hold for the review
        // inventory, folded as they finish (rayon keeps the order, so the samples kept are
        // the first in key order whatever the threads did).
        let (results, review): (Vec<One>, ReviewBatch) = keys
            .par_iter()
            .map(|key| {
                let park = |reason: String| {
                    (
                        One::Parked(Parked {
                            instance: key.clone(),
                            reason,
                        }),
                        None,
                    )
                };
                let Some(rel) = files.get(key) else {
                    return park("instance not in the index".into());
                };
                let input = self.quarantine.object_path(rel);
                let output = outbound::output_path(&dir, key);
                let started = std::time::Instant::now();
                let done = file::deidentify_file_reviewed(
                    &input,
                    file::Output::File(&output),
                    &engine,
                    Some(stage),
                );
                crate::metrics::global()
                    .deid_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.deid_beat.tick();
                match done {
                    Ok((_, _, batch)) => (One::Done, Some(batch)),
                    Err(file::FileError::Dropped(_)) => (One::Dropped, None),
                    Err(e) => park(e.to_string()),
                }
            })
            .fold(
                || (Vec::new(), ReviewBatch::default()),
                |(mut ones, mut review), (one, batch)| {
                    ones.push(one);
                    if let Some(b) = batch {
                        review.absorb(b);
                    }
                    (ones, review)
                },
            )
            .reduce(
                || (Vec::new(), ReviewBatch::default()),
                |(mut ones, mut review), (more, later)| {
                    ones.extend(more);
                    review.absorb(later);
                    (ones, review)
                },
            );
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
        self.record(t, keys.len() as u64, &mut outcome, &review)?;
        if outcome.skipped {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(outcome)
    }

    /// Move the transfer to `deidentified` with its counts (`parked` when it has no output
    /// and parked instances), if it is still the transfer we processed; in the same
    /// transaction, merge what its outputs hold into the project's review inventory (so the
    /// inventory is always what was released).
    fn record(
        &self,
        t: &TransferRecord,
        processed: u64,
        outcome: &mut Outcome,
        review: &ReviewBatch,
    ) -> Result<(), String> {
        let now = self.now();
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
                if review.instances > 0 {
                    crate::index::merge_review(tables, &cur.project, &cur.id, review, now)?;
                }
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

    /// One pass over the transfers ready now: each is de-identified and its [`Step`] logged.
    pub fn pass(&self, stop: &CancellationToken) {
        let ready = match self.ready() {
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
            match &self.deidentify_step(&t) {
                // Logged with its counts by `deidentify_step`.
                Step::Done => {}
                Step::Parked { reason } => tracing::warn!(
                    transfer = %t.id,
                    project = %t.project,
                    reason = %reason,
                    "transfer parked: no instance could be passed on; see `fiona parked`"
                ),
                Step::RetryAt { at_ms, reason } => tracing::info!(
                    transfer = %t.id,
                    retry_in_ms = (at_ms - self.now()).max(0),
                    reason = %reason,
                    "transfer not de-identified; retried later"
                ),
                Step::Failed { reason } => {
                    tracing::error!(transfer = %t.id, reason = %reason, "transfer failed")
                }
            }
        }
    }

    /// De-identify one ready transfer and record what came of it, as a [`Step`]: done (it is
    /// `deidentified`), parked (nothing could be passed on), retry later (the pass failed, or
    /// the transfer changed meanwhile) or failed (its project is gone, or the pass failed
    /// `deid_max_attempts` times).
    pub fn deidentify_step(&self, t: &TransferRecord) -> Step {
        if !self.config.projects.contains_key(&t.project) {
            // Removed from the configuration: nothing can de-identify it.
            let reason = format!("project {} is no longer configured", t.project);
            if let Err(e) = self.fail(t, &reason) {
                tracing::error!(transfer = %t.id, error = %e, "cannot mark transfer failed");
            }
            return Step::Failed { reason };
        }
        let started = std::time::Instant::now();
        match self.deidentify(t) {
            Ok(o) if o.skipped => Step::RetryAt {
                at_ms: self.now(),
                reason: "the transfer changed while it was de-identified; done again next pass"
                    .into(),
            },
            Ok(o) if o.deidentified == 0 && !o.parked.is_empty() => Step::Parked {
                reason: format!(
                    "{} instances parked, {} dropped by the project's settings",
                    o.parked.len(),
                    o.dropped
                ),
            },
            Ok(o) => {
                tracing::info!(
                    transfer = %t.id,
                    project = %t.project,
                    deidentified = o.deidentified,
                    parked = o.parked.len(),
                    dropped = o.dropped,
                    ms = started.elapsed().as_millis() as u64,
                    "transfer de-identified"
                );
                Step::Done
            }
            Err(e) => self.deid_failed(t, &e).unwrap_or_else(|e2| {
                tracing::error!(transfer = %t.id, error = %e2, "de-identification failure not recorded");
                Step::RetryAt {
                    at_ms: self.now(),
                    reason: e,
                }
            }),
        }
    }

    /// A de-identification pass failed as a whole: count it, and retry later with backoff,
    /// or fail the transfer with the reason once `deid_max_attempts` passes have failed.
    fn deid_failed(&self, t: &TransferRecord, why: &str) -> Result<Step, String> {
        let now = self.now();
        let mut step = Step::RetryAt {
            at_ms: now,
            reason: why.to_string(),
        };
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
                    let reason = format!("de-identification failed {n} times; last: {why}");
                    cur.reason = Some(reason.clone());
                    step = Step::Failed { reason };
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
                let reason = format!("de-identification attempt {n} of {max} failed: {why}");
                cur.reason = Some(reason.clone());
                step = Step::RetryAt {
                    at_ms: cur.next_deid_ms,
                    reason,
                };
                tables.put_transfer(&cur)
            })
            .map_err(|e| e.to_string())?;
        Ok(step)
    }
}
