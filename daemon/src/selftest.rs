//! The selftest (`fiona selftest`, issue 18): proof that this box works, run in the daemon
//! (`POST /v1/selftest`) at boot by a oneshot unit and after every bundle is applied, its
//! last report kept for `fiona status`.
//!
//! Checks, each `ok`, `warning` or `failure` (exit status 0, 2 or 1):
//!
//! * `data_dir`: a file written, fsynced and removed in the data directory, its `objects/`
//!   and its `run/` (a read-only or full file system fails); free space below
//!   `min_free_bytes` warns;
//! * `index`: the index answers a read and reports itself healthy;
//! * `configuration`: where it came from: a verified bundle is ok; a `--config` file or the
//!   embedded defaults warn, said plainly (a box in service is provisioned by a bundle);
//! * `dicom_listener`: a C-ECHO through our own plain listener (the TLS one, bound by the same
//!   daemon, is named; echoing through it needs a client certificate the box does not hold);
//! * `deidentification`: a synthetic instance (made here, no real data) with planted
//!   identity, dates, UIDs and a private element through each project's header engine and
//!   pixel stage; a planted value found in the output fails;
//! * `tls_certificates`: every configured certificate and CA file readable and valid;
//!   expiring within 30 days warns, expired or not yet valid fails; private keys readable;
//! * `destination NAME`: C-ECHO, plain or TLS as configured (a warning when it does not
//!   answer: the data waits, nothing is lost);
//! * `ocr_models`: each configured Tesseract language starts an engine (the learned detector
//!   is inside the binary);
//! * `clock`: not before this build's date; when systemd-timesyncd or chrony runs, the
//!   kernel's synchronised flag.
//!
//! Messages name paths, projects, destinations and fixed text; never a value from a peer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::bundle::ConfigSource;
use crate::config::Config;
use crate::health::{SelftestCheck, SelftestReport, Verdict};
use crate::node::Node;

/// Certificates expiring within this many days make a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;
/// The build's time (seconds since the epoch): `SOURCE_DATE_EPOCH` when the build set it,
/// else when `build.rs` ran.
pub const BUILD_EPOCH: &str = env!("FIONA_BUILD_EPOCH");

fn check(name: impl Into<String>, verdict: Verdict, message: impl Into<String>) -> SelftestCheck {
    SelftestCheck {
        name: name.into(),
        verdict,
        message: message.into(),
    }
}

/// Run every check. `dicom` is our own plain listener's bound address.
pub async fn run(node: Arc<Node>, dicom: SocketAddr) -> SelftestReport {
    let n = node.clone();
    let blocking = tokio::task::spawn_blocking(move || {
        let cfg = &n.config;
        let mut c = vec![
            data_dir(&cfg.data_dir, cfg.min_free_bytes),
            index(&n),
            configuration(&n.config_source),
        ];
        c.push(deidentification(cfg, n.quarantine.root()));
        c.push(certificates(cfg, now_s()));
        c.push(ocr_models(cfg));
        c.push(clock(now_s(), Path::new("/run")));
        c
    })
    .await;
    let mut checks = match blocking {
        Ok(c) => c,
        Err(e) => vec![check(
            "selftest",
            Verdict::Failure,
            format!("a check panicked: {e}"),
        )],
    };
    // The listener's echo after data_dir, index and configuration, as `fiona selftest` lists.
    checks.insert(checks.len().min(3), listener(&node, dicom).await);
    checks.extend(destinations(&node.config).await);
    SelftestReport::new(node.clock.now_ms(), checks)
}

