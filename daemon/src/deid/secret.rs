//! Per-project secrets: the key of the UID mapping (and later the date shift).
//!
//! A project's secret comes from configuration when one is given. Otherwise fiona generates
//! 32 random bytes on first use and keeps them in `<data_dir>/secrets/<project>.key` (hex,
//! mode 0600, directory 0700), written durably (temp file, fsync, link into place, directory
//! fsync) and **never replaced**: a new secret would map the same patient's UIDs to new
//! values and split every study in the research PACS. Back the `secrets/` directory up with
//! the configuration (see docs).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("project name `{0}` cannot name a secret file (letters, digits, '-' and '_' only)")]
    BadProjectName(String),
    #[error("secret file for project `{project}` is corrupt (expected 64 hex digits)")]
    Corrupt { project: String },
    #[error("secret store I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("no random numbers from the operating system: {0}")]
    Random(String),
}

/// The directory of generated secrets.
#[derive(Debug, Clone)]
pub struct SecretStore {
    dir: PathBuf,
}

fn valid_project(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 64
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn to_hex(k: &[u8; 32]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

impl SecretStore {
    pub fn new(data_dir: &Path) -> SecretStore {
        SecretStore {
            dir: data_dir.join("secrets"),
        }
    }

    fn path(&self, project: &str) -> PathBuf {
        self.dir.join(format!("{project}.key"))
    }

    /// The project's secret: read it, or generate and keep it on first use.
    pub fn get_or_create(&self, project: &str) -> Result<[u8; 32], SecretError> {
        if !valid_project(project) {
            return Err(SecretError::BadProjectName(project.to_string()));
        }
        let path = self.path(project);
        match fs::read_to_string(&path) {
            Ok(s) => {
                return parse_hex(&s).ok_or_else(|| SecretError::Corrupt {
                    project: project.to_string(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        fs::create_dir_all(&self.dir)?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| SecretError::Random(e.to_string()))?;
        // Write a uniquely named temp file, make it durable, then link it into place. The
        // link fails if another process created the secret meanwhile: theirs wins, ours is
        // discarded, and both read the same one.
        let tmp = self
            .dir
            .join(format!(".{project}.{}.tmp", ulid::Ulid::generate()));
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            writeln!(f, "{}", to_hex(&key))?;
            f.sync_all()?;
        }
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                File::open(&self.dir)?.sync_all()?;
                Ok(key)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let s = fs::read_to_string(&path)?;
                parse_hex(&s).ok_or_else(|| SecretError::Corrupt {
                    project: project.to_string(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A secret given in configuration: 64 hex digits.
pub fn parse_configured(hex: &str) -> Option<[u8; 32]> {
    parse_hex(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let s = SecretStore::new(d.path());
        let a = s.get_or_create("PROJ1").unwrap();
        let b = s.get_or_create("PROJ1").unwrap();
        assert_eq!(a, b);
        let c = SecretStore::new(d.path()).get_or_create("PROJ2").unwrap();
        assert_ne!(a, c);
        let p = d.path().join("secrets/PROJ1.key");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(parse_configured(&fs::read_to_string(&p).unwrap()), Some(a));
        // no temp files left
        assert_eq!(fs::read_dir(d.path().join("secrets")).unwrap().count(), 2);
    }

    #[test]
    fn refuses_bad_names_and_corrupt_files() {
        let d = tempfile::tempdir().unwrap();
        let s = SecretStore::new(d.path());
        assert!(matches!(
            s.get_or_create("../etc"),
            Err(SecretError::BadProjectName(_))
        ));
        fs::create_dir_all(d.path().join("secrets")).unwrap();
        fs::write(d.path().join("secrets/BROKEN.key"), "xyz").unwrap();
        assert!(matches!(
            s.get_or_create("BROKEN"),
            Err(SecretError::Corrupt { .. })
        ));
        // A corrupt secret is never silently replaced.
        assert_eq!(
            fs::read_to_string(d.path().join("secrets/BROKEN.key")).unwrap(),
            "xyz"
        );
    }

    #[test]
    fn concurrent_first_use_agrees() {
        let d = tempfile::tempdir().unwrap();
        let keys: Vec<[u8; 32]> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..8)
                .map(|_| sc.spawn(|| SecretStore::new(d.path()).get_or_create("RACE").unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]));
    }
}
