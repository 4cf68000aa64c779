//! Issue 15: configuration is plain data, and what only the stages can check (a project's
//! de-identification rules, its pixel stage's signature library) is checked when the stages
//! are built from it (`pipeline::build_stages`). `fiona check-config` and `fiona serve` both
//! still refuse such a file, naming the project and the field; nothing is served.

use std::process::{Command, Stdio};

use fiona_tests::fiona_bin;

const PROJECT: &str = "[projects.PROJ1]\nparticipant_pattern = \"PROJ1-[0-9]{4}\"\n\
    events = [\"baseline\"]\napproval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n";

#[test]
fn check_config_and_serve_refuse_what_only_the_stages_can_check() {
    let tmp = tempfile::tempdir().unwrap();
    for (extra, field) in [
        (
            "[[projects.PROJ1.deid.rules]]\ntag = \"PatientName\"\naction = \"keep\"\n",
            "deid.rules",
        ),
        (
            "[projects.PROJ1.pixel]\nlibrary = \"/nonexistent/signatures.toml\"\n",
            "pixel.library",
        ),
    ] {
        let cfg = tmp.path().join("stage.toml");
        std::fs::write(&cfg, format!("{PROJECT}{extra}")).unwrap();
        for sub in ["check-config", "serve"] {
            let data = tmp.path().join(format!("data-{sub}"));
            let mut cmd = Command::new(fiona_bin!());
            cmd.arg(sub);
            if sub == "serve" {
                cmd.args(["--listen", "127.0.0.1:0"]);
            }
            let child = cmd
                .arg("--config")
                .arg(&cfg)
                .arg("--data-dir")
                .arg(&data)
                .env("FIONA_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // A serve that wrongly starts would run forever: killed after a generous bound,
            // and the test fails on its exit status instead of hanging.
            let pid = child.id().to_string();
            let guard = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_secs(60));
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            });
            let out = child.wait_with_output().unwrap();
            drop(guard);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{sub} accepted {extra:?}: {err}");
            assert!(
                err.contains("project `PROJ1`") && err.contains(field),
                "{sub} {extra:?}: {err}"
            );
            assert!(
                !data.join("run/dicom.addr").exists(),
                "{sub} served with {extra:?}"
            );
        }
    }
    // The same project without the bad lines passes.
    let cfg = tmp.path().join("good.toml");
    std::fs::write(&cfg, PROJECT).unwrap();
    let out = Command::new(fiona_bin!())
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
