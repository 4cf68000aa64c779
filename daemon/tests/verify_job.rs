//! `fiona verify --project` at project scale runs as a job in the daemon: a project of 40
//! studies sent to DCMTK `dcmqrscp`, whose query side is first a server that accepts TCP and
//! never answers (a hung PACS). The verify still completes: the client follows the job, prints
//! progress on stderr and the report on stdout, and exits 1 saying the PACS did not answer
//! (the hung destination costs one peer bound, not one per study). Before jobs, the one
//! request outlived the client's 60 s socket timeout ("Resource temporarily unavailable").
//! Then, with the query side answering, the same verify reports every transfer held and exits
//! 0; `fiona resend --project` runs as a job too.

use fiona_tests::fiona_bin;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::harness::{dcmqrscp, free_port, Daemon, Options};

const STUDIES: u32 = 40;

/// A server that accepts connections and never says anything (kept open while the test runs).
fn hung_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            match s {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
    });
    port
}

/// Run `fiona ARGS`; its exit code, stdout, and stderr lines.
fn run_cli(d: &Daemon, args: &[&str]) -> (Option<i32>, String, Vec<String>) {
    let mut child = Command::new(fiona_bin!())
        .args(args)
        .arg("--data-dir")
        .arg(&d.data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(err)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        lines.join().unwrap(),
    )
}

/// Progress lines of a job: (done, total).
fn progress(lines: &[String], what: &str) -> Vec<(u64, u64)> {
    lines
        .iter()
        .filter(|l| l.ends_with(what))
        .filter_map(|l| {
            let mut w = l.rsplit(": ").next()?.split_whitespace();
            let done = w.next()?.parse().ok()?;
            w.next()?;
            Some((done, w.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn verify_at_project_scale_runs_as_a_job_and_survives_a_hung_pacs() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _pacs = dcmqrscp(&tmp.path().join("pacs"), port);
    let hung = hung_server();
    let mut d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: format!(
                "[projects.PROJ1]\nparticipant_pattern = \"PROJ1-[0-9]{{4}}\"\n\
                 events = [\"baseline\"]\napproval_start = \"2025-01-01\"\n\
                 approval_end = \"2099-12-31\"\ndestinations = [\"research\"]\n\n\
                 [destinations.research]\nhost = \"127.0.0.1\"\nport = {port}\n\
                 ae_title = \"RESEARCH\"\nquery_port = {hung}\nverify = false\n\
                 retry_base_secs = 1\n"
            ),
            quiet_period_secs: 1,
            ..Options::default()
        },
    );

    // 40 one-image studies, each assigned: 40 transfers sent to the PACS.
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    let mut accessions = Vec::new();
    for n in 0..STUDIES {
        let mut spec = StudySpec::new(800 + n, Modality::Ct);
        spec.series = 1;
        spec.instances_per_series = 1;
        spec.rows = 16;
        spec.cols = 16;
        let sub = dir.join(n.to_string());
        std::fs::create_dir_all(&sub).unwrap();
        files.extend(corpus::write_study(&spec, &sub).unwrap());
        accessions.push(spec.accession.clone());
    }
    d.store_ok(&files);
    for (n, acc) in accessions.iter().enumerate() {
        d.assign(acc, "PROJ1", &format!("PROJ1-{n:04}"), "baseline");
    }
    d.wait_for(
        "every transfer to be sent",
        Duration::from_secs(300),
        || {
            let v = d.json(&["transfers", "--state", "sent"]);
            v.as_array().unwrap().len() == STUDIES as usize
        },
    );

    // The PACS's query side hangs: the verify completes anyway, with progress, and says so.
    let (code, stdout, stderr) = run_cli(&d, &["verify", "--project", "PROJ1"]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr:?}\n{}", d.log());
    assert!(
        stdout.contains(&format!(
            "{STUDIES} transfers checked, 0 instances missing, {STUDIES} destinations not answering"
        )),
        "{stdout}\n{stderr:?}"
    );
    assert!(
        stdout.contains("not asked: research did not answer"),
        "{stdout}"
    );
    let seen = progress(&stderr, "transfers checked");
    assert!(
        seen.iter()
            .any(|&(done, total)| done < total && total == STUDIES as u64),
        "progress while the job ran: {stderr:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&(STUDIES as u64, STUDIES as u64)),
        "{stderr:?}"
    );
    assert!(
        !stderr.iter().any(|l| l.contains("temporarily unavailable")),
        "{stderr:?}"
    );

    // The query side answers: everything held, exit 0; `--json` gives the rows.
    let cfg = std::fs::read_to_string(&d.config_path).unwrap();
    std::fs::write(
        &d.config_path,
        cfg.replace(
            &format!("query_port = {hung}"),
            &format!("query_port = {port}"),
        ),
    )
    .unwrap();
    d.restart();
    let (code, stdout, stderr) = run_cli(&d, &["verify", "--project", "PROJ1"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr:?}\n{}", d.log());
    assert!(
        stdout.contains(&format!(
            "{STUDIES} transfers checked, 0 instances missing, 0 destinations not answering"
        )),
        "{stdout}"
    );
    assert_eq!(
        progress(&stderr, "transfers checked").last(),
        Some(&(STUDIES as u64, STUDIES as u64)),
        "{stderr:?}"
    );
    let rows = d.json(&["verify", "--project", "PROJ1"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), STUDIES as usize);
    assert!(
        rows.iter().all(|r| r["held"] == 1 && r["missing"] == 0),
        "{rows:?}"
    );

    // Resend of the whole project is a job too: every transfer re-queued.
    let (code, stdout, stderr) = run_cli(&d, &["resend", "--project", "PROJ1", "--json"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr:?}");
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["transfers"].as_array().unwrap().len(), STUDIES as usize);
    assert_eq!(
        progress(&stderr, "transfers looked at").last(),
        Some(&(STUDIES as u64, STUDIES as u64)),
        "{stderr:?}"
    );
}
