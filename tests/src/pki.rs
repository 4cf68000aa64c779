//! Test certificates made with the `openssl` command: a CA, leaf certificates it signs
//! (for 127.0.0.1 and localhost, usable as server and client), and a second, unrelated CA
//! for "wrong certificate" cases. RSA 2048; a CA is valid for 400 days, a leaf for two days
//! unless made for another span (`Ca::leaf_for_days`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::require_tool;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority that can sign leaves.
#[derive(Debug, Clone)]
pub struct Ca {
    pub id: Identity,
    dir: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Ca {
    /// A new self-signed CA named `name`, files in `dir`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        require_tool("openssl");
        std::fs::create_dir_all(dir).expect("pki dir");
        let id = Identity {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "400",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &id.key.to_string_lossy(),
                "-out",
                &id.cert.to_string_lossy(),
            ],
            dir,
        );
        Ca {
            id,
            dir: dir.to_owned(),
        }
    }

    /// A leaf for 127.0.0.1 and localhost, for TLS servers and clients.
    pub fn leaf(&self, name: &str) -> Identity {
        self.leaf_for_days(name, 2)
    }

    /// [`Ca::leaf`] valid for `days` from now: `-1` makes one that expired yesterday (as
    /// `openssl x509 -days -1` does), `10` one that expires within the selftest's 30 days.
    pub fn leaf_for_days(&self, name: &str, days: i64) -> Identity {
        let id = Identity {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        let csr = self.dir.join(format!("{name}.csr"));
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write ext");
        openssl(
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &id.key.to_string_lossy(),
                "-out",
                &csr.to_string_lossy(),
            ],
            &self.dir,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr.to_string_lossy(),
                "-CA",
                &self.id.cert.to_string_lossy(),
                "-CAkey",
                &self.id.key.to_string_lossy(),
                "-CAcreateserial",
                "-days",
                &days.to_string(),
                "-extfile",
                &ext.to_string_lossy(),
                "-out",
                &id.cert.to_string_lossy(),
            ],
            &self.dir,
        );
        id
    }
}
