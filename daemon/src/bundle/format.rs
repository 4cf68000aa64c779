//! The bundle file and its verification, in memory, with no I/O: [`verify`] takes the bundle's
//! bytes, the trusted keys and what the box knows ([`Context`]) and answers a [`Verified`]
//! bundle or the [`Refusal`] that names why not.
//!
//! A bundle is a tar archive (ustar, GNU or PAX headers, as GNU tar writes them) holding
//! `manifest.json`, its detached minisign signature `manifest.json.minisig`, and the files the
//! manifest lists, at relative paths. The order of checks is the order of trust:
//!
//! 1. the whole file within [`MAX_BUNDLE_BYTES`]; the archive's entries: regular files and
//!    directories only (no links, devices or FIFOs), paths of `[A-Za-z0-9._-]` components that
//!    do not start with a dot (so no `..`, no absolute path, no hidden file), at most
//!    [`MAX_FILES`] files, no name twice. The tar crate reads the headers (the one parsing
//!    before the signature: it is bounded by the bytes in memory and fuzzed,
//!    `daemon/fuzz/fuzz_targets/bundle.rs`);
//! 2. the signature of the manifest's bytes by one of the trusted keys (no signature, no
//!    change: fail closed);
//! 3. only then the manifest (JSON, unknown fields refused);
//! 4. every file's size and SHA-256 against the manifest; a file the manifest does not list,
//!    or one it lists that is missing, is refused;
//! 5. the target box, the fiona versions, the validity period and the serial;
//! 6. what the files hold: `fiona.toml` must be there; no private key, password or secret in
//!    clear (they travel as `*.age`, encrypted to the box's key).
//!
//! Decrypting the `*.age` files ([`Verified::decrypt`]) and the configuration's own
//! validation come after, in `bundle::store` and `provision`.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The largest bundle accepted, in bytes (certificates and configuration fit in far less).
pub const MAX_BUNDLE_BYTES: u64 = 16 << 20;
/// The largest manifest, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// Files in one bundle, besides the manifest and its signature.
pub const MAX_FILES: usize = 256;
/// Longest path of a file in a bundle, in bytes.
pub const MAX_PATH: usize = 200;
/// The manifest's `format` value this fiona reads.
pub const FORMAT: &str = "fiona-bundle-1";
/// The manifest and its signature, at the top of the archive.
pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.json.minisig";
/// The configuration file every bundle carries.
pub const CONFIG_FILE: &str = "fiona.toml";
/// Encrypted settings merged into `fiona.toml` on the box: passwords and secrets.
pub const SECRETS_FILE: &str = "secrets.toml";
/// How far in the future `issued_at` may be (clocks differ).
const ISSUED_SKEW_MS: i64 = 10 * 60 * 1000;

/// Why a bundle was refused. The message is for the admin; [`Refusal::code`] for scripts
/// and tests. Nothing here quotes bytes of an entry that failed a check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("bundle is {bytes} bytes, more than the limit of {limit}")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("not a readable tar archive ({0})")]
    NotTar(&'static str),
    #[error("archive entry {entry} is not a regular file or directory (links, devices and FIFOs are refused)")]
    EntryType { entry: usize },
    #[error("archive entry {entry} has a path that escapes the bundle (absolute, or `..`)")]
    PathEscapes { entry: usize },
    #[error("archive entry {entry} has a path that is not allowed (components of letters, digits, `._-`, not starting with a dot; at most {MAX_PATH} bytes)")]
    PathNotAllowed { entry: usize },
    #[error("`{0}` is in the archive twice")]
    Duplicate(String),
    #[error("more than {MAX_FILES} files")]
    TooManyFiles,
    #[error("no manifest.json in the bundle")]
    NoManifest,
    #[error("the manifest is not signed (no manifest.json.minisig): fail closed, nothing applied")]
    Unsigned,
    #[error("no trusted bundle key is installed on this box ({0})")]
    NoTrustedKeys(String),
    #[error("the signature file is not a minisign signature")]
    BadSignatureFile,
    #[error("signed by key {key_id}, which this box does not trust")]
    UnknownKey { key_id: String },
    #[error("the manifest does not match its signature by key {key_id} (tampered with?)")]
    BadSignature { key_id: String },
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("`{0}` is in the archive but not in the manifest")]
    UnknownFile(String),
    #[error("`{0}` is in the manifest but not in the archive")]
    MissingFile(String),
    #[error("`{path}` does not match the manifest: {what}")]
    FileTampered { path: String, what: String },
    #[error("bundle is for box `{target}`, this is `{box_id}`")]
    WrongTarget { target: String, box_id: String },
    #[error("bundle is for fiona `{wanted}`, this is {ours}")]
    WrongVersion { wanted: String, ours: String },
    #[error("bundle is not valid before {0}")]
    NotYetValid(String),
    #[error("bundle expired at {0}")]
    Expired(String),
    #[error("serial {serial} is not higher than {highest}, the highest applied (a bundle is never applied twice, nor an older one)")]
    SerialNotNewer { serial: u64, highest: u64 },
    #[error("the bundle has no fiona.toml")]
    NoConfig,
    #[error("`{path}` holds {what} in clear: secrets travel encrypted to the box's key (`age -r $(fiona bundle box-key)`), as `{path}.age` or in secrets.toml.age")]
    ClearSecret { path: String, what: String },
    #[error("`{0}` cannot be decrypted with this box's key (encrypted to another box?)")]
    Decrypt(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("bundle serial {0} is still on trial (its selftest has not finished): try again in a minute")]
    Busy(u64),
    #[error("cannot apply: {0}")]
    Io(String),
}

