//! Provisioning in the daemon (issue 18): a bundle offered by `fiona bundle apply` (the
//! control API's `POST /v1/bundle`) or dropped in `<data_dir>/inbox/` is verified
//! (`bundle::verify`), its secrets decrypted with the box's key, its configuration checked as
//! `fiona serve` would (validation, then the stages: `pipeline::build_stages`), written
//! beside the current one and switched to (`bundle::store`); then the daemon restarts on it
//! (`Node::restart`: `fiona serve` runs again in the same process, see `cli/serve.rs`) and
//! the new configuration is on trial until the selftest passes ([`run_trial`]). A selftest
//! failure, or a configuration the daemon cannot start with, switches back and restarts
//! again. Every bundle offered is audited: `bundle_refused` or `bundle_accepted` with the
//! caller as actor, then `bundle_applied` or `bundle_rolled_back` by `provisioning` (ID,
//! serial, signer key, reason).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::bundle::format::{Refusal, MAX_BUNDLE_BYTES};
use crate::bundle::{keys, store, Attempt, Context};
use crate::health::Verdict;
use crate::model::AuditRecord;
use crate::node::Node;

/// What was accepted: the daemon restarts on it, and runs the selftest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Accepted {
    pub bundle_id: String,
    pub serial: u64,
    pub signer: String,
}

/// The provisioning state `fiona bundle status` shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BundleStatus {
    pub box_id: Option<String>,
    pub recipient: Option<String>,
    /// Where the running configuration came from.
    pub source: crate::bundle::ConfigSource,
    /// The current bundle (`config/current`), whether or not it runs yet.
    pub current: Option<crate::bundle::AppliedInfo>,
    pub highest_serial: u64,
    /// A bundle on trial (selftest not finished).
    pub pending: Option<crate::bundle::Pending>,
    pub last_attempt: Option<Attempt>,
    /// The trusted keys' IDs, or why none can be read.
    pub trusted_keys: Result<Vec<String>, String>,
}

pub fn status(node: &Node) -> BundleStatus {
    let data_dir = &node.config.data_dir;
    BundleStatus {
        box_id: node.box_key.as_ref().map(|k| k.box_id.clone()),
        recipient: node.box_key.as_ref().map(|k| k.recipient.clone()),
        source: node.config_source.clone(),
        current: store::current_info(data_dir),
        highest_serial: store::highest_serial(data_dir).unwrap_or(0),
        pending: store::pending(data_dir).ok().flatten(),
        last_attempt: store::last_attempt(data_dir),
        trusted_keys: keys::load_trusted(&node.config.bundle_keys)
            .map(|k| k.into_iter().map(|k| k.key_id).collect()),
    }
}

