//! Applied bundles on disk, in `<data_dir>/config/`, switched atomically:
//!
//! ```text
//! config/
//!   b-7/                 an applied bundle's files (secrets decrypted; owner-only like all data)
//!     fiona.toml ...
//!     .bundle/           manifest.json, manifest.json.minisig, applied.json
//!   current -> b-7       the configuration `fiona serve` runs (a symlink, replaced by rename)
//!   serial               the highest serial ever applied (never lowered, even by a rollback)
//!   pending.json         while a new bundle is on trial: its serial and the previous target
//!   last-attempt.json    the last bundle offered: applied, refused, rolled back or pending
//!   staging-<id>/        a bundle being written (removed at start if a crash left it)
//! ```
//!
//! Apply: the files go into a staging directory, are fsynced, the directory is renamed to
//! `b-<serial>` and the parent fsynced; then the serial is burnt and `pending.json` written
//! (both fsynced), and only then `current` is switched by one rename of a new symlink. A crash
//! at any point leaves `current` naming a whole directory, old or new, never a mix. A new
//! configuration stays on trial (`pending.json`) until the selftest passes on it
//! ([`finish`]); otherwise [`rollback`] switches back to the previous one.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::format::{
    merge_tables, Refusal, Verified, CONFIG_FILE, MANIFEST, SECRETS_FILE, SIGNATURE,
};
use crate::config::Config;
use crate::quarantine::sync_dir;

/// The directory of applied bundles.
pub fn config_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("config")
}

/// What is kept about an applied bundle (`.bundle/applied.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedInfo {
    pub bundle_id: String,
    pub serial: u64,
    /// The key ID of the trusted key that signed it.
    pub signer: String,
    pub issued_at: String,
    pub expires_at: String,
    /// When this box applied it (ms since the epoch).
    pub applied_ms: i64,
    /// The files as the manifest lists them (before decryption).
    pub files: Vec<String>,
}

/// The last bundle offered to the box and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    #[serde(default)]
    pub bundle_id: Option<String>,
    #[serde(default)]
    pub serial: Option<u64>,
    #[serde(default)]
    pub signer: Option<String>,
    /// `applied`, `refused`, `rolled_back` or `pending` (on trial, selftest not yet passed).
    pub result: String,
    /// The refusal's code (`Refusal::code`), or `selftest` / `start` for a rollback.
    #[serde(default)]
    pub code: Option<String>,
    /// Why it was refused or rolled back.
    #[serde(default)]
    pub reason: Option<String>,
    pub time_ms: i64,
    /// Written to the audit trail (a rollback at start, before the index was open, is
    /// audited once the daemon runs).
    #[serde(default)]
    pub audited: bool,
}

/// A bundle on trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub serial: u64,
    /// The directory `current` named before (`b-N`), or none (the embedded defaults or the
    /// `--config` file ran before).
    pub previous: Option<String>,
}

