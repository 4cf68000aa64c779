//! `fiona bundle apply|status|box-key|manifest|pack` (provisioning bundles, see
//! `provisioning/README.md`) and `fiona selftest`.
//!
//! `apply` hands the file to the daemon, which verifies it, switches to it and restarts; the
//! command then follows the restart and the selftest until the bundle is applied or rolled
//! back (exit status 0 or 1). `box-key` reads the box's public key from the data directory
//! (no daemon needed). `manifest` and `pack` are the admin's side, on their own machine:
//! `manifest` lists a directory's files with their sizes and SHA-256 in `manifest.json`, the
//! admin signs it with the stock `minisign -Sm manifest.json`, and `pack` makes the tar.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::output::{iso_ms as human_time, print_json};
use super::table::{Align, Table};
use super::Global;
use crate::bundle::format::{
    clean_path, sha256_hex, FileEntry, Manifest, FORMAT, MANIFEST, MAX_FILES, SIGNATURE,
};
use crate::control::api::{BundleStatus, SelftestReport, Verdict};
use crate::control::client::call;

#[derive(Subcommand, Debug)]
pub enum BundleCmd {
    /// Apply a signed bundle: verified by the daemon, switched to atomically, the daemon
    /// restarted on it and the selftest run; rolled back when the selftest fails.
    Apply(ApplyArgs),
    /// The current bundle, its serial and signer, when it was applied, the last attempt.
    Status,
    /// Print the box's ID and its public key (the recipient secrets are encrypted to:
    /// `age -r KEY`).
    BoxKey,
    /// Write DIR/manifest.json for the files under DIR (the admin then signs it with
    /// `minisign -Sm DIR/manifest.json`).
    Manifest(ManifestArgs),
    /// Make the bundle file from DIR (manifest.json, its .minisig and the files it lists).
    Pack(PackArgs),
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The bundle file (a tar).
    file: PathBuf,
    /// Return once the daemon has accepted it, without following the restart and the
    /// selftest.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Args, Debug)]
pub struct ManifestArgs {
    /// The directory with fiona.toml and the other files (`*.age` already encrypted).
    dir: PathBuf,
    /// The bundle's name (letters, digits, `._-`).
    #[arg(long)]
    id: String,
    /// Higher than every serial applied on the target boxes.
    #[arg(long)]
    serial: u64,
    /// The box ID (`fiona bundle box-key` on the box), or `any`.
    #[arg(long)]
    target: String,
    /// The fiona versions that may apply it (a semver requirement).
    #[arg(long, default_value = "*")]
    versions: String,
    /// Days from now until the bundle expires.
    #[arg(long, default_value_t = 30.0)]
    valid_days: f64,
}

#[derive(Args, Debug)]
pub struct PackArgs {
    /// The directory `manifest` wrote into and `minisign` signed in.
    dir: PathBuf,
    /// The bundle file to write.
    #[arg(long, short = 'o')]
    output: PathBuf,
}

#[derive(Args, Debug)]
pub struct SelftestArgs {}

pub fn bundle(g: &Global, cmd: BundleCmd) -> Result<(), String> {
    match cmd {
        BundleCmd::Apply(a) => apply(g, a),
        BundleCmd::Status => status(g),
        BundleCmd::BoxKey => box_key(g),
        BundleCmd::Manifest(a) => manifest(g, a),
        BundleCmd::Pack(a) => pack(g, a),
    }
}

fn apply(g: &Global, a: ApplyArgs) -> Result<(), String> {
    let meta = std::fs::metadata(&a.file).map_err(|e| format!("{}: {e}", a.file.display()))?;
    let limit = crate::bundle::format::MAX_BUNDLE_BYTES;
    if meta.len() > limit {
        return Err(format!(
            "{}: {} bytes, more than the limit of {limit}",
            a.file.display(),
            meta.len()
        ));
    }
    let bytes = std::fs::read(&a.file).map_err(|e| format!("{}: {e}", a.file.display()))?;
    let client = g.client()?;
    let accepted = client
        .send(&call::apply_bundle(bytes))
        .map_err(|e| e.to_string())?;
    eprintln!(
        "accepted: bundle {} serial {} signed by key {}; the daemon restarts on it",
        accepted.bundle_id, accepted.serial, accepted.signer
    );
    if a.no_wait {
        return Ok(());
    }
    // The daemon stops answering while it restarts; then the trial ends, one way or the other.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        if let Ok(s) = client.send(&call::bundle_status()) {
            if let Some(last) = s.last_attempt.as_ref().filter(|l| {
                s.pending.is_none()
                    && l.serial == Some(accepted.serial)
                    && matches!(l.result.as_str(), "applied" | "rolled_back")
            }) {
                if g.json {
                    print_json(&serde_json::to_value(&s).map_err(|e| e.to_string())?)?;
                }
                return match last.result.as_str() {
                    "applied" => {
                        if !g.json {
                            println!(
                                "applied: bundle {} serial {} ({})",
                                accepted.bundle_id,
                                accepted.serial,
                                last.reason.as_deref().unwrap_or("selftest passed")
                            );
                        }
                        Ok(())
                    }
                    _ => Err(format!(
                        "rolled back: bundle {} serial {}: {}",
                        accepted.bundle_id,
                        accepted.serial,
                        last.reason.as_deref().unwrap_or("no reason recorded")
                    )),
                };
            }
        }
        if Instant::now() > deadline {
            return Err(
                "the daemon did not finish the bundle's trial within 10 minutes: see `fiona bundle status` and the log".into(),
            );
        }
    }
}