/// Verify, stage and switch to a bundle (blocking: call it off the runtime). On success the
/// caller restarts the daemon ([`restart_soon`]). A refusal is recorded and audited here.
pub fn apply(node: &Node, bytes: &[u8], actor: &str) -> Result<Accepted, Refusal> {
    let data_dir = node.config.data_dir.clone();
    let now = node.clock.now_ms();
    let result = (|| {
        if let Some(p) = store::pending(&data_dir).map_err(Refusal::Io)? {
            return Err(Refusal::Busy(p.serial));
        }
        let trusted =
            keys::load_trusted(&node.config.bundle_keys).map_err(Refusal::NoTrustedKeys)?;
        let box_key = node
            .box_key
            .as_ref()
            .ok_or_else(|| Refusal::Io("the box has no key pair".into()))?;
        let ctx = Context {
            box_id: box_key.box_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            now_ms: now,
            highest_serial: store::highest_serial(&data_dir).map_err(Refusal::Io)?,
        };
        let verified = crate::bundle::verify(bytes, &trusted, &ctx)?;
        let files = verified.decrypt(box_key.identity())?;
        let dir = store::stage(&data_dir, &verified, &files, now)?;
        let checked = store::load_config(&dir, &data_dir)
            .and_then(|cfg| crate::pipeline::build_stages(&cfg).map(|_| ()));
        if let Err(e) = checked {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Refusal::Config(e));
        }
        store::switch_to(&data_dir, verified.manifest.serial).map_err(Refusal::Io)?;
        Ok(verified)
    })();
    match result {
        Ok(v) => {
            let accepted = Accepted {
                bundle_id: v.manifest.bundle_id.clone(),
                serial: v.manifest.serial,
                signer: v.signer.clone(),
            };
            let mut attempt = Attempt {
                bundle_id: Some(accepted.bundle_id.clone()),
                serial: Some(accepted.serial),
                signer: Some(accepted.signer.clone()),
                result: "pending".into(),
                code: None,
                reason: None,
                time_ms: now,
                audited: false,
            };
            // Who offered it: the trial's outcome is audited later as `provisioning`.
            attempt.audited = audit(node, actor, "bundle_accepted", &attempt).is_ok();
            let _ = store::record_attempt(&data_dir, &attempt);
            tracing::info!(
                bundle = %accepted.bundle_id,
                serial = accepted.serial,
                signer = %accepted.signer,
                "bundle verified and switched to; restarting on it"
            );
            Ok(accepted)
        }
        Err(r) => {
            tracing::warn!(code = r.code(), "bundle refused: {r}");
            let signed = keys::load_trusted(&node.config.bundle_keys)
                .ok()
                .and_then(|k| crate::bundle::format::signed_manifest(bytes, &k));
            let mut attempt = Attempt {
                bundle_id: signed.as_ref().map(|(m, _)| m.bundle_id.clone()),
                serial: signed.as_ref().map(|(m, _)| m.serial),
                signer: signed.map(|(_, k)| k),
                result: "refused".into(),
                code: Some(r.code().into()),
                reason: Some(r.to_string()),
                time_ms: now,
                audited: true,
            };
            if !matches!(r, Refusal::Busy(_)) {
                let _ = store::record_attempt(&data_dir, &attempt);
            }
            attempt.audited = audit(node, actor, "bundle_refused", &attempt).is_ok();
            Err(r)
        }
    }
}

/// The audit record of an attempt.
fn audit(node: &Node, actor: &str, action: &str, a: &Attempt) -> Result<(), String> {
    let mut detail = Vec::new();
    if let Some(id) = &a.bundle_id {
        detail.push(format!("bundle {id}"));
    }
    if let Some(s) = a.serial {
        detail.push(format!("serial {s}"));
    }
    if let Some(k) = &a.signer {
        detail.push(format!("signer {k}"));
    }
    detail.push(format!("result {}", a.result));
    if let Some(c) = &a.code {
        detail.push(format!("code {c}"));
    }
    if let Some(r) = &a.reason {
        detail.push(format!("reason: {r}"));
    }
    let record = AuditRecord::admin(actor, action, a.time_ms, detail.join(", "));
    node.store
        .write_assign(&mut |t| {
            t.append_audit(record.clone())?;
            Ok(())
        })
        .map_err(|e| e.to_string())
}

/// Restart the daemon on the configuration now current, after `delay` (so the answer that
/// announced it reaches the client first).
pub fn restart_soon(node: &Node, delay: Duration) {
    let restart = node.restart.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        restart.cancel();
    });
}

