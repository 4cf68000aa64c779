//! The verification stage: once a destination has every instance of a transfer (and
//! `verify_after_secs` have passed), its C-FIND on the research StudyInstanceUID must list
//! them (study level, then series and image level when the count is missing or differs).
//! A check ends in a [`Step`]: done (the delivery is verified; the transfer is `verified`
//! when every destination's is), retry at a time (the destination could not be asked:
//! backoff up to `max_attempts`; or instances are missing: they are sent again, up to three
//! times) or failed.
//!
//! [`verify_report`] is the on-demand check behind `fiona verify`; it changes nothing.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::send::{backoff, store_peer};
use super::{settle, Delivery, DestinationConfig, Pipeline, Step};
use crate::config::Config;
use crate::deid::outbound::{self, Released};
use crate::forward::{self, Peer};
use crate::index::Store;
use crate::model::{TransferRecord, TransferState};

/// Re-sends after a failed verification before the transfer is marked failed.
const MAX_VERIFY_RESENDS: u32 = 3;

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
            tokio::task::spawn_blocking(move || outbound::released(&dir, &t))
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
                        .filter(|(_, o)| held.iter().any(|h| h == o.sop_instance_uid()))
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

impl Pipeline {
    /// Verify each destination's delivery once it is done (`only` that destination when
    /// given): the research PACS must hold every instance sent (C-FIND on the research
    /// StudyInstanceUID: study level, then series and image level when the count is missing
    /// or differs). Missing instances are sent again (the transfer goes back to
    /// `deidentified`), up to three times, then it is `failed`; the transfer is `verified`
    /// when every destination's delivery is.
    pub async fn verify_pass(&self, only: Option<&str>) {
        let now = self.now();
        // Whether or not the transfer's other destinations are done (a slow one does not
        // hold the others' check); a destination that cannot answer C-FIND leaves its
        // transfers `sent`.
        let states = [TransferState::Sent, TransferState::Deidentified];
        let work = self.due(&states, |t, project| {
            t.deliveries
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
                    dest.verify.then(|| (dest, d.clone()))
                })
                .collect()
        });
        for (t, due, files) in work {
            for (dest, mut d) in due {
                self.destination_tick(&d.destination);
                let step = self.verify_one(&t, dest, &files, &mut d).await;
                settle_verify(&mut d, step, self.now());
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
        files: &[(String, Released)],
        d: &mut Delivery,
    ) -> Step {
        let peer = query_peer(dest, &self.config.ae_title);
        let sent: Vec<&str> = files.iter().map(|(_, o)| o.sop_instance_uid()).collect();
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
                .filter(|(_, o)| !held.iter().any(|h| h == o.sop_instance_uid()))
                .map(|(k, _)| k.clone())
                .collect(),
        };
        if missing.is_empty() {
            tracing::info!(transfer = %t.id, destination = %d.destination, instances = files.len(), "transfer verified");
            return Step::Done;
        }
        tracing::warn!(transfer = %t.id, destination = %d.destination, missing = missing.len(), "verification: instances missing at the destination");
        let (lacks, of) = (missing.len(), files.len());
        // What is missing is sent again; the re-send gets its own attempts, now.
        d.stored.retain(|k| !missing.contains(k));
        d.duplicates.retain(|k| !missing.contains(k));
        d.done = false;
        d.attempts = 0;
        d.resent_after_verify += 1;
        if d.resent_after_verify > MAX_VERIFY_RESENDS {
            return Step::Failed {
                reason: format!(
                    "verification: the destination lacks {lacks} of {of} instances after {MAX_VERIFY_RESENDS} re-sends"
                ),
            };
        }
        Step::RetryAt {
            at_ms: 0,
            reason: format!(
                "verification: the destination lacks {lacks} of {of} instances (re-send {} of {MAX_VERIFY_RESENDS})",
                d.resent_after_verify
            ),
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
    ) -> Step {
        d.verify_errors += 1;
        let reason = format!("verification: {why}");
        if d.verify_errors >= dest.max_attempts {
            // Failed, not done: the transfer's outcome counts it as a destination that gave up.
            d.done = false;
            tracing::warn!(transfer = %t.id, destination = %d.destination, attempts = d.verify_errors, reason = %why, "verification failed");
            return Step::Failed { reason };
        }
        let wait = backoff(dest, d.verify_errors);
        tracing::warn!(transfer = %t.id, destination = %d.destination, attempts = d.verify_errors, retry_in_s = wait.as_secs(), reason = %why, "verification attempt failed");
        Step::RetryAt {
            at_ms: self.now() + wait.as_millis() as i64,
            reason,
        }
    }

    /// Store a verification: `verified` when every destination is; back to `deidentified`
    /// (to send what is missing) or `failed` otherwise.
    fn record_verification(&self, t: &TransferRecord, d: Delivery) -> Result<(), String> {
        let now = self.now();
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
}

/// Apply a verification's [`Step`] to its delivery: done (verified now), retry at a time
/// (after an error; or at once, to send again what is missing: the delivery is no longer
/// done), or failed, each with its reason.
pub fn settle_verify(d: &mut Delivery, step: Step, now_ms: i64) {
    settle(d, step, |d| {
        d.verified_ms = Some(now_ms);
        d.reason = (!d.duplicates.is_empty()).then(|| {
            format!(
                "{} instances answered duplicate (0x0111); C-FIND confirmed the destination holds them",
                d.duplicates.len()
            )
        });
    })
}
