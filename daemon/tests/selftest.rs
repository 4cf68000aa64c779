//! `fiona selftest` (issue 18) on the real binary: green on a box provisioned by a bundle;
//! then each check turned red by a real fault, with its exit status (1 failure, 2 warnings
//! only) and message: a certificate that expires within 30 days (made by openssl), a
//! destination that does not answer, a missing OCR model, a read-only data directory (its
//! `run/` bind-mounted read-only; needs root, as CI runs), no daemon. The expired certificate
//! is in `bundle.rs` (the trial's selftest fails and the bundle is rolled back); the clock
//! before the build date is a unit test (`selftest::tests`).

use std::path::Path;
use std::process::Command;

use fiona_tests::bundle::{box_key, Signer, Spec};
use fiona_tests::fiona_bin;
use fiona_tests::harness::{free_port, is_root, Daemon, Options};
use fiona_tests::pki::{Ca, Identity};
use serde_json::Value;

fn config(extra: &str) -> String {
    format!(
        "ae_title = \"FIONA\"\nlisten = \"127.0.0.1:0\"\nquiet_period_secs = 2\nmin_free_bytes = 0\n\
         [web]\nlisten = \"127.0.0.1:0\"\n\n\
         [tls]\nlisten = \"127.0.0.1:0\"\ncertificate = \"tls/fiona.pem\"\n\
         private_key = \"tls/fiona.key\"\nclient_ca = \"tls/ca.pem\"\n\n\
         [projects.PROJ1]\nparticipant_pattern = \"PROJ1-[0-9]{{4}}\"\nevents = [\"baseline\"]\n\
         approval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n{extra}\n\
         [projects.PROJ1.pixel.ocr]\nall_images = true\n"
    )
}

fn spec(serial: u64, extra: &str, ca: &Ca, leaf: &Identity) -> Spec {
    Spec::new(serial, &config(extra)).with_tls(ca, leaf)
}

/// `fiona selftest --json`: exit status and report.
fn selftest(d: &Daemon) -> (Option<i32>, Value) {
    let out = d.cli(&["selftest", "--json"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), v)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report}"))
}