fn now_s() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn data_dir(dir: &Path, min_free: u64) -> SelftestCheck {
    const NAME: &str = "data_dir";
    // Where the daemon writes: the top (index), where instances are received, its run state.
    for sub in [dir.to_owned(), dir.join("objects"), dir.join("run")] {
        let probe = sub.join(format!("selftest-{}.tmp", ulid::Ulid::generate()));
        let written = (|| -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&probe)?;
            f.write_all(b"fiona selftest\n")?;
            f.sync_all()?;
            crate::quarantine::sync_dir(&sub)?;
            std::fs::remove_file(&probe)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&probe);
            return check(
                NAME,
                Verdict::Failure,
                format!("{} is not writable: {e}", sub.display()),
            );
        }
    }
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => {
            let free = s.blocks_available() * s.fragment_size();
            if free < min_free {
                check(
                    NAME,
                    Verdict::Warning,
                    format!(
                        "{}: writable, but {} free, below min_free_bytes ({}): C-STORE is refused",
                        dir.display(),
                        crate::evict::human_bytes(free),
                        crate::evict::human_bytes(min_free)
                    ),
                )
            } else {
                check(
                    NAME,
                    Verdict::Ok,
                    format!(
                        "{}: written and fsynced, {} free",
                        dir.display(),
                        crate::evict::human_bytes(free)
                    ),
                )
            }
        }
        Err(e) => check(
            NAME,
            Verdict::Warning,
            format!("{}: writable, free space unknown ({e})", dir.display()),
        ),
    }
}

fn index(node: &Node) -> SelftestCheck {
    match node.store.totals() {
        Ok(t) => {
            let h = node.store.health();
            match (h.usable, h.failing) {
                (true, None) => check(
                    "index",
                    Verdict::Ok,
                    format!("opens and answers ({} studies)", t.studies),
                ),
                _ => check(
                    "index",
                    Verdict::Failure,
                    format!(
                        "answers reads, but its writes fail: {}",
                        h.last_error.unwrap_or_else(|| "an I/O error".into())
                    ),
                ),
            }
        }
        Err(e) => check("index", Verdict::Failure, format!("cannot be read: {e}")),
    }
}

fn configuration(source: &ConfigSource) -> SelftestCheck {
    let verdict = match source {
        ConfigSource::Bundle(_) => Verdict::Ok,
        _ => Verdict::Warning,
    };
    check(
        "configuration",
        verdict,
        format!("valid; from {}", source.describe()),
    )
}

async fn listener(node: &Node, dicom: SocketAddr) -> SelftestCheck {
    let host = if dicom.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        dicom.ip().to_string()
    };
    let peer = crate::forward::Peer {
        host,
        port: dicom.port(),
        called_ae_title: node.config.ae_title.clone(),
        calling_ae_title: node.config.ae_title.clone(),
        tls: None,
    };
    let mut msg = match crate::forward::echo(&peer, Duration::from_secs(10)).await {
        Ok(crate::forward::EchoAnswer::Echoed) => format!("C-ECHO answered on {dicom}"),
        Ok(crate::forward::EchoAnswer::Busy) => {
            format!("answered on {dicom}, busy (every association slot taken)")
        }
        Err(e) => {
            return check(
                "dicom_listener",
                Verdict::Failure,
                format!("C-ECHO on {dicom}: {e}"),
            )
        }
    };
    // The TLS listener shares the accept loop; an echo through it would need a client
    // certificate its CA signed, which the box does not hold, and a bare connection would
    // count as a refused association.
    if let Ok(addr) = std::fs::read_to_string(node.quarantine.run_dir().join("dicom-tls.addr")) {
        msg.push_str(&format!("; the TLS listener is bound on {}", addr.trim()));
    }
    check("dicom_listener", Verdict::Ok, msg)
}

/// Values planted in the synthetic instance; none may be in any output.
const PLANTED: &[(&str, &str)] = &[
    ("PatientName", "PLANTED^SELFTEST"),
    ("PatientID", "PLANTEDID4711"),
    ("PatientBirthDate", "19020304"),
    ("AccessionNumber", "PLANTEDACC"),
    ("InstitutionName", "PLANTED INSTITUTE"),
    ("ReferringPhysicianName", "PLANTED^REFERRER"),
    ("private element", "PLANTED PRIVATE VALUE"),
    ("StudyInstanceUID", "1.2.826.0.1.3680043.10.1049.7771"),
    ("SeriesInstanceUID", "1.2.826.0.1.3680043.10.1049.7772"),
    ("SOPInstanceUID", "1.2.826.0.1.3680043.10.1049.7773"),
];

