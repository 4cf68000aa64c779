//! Scenario: the hardened systemd units as shipped (`os/systemd/`), checked as files.
//! `systemd-analyze security --offline=yes` gives each an overall exposure of at most 1.5
//! (printed; above it the test lists every directive the analysis flags), `systemd-analyze
//! verify` has nothing to say about them, and every directive sits under a comment saying
//! why. Offline: PID 1 need not be systemd and the user `fiona` need not exist. Needs
//! `systemd-analyze` (Debian package `systemd`; tests/run.sh installs it).
//! The units booted under systemd, with the watchdog restarting a hung daemon, are
//! `systemd_nspawn.rs`.

use std::path::PathBuf;
use std::process::{Command, Output};

use fiona_tests::fiona_bin;

/// The target for `systemd-analyze security`'s overall exposure level.
const MAX_EXPOSURE: f64 = 1.5;

const UNITS: [&str; 2] = ["fiona.service", "fiona-selftest.service"];

fn unit_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../os/systemd")
}

/// Run `systemd-analyze` with `args`, in the C locale and without colours, so the report is
/// plain ASCII everywhere (a flagged line starts with `- `, a passed one with `+ `).
fn analyze(args: &[&str]) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .env("LC_ALL", "C")
        .env("SYSTEMD_COLORS", "0")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze ({e}): install the Debian package systemd \
                 (tests/run.sh does)"
            )
        })
}

/// The figure of `-> Overall exposure level for NAME: 1.4 OK :-)`.
fn overall_exposure(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    let (_, after) = line.split_once(": ")?;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn exposure_is_at_most_1_5() {
    let mut over = Vec::new();
    for unit in UNITS {
        let path = unit_dir().join(unit);
        let out = analyze(&[
            "security",
            "--offline=yes",
            "--no-pager",
            path.to_str().unwrap(),
        ]);
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "systemd-analyze security {unit}: {}\n{}\n{report}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let score = overall_exposure(&report).unwrap_or_else(|| {
            panic!("no overall exposure level in the report on {unit}:\n{report}")
        });
        println!("{unit}: overall exposure {score:.1} (at most {MAX_EXPOSURE})");
        if score > MAX_EXPOSURE {
            let flagged: Vec<&str> = report.lines().filter(|l| l.starts_with("- ")).collect();
            over.push(format!(
                "{unit}: exposure {score:.1} > {MAX_EXPOSURE}; flagged:\n{}",
                flagged.join("\n")
            ));
        }
    }
    assert!(over.is_empty(), "{}", over.join("\n\n"));
}

#[test]
fn verify_has_nothing_to_say() {
    // `verify` checks that ExecStart='s program exists, and /usr/bin/fiona is not installed
    // here: copies of the units run the binary Cargo built instead, nothing else changed.
    let tmp = tempfile::tempdir().unwrap();
    let bin = fiona_bin!();
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = std::fs::read_to_string(unit_dir().join(unit)).unwrap();
        assert!(
            text.contains("ExecStart=/usr/bin/fiona "),
            "{unit} does not run /usr/bin/fiona"
        );
        let copy = tmp.path().join(unit);
        std::fs::write(
            &copy,
            text.replace("/usr/bin/fiona ", &format!("{} ", bin.display())),
        )
        .unwrap();
        paths.push(copy.to_str().unwrap().to_string());
    }
    let mut args = vec!["verify", "--man=no"];
    args.extend(paths.iter().map(String::as_str));
    let out = analyze(&args);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Unknown keys and bad values are only warnings (exit status 0): any output fails.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {}\n{said}",
        out.status
    );
}

/// The directive lines of `text` (in any section) that follow neither a comment nor another
/// directive: every run of directives must sit under a comment saying why.
fn uncommented(text: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let mut explained = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('#') {
            explained = true;
        } else if line.is_empty() || line.starts_with('[') {
            explained = false;
        } else if line.contains('=') {
            if !explained && !is_self_explaining(line) {
                bad.push(format!("line {}: {line}", n + 1));
            }
        } else {
            bad.push(format!("line {}: not a directive: {line}", n + 1));
        }
    }
    bad
}

/// Directives whose value says all there is to say.
fn is_self_explaining(line: &str) -> bool {
    ["Description=", "ExecStart=", "WantedBy="]
        .iter()
        .any(|k| line.starts_with(k))
}

#[test]
fn every_directive_says_why() {
    let mut bad = Vec::new();
    for unit in UNITS {
        let text = std::fs::read_to_string(unit_dir().join(unit)).unwrap();
        bad.extend(
            uncommented(&text)
                .into_iter()
                .map(|b| format!("{unit} {b}")),
        );
    }
    assert!(
        bad.is_empty(),
        "directives without a comment:\n{}",
        bad.join("\n")
    );
    // The checker itself: a bare directive is caught, a commented run is not.
    assert_eq!(uncommented("[Service]\nType=notify\n").len(), 1);
    assert!(uncommented("[Service]\n# why\nA=1\nB=2\n").is_empty());
}

#[test]
fn exposure_parses_the_report_line() {
    let r =
        "- PrivateNetwork= ... 0.5\n\n-> Overall exposure level for fiona.service: 1.4 OK :-)\n";
    assert_eq!(overall_exposure(r), Some(1.4));
    assert_eq!(overall_exposure("no such line"), None);
}
