//! The web page's certificate: the configured PEM pair, or a self-signed one made at first
//! start (rcgen, ECDSA P-256, for `localhost`, the listener's address and the public URL's
//! host) and kept in `web/` under the data directory (owner-only), so the embedded defaults
//! give a working page and the browser's exception survives restarts.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::WebConfig;

/// The certificate and key files the listener uses: `(cert, key, made_now)`.
pub fn ensure(cfg: &WebConfig, data_dir: &Path) -> Result<(PathBuf, PathBuf, bool), String> {
    if let (Some(c), Some(k)) = (&cfg.cert, &cfg.key) {
        return Ok((c.clone(), k.clone(), false));
    }
    let dir = data_dir.join("web");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return Ok((cert, key, false));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names = vec!["localhost".to_string()];
    let ip = cfg.listen.ip();
    if !ip.is_unspecified() {
        names.push(ip.to_string());
    } else {
        names.push("127.0.0.1".into());
    }
    if let Some(host) = cfg.public_url.as_deref().and_then(url_host) {
        if !names.contains(&host) {
            names.push(host);
        }
    }
    let key_pair = rcgen::KeyPair::generate().map_err(|e| format!("key generation: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| format!("certificate names: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fiona (self-signed)");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let c = params
        .self_signed(&key_pair)
        .map_err(|e| format!("self-signed certificate: {e}"))?;
    write_new(&key, key_pair.serialize_pem().as_bytes())?;
    write_new(&cert, c.pem().as_bytes())?;
    Ok((cert, key, true))
}

/// The host of an `https://host[:port][/...]` address.
fn url_host(u: &str) -> Option<String> {
    let rest = u.strip_prefix("https://")?;
    let hostport = rest.split('/').next()?;
    let host = if let Some(h) = hostport.strip_prefix('[') {
        h.split(']').next()?
    } else {
        hostport.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// Write a file owner-only, durably, through a temporary name.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_pair_is_made_once_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = WebConfig::default();
        let (c, k, made) = ensure(&cfg, tmp.path()).unwrap();
        assert!(made);
        let before = std::fs::read(&c).unwrap();
        crate::tls::web_server_config(&c, &k).unwrap();
        let (_, _, again) = ensure(&cfg, tmp.path()).unwrap();
        assert!(!again);
        assert_eq!(before, std::fs::read(&c).unwrap());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            url_host("https://fiona.example:8443/x").as_deref(),
            Some("fiona.example")
        );
        assert_eq!(url_host("https://[::1]:8443").as_deref(), Some("::1"));
    }
}
