//! Arrival notifications (issue 16): a project with a webhook and two e-mail addresses; an
//! SMTP sink that requires STARTTLS (aiosmtpd, certificate from a CA the test makes) and an
//! HTTP receiver (both Python, `tests/real/`) get exactly one message per verified transfer,
//! also when fiona is killed after verification and before the message could be sent (the
//! receivers are down until then); the webhook's signature verifies with `openssl`, and no
//! message carries a patient value.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::fiona_bin;
use fiona_tests::harness::{
    dcmqrscp, free_port, require_tool, venv_python, wait_until_listening, Daemon, KillOnDrop,
    Options,
};
use fiona_tests::pki::Ca;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);
const SECRET: &str = "a-webhook-secret-of-some-length";

fn sink(script: &str, args: &[&str], ready: &Path) -> KillOnDrop {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/real")
        .join(script);
    let child = Command::new(venv_python())
        .arg(path)
        .args(args)
        .arg(ready)
        .spawn()
        .expect("start a sink");
    let guard = KillOnDrop(child);
    let start = std::time::Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < WAIT, "{script} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    guard
}

fn messages(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn study(dir: &Path, n: u32) -> (StudySpec, Vec<PathBuf>) {
    let mut spec = StudySpec::new(n, Modality::Mr);
    spec.series = 1;
    spec.instances_per_series = 3;
    spec.rows = 32;
    spec.cols = 32;
    let d = dir.join(n.to_string());
    std::fs::create_dir_all(&d).unwrap();
    let files = corpus::write_study(&spec, &d).unwrap();
    (spec, files)
}

fn transfer_for(d: &Daemon, participant: &str) -> Value {
    d.json(&["transfers"])
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["participant"] == participant)
        .cloned()
        .unwrap_or(Value::Null)
}

/// `sha256=HEX` of `body` under the secret, by `openssl` (not fiona's code).
fn openssl_hmac(body: &str, dir: &Path) -> String {
    let f = dir.join("body.json");
    std::fs::write(&f, body).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", SECRET, "-r"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256={}", text.split_whitespace().next().unwrap())
}

/// No clinical value of the study in a message.
fn no_patient_values(text: &str, spec: &StudySpec) {
    for v in [
        &spec.patient_id,
        &spec.accession,
        &spec.study_uid,
        &spec.patient_name,
    ] {
        assert!(
            !text.contains(v.as_str()),
            "a message carries `{v}`: {text}"
        );
    }
}

