//! The systemd watchdog: `fiona serve` pings systemd (`WATCHDOG=1`, sd_notify protocol) only
//! while every liveness check passes, so a hung component stops the pings and systemd
//! restarts the service (`WatchdogSec=` in the unit).
//!
//! The checks (`health.rs`): the tokio runtime runs a task that ticks every second; the
//! committer thread answers a probe (or is busy with one batch for less than the stall limit);
//! the pipeline's loops have ticked within the stall limit; a C-ECHO through our own DICOM
//! listener has succeeded within the stall limit (tried every `echo_interval_secs`). The
//! verdicts go to `Node::health` every round, for `fiona status`, `fiona health` and
//! `/metrics`, whether or not systemd watches.
//!
//! The rounds run on their own OS thread, so a runtime whose workers are all stuck still
//! gets judged (and not pinged for). A round every half of `WATCHDOG_USEC` when systemd sets
//! it, else every 5 seconds. `STATUS=` carries a one-line summary (counts, or the failing
//! checks with fixed text and destination names), sent when it changes. Without
//! `NOTIFY_SOCKET` nothing is sent and nothing is logged about it.
//!
//! The echo check is off when `[watchdog] echo_interval_secs = 0`, or when the address or
//! calling-AE allow-list would refuse the daemon's own echo (logged once at start). The first
//! echo goes out one interval after start. An A-ASSOCIATE-RJ "transient" (every association
//! slot taken) counts as an answer: the listener works, and a daemon that is merely full must
//! not be restarted. Its association is counted in the receive stage's counters like any
//! other; its log line is at debug level (`scp.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::forward::{self, Peer};
use crate::health::{Beat, Check, CheckResult, Probe, ProbeStep};
use crate::node::Node;
use crate::pipeline::Pipeline;

/// A round when systemd does not ask for pings (the verdicts still feed status and metrics).
const ROUND_WITHOUT_SYSTEMD: Duration = Duration::from_secs(5);

/// The echo check's state, written by its task.
#[derive(Debug, Default)]
struct EchoState {
    /// Ticked on every successful echo (and at start).
    ok: Beat,
    /// The last attempt's outcome; `None` before the first one ends.
    last: Mutex<Option<Result<(), String>>>,
}