impl Refusal {
    /// A short stable name of the reason (audit details, `--json`, tests).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::TooLarge { .. } => "too_large",
            Refusal::NotTar(_) => "not_tar",
            Refusal::EntryType { .. } => "entry_type",
            Refusal::PathEscapes { .. } => "path_escapes",
            Refusal::PathNotAllowed { .. } => "path_not_allowed",
            Refusal::Duplicate(_) => "duplicate",
            Refusal::TooManyFiles => "too_many_files",
            Refusal::NoManifest => "no_manifest",
            Refusal::Unsigned => "unsigned",
            Refusal::NoTrustedKeys(_) => "no_trusted_keys",
            Refusal::BadSignatureFile => "bad_signature_file",
            Refusal::UnknownKey { .. } => "unknown_key",
            Refusal::BadSignature { .. } => "bad_signature",
            Refusal::Manifest(_) => "manifest",
            Refusal::UnknownFile(_) => "unknown_file",
            Refusal::MissingFile(_) => "missing_file",
            Refusal::FileTampered { .. } => "file_tampered",
            Refusal::WrongTarget { .. } => "wrong_target",
            Refusal::WrongVersion { .. } => "wrong_version",
            Refusal::NotYetValid(_) => "not_yet_valid",
            Refusal::Expired(_) => "expired",
            Refusal::SerialNotNewer { .. } => "serial_not_newer",
            Refusal::NoConfig => "no_config",
            Refusal::ClearSecret { .. } => "clear_secret",
            Refusal::Decrypt(_) => "decrypt",
            Refusal::Config(_) => "config",
            Refusal::Busy(_) => "busy",
            Refusal::Io(_) => "io",
        }
    }
}

/// `manifest.json`: what the admin signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The admin's name for this bundle (1 to 64 of letters, digits, `._-`).
    pub bundle_id: String,
    /// The box this bundle is for (`fiona bundle box-key` prints its ID), or `any`.
    pub target: String,
    /// The fiona versions that may apply it: a semver requirement (`>=0.1, <0.2`, `*`).
    pub fiona_versions: String,
    /// Higher than every serial this box has applied.
    pub serial: u64,
    /// RFC 3339 times.
    pub issued_at: String,
    pub expires_at: String,
    pub files: Vec<FileEntry>,
}

/// One file of the bundle as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    /// Lower-case hex.
    pub sha256: String,
    pub size: u64,
}

/// What the box knows when it checks a bundle.
#[derive(Debug, Clone)]
pub struct Context {
    pub box_id: String,
    /// This fiona's version (`CARGO_PKG_VERSION`).
    pub version: String,
    pub now_ms: i64,
    /// The highest serial ever applied here (0: none).
    pub highest_serial: u64,
}