/// After start: audit a rollback made at start (before the index was open), and when a
/// bundle is on trial, run the selftest and keep it or roll back.
pub async fn run_trial(node: Arc<Node>, dicom: SocketAddr) {
    let data_dir = node.config.data_dir.clone();
    if let Some(mut a) = store::last_attempt(&data_dir) {
        if !a.audited {
            let action = match a.result.as_str() {
                "rolled_back" => "bundle_rolled_back",
                "applied" => "bundle_applied",
                "pending" => "bundle_accepted",
                _ => "bundle_refused",
            };
            if audit(&node, "provisioning", action, &a).is_ok() {
                a.audited = true;
                let _ = store::record_attempt(&data_dir, &a);
            }
        }
    }
    let pending = match store::pending(&data_dir) {
        Ok(Some(p)) => p,
        Ok(None) => return,
        Err(e) => {
            tracing::error!("bundle trial state: {e}");
            return;
        }
    };
    let report = crate::selftest::run(node.clone(), dicom).await;
    *node.selftest.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
    let last = store::last_attempt(&data_dir);
    let field = |f: fn(&Attempt) -> Option<String>| last.as_ref().and_then(f);
    let mut attempt = Attempt {
        bundle_id: field(|a| a.bundle_id.clone()),
        serial: Some(pending.serial),
        signer: field(|a| a.signer.clone()),
        result: String::new(),
        code: None,
        reason: None,
        time_ms: node.clock.now_ms(),
        audited: true,
    };
    let n = node.clone();
    if report.verdict == Verdict::Failure {
        attempt.result = "rolled_back".into();
        attempt.code = Some("selftest".into());
        attempt.reason = Some(format!("selftest failed: {}", report.failures()));
        tracing::error!(
            serial = pending.serial,
            "the selftest failed on the new configuration: rolling back ({})",
            report.failures()
        );
        let a = attempt.clone();
        let r = tokio::task::spawn_blocking(move || {
            let _ = audit(&n, "provisioning", "bundle_rolled_back", &a);
            store::rollback(&n.config.data_dir, &a)
        })
        .await;
        match r {
            Ok(Ok(())) => node.restart.cancel(),
            Ok(Err(e)) => tracing::error!("rollback failed: {e}"),
            Err(e) => tracing::error!("rollback task: {e}"),
        }
    } else {
        attempt.result = "applied".into();
        if report.verdict == Verdict::Warning {
            attempt.reason = Some("selftest passed with warnings".into());
        }
        let a = attempt.clone();
        let r = tokio::task::spawn_blocking(move || {
            let _ = audit(&n, "provisioning", "bundle_applied", &a);
            store::finish(&n.config.data_dir, &a)
        })
        .await;
        match r {
            Ok(Ok(())) => tracing::info!(
                serial = pending.serial,
                "bundle applied: the selftest passed"
            ),
            Ok(Err(e)) => tracing::error!("ending the bundle's trial failed: {e}"),
            Err(e) => tracing::error!("bundle trial task: {e}"),
        }
    }
}

/// The inbox for bundles copied onto the box (USB, scp): `<data_dir>/inbox/`.
pub fn inbox_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("inbox")
}

/// Watch the inbox: every 2 s, a `*.tar` file unchanged for 2 s is applied as if by `fiona
/// bundle apply`, then removed; the outcome is written beside it as `NAME.result`.
pub async fn watch_inbox(node: Arc<Node>, stop: CancellationToken) {
    let dir = inbox_dir(&node.config.data_dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::error!("bundle inbox {}: {e}", dir.display());
        return;
    }
    let mut seen: std::collections::HashMap<PathBuf, (u64, std::time::SystemTime)> =
        Default::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let is_tar = path.extension().is_some_and(|x| x == "tar")
                && !e.file_name().to_string_lossy().starts_with('.');
            let Ok(meta) = e.metadata() else { continue };
            if !is_tar || !meta.is_file() {
                continue;
            }
            let stamp = (meta.len(), meta.modified().unwrap_or(std::time::UNIX_EPOCH));
            // Still being copied while its size or time changes between two looks.
            if seen.insert(path.clone(), stamp) != Some(stamp) {
                continue;
            }
            seen.remove(&path);
            let n = node.clone();
            let p = path.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let bytes = read_bounded(&p)?;
                let _ = std::fs::remove_file(&p);
                apply(&n, &bytes, "inbox").map_err(|r| r.to_string())
            })
            .await;
            let text = match &outcome {
                Ok(Ok(a)) => format!(
                    "accepted: bundle {} serial {} signed by {}; the daemon restarts on it and runs the selftest (fiona bundle status)\n",
                    a.bundle_id, a.serial, a.signer
                ),
                Ok(Err(r)) => format!("refused: {r}\n"),
                Err(e) => format!("refused: {e}\n"),
            };
            let _ = std::fs::remove_file(&path);
            let mut result = path.clone().into_os_string();
            result.push(".result");
            let _ = std::fs::write(&result, text);
            if matches!(outcome, Ok(Ok(_))) {
                restart_soon(&node, Duration::from_millis(100));
                return;
            }
        }
    }
}

/// A file's bytes, refused when over the bundle limit (never read whole then).
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read the bundle: {e}"))?;
    let mut bytes = Vec::new();
    f.take(MAX_BUNDLE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the bundle: {e}"))?;
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(Refusal::TooLarge {
            bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            limit: MAX_BUNDLE_BYTES,
        }
        .to_string());
    }
    Ok(bytes)
}
