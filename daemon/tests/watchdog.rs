//! The systemd watchdog: `fiona serve` under a notify socket says READY=1 and STATUS=, pings
//! WATCHDOG=1 every half of WATCHDOG_USEC while healthy, stops pinging while the pipeline
//! loop is stalled (the fault file `run/fault-stall-pipeline`, looked at only with
//! `FIONA_TEST_FAULTS=1`) with STATUS naming
//! the failing check, pings again once it moves, and says STOPPING=1 on SIGTERM. Without a
//! notify socket the checks still run (status, health) and the daemon's own C-ECHO leaves no
//! line in the log.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fiona_tests::fiona_bin;
use fiona_tests::harness::{Daemon, Options};

/// Every datagram the daemon sent to our notify socket, in order.
#[derive(Clone, Default)]
struct Notes(Arc<Mutex<Vec<String>>>);

impl Notes {
    fn listen(path: &Path) -> Notes {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let notes = Notes::default();
        let n = notes.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            loop {
                match sock.recv(&mut buf) {
                    Ok(len) => {
                        n.0.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf[..len]).into_owned())
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
        });
        notes
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Datagrams from index `from` on that carry the line `line` (or a line starting with it).
    fn count_from(&self, from: usize, line: &str) -> usize {
        self.all()[from.min(self.len())..]
            .iter()
            .filter(|d| d.lines().any(|l| l.starts_with(line)))
            .count()
    }

    /// The index of the first datagram from `from` on for which `f` holds.
    fn find_from(&self, from: usize, f: impl Fn(&str) -> bool) -> Option<usize> {
        self.all()
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, d)| f(d))
            .map(|(i, _)| i)
    }
}

fn checks(d: &Daemon) -> Vec<serde_json::Value> {
    d.json(&["status"])["checks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn check<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))
}

#[test]
fn pings_stop_while_the_pipeline_is_stalled_and_stopping_is_said() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("notify.sock");
    let notes = Notes::listen(&sock);
    let mut d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: "[watchdog]\nstall_secs = 3\necho_interval_secs = 1\n".into(),
            env: vec![
                ("NOTIFY_SOCKET".into(), sock.display().to_string()),
                // Pings every second.
                ("WATCHDOG_USEC".into(), "2000000".into()),
                // The fault file below is looked at only with this.
                ("FIONA_TEST_FAULTS".into(), "1".into()),
            ],
            ..Options::default()
        },
    );
    let within = Duration::from_secs(60);
    d.wait_for("READY=1, STATUS= and three pings", within, || {
        notes.count_from(0, "READY=1") == 1
            && notes.count_from(0, "STATUS=healthy") >= 1
            && notes.count_from(0, "WATCHDOG=1") >= 3
    });
    // Every check ran and passed, the echo through our own listener included.
    d.wait_for("the echo check to have run", within, || {
        let c = checks(&d);
        c.len() == 4 && c.iter().all(|c| c["healthy"] == true) && check(&c, "echo")["detail"] == ""
    });
    assert!(d.cli(&["health"]).status.success());

    // The de-identification loop stops: after the stall limit the pings stop and STATUS says
    // which check fails.
    let fault = d.data_dir.join("run/fault-stall-pipeline");
    std::fs::write(&fault, b"").unwrap();
    let from = notes.len();
    d.wait_for("STATUS naming the pipeline check", within, || {
        notes
            .find_from(from, |n| {
                n.contains("STATUS=unhealthy") && n.contains("pipeline")
            })
            .is_some()
    });
    let unhealthy = notes
        .find_from(from, |n| n.contains("STATUS=unhealthy"))
        .unwrap();
    assert!(
        notes.all()[unhealthy].contains("de-identification"),
        "{:?}",
        notes.all()[unhealthy]
    );
    // Several ping intervals (1 s each) without a ping.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        notes.count_from(unhealthy, "WATCHDOG=1"),
        0,
        "pinged while unhealthy: {:?}",
        &notes.all()[unhealthy..]
    );
    let c = checks(&d);
    assert_eq!(check(&c, "pipeline")["healthy"], false, "{c:?}");
    assert_eq!(check(&c, "committer")["healthy"], true, "{c:?}");
    let h = d.cli(&["health"]);
    assert!(!h.status.success());
    assert!(
        String::from_utf8_lossy(&h.stderr).contains("pipeline"),
        "{}",
        String::from_utf8_lossy(&h.stderr)
    );

    // It moves again: the pings come back.
    std::fs::remove_file(&fault).unwrap();
    let from = notes.len();
    d.wait_for("pings after the fault is gone", within, || {
        notes.count_from(from, "WATCHDOG=1") >= 2 && notes.count_from(from, "STATUS=healthy") >= 1
    });

    // SIGTERM: STOPPING=1.
    let from = notes.len();
    let st = d.stop().unwrap();
    assert!(st.success(), "{st}");
    let start = Instant::now();
    while notes.count_from(from, "STOPPING=1") == 0 {
        assert!(
            start.elapsed() < within,
            "no STOPPING=1: {:?}",
            &notes.all()[from..]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn without_a_notify_socket_the_checks_run_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: "[watchdog]\necho_interval_secs = 1\n".into(),
            ..Options::default()
        },
    );
    d.wait_for("the checks to have run", Duration::from_secs(60), || {
        let c = checks(&d);
        c.len() == 4 && c.iter().all(|c| c["healthy"] == true) && check(&c, "echo")["detail"] == ""
    });
    // Several echoes later, the log has none of them, and nothing about notifying.
    d.wait_for("more echoes", Duration::from_secs(60), || {
        d.json(&["status"])["associations_total"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    });
    let log = d.log();
    assert!(!log.contains("association ended"), "{log}");
    assert!(!log.to_lowercase().contains("notify"), "{log}");
    assert!(!log.to_lowercase().contains("watchdog"), "{log}");
}