/// One trusted signer: a minisign public key.
#[derive(Clone)]
pub struct TrustedKey {
    /// The key ID as minisign prints it (16 upper-case hex digits).
    pub key_id: String,
    pub key: minisign_verify::PublicKey,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl TrustedKey {
    /// A minisign public key file's text (`untrusted comment:` line, then the key) or the bare
    /// base64 key.
    pub fn parse(text: &str) -> Result<TrustedKey, String> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .ok_or("no key in the file")?;
        let key = minisign_verify::PublicKey::from_base64(line)
            .map_err(|e| format!("not a minisign public key: {e}"))?;
        let key_id = key_id_of(line).ok_or("not a minisign public key")?;
        Ok(TrustedKey { key_id, key })
    }
}

/// Minisign's key ID: bytes 2..10 of the decoded key or signature, a little-endian number
/// printed as 16 upper-case hex digits (minisign 0.11 leaves out leading zeros in the comment
/// of a `.pub` file: `3AA9B7DBBAAD422` there is `03AA9B7DBBAAD422` here).
fn key_id_of(b64: &str) -> Option<String> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let id: [u8; 8] = raw.get(2..10)?.try_into().ok()?;
    Some(format!("{:016X}", u64::from_le_bytes(id)))
}

/// A bundle whose signature, manifest and files passed every check.
#[derive(Clone)]
pub struct Verified {
    pub manifest: Manifest,
    /// The key ID of the trusted key that signed it.
    pub signer: String,
    /// Every listed file by path, as in the archive (`*.age` still encrypted).
    pub files: BTreeMap<String, Vec<u8>>,
    /// The manifest's and signature's bytes, kept with the applied bundle.
    pub manifest_bytes: Vec<u8>,
    pub signature_bytes: Vec<u8>,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("bundle_id", &self.manifest.bundle_id)
            .field("serial", &self.manifest.serial)
            .field("signer", &self.signer)
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The archive's files by path: step 1, before anything is trusted. Bounded by the bytes in
/// memory (a declared size beyond them is an error, never an allocation).
pub fn read_archive(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, Refusal> {
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(Refusal::TooLarge {
            bytes: bytes.len() as u64,
            limit: MAX_BUNDLE_BYTES,
        });
    }
    let mut archive = tar::Archive::new(bytes);
    let entries = archive
        .entries()
        .map_err(|_| Refusal::NotTar("cannot read entries"))?;
    let mut files = BTreeMap::new();
    for (i, entry) in entries.enumerate() {
        let entry_no = i + 1;
        let mut entry = entry.map_err(|_| Refusal::NotTar("bad entry header"))?;
        let kind = entry.header().entry_type();
        let raw = entry.path_bytes().into_owned();
        let path = clean_path(&raw).map_err(|escapes| {
            if escapes {
                Refusal::PathEscapes { entry: entry_no }
            } else {
                Refusal::PathNotAllowed { entry: entry_no }
            }
        })?;
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(Refusal::EntryType { entry: entry_no });
        }
        let Some(path) = path else {
            // "." or "./" as a file name.
            return Err(Refusal::PathNotAllowed { entry: entry_no });
        };
        let size = entry
            .header()
            .size()
            .map_err(|_| Refusal::NotTar("bad size field"))?;
        if size > bytes.len() as u64 {
            return Err(Refusal::NotTar("an entry is larger than the archive"));
        }
        if files.len() >= MAX_FILES + 2 {
            return Err(Refusal::TooManyFiles);
        }
        let mut data = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(size)
            .read_to_end(&mut data)
            .map_err(|_| Refusal::NotTar("truncated entry"))?;
        if data.len() as u64 != size {
            return Err(Refusal::NotTar("truncated entry"));
        }
        if files.insert(path.clone(), data).is_some() {
            return Err(Refusal::Duplicate(path));
        }
    }
    Ok(files)
}

