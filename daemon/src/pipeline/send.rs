//! The sending stage: each destination of a `deidentified` transfer's project gets the
//! transfer's outputs ([`Released`], read from the outbound area) by C-STORE (`forward.rs`,
//! plain or TLS). Each destination's progress (instances it confirmed, attempts, next
//! attempt, reason, duplicates it answered 0x0111 for) is kept on the transfer and written
//! while an attempt runs. An attempt ends in a [`Step`]: done (every instance confirmed;
//! verification waits `verify_after_secs`), retry at a time (exponential backoff with
//! jitter) or failed (after the destination's `max_attempts`; an attempt counts from when it
//! begins). When every destination has every instance the transfer is `sent`; when one gave
//! up and the rest are finished it is `failed` with the reasons.

use std::time::Duration;

use super::{settle, transfer_audit, Delivery, DestinationConfig, Pipeline, Step};
use crate::deid::outbound::Released;
use crate::forward::{self, Peer, Stored};
use crate::model::{TransferRecord, TransferState};

/// DIMSE status: Duplicate SOP Instance (PS3.7 C.4.2.1.4 / PS3.4 B.2.3, refused).
const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;

/// How often delivery progress is written to the index during an attempt: a crash re-sends
/// at most this much.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

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

/// Add an attempt's results (one per instance of `todo`, in order, possibly fewer) to a
/// delivery; returns the problems, in words.
fn take_results(
    d: &mut Delivery,
    dest: &DestinationConfig,
    todo: &[&(String, Released)],
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
pub fn backoff(dest: &DestinationConfig, attempts: u32) -> Duration {
    let base = dest.retry_base_secs.max(1);
    let exp = base.saturating_mul(1u64 << attempts.saturating_sub(1).min(20));
    let secs = exp.min(dest.retry_max_secs.max(base)) as f64;
    let r = getrandom::u64().unwrap_or(0) as f64 / u64::MAX as f64;
    Duration::from_secs_f64(secs * (0.75 + 0.5 * r))
}

impl Pipeline {
    /// Send every de-identified transfer to each of its project's destinations that is due
    /// (`only` that destination when given).
    pub async fn send_pass(&self, only: Option<&str>) {
        let now = self.now();
        let work = self.due(&[TransferState::Deidentified], |t, project| {
            project
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
                .collect()
        });
        for (t, due, files) in work {
            for (dest, mut d) in due {
                self.destination_tick(&d.destination);
                let step = self.deliver(&t, dest, &files, &mut d).await;
                if let Step::Failed { reason } = &step {
                    tracing::warn!(transfer = %t.id, destination = %d.destination, attempts = d.attempts, reason = %reason, "transfer failed");
                }
                settle_send(&mut d, step, self.now(), dest);
                if let Err(e) = self.record_delivery(&t, d, files.len() as u64) {
                    tracing::error!(transfer = %t.id, error = %e, "delivery not recorded");
                }
            }
        }
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
        files: &[(String, Released)],
        d: &mut Delivery,
    ) -> Step {
        if d.attempts >= dest.max_attempts {
            // The last attempts were interrupted (a crash or a kill): give up as if they had
            // failed, rather than loop.
            return Step::Failed {
                reason: format!(
                    "gave up after {} attempts, the last interrupted before it finished",
                    d.attempts
                ),
            };
        }
        d.attempts += 1;
        let metrics = crate::metrics::global();
        let label = crate::metrics::Metrics::destination(&d.destination);
        metrics.send_attempts.get_or_create(&label).inc();
        // Listed from the first attempt on, at 0 until one fails.
        metrics.send_failures.get_or_create(&label).inc_by(0);
        let started = std::time::Instant::now();
        self.record_progress(t, d);
        let todo: Vec<&(String, Released)> = files
            .iter()
            .filter(|(k, _)| !d.stored.contains(k))
            .collect();
        let peer = store_peer(dest, &self.config.ae_title);
        let outs: Vec<Released> = todo.iter().map(|(_, o)| o.clone()).collect();
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
                        self.destination_tick(&d.destination);
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
        metrics
            .send_seconds
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        if d.stored.len() != files.len() {
            metrics.send_failures.get_or_create(&label).inc();
        }
        if d.stored.len() == files.len() {
            tracing::info!(transfer = %t.id, destination = %d.destination, instances = files.len(), duplicates = d.duplicates.len(), attempts = d.attempts, "transfer sent");
            return Step::Done;
        }
        let mut why = problems.join("; ");
        if why.len() > 2000 {
            why.truncate(why.floor_char_boundary(2000));
            why.push_str(" ...");
        }
        if d.attempts >= dest.max_attempts {
            return Step::Failed { reason: why };
        }
        let wait = backoff(dest, d.attempts);
        tracing::warn!(transfer = %t.id, destination = %d.destination, attempts = d.attempts, retry_in_s = wait.as_secs(), reason = %why, "transfer attempt failed");
        Step::RetryAt {
            at_ms: self.now() + wait.as_millis() as i64,
            reason: why,
        }
    }

    /// Store a delivery's progress on its transfer; the transfer becomes `sent` when every
    /// destination has every instance, `failed` when one gave up and the rest are finished.
    pub(super) fn record_delivery(
        &self,
        t: &TransferRecord,
        d: Delivery,
        files: u64,
    ) -> Result<(), String> {
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
        let now = self.now();
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
}

/// Apply a sending attempt's [`Step`] to its delivery: done (verification is due
/// `verify_after_secs` later: the PACS may index what it received later), retry at a time,
/// or failed, each with its reason.
pub fn settle_send(d: &mut Delivery, step: Step, now_ms: i64, dest: &DestinationConfig) {
    settle(d, step, |d| {
        d.done = true;
        d.reason = (!d.duplicates.is_empty()).then(|| {
            format!(
                "{} instances answered duplicate (0x0111): held already, to be confirmed by C-FIND",
                d.duplicates.len()
            )
        });
        d.next_attempt_ms = now_ms + (dest.verify_after_secs * 1000) as i64;
    })
}
