//! The pipeline: what happens to a transfer after assignment, without anyone acting.
//!
//! Three stages, one module each, over the small scheduler here:
//!
//! * [`deidentify`]: a `requested` transfer whose study has arrived (no new instance for the
//!   quiet period) goes through its project's pixel stage and header engine, instance by
//!   instance on rayon, into the outbound area (`deid::outbound`);
//! * [`send`]: each destination of the project gets the outputs by C-STORE (plain or TLS,
//!   `forward.rs`), retried with backoff up to its `max_attempts`;
//! * [`verify`]: each destination's C-FIND must list what it was sent; what is missing is
//!   sent again (up to three times).
//!
//! A stage's work on a transfer (or on one destination's delivery of it) ends in a [`Step`]:
//! done, retry at a time with a reason, failed with a reason, or parked. Every change of a
//! transfer's state goes through `TransferRecord::move_to` (the table of legal transitions in
//! `model.rs`), in one index transaction with its audit record. Times come from the
//! pipeline's [`Clock`] (the system clock in the daemon, a manual one in tests).
//!
//! The scheduler: one loop de-identifies (every second, or when woken by an assignment or a
//! re-send), on a blocking thread; one task per destination sends and verifies with one
//! association at a time, so a destination that is down or hangs holds only its own queue.
//! [`resend`] re-queues finished transfers; [`verify_report`] is the on-demand C-FIND check.
//!
//! Liveness (`health.rs`): the de-identification loop ticks a [`Beat`] on every loop and
//! every instance, each destination's task on every loop, every delivery it sends or
//! verifies and every second of a send;
//! [`Pipeline::stalled`] names the loops whose beat is too old, for the watchdog. Only when
//! the daemon was started with `FIONA_TEST_FAULTS=1` (logged as a warning at start), a file
//! `run/fault-stall-pipeline` in the data directory makes the de-identification loop stop
//! (no pass, no tick) while it exists: the watchdog test's fault (see [`FAULT_STALL_FILE`]).
//! The switch works in release builds because the tests run them (`cargo test --release`).
//!
//! Write then acknowledge: outputs are durable before the transfer says `deidentified`, and
//! a delivery's progress is written while its attempt runs, so a crash replays little and
//! never sends a different result (the engine is deterministic).

mod deidentify;
mod resend;
mod send;
mod verify;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::deid::outbound::{self, Outbound, Released};
use crate::health::Beat;
use crate::index::Store;
use crate::model::{AuditRecord, TransferRecord, TransferState};
use crate::pixel::scrub::Stage;
use crate::project::{DestinationConfig, ProjectConfig};
use crate::quarantine::Quarantine;

pub use crate::model::{Delivery, Parked};
pub use deidentify::Outcome;
pub use resend::resend;
pub use send::{backoff, store_peer};
pub use verify::{query_peer, verify_report, VerifyRow};

/// With [`test_faults_enabled`], while this file exists in the data directory's `run/`, the
/// de-identification loop neither works nor ticks (fault injection for the watchdog test).
pub const FAULT_STALL_FILE: &str = "fault-stall-pipeline";

/// Whether test fault switches are on: the environment variable `FIONA_TEST_FAULTS=1` at
/// start (`serve` warns when it is).
pub fn test_faults_enabled() -> bool {
    static ON: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
        std::env::var_os("FIONA_TEST_FAULTS").is_some_and(|v| v == "1")
    });
    *ON
}

/// Build the stages the configuration describes, checking what only they can: each
/// project's pixel stage (its signature library parses, its OCR languages are installed,
/// its patterns compile), each project's de-identification settings (rules name standard
/// attributes fiona does not write itself, the secret parses) and each destination's TLS
/// files. The configuration's own validation (`Config::from_file`) checks plain data only;
/// `fiona serve` and `fiona check-config` run both. The message names the project or
/// destination and the field.
pub fn build_stages(config: &Config) -> Result<BTreeMap<String, Arc<Stage>>, String> {
    let invalid = |what: String| format!("invalid config: field `projects`: {what}");
    let mut stages = BTreeMap::new();
    for (name, p) in &config.projects {
        p.deid
            .validate()
            .map_err(|e| invalid(format!("project `{name}`: deid: {e}")))?;
        let stage =
            Stage::from_config(&p.pixel).map_err(|e| invalid(format!("project `{name}`: {e}")))?;
        stages.insert(name.clone(), Arc::new(stage));
    }
    for (name, d) in &config.destinations {
        if let Some(t) = &d.tls {
            crate::tls::client_config(t).map_err(|e| {
                format!("invalid config: field `destinations`: destination {name}: tls: {e}")
            })?;
        }
    }
    Ok(stages)
}

/// How a stage's work on a transfer, or on one destination's delivery of it, ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The stage did its part: the transfer (or the delivery) moves on.
    Done,
    /// Not now: try again at `at_ms` (ms since the epoch, by the pipeline's clock).
    RetryAt { at_ms: i64, reason: String },
    /// Given up: the transfer (or the delivery) is failed, with the reason.
    Failed { reason: String },
    /// Nothing could be passed on: the transfer waits for a person (`fiona parked`).
    Parked { reason: String },
}