/// A path in the archive made canonical: `./a/b` is `a/b`; `.` alone is `None` (the top
/// directory). `Err(true)` for a path that escapes (absolute, `..`), `Err(false)` for one
/// that is otherwise not allowed.
pub fn clean_path(raw: &[u8]) -> Result<Option<String>, bool> {
    let s = std::str::from_utf8(raw).map_err(|_| false)?;
    if s.starts_with('/') {
        return Err(true);
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => continue,
            ".." => return Err(true),
            c if c.starts_with('.')
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) =>
            {
                return Err(false)
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    let p = parts.join("/");
    if p.len() > MAX_PATH {
        return Err(false);
    }
    Ok(Some(p))
}

/// Parse a manifest (only once its signature has been checked).
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, Refusal> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(Refusal::Manifest(format!(
            "larger than {MAX_MANIFEST_BYTES} bytes"
        )));
    }
    let m: Manifest =
        serde_json::from_slice(bytes).map_err(|e| Refusal::Manifest(e.to_string()))?;
    if m.format != FORMAT {
        return Err(Refusal::Manifest(format!(
            "format must be `{FORMAT}` (this fiona reads no other)"
        )));
    }
    if !valid_bundle_id(&m.bundle_id) {
        return Err(Refusal::Manifest(
            "bundle_id: 1 to 64 of letters, digits and `._-`".into(),
        ));
    }
    if m.serial == 0 {
        return Err(Refusal::Manifest("serial: must be at least 1".into()));
    }
    if m.files.len() > MAX_FILES {
        return Err(Refusal::TooManyFiles);
    }
    for f in &m.files {
        match clean_path(f.path.as_bytes()) {
            Ok(Some(p)) if p == f.path && p != MANIFEST && p != SIGNATURE => {}
            Err(true) => {
                return Err(Refusal::Manifest(format!(
                    "a listed path escapes the bundle (file {} of the list)",
                    m.files.iter().position(|x| x == f).unwrap_or(0) + 1
                )))
            }
            _ => {
                return Err(Refusal::Manifest(format!(
                    "listed path `{}` is not allowed",
                    f.path.escape_default()
                )))
            }
        }
        if f.sha256.len() != 64
            || !f
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Refusal::Manifest(format!(
                "`{}`: sha256 must be 64 lower-case hex digits",
                f.path
            )));
        }
    }
    parse_time(&m.issued_at).map_err(|e| Refusal::Manifest(format!("issued_at: {e}")))?;
    parse_time(&m.expires_at).map_err(|e| Refusal::Manifest(format!("expires_at: {e}")))?;
    semver::VersionReq::parse(&m.fiona_versions)
        .map_err(|e| Refusal::Manifest(format!("fiona_versions: {e}")))?;
    Ok(m)
}

/// Is `id` a valid bundle ID: 1 to 64 of letters, digits and `._-`.
pub fn valid_bundle_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Milliseconds since the epoch of an RFC 3339 time.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("`{}` is not an RFC 3339 time ({e})", s.escape_default()))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every check of the module header, in its order.
pub fn verify(bytes: &[u8], keys: &[TrustedKey], ctx: &Context) -> Result<Verified, Refusal> {
    let mut files = read_archive(bytes)?;
    let manifest_bytes = files.remove(MANIFEST).ok_or(Refusal::NoManifest)?;
    let signature_bytes = files.remove(SIGNATURE).ok_or(Refusal::Unsigned)?;
    let signer = check_signature(&manifest_bytes, &signature_bytes, keys)?;
    let manifest = parse_manifest(&manifest_bytes)?;
    let listed: BTreeMap<&str, &FileEntry> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    if listed.len() != manifest.files.len() {
        return Err(Refusal::Manifest("a path is listed twice".into()));
    }
    if let Some(extra) = files.keys().find(|p| !listed.contains_key(p.as_str())) {
        return Err(Refusal::UnknownFile(extra.clone()));
    }
    for (path, entry) in &listed {
        let data = files
            .get(*path)
            .ok_or_else(|| Refusal::MissingFile(path.to_string()))?;
        if data.len() as u64 != entry.size {
            return Err(Refusal::FileTampered {
                path: path.to_string(),
                what: format!("{} bytes, the manifest says {}", data.len(), entry.size),
            });
        }
        if sha256_hex(data) != entry.sha256 {
            return Err(Refusal::FileTampered {
                path: path.to_string(),
                what: "its SHA-256 differs".into(),
            });
        }
    }
    if manifest.target != "any" && manifest.target != ctx.box_id {
        return Err(Refusal::WrongTarget {
            target: manifest.target.clone(),
            box_id: ctx.box_id.clone(),
        });
    }
    let req = semver::VersionReq::parse(&manifest.fiona_versions)
        .map_err(|e| Refusal::Manifest(format!("fiona_versions: {e}")))?;
    let ours = semver::Version::parse(&ctx.version)
        .map_err(|e| Refusal::Io(format!("this fiona's version: {e}")))?;
    if !req.matches(&ours) {
        return Err(Refusal::WrongVersion {
            wanted: manifest.fiona_versions.clone(),
            ours: ctx.version.clone(),
        });
    }
    // Both parsed in parse_manifest.
    let issued = parse_time(&manifest.issued_at).map_err(Refusal::Manifest)?;
    let expires = parse_time(&manifest.expires_at).map_err(Refusal::Manifest)?;
    if issued > ctx.now_ms + ISSUED_SKEW_MS {
        return Err(Refusal::NotYetValid(manifest.issued_at.clone()));
    }
    if expires <= ctx.now_ms {
        return Err(Refusal::Expired(manifest.expires_at.clone()));
    }
    if manifest.serial <= ctx.highest_serial {
        return Err(Refusal::SerialNotNewer {
            serial: manifest.serial,
            highest: ctx.highest_serial,
        });
    }
    if !files.contains_key(CONFIG_FILE) {
        return Err(Refusal::NoConfig);
    }
    for (path, data) in &files {
        check_no_clear_secret(path, data)?;
    }
    Ok(Verified {
        manifest,
        signer,
        files,
        manifest_bytes,
        signature_bytes,
    })
}

