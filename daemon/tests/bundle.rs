//! Provisioning by signed bundles (issue 18), on the real binary with keys made by `minisign
//! -G`, secrets encrypted by `age -r` to the box's key and bundles made by `fiona bundle
//! manifest|pack`: a good bundle applies and the daemon serves its configuration (a secret
//! TLS key that is not in the bundle file in clear serves the TLS listener); every bad bundle
//! is refused with its reason and the old configuration is still served; a second trusted
//! key works (rotation), also through the inbox; a bundle whose selftest fails, or that the
//! daemon cannot start on, is rolled back; kill -9 during an apply leaves the old or the new
//! configuration, never a mix.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use fiona_tests::bundle::{box_key, pack, Signer, Spec};
use fiona_tests::fiona_bin;
use fiona_tests::harness::{free_port, Daemon, Options};
use fiona_tests::pki::{Ca, Identity};

/// A box with two trusted keys (`a`, the one in use, and `b`, the next) and a key it does
/// not trust.
struct Rig {
    tmp: tempfile::TempDir,
    d: Daemon,
    a: Signer,
    b: Signer,
    outsider: Signer,
    recipient: String,
    made: u32,
}

impl Rig {
    fn new() -> Rig {
        Self::with_env(Vec::new())
    }

    fn with_env(env: Vec<(String, String)>) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let keys = tmp.path().join("trusted");
        let a = Signer::new(&keys, "a");
        let b = Signer::new(&keys, "b");
        let outsider = Signer::new(&tmp.path().join("other"), "outsider");
        let mut env = env;
        env.push(("FIONA_BUNDLE_KEYS".into(), keys.display().to_string()));
        let d = Daemon::start(
            &fiona_bin!(),
            &tmp.path().join("data"),
            &Options {
                env,
                ..Options::default()
            },
        );
        let recipient = box_key(&fiona_bin!(), &d.data_dir);
        assert!(recipient.starts_with("age1"), "{recipient}");
        Rig {
            tmp,
            d,
            a,
            b,
            outsider,
            recipient,
            made: 0,
        }
    }

    /// A fresh directory and output path for the next bundle.
    fn paths(&mut self) -> (PathBuf, PathBuf) {
        self.made += 1;
        let dir = self.tmp.path().join(format!("bundle-{}", self.made));
        let out = self.tmp.path().join(format!("bundle-{}.tar", self.made));
        (dir, out)
    }

    fn make(&mut self, spec: &Spec, signer: &Signer) -> PathBuf {
        let (dir, out) = self.paths();
        spec.make(&fiona_bin!(), &dir, &self.recipient, signer, &out);
        out
    }

    fn apply(&self, file: &Path) -> Output {
        self.d.cli(&["bundle", "apply", file.to_str().unwrap()])
    }

    /// Apply a bundle that must be applied; the daemon restarted on it.
    fn apply_ok(&mut self, file: &Path) {
        let out = self.apply(file);
        assert!(
            out.status.success(),
            "{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.d.log()
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("applied"));
        self.d.reread_addr();
    }

    /// Apply a bundle that must be refused for `code`; the configuration did not change.
    fn refused(&self, file: &Path, code: &str, serial_before: u64, projects_before: &[String]) {
        let out = self.apply(file);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{code}: accepted?\n{err}");
        assert!(
            err.contains(&format!("refused ({code})")),
            "{code}: the reason given was {err}"
        );
        assert_eq!(
            self.current_serial(),
            serial_before,
            "{code}: serial changed"
        );
        assert_eq!(self.projects(), projects_before, "{code}: projects changed");
        let s = self.d.json(&["bundle", "status"]);
        assert_eq!(s["last_attempt"]["result"], "refused", "{s}");
        assert_eq!(s["last_attempt"]["code"], code, "{s}");
        assert!(
            self.d.audit_has(|a| a["action"] == "bundle_refused"
                && a["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("code {code}"))),
            "{code}: not audited"
        );
    }

    fn current_serial(&self) -> u64 {
        let s = self.d.json(&["bundle", "status"]);
        s["current"]["serial"].as_u64().unwrap_or(0)
    }

    fn projects(&self) -> Vec<String> {
        let v = self.d.json(&["projects"]);
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    }
}

/// A bundle's `fiona.toml`: listeners on free ports (as the harness's), project `project`.
fn config(project: &str, extra: &str) -> String {
    format!(
        "ae_title = \"FIONA\"\nlisten = \"127.0.0.1:0\"\nquiet_period_secs = 2\nmin_free_bytes = 0\n\
         {extra}\n[web]\nlisten = \"127.0.0.1:0\"\n\n[projects.{project}]\n\
         participant_pattern = \"{project}-[0-9]{{4}}\"\nevents = [\"baseline\"]\n\
         approval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n"
    )
}

/// `[tls]` with certificate, key and CA files in the bundle under `tls/`.
const TLS: &str = "[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = \"tls/fiona.pem\"\n\
                   private_key = \"tls/fiona.key\"\nclient_ca = \"tls/ca.pem\"\n";

/// A spec whose TLS key travels encrypted; `leaf` is fiona's certificate.
fn tls_spec(serial: u64, project: &str, ca: &Ca, leaf: &Identity) -> Spec {
    Spec::new(serial, &config(project, TLS)).with_tls(ca, leaf)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn tar_of(dir: &Path, out: &Path, names: &[&str]) {
    let st = Command::new("tar")
        .arg("-cf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .args(names)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn a_signed_bundle_applies_and_every_bad_one_is_refused_with_the_old_configuration_served() {
    let mut r = Rig::new();
    let s = r.d.json(&["bundle", "status"]);
    assert_eq!(s["source"]["kind"], "file", "{s}");
    assert!(s["current"].is_null(), "{s}");
    assert_eq!(
        s["trusted_keys"]["Ok"],
        serde_json::json!([r.a.key_id, r.b.key_id]),
        "{s}"
    );

    // Serial 1: project PROJ1, the DICOM TLS listener with its key encrypted to the box, and
    // an SMTP password in the encrypted settings.
    let pki = r.tmp.path().join("pki");
    let ca = Ca::new(&pki, "bundle-ca");
    let fiona = ca.leaf_for_days("fiona", 365);
    let modality = ca.leaf_for_days("modality", 365);
    let mut spec = tls_spec(1, "PROJ1", &ca, &fiona);
    spec.clear[0].1.extend_from_slice(
        b"\n[smtp]\nhost = \"127.0.0.1\"\nport = 2525\nfrom = \"fiona@example.org\"\nusername = \"fiona\"\n",
    );
    const SMTP_PASSWORD: &str = "SMTP-PASSWORD-NOT-IN-CLEAR-4711";
    spec.secret.push((
        "secrets.toml".into(),
        format!("[smtp]\npassword = \"{SMTP_PASSWORD}\"\n").into_bytes(),
    ));
    let a = r.a.clone();
    let first = r.make(&spec, &a);
    // The secrets are not readable in the bundle file.
    let bytes = std::fs::read(&first).unwrap();
    let key_pem = std::fs::read_to_string(&fiona.key).unwrap();
    let key_line = key_pem.lines().nth(1).unwrap();
    assert!(!contains(&bytes, SMTP_PASSWORD.as_bytes()));
    assert!(!contains(&bytes, b"PRIVATE KEY"));
    assert!(!contains(&bytes, key_line.as_bytes()));
    r.apply_ok(&first);
    assert_eq!(r.projects(), ["PROJ1"]);
    let st = r.d.json(&["status"]);
    assert_eq!(st["config_source"]["kind"], "bundle", "{st}");
    assert_eq!(st["config_source"]["serial"], 1, "{st}");
    assert!(st["selftest"]["verdict"].is_string(), "{st}");
    let s = r.d.json(&["bundle", "status"]);
    assert_eq!(s["current"]["signer"], r.a.key_id.as_str(), "{s}");
    assert_eq!(s["last_attempt"]["result"], "applied", "{s}");
    assert!(r.d.audit_has(|a| a["action"] == "bundle_applied"
        && a["actor"] == "provisioning"
        && a["detail"].as_str().unwrap_or("").contains("serial 1")
        && a["detail"].as_str().unwrap_or("").contains(&r.a.key_id)));
    // Accepted by whoever ran `fiona bundle apply`, and nothing says it was refused.
    assert!(r.d.audit_has(|a| a["action"] == "bundle_accepted"
        && a["actor"].as_str().unwrap_or("").starts_with("user:")
        && a["detail"].as_str().unwrap_or("").contains("serial 1")));
    assert!(!r.d.audit_has(|a| a["action"] == "bundle_refused"));
    // The decrypted key serves the TLS listener: a modality with a certificate from the CA
    // echoes over TLS.
    let tls_addr = std::fs::read_to_string(r.d.data_dir.join("run/dicom-tls.addr")).unwrap();
    let tls_addr: std::net::SocketAddr = tls_addr.trim().parse().unwrap();
    let echo = fiona_tests::harness::echoscu_with(
        tls_addr,
        "TESTSCU",
        "FIONA",
        &[
            "+tls".into(),
            modality.key.display().to_string(),
            modality.cert.display().to_string(),
            "+cf".into(),
            ca.id.cert.display().to_string(),
        ],
    );
    assert!(
        echo.status.success(),
        "{}",
        String::from_utf8_lossy(&echo.stderr)
    );
    // The password was merged into the running configuration (the box holds it decrypted,
    // owner-only, in the applied bundle's directory).
    let applied = r.d.data_dir.join("config/b-1/secrets.toml");
    assert!(std::fs::read_to_string(&applied)
        .unwrap()
        .contains(SMTP_PASSWORD));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&applied).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");

    let before = ["PROJ1".to_string()];
    let next = |serial: u64| Spec::new(serial, &config("PROJ9", ""));

    // Unsigned: the same files without manifest.json.minisig.
    let (dir, out) = r.paths();
    next(2).prepare(&fiona_bin!(), &dir, &r.recipient);
    tar_of(&dir, &out, &["manifest.json", "fiona.toml"]);
    r.refused(&out, "unsigned", 1, &before);

    // Signed by a key the box does not trust.
    let outsider = r.outsider.clone();
    let f = r.make(&next(2), &outsider);
    r.refused(&f, "unknown_key", 1, &before);

    // The manifest changed after it was signed.
    let (dir, out) = r.paths();
    next(2).prepare(&fiona_bin!(), &dir, &r.recipient);
    a.sign(&dir.join("manifest.json"));
    let m = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    std::fs::write(dir.join("manifest.json"), m.replace("test-2", "test-X")).unwrap();
    pack(&fiona_bin!(), &dir, &out);
    r.refused(&out, "bad_signature", 1, &before);

    // A file changed after the manifest was signed.
    let (dir, out) = r.paths();
    next(2).prepare(&fiona_bin!(), &dir, &r.recipient);
    a.sign(&dir.join("manifest.json"));
    let c = std::fs::read_to_string(dir.join("fiona.toml")).unwrap();
    std::fs::write(dir.join("fiona.toml"), c.replace("PROJ9", "PROJ8")).unwrap();
    pack(&fiona_bin!(), &dir, &out);
    r.refused(&out, "file_tampered", 1, &before);

    // A file the manifest does not list, and one it lists that is not there.
    let (dir, out) = r.paths();
    next(2).prepare(&fiona_bin!(), &dir, &r.recipient);
    a.sign(&dir.join("manifest.json"));
    std::fs::write(dir.join("extra.toml"), "x = 1\n").unwrap();
    tar_of(
        &dir,
        &out,
        &[
            "manifest.json",
            "manifest.json.minisig",
            "fiona.toml",
            "extra.toml",
        ],
    );
    r.refused(&out, "unknown_file", 1, &before);
    tar_of(&dir, &out, &["manifest.json", "manifest.json.minisig"]);
    r.refused(&out, "missing_file", 1, &before);

    // The serial of the bundle applied again (a replay).
    let f = r.make(&next(1), &a);
    r.refused(&f, "serial_not_newer", 1, &before);

    // Expired. Its signature holds, so the refusal's record names the bundle and signer.
    let mut s = next(2);
    s.valid_days = -1.0;
    let f = r.make(&s, &a);
    r.refused(&f, "expired", 1, &before);
    assert!(r.d.audit_has(|x| x["action"] == "bundle_refused"
        && x["detail"]
            .as_str()
            .unwrap_or("")
            .contains("bundle test-2, serial 2")
        && x["detail"].as_str().unwrap_or("").contains(&r.a.key_id)));

    // For another box.
    let mut s = next(2);
    s.target = "fiona-000000000000".into();
    let f = r.make(&s, &a);
    r.refused(&f, "wrong_target", 1, &before);

    // For another fiona version.
    let mut s = next(2);
    s.versions = ">=99".into();
    let f = r.make(&s, &a);
    r.refused(&f, "wrong_version", 1, &before);

    // A path that escapes the bundle (a tar made by hand; the manifest is signed).
    let (dir, out) = r.paths();
    next(2).prepare(&fiona_bin!(), &dir, &r.recipient);
    a.sign(&dir.join("manifest.json"));
    let py = format!(
        "import tarfile\nt = tarfile.open({out:?}, 'w')\n\
         for n in ['manifest.json', 'manifest.json.minisig', 'fiona.toml']:\n    t.add({dir:?} + '/' + n, arcname=n)\n\
         t.add({dir:?} + '/fiona.toml', arcname='../escape.toml')\nt.close()\n",
        out = out.display().to_string(),
        dir = dir.display().to_string()
    );
    let st = Command::new("python3").args(["-c", &py]).status().unwrap();
    assert!(st.success());
    r.refused(&out, "path_escapes", 1, &before);

    // A private key in clear, and a password in the clear configuration.
    let mut s = next(2);
    s.clear
        .push(("tls/fiona.key".into(), std::fs::read(&fiona.key).unwrap()));
    let f = r.make(&s, &a);
    r.refused(&f, "clear_secret", 1, &before);
    let s = Spec::new(
        2,
        &config(
            "PROJ9",
            "[smtp]\nhost = \"h\"\nfrom = \"f@example.org\"\npassword = \"in clear\"\n",
        ),
    );
    let f = r.make(&s, &a);
    r.refused(&f, "clear_secret", 1, &before);

    // A configuration that does not validate.
    let f = r.make(
        &Spec::new(2, "ae_title = \"BAD TITLE WITH SPACES AND TOO LONG\"\n"),
        &a,
    );
    r.refused(&f, "config", 1, &before);

    // Oversized: the command refuses to send it; dropped in the inbox, the daemon refuses it
    // without reading it whole.
    let big = r.tmp.path().join("big.tar");
    let fh = std::fs::File::create(&big).unwrap();
    fh.set_len(17 << 20).unwrap();
    let out = r.apply(&big);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than the limit"));
    let inbox = r.d.data_dir.join("inbox");
    std::fs::copy(&big, inbox.join("big.tar")).unwrap();
    let result = inbox.join("big.tar.result");
    r.d.wait_for("the inbox's verdict", Duration::from_secs(60), || {
        result.exists()
    });
    let verdict = std::fs::read_to_string(&result).unwrap();
    assert!(verdict.starts_with("refused: bundle is"), "{verdict}");
    assert!(!inbox.join("big.tar").exists());
    assert_eq!(r.current_serial(), 1);

    // Rotation: the second trusted key signs serial 2, dropped in the inbox.
    let b = r.b.clone();
    let f = r.make(&Spec::new(2, &config("PROJ2", "")), &b);
    std::fs::copy(&f, inbox.join("serial-2.tar")).unwrap();
    r.d.wait_for(
        "serial 2 applied from the inbox",
        Duration::from_secs(120),
        || {
            let s = r.d.cli(&["bundle", "status", "--json"]);
            s.status.success()
                && serde_json::from_slice::<serde_json::Value>(&s.stdout)
                    .map(|v| {
                        v["current"]["serial"] == 2 && v["last_attempt"]["result"] == "applied"
                    })
                    .unwrap_or(false)
        },
    );
    r.d.reread_addr();
    assert_eq!(r.projects(), ["PROJ2"]);
    let verdict = std::fs::read_to_string(inbox.join("serial-2.tar.result")).unwrap();
    assert!(verdict.starts_with("accepted"), "{verdict}");
    assert!(r.d.audit_has(|a| a["action"] == "bundle_applied"
        && a["actor"] == "provisioning"
        && a["detail"].as_str().unwrap_or("").contains(&r.b.key_id)));
    // Equal and lower serials now.
    let f = r.make(&Spec::new(2, &config("PROJ9", "")), &a);
    r.refused(&f, "serial_not_newer", 2, &["PROJ2".to_string()]);
    let f = r.make(&Spec::new(1, &config("PROJ9", "")), &a);
    r.refused(&f, "serial_not_newer", 2, &["PROJ2".to_string()]);
    // The running daemon serves DICOM on the bundle's configuration.
    let echo = fiona_tests::harness::echoscu_with(r.d.addr, "TESTSCU", "FIONA", &[]);
    assert!(echo.status.success());
    // No trace of a secret in the log.
    assert!(!r.d.log().contains(SMTP_PASSWORD));
}

#[test]
fn a_bundle_whose_selftest_fails_or_that_cannot_start_is_rolled_back() {
    let mut r = Rig::new();
    let a = r.a.clone();
    let f = r.make(&Spec::new(1, &config("PROJ1", "")), &a);
    r.apply_ok(&f);
    assert_eq!(r.projects(), ["PROJ1"]);

    // Serial 2: the TLS listener's certificate expired yesterday. The configuration is valid
    // and the daemon starts, but the selftest fails: rolled back.
    let ca = Ca::new(&r.tmp.path().join("pki"), "bundle-ca");
    let expired = ca.leaf_for_days("expired", -1);
    let f = r.make(&tls_spec(2, "PROJ2", &ca, &expired), &a);
    let out = r.apply(&f);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}\n{}", r.d.log());
    assert!(err.contains("rolled back"), "{err}");
    assert!(err.contains("tls_certificates"), "{err}");
    assert!(err.contains("expired on"), "{err}");
    r.d.reread_addr();
    assert_eq!(r.projects(), ["PROJ1"]);
    assert_eq!(r.current_serial(), 1);
    assert!(
        !r.d.data_dir.join("config/b-2").exists(),
        "the failed bundle's files stay"
    );
    assert!(r.d.audit_has(|a| a["action"] == "bundle_rolled_back"
        && a["detail"].as_str().unwrap_or("").contains("serial 2")));

    // Serial 3: a DICOM port that is taken; the daemon cannot start on it: rolled back at
    // start, and the daemon runs on serial 1 again.
    let taken = std::net::TcpListener::bind(("127.0.0.1", free_port())).unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = config("PROJ3", "").replace(
        "listen = \"127.0.0.1:0\"\nquiet",
        &format!("listen = \"127.0.0.1:{port}\"\nquiet"),
    );
    let f = r.make(&Spec::new(3, &cfg), &a);
    let out = r.apply(&f);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}\n{}", r.d.log());
    assert!(err.contains("rolled back"), "{err}");
    assert!(err.contains("could not start"), "{err}");
    r.d.reread_addr();
    assert_eq!(r.projects(), ["PROJ1"]);
    assert_eq!(r.current_serial(), 1);
    r.d.wait_for("the rollback audited", Duration::from_secs(30), || {
        r.d.audit_has(|a| {
            a["action"] == "bundle_rolled_back"
                && a["detail"].as_str().unwrap_or("").contains("serial 3")
        })
    });
    // A serial that was rolled back is burnt: the fixed bundle needs a new one.
    let f = r.make(&Spec::new(3, &config("PROJ3", "")), &a);
    r.refused(&f, "serial_not_newer", 1, &["PROJ1".to_string()]);
    let f = r.make(&Spec::new(4, &config("PROJ4", "")), &a);
    r.apply_ok(&f);
    assert_eq!(r.projects(), ["PROJ4"]);
    drop(taken);
}

