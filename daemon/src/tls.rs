//! DICOM over TLS (PS3.15 Annex B; BCP 195): rustls with the *ring* provider, TLS 1.2 and 1.3
//! only.
//!
//! - **Listener** (`[tls]`, port 2762 by convention): fiona's certificate chain and key; client
//!   certificates verified against `client_ca` (mutual TLS), required unless
//!   `require_client_certificate = false`.
//! - **Destinations** (`[destinations.NAME.tls]`): the research PACS's certificate is verified
//!   against `ca` and must name the host (DNS name or IP address in its subjectAltName, or
//!   `server_name`); fiona presents `certificate` and `private_key` when given.
//!
//! Certificates and keys are PEM files named in the configuration. They are read when the
//! daemon starts (so a bad file stops it with the file named); a destination's are read again
//! for every outgoing association, so a renewed certificate is used without a restart (the
//! listener's need a restart). Errors name files, never their contents.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use serde::{Deserialize, Serialize};

/// Default port of the TLS listener (IANA "dicom-tls").
pub const DEFAULT_TLS_PORT: u16 = 2762;

/// TLS 1.3 and 1.2; nothing older is offered or accepted.
static VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The listener's TLS settings (`[tls]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenTls {
    /// Address and port of the TLS listener.
    #[serde(default = "default_tls_listen")]
    pub listen: std::net::SocketAddr,
    /// fiona's certificate chain (PEM, leaf first).
    pub certificate: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Refuse peers without a valid client certificate (mutual TLS). When false, a
    /// certificate that is presented is still verified.
    #[serde(default = "default_true")]
    pub require_client_certificate: bool,
}

fn default_tls_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([0, 0, 0, 0], DEFAULT_TLS_PORT))
}

fn default_true() -> bool {
    true
}

/// A destination's TLS settings (`[destinations.NAME.tls]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationTls {
    /// CA certificates (PEM) the destination's certificate must chain to.
    pub ca: PathBuf,
    /// fiona's client certificate chain (PEM) for mutual TLS.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// The name the destination's certificate must carry; the destination's `host` when
    /// absent (an IP address is checked against the certificate's IP addresses).
    #[serde(default)]
    pub server_name: Option<String>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; an empty file is an error.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{}: no usable private key: {e}", path.display()))
}

fn root_store(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The listener's rustls configuration.
pub fn server_config(c: &ListenTls) -> Result<Arc<ServerConfig>, String> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match &c.client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(ca)?), provider);
            let verifier = if c.require_client_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None if c.require_client_certificate => {
            return Err(
                "client_ca is needed to verify client certificates (or set require_client_certificate = false)"
                    .into(),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(
            load_certificates(&c.certificate)?,
            load_private_key(&c.private_key)?,
        )
        .map_err(|e| {
            format!(
                "{} with {}: {e}",
                c.certificate.display(),
                c.private_key.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// The web page's rustls configuration: no client certificates, HTTP/1.1 by ALPN.
pub fn web_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(load_certificates(cert)?, load_private_key(key)?)
        .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A destination's rustls configuration.
pub fn client_config(t: &DestinationTls) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(root_store(&t.ca)?);
    let config = match (&t.certificate, &t.private_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certificates(cert)?, load_private_key(key)?)
            .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("certificate and private_key go together".into()),
    };
    Ok(Arc::new(config))
}

/// The name checked against the destination's certificate.
pub fn server_name<'a>(t: &'a DestinationTls, host: &'a str) -> Result<&'a str, String> {
    let name = t.server_name.as_deref().unwrap_or(host);
    rustls::pki_types::ServerName::try_from(name)
        .map_err(|e| format!("`{name}` cannot be checked against a certificate: {e}"))?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = load_certificates(&empty).unwrap_err();
        assert!(
            e.contains("empty.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = load_private_key(&dir.path().join("absent.key")).unwrap_err();
        assert!(e.contains("absent.key"), "{e}");
        let e = client_config(&DestinationTls {
            ca: dir.path().join("ca.pem"),
            certificate: None,
            private_key: None,
            server_name: None,
        })
        .unwrap_err();
        assert!(e.contains("ca.pem"), "{e}");
    }

    #[test]
    fn mutual_tls_needs_a_client_ca() {
        let e = server_config(&ListenTls {
            listen: default_tls_listen(),
            certificate: "/nonexistent/c.pem".into(),
            private_key: "/nonexistent/k.pem".into(),
            client_ca: None,
            require_client_certificate: true,
        })
        .unwrap_err();
        assert!(e.contains("client_ca"), "{e}");
    }

    #[test]
    fn server_names() {
        let t = DestinationTls {
            ca: "ca.pem".into(),
            certificate: None,
            private_key: None,
            server_name: None,
        };
        assert_eq!(server_name(&t, "127.0.0.1").unwrap(), "127.0.0.1");
        assert_eq!(
            server_name(&t, "pacs.example.org").unwrap(),
            "pacs.example.org"
        );
        assert!(server_name(&t, "not a name").is_err());
    }
}