fn deidentification(cfg: &Config, data_root: &Path) -> SelftestCheck {
    const NAME: &str = "deidentification";
    if cfg.projects.is_empty() {
        return check(NAME, Verdict::Warning, "no project is configured");
    }
    let dir = data_root
        .join("run")
        .join(format!("selftest-{}", ulid::Ulid::generate()));
    let result = (|| -> Result<String, String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let input = dir.join("input.dcm");
        synthetic_instance(&input)?;
        let mut done = Vec::new();
        for (name, p) in &cfg.projects {
            let engine = p.deid.engine(
                data_root,
                crate::deid::engine::Assignment {
                    project: name.clone(),
                    participant: "SELFTEST".into(),
                    event: "selftest".into(),
                },
            )?;
            let stage = crate::pixel::scrub::Stage::from_config(&p.pixel)
                .map_err(|e| format!("project {name}: {e}"))?;
            let output = dir.join(format!("out-{}.dcm", done.len()));
            match crate::deid::file::deidentify_file_with(
                &input,
                crate::deid::file::Output::File(&output),
                &engine,
                Some(&stage),
            ) {
                Ok(_) => {}
                Err(crate::deid::file::FileError::Dropped(_)) => {
                    done.push(format!("{name} (dropped by its settings)"));
                    continue;
                }
                Err(e) => return Err(format!("project {name}: {e}")),
            }
            let bytes = std::fs::read(&output).map_err(|e| format!("project {name}: {e}"))?;
            let leaked: Vec<&str> = PLANTED
                .iter()
                .filter(|(_, v)| contains(&bytes, v.as_bytes()))
                .map(|(what, _)| *what)
                .collect();
            if !leaked.is_empty() {
                return Err(format!(
                    "project {name}: planted values left in the output: {}",
                    leaked.join(", ")
                ));
            }
            done.push(name.clone());
        }
        Ok(format!(
            "a synthetic instance with {} planted values de-identified by {}: none left",
            PLANTED.len(),
            done.join(", ")
        ))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(m) => check(NAME, Verdict::Ok, m),
        Err(m) => check(NAME, Verdict::Failure, m),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A small CT image with the planted values, written as a Part-10 file.
fn synthetic_instance(path: &Path) -> Result<(), String> {
    use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    let planted = |what: &str| {
        PLANTED
            .iter()
            .find(|(w, _)| *w == what)
            .map(|(_, v)| *v)
            .unwrap_or_default()
    };
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |g: u16, e: u16, vr: VR, v: PrimitiveValue| {
        obj.put(DataElement::new(Tag(g, e), vr, v));
    };
    let text = |s: &str| PrimitiveValue::from(s.to_string());
    put(0x0008, 0x0016, VR::UI, text(CT));
    put(0x0008, 0x0018, VR::UI, text(planted("SOPInstanceUID")));
    put(0x0008, 0x0020, VR::DA, text("20200102"));
    put(0x0008, 0x0030, VR::TM, text("101010"));
    put(0x0008, 0x0050, VR::SH, text(planted("AccessionNumber")));
    put(0x0008, 0x0060, VR::CS, text("CT"));
    put(0x0008, 0x0080, VR::LO, text(planted("InstitutionName")));
    put(
        0x0008,
        0x0090,
        VR::PN,
        text(planted("ReferringPhysicianName")),
    );
    put(0x0009, 0x0010, VR::LO, text("FIONA SELFTEST"));
    put(0x0009, 0x1001, VR::LO, text(planted("private element")));
    put(0x0010, 0x0010, VR::PN, text(planted("PatientName")));
    put(0x0010, 0x0020, VR::LO, text(planted("PatientID")));
    put(0x0010, 0x0030, VR::DA, text(planted("PatientBirthDate")));
    put(0x0010, 0x0040, VR::CS, text("O"));
    put(0x0020, 0x000D, VR::UI, text(planted("StudyInstanceUID")));
    put(0x0020, 0x000E, VR::UI, text(planted("SeriesInstanceUID")));
    put(0x0020, 0x0013, VR::IS, text("1"));
    put(0x0028, 0x0002, VR::US, PrimitiveValue::from(1u16));
    put(0x0028, 0x0004, VR::CS, text("MONOCHROME2"));
    put(0x0028, 0x0010, VR::US, PrimitiveValue::from(16u16));
    put(0x0028, 0x0011, VR::US, PrimitiveValue::from(16u16));
    put(0x0028, 0x0100, VR::US, PrimitiveValue::from(8u16));
    put(0x0028, 0x0101, VR::US, PrimitiveValue::from(8u16));
    put(0x0028, 0x0102, VR::US, PrimitiveValue::from(7u16));
    put(0x0028, 0x0103, VR::US, PrimitiveValue::from(0u16));
    put(0x7FE0, 0x0010, VR::OB, PrimitiveValue::from(vec![0u8; 256]));
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax("1.2.840.10008.1.2.1")
        .media_storage_sop_class_uid(CT)
        .media_storage_sop_instance_uid(planted("SOPInstanceUID"));
    obj.with_meta(meta)
        .map_err(|e| format!("synthetic instance: {e}"))?
        .write_to_file(path)
        .map_err(|e| format!("synthetic instance: {e}"))
}

/// A configured file: what the configuration calls it, and its path.
type Named = Vec<(String, PathBuf)>;

/// Every certificate and CA file the configuration names, and the private keys.
fn cert_files(cfg: &Config) -> (Named, Named) {
    let mut certs = Vec::new();
    let mut keys = Vec::new();
    if let Some(t) = &cfg.tls {
        certs.push(("tls.certificate".into(), t.certificate.clone()));
        keys.push(("tls.private_key".into(), t.private_key.clone()));
        if let Some(ca) = &t.client_ca {
            certs.push(("tls.client_ca".into(), ca.clone()));
        }
    }
    if cfg.web.enabled {
        match (&cfg.web.cert, &cfg.web.key) {
            (Some(c), Some(k)) => {
                certs.push(("web.cert".into(), c.clone()));
                keys.push(("web.key".into(), k.clone()));
            }
            _ => certs.push((
                "web (self-signed)".into(),
                cfg.data_dir.join("web").join("cert.pem"),
            )),
        }
        if let Some(ca) = cfg.web.ldap.as_ref().and_then(|l| l.ca.clone()) {
            certs.push(("web.ldap.ca".into(), ca));
        }
    }
    if let Some(ca) = cfg.smtp.as_ref().and_then(|s| s.ca.clone()) {
        certs.push(("smtp.ca".into(), ca));
    }
    for (name, d) in &cfg.destinations {
        if let Some(t) = &d.tls {
            certs.push((format!("destinations.{name}.tls.ca"), t.ca.clone()));
            if let Some(c) = &t.certificate {
                certs.push((format!("destinations.{name}.tls.certificate"), c.clone()));
            }
            if let Some(k) = &t.private_key {
                keys.push((format!("destinations.{name}.tls.private_key"), k.clone()));
            }
        }
    }
    for (name, p) in &cfg.projects {
        if let Some(ca) = &p.notify.webhook_ca {
            certs.push((format!("projects.{name}.notify.webhook_ca"), ca.clone()));
        }
    }
    (certs, keys)
}

/// The verdict on one PEM file of certificates at `now` (seconds).
pub fn judge_pem(what: &str, path: &Path, now: i64) -> (Verdict, String) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return (
                Verdict::Failure,
                format!("{what} ({}): cannot be read: {e}", path.display()),
            )
        }
    };
    let mut verdict = Verdict::Ok;
    let mut notes = Vec::new();
    let mut count = 0;
    for pem in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
        let Ok(pem) = pem else {
            return (
                Verdict::Failure,
                format!("{what} ({}): not PEM", path.display()),
            );
        };
        if pem.label != "CERTIFICATE" {
            continue;
        }
        let cert = match pem.parse_x509() {
            Ok(c) => c,
            Err(_) => {
                return (
                    Verdict::Failure,
                    format!(
                        "{what} ({}): a certificate cannot be parsed",
                        path.display()
                    ),
                )
            }
        };
        count += 1;
        let v = cert.validity();
        let (nb, na) = (v.not_before.timestamp(), v.not_after.timestamp());
        let date = |t: i64| {
            time::OffsetDateTime::from_unix_timestamp(t)
                .map(|d| d.date().to_string())
                .unwrap_or_else(|_| t.to_string())
        };
        if na <= now {
            verdict = Verdict::Failure;
            notes.push(format!("certificate {count} expired on {}", date(na)));
        } else if nb > now {
            verdict = Verdict::Failure;
            notes.push(format!(
                "certificate {count} is not valid before {}",
                date(nb)
            ));
        } else if na - now < EXPIRY_WARNING_DAYS * 86_400 {
            verdict = verdict.max(Verdict::Warning);
            notes.push(format!(
                "certificate {count} expires on {} (within {EXPIRY_WARNING_DAYS} days)",
                date(na)
            ));
        }
    }
    if count == 0 {
        return (
            Verdict::Failure,
            format!("{what} ({}): no certificate in it", path.display()),
        );
    }
    if notes.is_empty() {
        (Verdict::Ok, format!("{what}: {count} valid"))
    } else {
        (
            verdict,
            format!("{what} ({}): {}", path.display(), notes.join(", ")),
        )
    }
}