/// Each file of the current bundle directory as its manifest lists it (the clear ones).
fn current_is_whole(data_dir: &Path) -> Result<u64, String> {
    let cur = std::fs::read_link(data_dir.join("config/current"))
        .map_err(|e| format!("no current: {e}"))?;
    let dir = data_dir.join("config").join(cur);
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(".bundle/manifest.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    for f in m["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        if path.ends_with(".age") {
            continue;
        }
        let data = std::fs::read(dir.join(path)).map_err(|e| format!("{path}: {e}"))?;
        use sha2::Digest;
        let hex: String = sha2::Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if hex != f["sha256"].as_str().unwrap() {
            return Err(format!("{path} differs from the manifest"));
        }
    }
    Ok(m["serial"].as_u64().unwrap())
}

#[test]
fn kill_9_during_an_apply_leaves_the_old_or_the_new_configuration_never_a_mix() {
    let mut r = Rig::new();
    let a = r.a.clone();
    let f = r.make(&Spec::new(1, &config("PRJ01", "")), &a);
    r.apply_ok(&f);
    // Kill at delays spread over the apply: before it is received, while it is staged, around
    // the switch, during the restart and the selftest.
    let delays_ms = [0u64, 15, 40, 80, 130, 200, 300, 450, 700, 1000];
    let mut outcomes = Vec::new();
    for (i, delay) in delays_ms.iter().enumerate() {
        let serial = i as u64 + 2;
        let before = r.current_serial();
        let f = r.make(
            &Spec::new(serial, &config(&format!("PRJ{serial:02}"), "")),
            &a,
        );
        let mut child = Command::new(fiona_bin!())
            .args(["bundle", "apply", "--no-wait"])
            .arg(&f)
            .arg("--data-dir")
            .arg(&r.d.data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*delay));
        r.d.kill9();
        let _ = child.wait();
        r.d.restart();
        // Whatever was on trial is decided by its selftest after the restart.
        r.d.wait_for("no bundle on trial", Duration::from_secs(120), || {
            let s = r.d.cli(&["bundle", "status", "--json"]);
            s.status.success()
                && serde_json::from_slice::<serde_json::Value>(&s.stdout)
                    .map(|v| v["pending"].is_null())
                    .unwrap_or(false)
        });
        r.d.reread_addr();
        let on_disk = current_is_whole(&r.d.data_dir).unwrap();
        let now = r.current_serial();
        assert_eq!(now, on_disk);
        assert!(
            now == before || now == serial,
            "serial {now} after killing the apply of {serial} over {before}"
        );
        assert_eq!(
            r.projects(),
            [format!("PRJ{now:02}")],
            "a mix of configurations"
        );
        assert!(!std::fs::read_dir(r.d.data_dir.join("config"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("staging-")));
        outcomes.push((delay, now == serial));
    }
    eprintln!("kill -9 at (delay ms, new configuration): {outcomes:?}");
    // The spread of delays must have caught both sides at least once, else the test shows
    // nothing about the switch.
    assert!(outcomes.iter().any(|(_, new)| *new), "{outcomes:?}");
    assert!(outcomes.iter().any(|(_, new)| !*new), "{outcomes:?}");
}
