//! Orthanc (Debian package) as a throw-away research PACS: its own storage in a temp
//! directory, no HTTP server, no plugins. Orthanc 1.10 cannot bind to one address; tests only
//! ever send it loopback traffic.
//!
//! Rejecting an instance: in Orthanc 1.10.1 a `ReceivedInstanceFilter` that returns false
//! answers *success* and drops the instance silently, and `ReceivedCStoreInstanceFilter`
//! ignores the status it returns. A filter that raises an error gets C-STORE status 0xA700
//! ("out of resources") for that instance only; [`Orthanc::start`] takes such a Lua script.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::{wait_until_listening, KillOnDrop};
use crate::pki::Identity;

/// Where the Debian package puts the server.
pub const ORTHANC: &str = "/usr/sbin/Orthanc";

/// A running Orthanc.
pub struct Orthanc {
    pub port: u16,
    pub storage: PathBuf,
    pub ae_title: String,
    pub log: PathBuf,
    _child: KillOnDrop,
}

/// Optional settings.
#[derive(Default)]
pub struct Settings<'a> {
    /// A Lua script (e.g. a `ReceivedInstanceFilter`).
    pub lua: Option<&'a str>,
    /// DICOM TLS: Orthanc's identity and the CA that client certificates must chain to
    /// (client certificates required).
    pub tls: Option<(&'a Identity, &'a Path)>,
}

impl Orthanc {
    /// Start Orthanc in `dir` with AE title `ae_title` on `port`; returns once it listens.
    pub fn start(dir: &Path, port: u16, ae_title: &str, s: Settings<'_>) -> Orthanc {
        assert!(
            Path::new(ORTHANC).is_file(),
            "Orthanc is not installed: run the README's test command (it installs orthanc)"
        );
        std::fs::create_dir_all(dir).expect("orthanc dir");
        let mut cfg = serde_json::json!({
            "Name": "fiona-test-pacs",
            "StorageDirectory": dir.join("storage"),
            "IndexDirectory": dir.join("index"),
            "Plugins": [],
            "HttpServerEnabled": false,
            "RemoteAccessAllowed": false,
            "DicomServerEnabled": true,
            "DicomAet": ae_title,
            "DicomPort": port,
            "DicomCheckCalledAet": true,
            "DicomAlwaysAllowEcho": true,
            "DicomAlwaysAllowStore": true,
            "DicomAlwaysAllowFind": true,
            "SaveJobs": false,
        });
        if let Some(lua) = s.lua {
            let script = dir.join("filter.lua");
            std::fs::write(&script, lua).expect("write lua");
            cfg["LuaScripts"] = serde_json::json!([script]);
        }
        if let Some((id, ca)) = s.tls {
            cfg["DicomTlsEnabled"] = true.into();
            cfg["DicomTlsCertificate"] = serde_json::json!(id.cert);
            cfg["DicomTlsPrivateKey"] = serde_json::json!(id.key);
            cfg["DicomTlsTrustedCertificates"] = serde_json::json!(ca);
            cfg["DicomTlsRemoteCertificateRequired"] = true.into();
        }
        let cfg_path = dir.join("orthanc.json");
        std::fs::write(&cfg_path, cfg.to_string()).expect("write orthanc.json");
        let log = dir.join("orthanc.log");
        let child = Command::new(ORTHANC)
            .arg("--no-jobs")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("orthanc log"))
            .spawn()
            .expect("spawn Orthanc");
        let guard = KillOnDrop(child);
        wait_until_listening(port, "Orthanc");
        Orthanc {
            port,
            storage: dir.join("storage"),
            ae_title: ae_title.to_string(),
            log,
            _child: guard,
        }
    }
}

impl Orthanc {
    /// How many instances of `study_uid` Orthanc lists (C-FIND at image level by `findscu`,
    /// calling as `calling_ae`, with DCMTK TLS options in `tls_args` when the port is TLS).
    /// The responses are written into `dir`.
    pub fn held(
        &self,
        study_uid: &str,
        calling_ae: &str,
        tls_args: &[String],
        dir: &Path,
    ) -> usize {
        crate::harness::require_tool("findscu");
        std::fs::create_dir_all(dir).expect("query dir");
        let out = Command::new("findscu")
            .current_dir(dir)
            .args(["-S", "-X", "-aet", calling_ae, "-aec", &self.ae_title])
            .args(tls_args)
            .args(["-k", "QueryRetrieveLevel=IMAGE"])
            .args(["-k", &format!("StudyInstanceUID={study_uid}")])
            .args(["-k", "SOPInstanceUID"])
            .args(["127.0.0.1", &self.port.to_string()])
            .output()
            .expect("run findscu");
        assert!(
            out.status.success(),
            "findscu: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_dir(dir)
            .expect("read query dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("rsp"))
            .count()
    }

    /// The files in Orthanc's storage area (one DICOM file per stored instance).
    pub fn stored_paths(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut dirs = vec![self.storage.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files
    }

    /// How many instances Orthanc has stored.
    pub fn stored_files(&self) -> usize {
        self.stored_paths().len()
    }
}
