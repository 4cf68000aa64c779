//! Prometheus metrics: after a study is received, assigned, de-identified and sent to a
//! research PACS (DCMTK's storescp), `/metrics` on the control socket and on the
//! `[metrics] listen` TCP port count what happened, pass `promtool check metrics`, and carry
//! none of the study's patient values, UIDs or accession number.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::pipeline::*;

/// `GET /metrics` over an HTTP/1.1 connection (`Connection: close`): status line and body.
fn get(mut stream: impl Read + Write) -> (String, String) {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: fiona\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn scrape_control(d: &Daemon) -> String {
    let s = std::os::unix::net::UnixStream::connect(d.data_dir.join("run/control.sock")).unwrap();
    let (status, body) = get(s);
    assert!(status.contains(" 200 "), "{status}");
    body
}

fn scrape_tcp(d: &Daemon) -> String {
    let addr = std::fs::read_to_string(d.data_dir.join("run/metrics.addr")).unwrap();
    let s = std::net::TcpStream::connect(addr.trim()).unwrap();
    let (status, body) = get(s);
    assert!(status.contains(" 200 "), "{status}");
    body
}

/// The value of the sample line `name` (with its labels, as written), if present.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn promtool_check(text: &str, dir: &Path) {
    let file = dir.join("scrape.txt");
    std::fs::write(&file, text).unwrap();
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_count_a_sent_study_and_carry_no_patient_data() {
    require_tool("storescp");
    require_tool("promtool");
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let received = tmp.path().join("pacs");
    std::fs::create_dir_all(&received).unwrap();
    let _scp = KillOnDrop(
        Command::new("storescp")
            .args(["-aet", "RESEARCH", "+xa", "+uf", "-od"])
            .arg(&received)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    fiona_tests::harness::wait_until_listening(port, "storescp");
    // No self-echo (it would count among the associations), a metrics port.
    let (d, spec) = forwarding(
        tmp.path(),
        port,
        "verify = false\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n\
         [watchdog]\necho_interval_secs = 0\n\n[eviction]\ninterval_secs = 0.3\n",
        (731, Modality::Ct, 2, 3),
        "PROJ1-0031",
    );
    let t = d.transfer_when("the transfer to be sent", |t| t["state"] == "sent");
    assert_eq!(t["sent"], 6, "{t}");

    // A housekeeping survey after the study arrived: its bytes are held by an unsent transfer.
    d.wait_for(
        "a survey that holds the study",
        Duration::from_secs(120),
        || value(&scrape_control(&d), "fiona_disk_unsent_bytes").unwrap_or(0.0) > 6.0 * 32.0 * 32.0,
    );
    // The pipeline's last steps (the send's histogram) are recorded before the state is.
    let text = scrape_control(&d);
    let tcp = scrape_tcp(&d);
    for (what, text) in [("control socket", &text), ("TCP", &tcp)] {
        let expect = [
            ("fiona_instances_received_total", 6.0),
            ("fiona_instances_rejected_total", 0.0),
            ("fiona_instances_refused_for_space_total", 0.0),
            ("fiona_associations_total", 1.0),
            ("fiona_associations_active", 0.0),
            ("fiona_transfers{project=\"PROJ1\",state=\"sent\"}", 1.0),
            (
                "fiona_destination_queue_transfers{destination=\"research\"}",
                0.0,
            ),
            (
                "fiona_destination_send_attempts_total{destination=\"research\"}",
                1.0,
            ),
            (
                "fiona_destination_send_failures_total{destination=\"research\"}",
                0.0,
            ),
            (
                "fiona_destination_send_seconds_count{destination=\"research\"}",
                1.0,
            ),
            ("fiona_deidentify_seconds_count", 6.0),
            ("fiona_instances_parked", 0.0),
            ("fiona_health_check{check=\"pipeline\"}", 1.0),
            ("fiona_disk_evictable_bytes", 0.0),
            ("fiona_studies_evicted", 0.0),
            ("fiona_evicted_studies_total", 0.0),
            ("fiona_notifications_pending", 0.0),
        ];
        for (name, want) in expect {
            assert_eq!(value(text, name), Some(want), "{what}: {name}\n{text}");
        }
        let bytes = value(text, "fiona_received_bytes_total").unwrap_or(0.0);
        assert!(bytes > 6.0 * 32.0 * 32.0, "{what}: received bytes {bytes}");
        // Pressure depends on the machine's disk: the same survey as `fiona status` shows.
        let pressure = d.json(&["status"])["disk"]["pressure"].is_string();
        assert_eq!(
            value(text, "fiona_disk_pressure"),
            Some(if pressure { 1.0 } else { 0.0 }),
            "{what}"
        );
        for name in [
            "fiona_disk_free_bytes",
            "fiona_disk_held_bytes",
            "fiona_disk_unsent_bytes",
        ] {
            assert!(
                value(text, name).unwrap_or(0.0) > 0.0,
                "{what}: {name}\n{text}"
            );
        }
        assert!(
            text.contains("# TYPE fiona_ocr_seconds histogram"),
            "{text}"
        );
        promtool_check(text, tmp.path());
        // Nothing of the patient: names, IDs, the accession number, the study UID (the
        // series and instance UIDs begin with it), nor the research study UID.
        let family = spec.patient_name.split('^').next().unwrap_or_default();
        for secret in [
            spec.patient_name.as_str(),
            family,
            spec.patient_id.as_str(),
            spec.accession.as_str(),
            spec.study_uid.as_str(),
            t["research_study_uid"].as_str().unwrap(),
        ] {
            assert!(!secret.is_empty());
            assert!(!text.contains(secret), "{what}: `{secret}` in\n{text}");
        }
    }
}
