//! The keys of provisioning: the trusted signers (minisign public keys installed with the box,
//! read-only, never from a bundle) and the box's own key pair (age X25519, made at first
//! start, the private half never leaving the data directory).

use std::path::{Path, PathBuf};

use super::format::{sha256_hex, TrustedKey};

/// At most this many trusted keys: the one in use and the next one, so a key can be rotated.
pub const MAX_TRUSTED_KEYS: usize = 2;

/// The `*.pub` files of `dir`, each a minisign public key. Fails closed: a directory that is
/// missing or unreadable, a file that is not a key, no key, or more than
/// [`MAX_TRUSTED_KEYS`] is an error (and no bundle is applied).
pub fn load_trusted(dir: &Path) -> Result<Vec<TrustedKey>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "cannot read the trusted key directory {}: {e}",
            dir.display()
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(format!("no *.pub key in {}", dir.display()));
    }
    if paths.len() > MAX_TRUSTED_KEYS {
        return Err(format!(
            "{} keys in {}; at most {MAX_TRUSTED_KEYS} may be trusted (the current one and the next)",
            paths.len(),
            dir.display()
        ));
    }
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            TrustedKey::parse(&text).map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}

/// The box's own key pair, in `<data_dir>/box/`: `identity` (the age secret key, 0600) and
/// `recipient` (the public key admins encrypt secrets to).
pub struct BoxKey {
    identity: age::x25519::Identity,
    pub recipient: String,
    /// `fiona-` and the first 12 hex digits of the SHA-256 of the recipient: the name a
    /// bundle's `target` uses.
    pub box_id: String,
}

impl std::fmt::Debug for BoxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxKey")
            .field("box_id", &self.box_id)
            .field("recipient", &self.recipient)
            .finish_non_exhaustive()
    }
}

fn box_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("box")
}

/// The box ID of a recipient.
pub fn box_id_of(recipient: &str) -> String {
    format!("fiona-{}", &sha256_hex(recipient.as_bytes())[..12])
}

impl BoxKey {
    /// The box's key, made (durably) when there is none yet.
    pub fn load_or_create(data_dir: &Path) -> Result<BoxKey, String> {
        let dir = box_dir(data_dir);
        let path = dir.join("identity");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let identity: age::x25519::Identity = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("{} is not an age identity", path.display()))?;
                Ok(Self::from_identity(identity))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                // X25519, not age's newer post-quantum hybrid: the `age` command admins
                // encrypt with (Debian's age 1.1) knows only X25519 recipients.
                #[allow(deprecated)]
                let identity = age::x25519::Identity::generate();
                let key = Self::from_identity(identity);
                use age::secrecy::ExposeSecret;
                super::store::write_atomic(
                    &dir,
                    "identity",
                    key.identity.to_string().expose_secret().as_bytes(),
                    0o600,
                )?;
                super::store::write_atomic(
                    &dir,
                    "recipient",
                    format!("{}\n", key.recipient).as_bytes(),
                    0o644,
                )?;
                tracing::info!(box_id = %key.box_id, "made the box's key pair for provisioning bundles");
                Ok(key)
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    fn from_identity(identity: age::x25519::Identity) -> BoxKey {
        let recipient = identity.to_public().to_string();
        BoxKey {
            box_id: box_id_of(&recipient),
            identity,
            recipient,
        }
    }

    pub fn identity(&self) -> &age::x25519::Identity {
        &self.identity
    }
}

/// The box's public key as `fiona serve` wrote it, without the private half: what `fiona
/// bundle box-key` prints (no daemon needed).
pub fn read_recipient(data_dir: &Path) -> Result<String, String> {
    let path = box_dir(data_dir).join("recipient");
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| {
            format!(
                "cannot read {} ({e}): the box's key is made at the first start of `fiona serve`",
                path.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_box_key_is_made_once_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let a = BoxKey::load_or_create(d.path()).unwrap();
        let b = BoxKey::load_or_create(d.path()).unwrap();
        assert_eq!(a.recipient, b.recipient);
        assert_eq!(a.box_id, b.box_id);
        assert!(a.recipient.starts_with("age1"));
        assert_eq!(read_recipient(d.path()).unwrap(), a.recipient);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("box/identity"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "identity must be owner-only: {mode:o}");
        // What is encrypted to the recipient opens with the identity.
        #[allow(deprecated)]
        let r: age::x25519::Recipient = a.recipient.parse().unwrap();
        let c = age::encrypt(&r, b"secret").unwrap();
        assert_eq!(age::decrypt(b.identity(), &c).unwrap(), b"secret");
    }

    #[test]
    fn trusted_keys_fail_closed() {
        let d = tempfile::tempdir().unwrap();
        assert!(load_trusted(&d.path().join("missing")).is_err());
        assert!(load_trusted(d.path()).unwrap_err().contains("no *.pub"));
        std::fs::write(d.path().join("a.pub"), "not a key").unwrap();
        assert!(load_trusted(d.path()).is_err());
        let k = "untrusted comment: minisign public key 8AACE861A4E110E4\nRWTkEOGkYeisisd33Qql1PzxGkv/urIzgkyrFqxwXzkMddzIqrUD4AOo\n";
        for n in ["a.pub", "b.pub", "c.pub"] {
            std::fs::write(d.path().join(n), k).unwrap();
        }
        assert!(load_trusted(d.path()).unwrap_err().contains("at most 2"));
        std::fs::remove_file(d.path().join("c.pub")).unwrap();
        assert_eq!(load_trusted(d.path()).unwrap().len(), 2);
    }
}
