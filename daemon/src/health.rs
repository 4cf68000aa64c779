//! The daemon's liveness checks, as data: heartbeats that components tick while they work
//! ([`Beat`]), and the latest verdict of each check ([`Health`]) that the watchdog
//! (`watchdog.rs`) writes and the control API (`fiona status`, `/metrics`) reads.
//!
//! The checks ([`Check`]):
//!
//! * `runtime`: a task on the tokio runtime ticks a beat every second;
//! * `committer`: the group-commit thread ticks its beat on every loop, and answers a probe
//!   the watchdog sends it when it is idle; a thread stuck on a batch stops ticking;
//! * `pipeline`: the de-identification loop ticks on every pass and every instance, each
//!   destination's task on every loop and every second of a send;
//! * `echo`: a C-ECHO through the daemon's own DICOM listener succeeds.
//!
//! A check fails when its beat is older than the stall limit (`[watchdog] stall_secs`), or,
//! for `echo`, when no echo has succeeded for that long. Verdicts carry fixed text, check
//! names and destination names, never data from a peer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Milliseconds since the first call in this process, on the monotonic clock (a beat is
/// compared with another beat, never with the wall clock).
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A heartbeat: the monotonic time of the last tick. A new beat counts as ticked now.
#[derive(Debug)]
pub struct Beat(AtomicU64);

impl Default for Beat {
    fn default() -> Beat {
        Beat(AtomicU64::new(monotonic_ms()))
    }
}

impl Beat {
    /// The component made progress.
    pub fn tick(&self) {
        self.0.store(monotonic_ms(), Ordering::Relaxed);
    }

    /// When it last ticked ([`monotonic_ms`]).
    pub fn last_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Time since the last tick.
    pub fn age(&self) -> Duration {
        Duration::from_millis(monotonic_ms().saturating_sub(self.0.load(Ordering::Relaxed)))
    }
}

/// A probe the watchdog sends a thread that ticks a [`Beat`] when it sees it (the
/// committer): outstanding until the beat ticks after it was sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Probe {
    /// When the outstanding probe was sent ([`monotonic_ms`]).
    sent_ms: Option<u64>,
}

/// What to do about a [`Probe`] this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeStep {
    /// None outstanding: send one now (and call [`Probe::sent`]).
    Send,
    /// Outstanding for less than the stall limit.
    Waiting,
    /// Outstanding for this long, more than the stall limit.
    Stalled(Duration),
}

impl Probe {
    /// Judge at `now` with the beat last ticked at `answered` (both [`monotonic_ms`]).
    pub fn step(&mut self, now: u64, answered: u64, stall: Duration) -> ProbeStep {
        match self.sent_ms {
            Some(sent) if answered < sent => {
                let waited = Duration::from_millis(now.saturating_sub(sent));
                if waited > stall {
                    ProbeStep::Stalled(waited)
                } else {
                    ProbeStep::Waiting
                }
            }
            _ => {
                self.sent_ms = None;
                ProbeStep::Send
            }
        }
    }

    /// A probe went out at `now`.
    pub fn sent(&mut self, now: u64) {
        self.sent_ms = Some(now);
    }
}

/// The watchdog's checks, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Runtime,
    Committer,
    Pipeline,
    Echo,
}

impl Check {
    pub const ALL: [Check; 4] = [
        Check::Runtime,
        Check::Committer,
        Check::Pipeline,
        Check::Echo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::Runtime => "runtime",
            Check::Committer => "committer",
            Check::Pipeline => "pipeline",
            Check::Echo => "echo",
        }
    }
}

/// One check's latest verdict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckResult {
    /// The check's name (`runtime`, `committer`, `pipeline`, `echo`).
    pub check: String,
    pub healthy: bool,
    /// Why it failed, or a short note (`disabled`, ...); empty when there is nothing to say.
    pub detail: String,
}

/// The latest verdict of every check. Until the watchdog's first round every check counts
/// as healthy ("not known to be failing").
#[derive(Debug)]
pub struct Health {
    results: Mutex<Vec<CheckResult>>,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            results: Mutex::new(
                Check::ALL
                    .iter()
                    .map(|c| CheckResult {
                        check: c.as_str().into(),
                        healthy: true,
                        detail: "not checked yet".into(),
                    })
                    .collect(),
            ),
        }
    }
}

impl Health {
    /// Record one round of verdicts.
    pub fn set(&self, results: Vec<CheckResult>) {
        *self.results.lock().unwrap_or_else(|p| p.into_inner()) = results;
    }

    /// The latest verdicts, one per check.
    pub fn results(&self) -> Vec<CheckResult> {
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether every check passed in the latest round.
    pub fn healthy(&self) -> bool {
        self.results().iter().all(|r| r.healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_ages_until_it_ticks() {
        let b = Beat::default();
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.age() >= Duration::from_millis(30));
        b.tick();
        assert!(b.age() < Duration::from_millis(30));
    }

    #[test]
    fn a_probe_fails_only_when_unanswered_past_the_stall_limit() {
        let stall = Duration::from_secs(3);
        let mut p = Probe::default();
        assert_eq!(p.step(1_000, 0, stall), ProbeStep::Send);
        p.sent(1_000);
        // Not answered yet, within the limit.
        assert_eq!(p.step(2_000, 500, stall), ProbeStep::Waiting);
        assert_eq!(p.step(4_000, 500, stall), ProbeStep::Waiting);
        // Answered (ticked after it was sent): a new one goes out, however long the round.
        assert_eq!(p.step(60_000, 1_000, stall), ProbeStep::Send);
        p.sent(60_000);
        // Unanswered past the limit.
        assert_eq!(
            p.step(63_500, 59_000, stall),
            ProbeStep::Stalled(Duration::from_millis(3_500))
        );
    }

    #[test]
    fn health_starts_healthy_and_reports_what_was_set() {
        let h = Health::default();
        assert!(h.healthy());
        assert_eq!(h.results().len(), Check::ALL.len());
        h.set(vec![CheckResult {
            check: "pipeline".into(),
            healthy: false,
            detail: "stalled".into(),
        }]);
        assert!(!h.healthy());
    }
}

/// A selftest check's verdict (`fiona selftest`, `selftest.rs`), in order of gravity.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Warning,
    Failure,
}

/// One check of a selftest: its name, verdict and what it found (fixed text, paths, names of
/// destinations and projects; never data from a peer or a patient).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SelftestCheck {
    pub name: String,
    pub verdict: Verdict,
    pub message: String,
}

/// A whole selftest: every check, when it ran, and the verdict of the worst.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SelftestReport {
    pub time_ms: i64,
    pub verdict: Verdict,
    pub checks: Vec<SelftestCheck>,
}

impl SelftestReport {
    pub fn new(time_ms: i64, checks: Vec<SelftestCheck>) -> SelftestReport {
        let verdict = checks
            .iter()
            .map(|c| c.verdict)
            .max()
            .unwrap_or(Verdict::Ok);
        SelftestReport {
            time_ms,
            verdict,
            checks,
        }
    }

    /// `fiona selftest`'s exit status: 0 all passed, 1 a failure, 2 warnings only.
    pub fn exit_code(&self) -> u8 {
        match self.verdict {
            Verdict::Ok => 0,
            Verdict::Failure => 1,
            Verdict::Warning => 2,
        }
    }

    /// The failing checks, `name: message` joined (a rollback's reason).
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Failure)
            .map(|c| format!("{}: {}", c.name, c.message))
            .collect::<Vec<_>>()
            .join("; ")
    }
}
