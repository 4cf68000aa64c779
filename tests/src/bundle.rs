//! Provisioning bundles made the way an admin makes them (`provisioning/README.md`): signing
//! keys by `minisign -G -W` (no password), secrets encrypted by `age -r` to the box's key
//! (`fiona bundle box-key`), the manifest and the tar by `fiona bundle manifest|pack`, the
//! signature by `minisign -Sm`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::require_tool;
use crate::pki::{Ca, Identity};

/// A minisign key pair made for a test.
#[derive(Debug, Clone)]
pub struct Signer {
    /// The public key file (what a box trusts).
    pub public: PathBuf,
    secret: PathBuf,
    /// The key ID as fiona prints it (16 hex digits).
    pub key_id: String,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Signer {
    /// A new key pair `name.pub`/`name.key` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Signer {
        require_tool("minisign");
        std::fs::create_dir_all(dir).expect("key dir");
        let public = dir.join(format!("{name}.pub"));
        let secret = dir.join(format!("{name}.key"));
        run(Command::new("minisign")
            .args(["-G", "-W", "-f", "-p"])
            .arg(&public)
            .arg("-s")
            .arg(&secret));
        let text = std::fs::read_to_string(&public).expect("public key");
        let printed = text
            .lines()
            .next()
            .and_then(|l| l.rsplit(' ').next())
            .expect("key id in the comment");
        // The comment drops leading zeros (minisign 0.11 writes `%llX`); fiona prints all 16
        // hex digits, so one key in 16 would not match unpadded.
        let key_id = format!("{printed:0>16}");
        Signer {
            public,
            secret,
            key_id,
        }
    }

    /// `minisign -Sm file`: writes `file.minisig`.
    pub fn sign(&self, file: &Path) {
        run(Command::new("minisign")
            .arg("-S")
            .arg("-s")
            .arg(&self.secret)
            .arg("-m")
            .arg(file));
    }
}

/// A bundle to make: files in clear and files encrypted to a box.
#[derive(Debug, Clone)]
pub struct Spec {
    pub id: String,
    pub serial: u64,
    pub target: String,
    pub versions: String,
    pub valid_days: f64,
    /// Files in clear: path in the bundle, content.
    pub clear: Vec<(String, Vec<u8>)>,
    /// Files encrypted with `age -r` to `recipient`: path in the bundle without `.age`.
    pub secret: Vec<(String, Vec<u8>)>,
}

impl Spec {
    /// A bundle `test-SERIAL` for any box and version, valid 30 days, with `fiona.toml`.
    pub fn new(serial: u64, fiona_toml: &str) -> Spec {
        Spec {
            id: format!("test-{serial}"),
            serial,
            target: "any".into(),
            versions: "*".into(),
            valid_days: 30.0,
            clear: vec![("fiona.toml".into(), fiona_toml.as_bytes().to_vec())],
            secret: Vec::new(),
        }
    }

    /// Add the DICOM TLS listener's files under `tls/`: fiona's certificate `leaf` and the CA
    /// `ca` in clear, the private key encrypted (`fiona.toml`'s `[tls]` names them).
    pub fn with_tls(mut self, ca: &Ca, leaf: &Identity) -> Spec {
        let read = |p: &Path| std::fs::read(p).expect("read PEM");
        self.clear.push(("tls/fiona.pem".into(), read(&leaf.cert)));
        self.clear.push(("tls/ca.pem".into(), read(&ca.id.cert)));
        self.secret.push(("tls/fiona.key".into(), read(&leaf.key)));
        self
    }

    /// Write the files into `dir`, encrypt the secret ones to `recipient` and write the
    /// manifest (`fiona bundle manifest`); not signed yet.
    pub fn prepare(&self, bin: &Path, dir: &Path, recipient: &str) {
        require_tool("age");
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("bundle dir");
        for (path, data) in &self.clear {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, data).expect("write");
        }
        let plain_dir = dir.with_extension("plain");
        std::fs::create_dir_all(&plain_dir).expect("plain dir");
        for (path, data) in &self.secret {
            let clear = plain_dir.join(path.replace('/', "_"));
            std::fs::write(&clear, data).expect("write secret");
            let out = dir.join(format!("{path}.age"));
            std::fs::create_dir_all(out.parent().expect("parent")).expect("mkdir");
            run(Command::new("age")
                .args(["-r", recipient, "-o"])
                .arg(&out)
                .arg(&clear));
        }
        let _ = std::fs::remove_dir_all(&plain_dir);
        run(Command::new(bin)
            .args(["bundle", "manifest"])
            .arg(dir)
            .args(["--id", &self.id, "--serial", &self.serial.to_string()])
            .args(["--target", &self.target, "--versions", &self.versions])
            .arg(format!("--valid-days={}", self.valid_days)));
    }

    /// Prepare, sign with `signer` and pack into `out` (`fiona bundle pack`).
    pub fn make(&self, bin: &Path, dir: &Path, recipient: &str, signer: &Signer, out: &Path) {
        self.prepare(bin, dir, recipient);
        signer.sign(&dir.join("manifest.json"));
        pack(bin, dir, out);
    }
}

/// `fiona bundle pack DIR -o OUT`.
pub fn pack(bin: &Path, dir: &Path, out: &Path) {
    run(Command::new(bin)
        .args(["bundle", "pack"])
        .arg(dir)
        .arg("-o")
        .arg(out));
}

/// The box's recipient (`fiona bundle box-key`) for the data directory.
pub fn box_key(bin: &Path, data_dir: &Path) -> String {
    run(Command::new(bin)
        .args(["bundle", "box-key", "--data-dir"])
        .arg(data_dir))
    .trim()
    .to_string()
}