fn status(g: &Global) -> Result<(), String> {
    super::show(g, call::bundle_status(), |s| print_status(&s))
}

fn print_status(s: &BundleStatus) {
    let mut t = Table::headless(&[Align::Left, Align::Left]).gap(1);
    t.row(["box", s.box_id.as_deref().unwrap_or("-")]);
    t.row(["running", s.source.describe().as_str()]);
    match &s.current {
        Some(c) => {
            t.row([
                "current".to_string(),
                format!(
                    "bundle {} serial {}, signed by key {}, applied {}",
                    c.bundle_id,
                    c.serial,
                    c.signer,
                    human_time(c.applied_ms)
                ),
            ]);
            t.row([
                "valid".to_string(),
                format!("issued {}, expires {}", c.issued_at, c.expires_at),
            ]);
        }
        None => t.row(["current", "no bundle applied"]),
    }
    t.row(["highest serial".to_string(), s.highest_serial.to_string()]);
    if let Some(p) = &s.pending {
        t.row([
            "on trial".to_string(),
            format!("serial {} (selftest not finished)", p.serial),
        ]);
    }
    if let Some(a) = &s.last_attempt {
        let mut line = format!("{} at {}", a.result, human_time(a.time_ms));
        if let (Some(id), Some(serial)) = (&a.bundle_id, a.serial) {
            line.push_str(&format!(": bundle {id} serial {serial}"));
        }
        if let Some(r) = &a.reason {
            line.push_str(&format!(" ({r})"));
        }
        t.row(["last attempt".to_string(), line]);
    }
    t.row([
        "trusted keys".to_string(),
        match &s.trusted_keys {
            Ok(k) => k.join(", "),
            Err(e) => format!("none: {e}"),
        },
    ]);
    t.print();
}

fn box_key(g: &Global) -> Result<(), String> {
    let data_dir = g.config()?.data_dir;
    let recipient = crate::bundle::keys::read_recipient(&data_dir)?;
    let id = crate::bundle::keys::box_id_of(&recipient);
    if g.json {
        return print_json(&serde_json::json!({ "box_id": id, "recipient": recipient }));
    }
    // The key alone on stdout, so `age -r "$(fiona bundle box-key)"` works.
    eprintln!("box {id}; encrypt secrets for it with: age -r KEY -o FILE.age FILE");
    println!("{recipient}");
    Ok(())
}

/// Every file under `dir` (relative paths, sorted), but the manifest and its signature.
fn files_under(dir: &Path) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let e = e.map_err(|e| e.to_string())?;
            let ty = e.file_type().map_err(|e| e.to_string())?;
            let path = e.path();
            let rel = path
                .strip_prefix(dir)
                .map_err(|e| e.to_string())?
                .to_str()
                .ok_or_else(|| format!("{}: not UTF-8", path.display()))?
                .to_string();
            if ty.is_dir() {
                todo.push(path);
            } else if ty.is_file() {
                if rel != MANIFEST && rel != SIGNATURE {
                    out.push(rel);
                }
            } else {
                return Err(format!(
                    "{}: only regular files and directories go in a bundle",
                    path.display()
                ));
            }
        }
    }
    out.sort();
    for p in &out {
        if clean_path(p.as_bytes()) != Ok(Some(p.clone())) {
            return Err(format!(
                "`{p}`: a bundle's paths are made of letters, digits and `._-`, no part starting with a dot"
            ));
        }
    }
    if out.len() > MAX_FILES {
        return Err(format!("more than {MAX_FILES} files"));
    }
    Ok(out)
}