fn certificates(cfg: &Config, now: i64) -> SelftestCheck {
    const NAME: &str = "tls_certificates";
    let (certs, keys) = cert_files(cfg);
    if certs.is_empty() && keys.is_empty() {
        return check(NAME, Verdict::Ok, "no certificate is configured");
    }
    let mut verdict = Verdict::Ok;
    let mut msgs = Vec::new();
    for (what, path) in &certs {
        let (v, m) = judge_pem(what, path, now);
        verdict = verdict.max(v);
        msgs.push(m);
    }
    for (what, path) in &keys {
        if let Err(e) = std::fs::File::open(path) {
            verdict = Verdict::Failure;
            msgs.push(format!("{what} ({}): cannot be read: {e}", path.display()));
        }
    }
    check(NAME, verdict, msgs.join("; "))
}

async fn destinations(cfg: &Config) -> Vec<SelftestCheck> {
    let mut out = Vec::new();
    for (name, d) in &cfg.destinations {
        let peer = crate::pipeline::store_peer(d, &cfg.ae_title);
        let what = format!("destination {name}");
        out.push(match crate::forward::echo_destination(&peer).await {
            Ok(()) => check(
                what,
                Verdict::Ok,
                format!("C-ECHO answered by {}:{}", d.host, d.port),
            ),
            Err(e) => check(
                what,
                Verdict::Warning,
                format!("{e} (what is queued for it waits)"),
            ),
        });
    }
    out
}