fn apply(d: &mut Daemon, file: &Path) {
    let out = d.cli(&["bundle", "apply", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    d.reread_addr();
}

#[test]
fn the_selftest_is_green_on_a_provisioned_box_and_each_fault_turns_its_check_red() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The OCR models where the test can take one away.
    let tessdata = tmp.path().join("tessdata");
    std::fs::create_dir_all(&tessdata).unwrap();
    let eng = tessdata.join("eng.traineddata");
    std::fs::copy("/usr/share/tesseract-ocr/5/tessdata/eng.traineddata", &eng).unwrap();
    let keys = tmp.path().join("trusted");
    let signer = Signer::new(&keys, "admin");
    let mut d = Daemon::start(
        &fiona_bin!(),
        &data,
        &Options {
            env: vec![
                ("FIONA_BUNDLE_KEYS".into(), keys.display().to_string()),
                ("TESSDATA_PREFIX".into(), tessdata.display().to_string()),
            ],
            ..Options::default()
        },
    );
    // Not provisioned yet: said plainly, a warning.
    let (code, r) = selftest(&d);
    assert_eq!(code, Some(2), "{r}");
    assert_eq!(check(&r, "configuration")["verdict"], "warning", "{r}");
    assert!(check(&r, "configuration")["message"]
        .as_str()
        .unwrap()
        .contains("not a signed bundle"));

    let recipient = box_key(&fiona_bin!(), &data);
    let ca = Ca::new(&tmp.path().join("pki"), "selftest-ca");
    let year = ca.leaf_for_days("fiona", 365);
    let mut n = 0;
    let mut make = |s: &Spec| {
        n += 1;
        let dir = tmp.path().join(format!("b{n}"));
        let out = tmp.path().join(format!("b{n}.tar"));
        s.make(&fiona_bin!(), &dir, &recipient, &signer, &out);
        out
    };

    // Green: every check passes, and `fiona status` shows it.
    let f = make(&spec(1, "", &ca, &year));
    apply(&mut d, &f);
    let (code, r) = selftest(&d);
    assert_eq!(code, Some(0), "{r}");
    for name in [
        "data_dir",
        "index",
        "configuration",
        "dicom_listener",
        "deidentification",
        "tls_certificates",
        "ocr_models",
        "clock",
    ] {
        assert_eq!(check(&r, name)["verdict"], "ok", "{name}: {r}");
    }
    assert!(check(&r, "deidentification")["message"]
        .as_str()
        .unwrap()
        .contains("none left"));
    let human = d.cli(&["selftest"]);
    assert_eq!(human.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&human.stdout).contains("selftest: passed"));
    let status = String::from_utf8_lossy(&d.cli(&["status"]).stdout).into_owned();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("selftest ") && l.contains(" passed at ")),
        "{status}"
    );
    assert!(status.contains("bundle test-1 serial 1"), "{status}");

    // A certificate that expires within 30 days: a warning, exit status 2.
    let soon = ca.leaf_for_days("soon", 10);
    let f = make(&spec(2, "", &ca, &soon));
    apply(&mut d, &f);
    let (code, r) = selftest(&d);
    assert_eq!(code, Some(2), "{r}");
    let c = check(&r, "tls_certificates");
    assert_eq!(c["verdict"], "warning", "{r}");
    assert!(c["message"].as_str().unwrap().contains("expires on"), "{c}");

    // A destination that does not answer: a warning (the data waits), exit status 2.
    let port = free_port();
    let f = make(&spec(
        3,
        &format!(
            "destinations = [\"research\"]\n\n[destinations.research]\nhost = \"127.0.0.1\"\n\
             port = {port}\nae_title = \"RESEARCH\"\n\n[projects.PROJ1.deid]\n"
        ),
        &ca,
        &year,
    ));
    apply(&mut d, &f);
    let (code, r) = selftest(&d);
    assert_eq!(code, Some(2), "{r}");
    let c = check(&r, "destination research");
    assert_eq!(c["verdict"], "warning", "{r}");
    assert!(c["message"].as_str().unwrap().contains("waits"), "{c}");
    assert_eq!(check(&r, "tls_certificates")["verdict"], "ok", "{r}");

    // The OCR model is gone: a failure, exit status 1.
    let kept = tmp.path().join("eng.kept");
    std::fs::rename(&eng, &kept).unwrap();
    let (code, r) = selftest(&d);
    assert_eq!(code, Some(1), "{r}");
    let c = check(&r, "ocr_models");
    assert_eq!(c["verdict"], "failure", "{r}");
    assert!(c["message"].as_str().unwrap().contains("eng"), "{c}");
    let human = d.cli(&["selftest"]);
    assert_eq!(human.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&human.stdout).contains("FAILED"));
    std::fs::rename(&kept, &eng).unwrap();
    let status = String::from_utf8_lossy(&d.cli(&["status"]).stdout).into_owned();
    assert!(
        status.contains("FAILED:") && status.contains("ocr_models: the OCR engine does not start"),
        "{status}"
    );

    // The data directory read-only: a failure, exit status 1.
    // (A read-only bind mount of its run/ directory: the whole file system cannot be
    // remounted read-only while the daemon holds files open for writing.)
    if is_root() {
        let run = data.join("run");
        let mount = |args: &[&str]| {
            let st = Command::new("mount")
                .args(args)
                .arg(&run)
                .arg(&run)
                .status()
                .unwrap();
            assert!(st.success(), "mount {args:?}");
        };
        mount(&["--bind"]);
        let st = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&run)
            .status()
            .unwrap();
        assert!(st.success(), "remount read-only");
        let (code, r) = selftest(&d);
        let st = Command::new("umount").arg(&run).status().unwrap();
        assert!(st.success(), "umount");
        assert_eq!(code, Some(1), "{r}");
        let c = check(&r, "data_dir");
        assert_eq!(c["verdict"], "failure", "{r}");
        assert!(c["message"].as_str().unwrap().contains("Read-only"), "{c}");
    } else {
        eprintln!("SKIPPED the read-only data directory: a read-only bind mount needs root");
    }

    // Green again once the faults are gone (the destination still warns).
    let (code, r) = selftest(&d);
    assert_eq!(code, Some(2), "{r}");
    assert_eq!(r["verdict"], "warning", "{r}");

    // No daemon: a failure, and it says why.
    d.stop();
    let out = d.cli(&["selftest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}