fn manifest(g: &Global, a: ManifestArgs) -> Result<(), String> {
    g.no_json("bundle manifest")?;
    if !crate::bundle::format::valid_bundle_id(&a.id) {
        return Err("--id: 1 to 64 of letters, digits and `._-`".into());
    }
    semver::VersionReq::parse(&a.versions).map_err(|e| format!("--versions: {e}"))?;
    if a.serial == 0 {
        return Err("--serial: at least 1".into());
    }
    let mut files = Vec::new();
    for rel in files_under(&a.dir)? {
        let data = std::fs::read(a.dir.join(&rel)).map_err(|e| format!("{rel}: {e}"))?;
        files.push(FileEntry {
            sha256: sha256_hex(&data),
            size: data.len() as u64,
            path: rel,
        });
    }
    if !files
        .iter()
        .any(|f| f.path == crate::bundle::format::CONFIG_FILE)
    {
        return Err(format!("{}: no fiona.toml", a.dir.display()));
    }
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|e| e.to_string())?;
    let expires = now + time::Duration::seconds_f64(a.valid_days * 86_400.0);
    let fmt = &time::format_description::well_known::Rfc3339;
    let m = Manifest {
        format: FORMAT.into(),
        bundle_id: a.id,
        target: a.target,
        fiona_versions: a.versions,
        serial: a.serial,
        issued_at: now.format(fmt).map_err(|e| e.to_string())?,
        expires_at: expires.format(fmt).map_err(|e| e.to_string())?,
        files,
    };
    let json = serde_json::to_vec_pretty(&m).map_err(|e| e.to_string())?;
    let path = a.dir.join(MANIFEST);
    std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    // A signature of an older manifest would only be refused on the box.
    let _ = std::fs::remove_file(a.dir.join(SIGNATURE));
    println!(
        "wrote {} ({} files); sign it: minisign -Sm {}",
        path.display(),
        m.files.len(),
        path.display()
    );
    Ok(())
}

fn pack(g: &Global, a: PackArgs) -> Result<(), String> {
    g.no_json("bundle pack")?;
    let manifest_bytes =
        std::fs::read(a.dir.join(MANIFEST)).map_err(|e| format!("{MANIFEST}: {e}"))?;
    if !a.dir.join(SIGNATURE).exists() {
        return Err(format!(
            "{}: not signed yet: minisign -Sm {}",
            a.dir.display(),
            a.dir.join(MANIFEST).display()
        ));
    }
    let m: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| format!("{MANIFEST}: {e}"))?;
    let out =
        std::fs::File::create(&a.output).map_err(|e| format!("{}: {e}", a.output.display()))?;
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut names = vec![MANIFEST.to_string(), SIGNATURE.to_string()];
    names.extend(m.files.iter().map(|f| f.path.clone()));
    for name in &names {
        let data = std::fs::read(a.dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, data.as_slice())
            .map_err(|e| format!("{}: {e}", a.output.display()))?;
    }
    tar.into_inner()
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("{}: {e}", a.output.display()))?;
    println!("wrote {} ({} files)", a.output.display(), names.len());
    Ok(())
}

/// `fiona selftest`: the daemon runs every check; exit status 0, 1 (a failure) or 2
/// (warnings only).
pub fn selftest(g: &Global, _a: SelftestArgs) -> Result<u8, String> {
    let client = g.client()?;
    let v = client
        .send(&call::selftest().json())
        .map_err(|e| e.to_string())?;
    let r: SelftestReport = super::parse(v.clone())?;
    if g.json {
        print_json(&v)?;
    } else {
        print_report(&r);
    }
    Ok(r.exit_code())
}

fn print_report(r: &SelftestReport) {
    let mut t = Table::headless(&[Align::Left, Align::Left, Align::Left]).gap(2);
    for c in &r.checks {
        let v = match c.verdict {
            Verdict::Ok => "ok",
            Verdict::Warning => "WARNING",
            Verdict::Failure => "FAILURE",
        };
        t.row([c.name.as_str(), v, c.message.as_str()]);
    }
    t.print();
    println!(
        "selftest: {}",
        match r.verdict {
            Verdict::Ok => "passed",
            Verdict::Warning => "passed with warnings",
            Verdict::Failure => "FAILED",
        }
    );
}
