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
            ae_title: ae_title.to_string(),
            log,
            _child: guard,
        }
    }
}