#[test]
fn one_message_per_verified_transfer_also_across_a_crash() {
    require_tool("openssl");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ca = Ca::new(&t.join("pki"), "mail-ca");
    let smtp_id = ca.leaf("smtp");
    let (pacs_port, smtp_port, hook_port) = (free_port(), free_port(), free_port());
    let _pacs = dcmqrscp(&t.join("pacs"), pacs_port);
    let mut d = Daemon::start(
        &fiona_bin!(),
        &t.join("data"),
        &Options {
            extra_toml: format!(
                "[smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nfrom = \"fiona@example.org\"\n\
                 ca = \"{}\"\ntimeout_secs = 10\n\n\
                 [projects.PROJ1]\nparticipant_pattern = \"PROJ1-[0-9]{{4}}\"\nevents = [\"baseline\"]\n\
                 approval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\ndestinations = [\"research\"]\n\n\
                 [projects.PROJ1.notify]\nwebhook = \"http://127.0.0.1:{hook_port}/fiona\"\n\
                 webhook_secret = \"{SECRET}\"\nemail = [\"study-nurse@example.org\", \"pi@example.org\"]\n\n\
                 [destinations.research]\nhost = \"127.0.0.1\"\nport = {pacs_port}\nae_title = \"RESEARCH\"\n\
                 retry_base_secs = 1\nverify_after_secs = 0\n",
                ca.id.cert.display()
            ),
            quiet_period_secs: 1,
            ..Options::default()
        },
    );

    // A study verified while both receivers are down: the notifications wait.
    let (s1, f1) = study(&t.join("in"), 1701);
    d.store_ok(&f1);
    d.assign(&s1.accession, "PROJ1", "PROJ1-0001", "baseline");
    d.wait_for("verified, and both deliveries failed once", WAIT, || {
        let st = d.json(&["status"]);
        transfer_for(&d, "PROJ1-0001")["state"] == "verified"
            && st["notifications_pending"] == 2
            && st["notifications_last_error"].is_string()
    });
    let research_uid = transfer_for(&d, "PROJ1-0001")["research_study_uid"]
        .as_str()
        .unwrap()
        .to_string();
    // Killed before anything could be sent; the receivers come up; fiona starts again.
    d.kill9();
    let (mail, hooks) = (t.join("mail"), t.join("hooks"));
    let _smtp = sink(
        "smtp_sink.py",
        &[
            &smtp_port.to_string(),
            &mail.to_string_lossy(),
            &smtp_id.cert.to_string_lossy(),
            &smtp_id.key.to_string_lossy(),
        ],
        &t.join("smtp.ready"),
    );
    let _hook = sink(
        "webhook_sink.py",
        &[&hook_port.to_string(), &hooks.to_string_lossy()],
        &t.join("hook.ready"),
    );
    wait_until_listening(smtp_port, "smtp_sink.py");
    wait_until_listening(hook_port, "webhook_sink.py");
    d.restart();
    d.wait_for("both notifications delivered", WAIT, || {
        d.json(&["status"])["notifications_pending"] == 0
    });
    assert_eq!(messages(&hooks, "json").len(), 1);
    assert_eq!(messages(&mail, "eml").len(), 1);

    // The webhook: the notice, nothing else, signed.
    let hook: Value =
        serde_json::from_str(&std::fs::read_to_string(&messages(&hooks, "json")[0]).unwrap())
            .unwrap();
    let body = hook["body"].as_str().unwrap();
    assert_eq!(hook["path"], "/fiona");
    assert_eq!(hook["content_type"], "application/json");
    assert_eq!(hook["signature"], openssl_hmac(body, t).as_str(), "{hook}");
    assert!(hook["delivery"].as_str().is_some_and(|s| s.len() == 26));
    let notice: Value = serde_json::from_str(body).unwrap();
    let mut keys: Vec<&str> = notice
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "event",
            "instances",
            "participant",
            "project",
            "research_study_uid",
            "verified_at"
        ]
    );
    assert_eq!(notice["project"], "PROJ1");
    assert_eq!(notice["participant"], "PROJ1-0001");
    assert_eq!(notice["event"], "baseline");
    assert_eq!(notice["instances"], 3);
    assert_eq!(notice["research_study_uid"], research_uid.as_str());
    no_patient_values(body, &s1);

    // The e-mail: to both addresses, over STARTTLS (the sink refuses mail without it).
    let eml = std::fs::read_to_string(&messages(&mail, "eml")[0]).unwrap();
    assert!(
        eml.contains("X-Sink-Rcpt: study-nurse@example.org,pi@example.org"),
        "{eml}"
    );
    assert!(eml.contains("participant: PROJ1-0001"), "{eml}");
    assert!(eml.contains(&research_uid), "{eml}");
    no_patient_values(&eml, &s1);
    assert_eq!(
        d.json(&["audit"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == "notified")
            .count(),
        2
    );

    // Killed and started again: the first transfer's messages are not sent again; a second
    // verified transfer gets its own, once each.
    d.kill9();
    d.restart();
    let (s2, f2) = study(&t.join("in"), 1702);
    d.store_ok(&f2);
    d.assign(&s2.accession, "PROJ1", "PROJ1-0002", "baseline");
    d.wait_for("the second transfer's notifications", WAIT, || {
        transfer_for(&d, "PROJ1-0002")["state"] == "verified"
            && messages(&hooks, "json").len() >= 2
            && messages(&mail, "eml").len() >= 2
            && d.json(&["status"])["notifications_pending"] == 0
    });
    assert_eq!(messages(&hooks, "json").len(), 2);
    assert_eq!(messages(&mail, "eml").len(), 2);
    let second = std::fs::read_to_string(&messages(&hooks, "json")[1]).unwrap();
    assert!(second.contains("PROJ1-0002"), "{second}");
    no_patient_values(&second, &s2);
}