/// Apply a stage's [`Step`] to one delivery: `done` as the stage says, a retry at its time,
/// or failed; each with its reason.
fn settle(d: &mut Delivery, step: Step, done: impl FnOnce(&mut Delivery)) {
    match step {
        Step::Done => done(d),
        Step::RetryAt { at_ms, reason } => {
            d.next_attempt_ms = at_ms;
            d.reason = Some(reason);
        }
        Step::Failed { reason } | Step::Parked { reason } => {
            d.failed = true;
            d.reason = Some(reason);
        }
    }
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
    /// What "now" is for the quiet period, backoff and `verify_after_secs`.
    clock: Arc<dyn Clock>,
    /// Ticked by the de-identification loop (each loop, each instance).
    deid_beat: Beat,
    /// Ticked by each destination's task (each loop, each second of a send).
    destination_beats: BTreeMap<String, Beat>,
}

impl Pipeline {
    /// Build every configured project's stages ([`build_stages`]: a bad library, a missing
    /// OCR language or a bad de-identification rule is a start-up error).
    pub fn new(
        store: Arc<dyn Store>,
        quarantine: Quarantine,
        config: Arc<Config>,
        wake: Arc<tokio::sync::Notify>,
    ) -> Result<Pipeline, String> {
        let stages = build_stages(&config)?;
        Ok(Pipeline {
            store,
            quarantine,
            stages,
            wake,
            sendable: tokio::sync::Notify::new(),
            clock: Arc::new(SystemClock),
            deid_beat: Beat::default(),
            destination_beats: config
                .destinations
                .keys()
                .map(|n| (n.clone(), Beat::default()))
                .collect(),
            config,
        })
    }

    /// The loops whose beat is older than `limit`: `de-identification`, `destination NAME`.
    pub fn stalled(&self, limit: Duration) -> Vec<String> {
        let mut out = Vec::new();
        if self.deid_beat.age() > limit {
            out.push("de-identification".to_string());
        }
        for (name, b) in &self.destination_beats {
            if b.age() > limit {
                out.push(format!("destination {name}"));
            }
        }
        out
    }

    /// A destination task made progress.
    fn destination_tick(&self, name: &str) {
        if let Some(b) = self.destination_beats.get(name) {
            b.tick();
        }
    }

    /// Whether the test-only fault is injected (only with [`test_faults_enabled`]).
    fn fault_stalled(&self) -> bool {
        test_faults_enabled() && self.quarantine.run_dir().join(FAULT_STALL_FILE).exists()
    }

    /// The same pipeline going by `clock` (tests move a [`crate::clock::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Pipeline {
        self.clock = clock;
        self
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The outbound directory of a transfer.
    pub fn outbound_dir(&self, transfer: &str) -> PathBuf {
        outbound::transfer_dir(self.quarantine.root(), transfer)
    }

    /// Mark a transfer that is still in `expect` failed, with the reason, audited.
    fn fail_from(
        &self,
        t: &TransferRecord,
        expect: TransferState,
        reason: &str,
    ) -> Result<(), String> {
        let now = self.now();
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
            if self.fault_stalled() {
                continue;
            }
            self.deid_beat.tick();
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
            self.destination_tick(name);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.sendable.notified() => {}
            }
            self.destination_tick(name);
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
    fn released_logged(&self, t: &TransferRecord) -> Option<Vec<(String, Released)>> {
        match outbound::released(self.quarantine.root(), t) {
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

    /// Work due for one stage: each transfer in one of `states` that has deliveries `pick`
    /// selects (given the transfer and its project, the destinations and deliveries due now),
    /// with its outputs. The outbound files are read only for a transfer with something due;
    /// a transfer whose outputs are unusable is failed by [`Self::released_logged`].
    #[allow(clippy::type_complexity)]
    fn due<'a>(
        &'a self,
        states: &[TransferState],
        mut pick: impl FnMut(&TransferRecord, &ProjectConfig) -> Vec<(&'a DestinationConfig, Delivery)>,
    ) -> Vec<(
        TransferRecord,
        Vec<(&'a DestinationConfig, Delivery)>,
        Vec<(String, Released)>,
    )> {
        let Some(transfers) = self.transfers_logged(states) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for t in transfers.into_iter().filter(|t| states.contains(&t.state)) {
            let Some(project) = self.config.projects.get(&t.project) else {
                continue;
            };
            let due = pick(&t, project);
            if due.is_empty() {
                continue;
            }
            if let Some(files) = self.released_logged(&t) {
                out.push((t, due, files));
            }
        }
        out
    }

    /// The transfers in `states` (read by state: a pass costs what is in flight); `None`
    /// (logged) when the index cannot be read.
    fn transfers_logged(&self, states: &[TransferState]) -> Option<Vec<TransferRecord>> {
        self.store
            .transfers_in(states)
            .map_err(|e| tracing::error!(error = %e, "pipeline: cannot list transfers"))
            .ok()
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
        let now = self.now();
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
                        if next == TransferState::Verified {
                            // Told once, in the transaction that marks it (the outbox).
                            if let Some(p) = self.config.projects.get(&cur.project) {
                                crate::notify::enqueue(tables, &p.notify, &cur, now)?;
                            }
                        }
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

#[cfg(test)]
mod tests;