/// The manifest and its signer when the signature by a trusted key holds, whatever else is
/// wrong with the bundle: what a refusal's audit record may name (an unsigned claim is not
/// repeated).
pub fn signed_manifest(bytes: &[u8], keys: &[TrustedKey]) -> Option<(Manifest, String)> {
    let files = read_archive(bytes).ok()?;
    let (m, s) = (files.get(MANIFEST)?, files.get(SIGNATURE)?);
    let signer = check_signature(m, s, keys).ok()?;
    Some((parse_manifest(m).ok()?, signer))
}

/// The key ID of the trusted key whose signature of `manifest` is good.
fn check_signature(
    manifest: &[u8],
    signature: &[u8],
    keys: &[TrustedKey],
) -> Result<String, Refusal> {
    let text = std::str::from_utf8(signature).map_err(|_| Refusal::BadSignatureFile)?;
    let sig = minisign_verify::Signature::decode(text).map_err(|_| Refusal::BadSignatureFile)?;
    // The signature's key ID: the second line, decoded (minisign-verify does not expose it).
    let sig_line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .ok_or(Refusal::BadSignatureFile)?;
    let key_id = key_id_of(sig_line).ok_or(Refusal::BadSignatureFile)?;
    let Some(key) = keys.iter().find(|k| k.key_id == key_id) else {
        return Err(Refusal::UnknownKey { key_id });
    };
    // Legacy (non-prehashed) signatures are accepted too: `minisign -S` without -H in older
    // versions made them, and both sign the same bytes with Ed25519.
    key.key
        .verify(manifest, &sig, true)
        .map_err(|_| Refusal::BadSignature { key_id })?;
    Ok(key.key_id.clone())
}