/// The running watchdog; [`Watchdog::stop`] ends its thread.
#[derive(Debug)]
pub struct Watchdog {
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Start the checks (two tasks on the current runtime, one OS thread) for the daemon
    /// whose plain DICOM listener is bound at `dicom`. Pings and status stop at `shutdown`.
    pub fn start(
        node: Arc<Node>,
        pipeline: Arc<Pipeline>,
        dicom: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<Watchdog> {
        let cfg = node.config.watchdog.clone();
        let runtime = Arc::new(Beat::default());
        let r = runtime.clone();
        let stop_rt = shutdown.clone();
        tokio::spawn(async move {
            loop {
                r.tick();
                tokio::select! {
                    _ = stop_rt.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        let echo = Arc::new(EchoState::default());
        let echo_off = match (cfg.echo_interval(), self_echo_refused(&node, dicom)) {
            (None, _) => Some("off (`[watchdog] echo_interval_secs = 0`)".to_string()),
            (Some(_), Some(why)) => {
                tracing::info!(reason = why, "watchdog: the echo check is off");
                Some(format!("off ({why})"))
            }
            (Some(every), None) => {
                let peer = Peer {
                    host: self_address(dicom).to_string(),
                    port: dicom.port(),
                    called_ae_title: node.config.ae_title.trim().to_string(),
                    calling_ae_title: node.config.ae_title.trim().to_string(),
                    tls: None,
                };
                let e = echo.clone();
                let stop_echo = shutdown.clone();
                tokio::spawn(async move {
                    loop {
                        // The first echo after one interval: start-up is not slowed, and
                        // a daemon that lives for seconds (a test) is not echoed at all.
                        tokio::select! {
                            _ = stop_echo.cancelled() => break,
                            _ = tokio::time::sleep(every) => {}
                        }
                        let limit = every.min(Duration::from_secs(30));
                        let r = tokio::select! {
                            _ = stop_echo.cancelled() => break,
                            r = forward::echo(&peer, limit) => r,
                        };
                        match r {
                            // Refused as busy (every slot taken) is an answer too: the
                            // listener works, and a full daemon must not be restarted.
                            Ok(_) => {
                                e.ok.tick();
                                *e.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Ok(()));
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, "watchdog: C-ECHO through our own listener failed");
                                *e.last.lock().unwrap_or_else(|p| p.into_inner()) =
                                    Some(Err(err.0));
                            }
                        }
                    }
                });
                None
            }
        };
        let ping = sd_notify::watchdog_enabled().map(|usec| usec / 2);
        let round = ping.unwrap_or(ROUND_WITHOUT_SYSTEMD);
        let (stop, stopped) = mpsc::channel::<()>();
        let judge = Judge {
            node,
            pipeline,
            runtime,
            echo,
            echo_off,
            stall: cfg.stall(),
            probe: std::cell::Cell::new(Probe::default()),
        };
        let thread = std::thread::Builder::new()
            .name("fiona-watchdog".into())
            .spawn(move || {
                let mut last_status = String::new();
                loop {
                    let results = judge.round();
                    let healthy = results.iter().all(|r| r.healthy);
                    let status = judge.status_line(&results);
                    judge.node.health.set(results);
                    if shutdown.is_cancelled() {
                        break;
                    }
                    let mut states = Vec::new();
                    if status != last_status {
                        states.push(NotifyState::Status(&status));
                    }
                    if healthy && ping.is_some() {
                        states.push(NotifyState::Watchdog);
                    }
                    if !states.is_empty() {
                        // Without NOTIFY_SOCKET this does nothing; a failed send is retried
                        // next round, and systemd restarts us if pings stay missing.
                        let _ = sd_notify::notify(&states);
                    }
                    last_status = status;
                    match stopped.recv_timeout(round) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                }
            })?;
        Ok(Watchdog {
            stop,
            thread: Some(thread),
        })
    }

    /// End the watchdog's thread (the tasks end at the shutdown token).
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where to reach our own listener: its address, or loopback when it listens on all.
fn self_address(dicom: SocketAddr) -> IpAddr {
    match dicom.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

/// Why the allow-lists would refuse our own echo, if they would.
fn self_echo_refused(node: &Node, dicom: SocketAddr) -> Option<&'static str> {
    let ip = self_address(dicom);
    if !(node.allow_addrs.is_empty() || node.allow_addrs.iter().any(|n| n.contains(ip))) {
        return Some("`allow.addresses` does not admit the daemon's own address");
    }
    let callers = &node.config.allow.calling_ae_titles;
    let ours = node.config.ae_title.trim();
    if !(callers.is_empty() || callers.iter().any(|c| c.trim() == ours)) {
        return Some("`allow.calling_ae_titles` does not admit the daemon's own AE title");
    }
    None
}

/// What one round looks at.
struct Judge {
    node: Arc<Node>,
    pipeline: Arc<Pipeline>,
    runtime: Arc<Beat>,
    echo: Arc<EchoState>,
    /// Why the echo check is off, when it is.
    echo_off: Option<String>,
    stall: Duration,
    /// The committer's probe.
    probe: std::cell::Cell<Probe>,
}

impl Judge {
    /// Judge every check once.
    fn round(&self) -> Vec<CheckResult> {
        let secs = |d: Duration| d.as_secs();
        Check::ALL
            .iter()
            .map(|&c| {
                let failing: Option<String> = match c {
                    Check::Runtime => (self.runtime.age() > self.stall)
                        .then(|| format!("no runtime task ran for {} s", secs(self.runtime.age()))),
                    Check::Committer => self.committer(),
                    Check::Pipeline => {
                        let stalled = self.pipeline.stalled(self.stall);
                        (!stalled.is_empty()).then(|| {
                            format!(
                                "no progress for more than {} s: {}",
                                secs(self.stall),
                                stalled.join(", ")
                            )
                        })
                    }
                    Check::Echo => {
                        let last = self
                            .echo
                            .last
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .clone();
                        let age = self.echo.ok.age();
                        match (&self.echo_off, last) {
                            (Some(_), _) | (None, Some(Ok(()))) => None,
                            // A first echo that never ends fails too, after the stall limit.
                            (None, None) => (age > self.stall).then(|| {
                                format!(
                                    "no C-ECHO through our own listener ended in {} s",
                                    secs(age)
                                )
                            }),
                            (None, Some(Err(e))) => (age > self.stall).then(|| {
                                format!(
                                    "no C-ECHO through our own listener succeeded for {} s: {e}",
                                    secs(age)
                                )
                            }),
                        }
                    }
                };
                let detail = match (&failing, c, &self.echo_off) {
                    (Some(f), _, _) => f.clone(),
                    (None, Check::Echo, Some(off)) => off.clone(),
                    (None, Check::Echo, None) => {
                        match &*self.echo.last.lock().unwrap_or_else(|p| p.into_inner()) {
                            None => "first echo not done yet".into(),
                            Some(Ok(())) => String::new(),
                            Some(Err(e)) => format!(
                                "the last C-ECHO failed ({e}); failing after {} s without success",
                                secs(self.stall)
                            ),
                        }
                    }
                    _ => String::new(),
                };
                CheckResult {
                    check: c.as_str().into(),
                    healthy: failing.is_none(),
                    detail,
                }
            })
            .collect()
    }

    /// The committer check ([`Probe`]): failing when a probe has been outstanding longer
    /// than the stall limit (the thread is on one batch), or cannot be sent (the thread is
    /// gone). A new probe goes out once the last one was answered, so the verdict does not
    /// depend on the round's length.
    fn committer(&self) -> Option<String> {
        let now = crate::health::monotonic_ms();
        let answered = self.node.committer.beat().last_ms();
        let mut probe = self.probe.get();
        let verdict = match probe.step(now, answered, self.stall) {
            ProbeStep::Waiting => None,
            ProbeStep::Stalled(waited) => Some(format!(
                "the committer has not answered for {} s (busy with one batch)",
                waited.as_secs()
            )),
            ProbeStep::Send if !self.node.committer.probe() => {
                Some("the committer thread has stopped".into())
            }
            ProbeStep::Send => {
                probe.sent(now);
                None
            }
        };
        self.probe.set(probe);
        verdict
    }

    /// The one-line `STATUS=`: counts when healthy, else the failing checks. No patient data.
    fn status_line(&self, results: &[CheckResult]) -> String {
        let failing: Vec<String> = results
            .iter()
            .filter(|r| !r.healthy)
            .map(|r| format!("{}: {}", r.check, r.detail))
            .collect();
        if !failing.is_empty() {
            return format!("unhealthy: {}", failing.join("; "));
        }
        let st = &self.node.stats;
        format!(
            "healthy; {} associations active; {} instances stored, {} rejected since start",
            st.associations_active.load(Ordering::Relaxed),
            st.instances_stored.load(Ordering::Relaxed),
            st.instances_rejected.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_listener_is_reached_on_loopback_when_it_listens_on_all() {
        assert_eq!(
            self_address("0.0.0.0:11112".parse().unwrap()),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            self_address("[::]:11112".parse().unwrap()),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
        assert_eq!(
            self_address("10.0.0.5:11112".parse().unwrap()),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
    }
}