fn ocr_models(cfg: &Config) -> SelftestCheck {
    const NAME: &str = "ocr_models";
    let mut languages: Vec<String> = Vec::new();
    for (name, p) in &cfg.projects {
        match crate::pixel::scrub::OcrStage::from_config(&p.pixel.ocr) {
            Ok(Some(o)) if !languages.contains(&o.settings.languages) => {
                languages.push(o.settings.languages.clone())
            }
            Ok(_) => {}
            Err(e) => return check(NAME, Verdict::Failure, format!("project {name}: {e}")),
        }
    }
    if languages.is_empty() {
        return check(
            NAME,
            Verdict::Ok,
            "no project uses OCR; the text detector is built in",
        );
    }
    // On a new thread: its engines start from the model files now, as a restart would.
    let langs = languages.clone();
    let started = std::thread::spawn(move || {
        langs
            .iter()
            .map(|l| crate::pixel::ocr::check_languages(l).map_err(|e| e.to_string()))
            .collect::<Result<Vec<()>, String>>()
    })
    .join();
    match started {
        Ok(Ok(_)) => check(
            NAME,
            Verdict::Ok,
            format!(
                "Tesseract starts with {}; the text detector is built in",
                languages.join(", ")
            ),
        ),
        Ok(Err(e)) => check(NAME, Verdict::Failure, e),
        Err(_) => check(NAME, Verdict::Failure, "starting Tesseract panicked"),
    }
}