/// The highest serial ever applied here; 0 when none.
pub fn highest_serial(data_dir: &Path) -> Result<u64, String> {
    let p = config_dir(data_dir).join("serial");
    match std::fs::read_to_string(&p) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("{} is corrupt: fail closed, no bundle applies", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

/// The directory `current` names (`b-N`), if any.
pub fn current_name(data_dir: &Path) -> Option<String> {
    std::fs::read_link(config_dir(data_dir).join("current"))
        .ok()
        .and_then(|t| t.to_str().map(str::to_string))
        .filter(|t| t.starts_with("b-") && !t.contains('/'))
}

/// The current bundle's directory (the real one, so a later switch changes nothing under a
/// running daemon), if any.
pub fn current_dir(data_dir: &Path) -> Option<PathBuf> {
    current_name(data_dir).map(|n| config_dir(data_dir).join(n))
}

/// The current bundle's record, if any.
pub fn current_info(data_dir: &Path) -> Option<AppliedInfo> {
    let dir = current_dir(data_dir)?;
    read_json(&dir.join(".bundle/applied.json")).ok().flatten()
}

pub fn pending(data_dir: &Path) -> Result<Option<Pending>, String> {
    read_json(&config_dir(data_dir).join("pending.json"))
}

pub fn last_attempt(data_dir: &Path) -> Option<Attempt> {
    read_json(&config_dir(data_dir).join("last-attempt.json"))
        .ok()
        .flatten()
}

pub fn record_attempt(data_dir: &Path, a: &Attempt) -> Result<(), String> {
    write_json(&config_dir(data_dir), "last-attempt.json", a)
}

/// The configuration of a bundle directory: `fiona.toml` with `secrets.toml` (decrypted on
/// the box) merged in, relative paths taken from the bundle's directory, validated. The data
/// directory is the box's, whatever the file says (a bundle may not set it).
pub fn load_config(dir: &Path, data_dir: &Path) -> Result<Config, String> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| format!("cannot read {}: {e}", dir.join(name).display()))
    };
    let mut table: toml::Table =
        toml::from_str(&read(CONFIG_FILE)?).map_err(|e| format!("fiona.toml: {e}"))?;
    if dir.join(SECRETS_FILE).exists() {
        let secrets: toml::Table = toml::from_str(&read(SECRETS_FILE)?)
            // The parse error may quote the line, that is a secret: say where only.
            .map_err(|_| "secrets.toml (decrypted) is not valid TOML".to_string())?;
        merge_tables(&mut table, secrets);
    }
    table.insert(
        "data_dir".into(),
        toml::Value::String(
            data_dir
                .to_str()
                .ok_or("the data directory's path is not UTF-8")?
                .into(),
        ),
    );
    let text = toml::to_string(&table).map_err(|e| e.to_string())?;
    let mut cfg = Config::from_toml(&text).map_err(|e| e.to_string())?;
    cfg.resolve_relative(dir);
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Write a verified bundle's files (decrypted) into `config/b-<serial>` durably. Nothing is
/// switched yet.
pub fn stage(
    data_dir: &Path,
    v: &Verified,
    files: &BTreeMap<String, Vec<u8>>,
    now_ms: i64,
) -> Result<PathBuf, Refusal> {
    let io = |what: &str, e: std::io::Error| Refusal::Io(format!("{what}: {e}"));
    let cdir = config_dir(data_dir);
    std::fs::create_dir_all(&cdir).map_err(|e| io("config directory", e))?;
    let staging = cdir.join(format!("staging-{}", ulid::Ulid::generate()));
    std::fs::create_dir(&staging).map_err(|e| io("staging directory", e))?;
    let result = (|| {
        let mut dirs = vec![staging.clone()];
        for (path, data) in files {
            let dest = staging.join(path);
            if let Some(parent) = dest.parent() {
                if !dirs.iter().any(|d| d == parent) {
                    std::fs::create_dir_all(parent).map_err(|e| io("staging directory", e))?;
                    dirs.push(parent.to_owned());
                }
            }
            write_file(&dest, data, 0o600).map_err(|e| io(path, e))?;
        }
        let meta = staging.join(".bundle");
        std::fs::create_dir(&meta).map_err(|e| io(".bundle", e))?;
        write_file(&meta.join(MANIFEST), &v.manifest_bytes, 0o600).map_err(|e| io(MANIFEST, e))?;
        write_file(&meta.join(SIGNATURE), &v.signature_bytes, 0o600)
            .map_err(|e| io(SIGNATURE, e))?;
        let info = AppliedInfo {
            bundle_id: v.manifest.bundle_id.clone(),
            serial: v.manifest.serial,
            signer: v.signer.clone(),
            issued_at: v.manifest.issued_at.clone(),
            expires_at: v.manifest.expires_at.clone(),
            applied_ms: now_ms,
            files: v.manifest.files.iter().map(|f| f.path.clone()).collect(),
        };
        let json = serde_json::to_vec_pretty(&info).map_err(|e| Refusal::Io(e.to_string()))?;
        write_file(&meta.join("applied.json"), &json, 0o600).map_err(|e| io("applied.json", e))?;
        dirs.push(meta);
        // Deepest first, so each directory's entries are durable before its parent's.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in &dirs {
            sync_dir(d).map_err(|e| io("fsync", e))?;
        }
        let dest = cdir.join(format!("b-{}", v.manifest.serial));
        if dest.exists() {
            // Left by a crash before its serial was burnt (else the serial check refuses):
            // never the current one, which has a serial at most the highest.
            std::fs::remove_dir_all(&dest).map_err(|e| io("old staging", e))?;
        }
        std::fs::rename(&staging, &dest).map_err(|e| io("rename", e))?;
        sync_dir(&cdir).map_err(|e| io("fsync", e))?;
        Ok(dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Put `b-<serial>` on trial: burn the serial, write `pending.json`, switch `current`.
pub fn switch_to(data_dir: &Path, serial: u64) -> Result<(), String> {
    let cdir = config_dir(data_dir);
    let previous = current_name(data_dir);
    write_atomic(&cdir, "serial", format!("{serial}\n").as_bytes(), 0o600)?;
    write_json(&cdir, "pending.json", &Pending { serial, previous })?;
    point_current(&cdir, Some(&format!("b-{serial}")))
}

/// The new configuration passed: end the trial, forget older bundles (the previous one is
/// kept, to compare or go back by a new bundle).
pub fn finish(data_dir: &Path, attempt: &Attempt) -> Result<(), String> {
    let cdir = config_dir(data_dir);
    let p = pending(data_dir)?;
    record_attempt(data_dir, attempt)?;
    remove_durably(&cdir, "pending.json")?;
    let keep: Vec<String> = [current_name(data_dir), p.and_then(|p| p.previous)]
        .into_iter()
        .flatten()
        .collect();
    prune(&cdir, &keep);
    Ok(())
}

/// The configuration on trial failed: `current` back to what it was (or none), the failed
/// bundle's directory removed (its decrypted secrets with it). The serial stays burnt.
pub fn rollback(data_dir: &Path, attempt: &Attempt) -> Result<(), String> {
    let cdir = config_dir(data_dir);
    let Some(p) = pending(data_dir)? else {
        return Err("no bundle is on trial".into());
    };
    point_current(&cdir, p.previous.as_deref())?;
    record_attempt(data_dir, attempt)?;
    remove_durably(&cdir, "pending.json")?;
    let failed = cdir.join(format!("b-{}", p.serial));
    if p.previous.as_deref() != Some(&format!("b-{}", p.serial)) {
        let _ = std::fs::remove_dir_all(failed);
    }
    Ok(())
}

/// At start: remove staging directories a crash left.
pub fn clean_staging(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(config_dir(data_dir)) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("staging-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn prune(cdir: &Path, keep: &[String]) {
    let Ok(entries) = std::fs::read_dir(cdir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("b-") && !keep.contains(&name) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// `current` names `target` (or is removed), by renaming a new symlink over it.
fn point_current(cdir: &Path, target: Option<&str>) -> Result<(), String> {
    let cur = cdir.join("current");
    let io = |e: std::io::Error| format!("cannot switch {}: {e}", cur.display());
    match target {
        Some(t) => {
            let tmp = cdir.join("current.tmp");
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(t, &tmp).map_err(io)?;
            std::fs::rename(&tmp, &cur).map_err(io)?;
        }
        None => match std::fs::remove_file(&cur) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        },
    }
    sync_dir(cdir).map_err(io)
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Write `name` in `dir` durably with `mode`: a temp file, fsync, rename, directory fsync.
pub(super) fn write_atomic(dir: &Path, name: &str, data: &[u8], mode: u32) -> Result<(), String> {
    let io = |e: std::io::Error| format!("cannot write {}: {e}", dir.join(name).display());
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    write_file(&tmp, data, mode).map_err(io)?;
    std::fs::rename(&tmp, dir.join(name)).map_err(io)?;
    sync_dir(dir).map_err(io)
}

fn write_json<T: Serialize>(dir: &Path, name: &str, v: &T) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(v).map_err(|e| e.to_string())?;
    write_atomic(dir, name, &json, 0o600)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("{} is corrupt: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn remove_durably(dir: &Path, name: &str) -> Result<(), String> {
    match std::fs::remove_file(dir.join(name)) {
        Ok(()) => sync_dir(dir).map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", dir.join(name).display())),
    }
}