/// Secrets travel encrypted: a file in clear may hold no private key, and the clear
/// `fiona.toml` sets no password or secret (nor the data directory, which is the box's).
fn check_no_clear_secret(path: &str, data: &[u8]) -> Result<(), Refusal> {
    if path.ends_with(".age") {
        return Ok(());
    }
    let clear = |what: &str| Refusal::ClearSecret {
        path: path.to_string(),
        what: what.to_string(),
    };
    if contains(data, b"PRIVATE KEY-----") {
        return Err(clear("a private key"));
    }
    if path == SECRETS_FILE {
        return Err(clear("the secrets file"));
    }
    if path == CONFIG_FILE {
        let text = std::str::from_utf8(data)
            .map_err(|_| Refusal::Config("fiona.toml is not UTF-8".into()))?;
        let value: toml::Table =
            toml::from_str(text).map_err(|e| Refusal::Config(format!("fiona.toml: {e}")))?;
        if let Some(what) = secret_in_table(&value) {
            return Err(clear(&what));
        }
        if value.contains_key("data_dir") {
            return Err(Refusal::Config(
                "fiona.toml may not set `data_dir`: the box keeps its data where it is".into(),
            ));
        }
    }
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The first secret setting of a configuration table, named by its path.
pub fn secret_in_table(t: &toml::Table) -> Option<String> {
    if let Some(smtp) = t.get("smtp").and_then(|v| v.as_table()) {
        if smtp.contains_key("password") {
            return Some("smtp.password".into());
        }
    }
    if let Some(projects) = t.get("projects").and_then(|v| v.as_table()) {
        for (name, p) in projects {
            let Some(p) = p.as_table() else { continue };
            let sub = |k: &str| p.get(k).and_then(|v| v.as_table());
            if sub("deid").is_some_and(|d| d.contains_key("secret")) {
                return Some(format!("projects.{name}.deid.secret"));
            }
            if sub("notify").is_some_and(|n| n.contains_key("webhook_secret")) {
                return Some(format!("projects.{name}.notify.webhook_secret"));
            }
        }
    }
    None
}

/// Merge `over` into `base`: tables merged key by key, any other value replaced.
pub fn merge_tables(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl Verified {
    /// The files as they go on the box: every `NAME.age` decrypted with the box's identity
    /// into `NAME` (a name used twice is refused), the others as they are.
    pub fn decrypt(
        &self,
        identity: &age::x25519::Identity,
    ) -> Result<BTreeMap<String, Vec<u8>>, Refusal> {
        let mut out = BTreeMap::new();
        for (path, data) in &self.files {
            let (name, content) = match path.strip_suffix(".age") {
                Some(name) => {
                    let clear =
                        age::decrypt(identity, data).map_err(|_| Refusal::Decrypt(path.clone()))?;
                    (name.to_string(), clear)
                }
                None => (path.clone(), data.clone()),
            };
            if name.is_empty() || name.ends_with('/') {
                return Err(Refusal::Manifest(format!("`{path}` names no file")));
            }
            if out.insert(name.clone(), content).is_some() {
                return Err(Refusal::Duplicate(name));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_canonical_or_refused() {
        assert_eq!(clean_path(b"./a/b.pem"), Ok(Some("a/b.pem".into())));
        assert_eq!(clean_path(b"fiona.toml"), Ok(Some("fiona.toml".into())));
        assert_eq!(clean_path(b"./"), Ok(None));
        assert_eq!(clean_path(b"../x"), Err(true));
        assert_eq!(clean_path(b"a/../../x"), Err(true));
        assert_eq!(clean_path(b"/etc/passwd"), Err(true));
        assert_eq!(clean_path(b".hidden"), Err(false));
        assert_eq!(clean_path(b"a b"), Err(false));
        assert_eq!(clean_path(b"a\\b"), Err(false));
        assert_eq!(clean_path(&[0xff]), Err(false));
        assert_eq!(clean_path("x".repeat(MAX_PATH + 1).as_bytes()), Err(false));
    }

    #[test]
    fn secrets_in_the_clear_config_are_named() {
        let t: toml::Table = toml::from_str("[smtp]\nhost='h'\npassword='p'").unwrap();
        assert_eq!(secret_in_table(&t).as_deref(), Some("smtp.password"));
        let t: toml::Table =
            toml::from_str("[projects.P.deid]\nsecret='00'\n[projects.P.notify]\nwebhook='x'")
                .unwrap();
        assert_eq!(
            secret_in_table(&t).as_deref(),
            Some("projects.P.deid.secret")
        );
        let t: toml::Table = toml::from_str("[projects.P]\nparticipant_pattern='x'").unwrap();
        assert_eq!(secret_in_table(&t), None);
    }

    #[test]
    fn tables_merge_deeply() {
        let mut a: toml::Table =
            toml::from_str("x=1\n[smtp]\nhost='h'\n[projects.P]\nq=1").unwrap();
        let b: toml::Table =
            toml::from_str("[smtp]\npassword='p'\n[projects.P.deid]\nsecret='s'").unwrap();
        merge_tables(&mut a, b);
        let want: toml::Table = toml::from_str(
            "x=1\n[smtp]\nhost='h'\npassword='p'\n[projects.P]\nq=1\n[projects.P.deid]\nsecret='s'",
        )
        .unwrap();
        assert_eq!(a, want);
    }

    #[test]
    fn key_ids_are_minisigns() {
        // A key made by `minisign -G -W`: its file says "minisign public key 8AACE861A4E110E4"
        // (made for this test; the secret key was thrown away).
        let k = TrustedKey::parse(
            "untrusted comment: minisign public key 8AACE861A4E110E4\nRWTkEOGkYeisisd33Qql1PzxGkv/urIzgkyrFqxwXzkMddzIqrUD4AOo\n",
        );
        // The fixture is only as good as its comment: the ID decoded must be the printed one.
        match k {
            Ok(k) => assert_eq!(k.key_id, "8AACE861A4E110E4"),
            Err(e) => panic!("{e}"),
        }
    }
}