/// `now` against the build's date; synchronisation asked of the kernel when a time service
/// (systemd-timesyncd or chrony: their directories under `run`) is there.
pub fn clock(now: i64, run: &Path) -> SelftestCheck {
    const NAME: &str = "clock";
    let built: i64 = BUILD_EPOCH.parse().unwrap_or(0);
    if now < built {
        return check(
            NAME,
            Verdict::Failure,
            format!(
                "the clock says {now} s since the epoch, before this build ({built}): set the time"
            ),
        );
    }
    let timesyncd = run.join("systemd/timesync").exists();
    let chrony = run.join("chrony").exists() || run.join("chrony.pid").exists();
    if !timesyncd && !chrony {
        return check(
            NAME,
            Verdict::Ok,
            "after the build date; no time service (systemd-timesyncd, chrony) to ask",
        );
    }
    let service = if timesyncd {
        "systemd-timesyncd"
    } else {
        "chrony"
    };
    if timesyncd && run.join("systemd/timesync/synchronized").exists() {
        return check(
            NAME,
            Verdict::Ok,
            format!("after the build date; synchronised ({service})"),
        );
    }
    match kernel_synchronised() {
        Some(true) => check(
            NAME,
            Verdict::Ok,
            format!("after the build date; synchronised ({service})"),
        ),
        Some(false) => check(
            NAME,
            Verdict::Warning,
            format!("after the build date, but {service} has not synchronised the clock"),
        ),
        None => check(
            NAME,
            Verdict::Warning,
            format!("after the build date; {service} runs, its state cannot be read"),
        ),
    }
}

/// The kernel's view: `adjtimex` in read-only mode returns `TIME_ERROR` while the clock is
/// not synchronised (whoever disciplines it). The crate's second `unsafe` (see `lib.rs`):
/// neither nix nor the standard library wraps adjtimex, and the alternatives (timedatectl,
/// chronyc) need D-Bus or a socket the hardened unit does not grant.
#[allow(unsafe_code)]
fn kernel_synchronised() -> Option<bool> {
    // SAFETY: adjtimex with `modes = 0` only reads the kernel's time state into the zeroed
    // struct we own; it changes nothing and keeps no pointer.
    let state = unsafe {
        let mut t: libc::timex = std::mem::zeroed();
        libc::adjtimex(&mut t)
    };
    match state {
        -1 => None,
        libc::TIME_ERROR => Some(false),
        _ => Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_before_the_build_fails() {
        assert_eq!(
            clock(0, Path::new("/nonexistent")).verdict,
            Verdict::Failure
        );
        let built: i64 = BUILD_EPOCH.parse().unwrap();
        assert_eq!(
            clock(built + 10, Path::new("/nonexistent")).verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn the_synthetic_instance_is_valid_and_holds_what_was_planted() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.dcm");
        synthetic_instance(&p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        for (what, v) in PLANTED {
            assert!(contains(&bytes, v.as_bytes()), "{what} not planted");
        }
        let obj = dicom_object::open_file(&p).unwrap();
        assert_eq!(
            obj.element(dicom_core::Tag(0x0010, 0x0020))
                .unwrap()
                .to_str()
                .unwrap(),
            "PLANTEDID4711"
        );
    }
}
