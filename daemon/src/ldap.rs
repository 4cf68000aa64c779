//! LDAP login for the web page (`[web.ldap]`, issue 17): a simple bind as the user over TLS,
//! then the user's groups mapped to [`Grants`] through `[web.ldap.groups]`.
//!
//! [`login`] goes through these steps, each bounded by `timeout_secs` (the connection, the
//! TLS handshake and StartTLS together; then every operation):
//!
//! 1. Refuse, before any network I/O, an empty password (a bind with a name and no password
//!    is an *unauthenticated* bind, which many directories, Active Directory among them,
//!    answer with success) and a name that is not a valid account name
//!    ([`config::valid_account_name`]: letters, digits and `._-@`, so no filter or DN
//!    metacharacter ever reaches the directory). Both are [`LdapError::InvalidCredentials`].
//!    An `ldap://` address without `starttls` is refused too ([`LdapError::Tls`]): a password
//!    never goes in clear, whoever built the configuration.
//! 2. Connect: `ldaps://`, or `ldap://` and StartTLS, which must succeed. The directory's
//!    certificate is verified (rustls, *ring*, TLS 1.2 and 1.3) against `ca`, else the public
//!    web roots, and must name the host of `url`.
//! 3. Bind as `bind_dn` with `{user}` replaced by the name escaped for a DN (RFC 4514).
//!    Result 49 is [`LdapError::InvalidCredentials`].
//! 4. Search `base_dn` (subtree) with `user_filter`, `{user}` escaped for a filter
//!    (RFC 4515): exactly one entry must match. When `bind_dn` is a DN, the entry found must
//!    be the one bound (compared as DNs): a filter that finds somebody else's entry would
//!    hand out that entry's groups.
//! 5. The groups: with `group_base_dn`, the DNs of the entries under it with
//!    `(member=USER-DN)` (OpenLDAP's `groupOfNames`); otherwise the entry's `memberOf`
//!    values (Active Directory; direct membership only, as the directory lists it).
//! 6. Each group DN that `[web.ldap.groups]` names (DNs compared case-insensitively, spaces
//!    around separators ignored) adds its grants. No grant at all is [`LdapError::NoRole`]:
//!    such a user may not log in.
//!
//! Error messages name steps, result codes and the directory's diagnostic text (cut, control
//! characters escaped); never the password, which is only ever handed to the bind. The user
//! name is left to the caller, which knows whether to log it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use rustls::{ClientConfig, RootCertStore};

use crate::config::{self, Grant, Grants, LdapConfig};

/// Why a login through the directory failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LdapError {
    /// Wrong name or password (bind result 49), or refused before the bind (empty password,
    /// invalid name). The caller counts it as a failed login.
    #[error("invalid user name or password")]
    InvalidCredentials,
    /// The credentials are right, but none of the user's groups is mapped to a grant.
    #[error("the user is in no group that [web.ldap.groups] maps to a role")]
    NoRole,
    /// The directory cannot be reached, or did not answer within `timeout_secs`.
    #[error("LDAP directory unreachable: {0}")]
    Unreachable(String),
    /// TLS could not be set up: certificate not trusted or not naming the host, StartTLS
    /// refused, unreadable `ca`, or an address that would send the password in clear.
    #[error("LDAP TLS: {0}")]
    Tls(String),
    /// The directory answered, but not as the configuration expects (search refused, no or
    /// several entries for the user, an error result).
    #[error("LDAP directory: {0}")]
    Directory(String),
}

/// Log in `user` with `password` against the directory of `cfg`; the user's grants, or why
/// not. See the module header for the steps.
pub async fn login(cfg: &LdapConfig, user: &str, password: &str) -> Result<Grants, LdapError> {
    if password.is_empty() || !config::valid_account_name(user) {
        return Err(LdapError::InvalidCredentials);
    }
    let over_tls =
        cfg.url.starts_with("ldaps://") || (cfg.url.starts_with("ldap://") && cfg.starttls);
    if !over_tls {
        return Err(LdapError::Tls(
            "the url must be ldaps://, or ldap:// with starttls = true (the password never goes in clear)"
                .into(),
        ));
    }
    let groups = GroupMap::new(&cfg.groups).map_err(LdapError::Directory)?;
    let tls = client_config(cfg)?;
    let timeout = Duration::from_secs(cfg.timeout_secs.max(1));

    let settings = LdapConnSettings::new()
        .set_conn_timeout(timeout)
        .set_starttls(cfg.starttls)
        .set_config(tls);
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &cfg.url)
        .await
        .map_err(|e| connect_error(e, cfg))?;
    // The connection's task ends when `ldap` is dropped; aborting it on every path also ends
    // one stuck on a silent directory.
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.drive().await;
    }));

    let bind_name = fill(&cfg.bind_dn, &ldap3::dn_escape(user));
    let bound = bounded(timeout, "bind", ldap.simple_bind(&bind_name, password)).await?;
    match bound.rc {
        0 => {}
        49 => return Err(LdapError::InvalidCredentials),
        _ => return Err(result_error("bind", &bound)),
    }

    let filter = fill(&cfg.user_filter, &ldap3::ldap_escape(user));
    let attrs: &[&str] = match cfg.group_base_dn {
        Some(_) => &["1.1"],
        None => &["memberOf"],
    };
    let entry = {
        let mut found = search(
            &mut ldap,
            timeout,
            "user search",
            &cfg.base_dn,
            &filter,
            attrs,
        )
        .await?
        .into_iter();
        match (found.next(), found.next()) {
            (Some(e), None) => e,
            (None, _) => {
                return Err(LdapError::Directory(
                    "user_filter found no entry under base_dn for the user that bound".into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(LdapError::Directory(
                    "user_filter found more than one entry under base_dn".into(),
                ))
            }
        }
    };
    if looks_like_dn(&bind_name) && normalize_dn(&entry.dn) != normalize_dn(&bind_name) {
        return Err(LdapError::Directory(
            "the entry user_filter found is not the one bind_dn names".into(),
        ));
    }

    let member_of: Vec<String> = match &cfg.group_base_dn {
        Some(base) => {
            let filter = format!("(member={})", ldap3::ldap_escape(entry.dn.as_str()));
            search(&mut ldap, timeout, "group search", base, &filter, &["1.1"])
                .await?
                .into_iter()
                .map(|g| g.dn)
                .collect()
        }
        None => entry
            .attrs
            .into_iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("memberOf"))
            .flat_map(|(_, values)| values)
            .collect(),
    };
    // Best effort: the answer is known, and the connection's task is aborted anyway.
    let _ = tokio::time::timeout(timeout, ldap.unbind()).await;

    let grants = groups.grants(member_of.iter().map(String::as_str));
    if grants.is_empty() {
        return Err(LdapError::NoRole);
    }
    Ok(grants)
}

/// `[web.ldap.groups]` parsed, keyed by the normalised group DN.
struct GroupMap(BTreeMap<String, Vec<Grant>>);

impl GroupMap {
    fn new(groups: &BTreeMap<String, Vec<String>>) -> Result<GroupMap, String> {
        let mut map: BTreeMap<String, Vec<Grant>> = BTreeMap::new();
        for (dn, grants) in groups {
            let entry = map.entry(normalize_dn(dn)).or_default();
            for g in grants {
                entry.push(Grant::parse(g).map_err(|e| format!("web.ldap.groups: {e}"))?);
            }
        }
        Ok(GroupMap(map))
    }

    /// The grants of a user in the groups `member_of` (DNs as the directory writes them).
    fn grants<'a>(&self, member_of: impl IntoIterator<Item = &'a str>) -> Grants {
        let mut grants = Grants::default();
        for dn in member_of {
            for g in self.0.get(&normalize_dn(dn)).into_iter().flatten() {
                grants.add(g);
            }
        }
        grants
    }
}

/// A DN in a form for comparison: lower case, no spaces around the separators (`,`, `+`,
/// `=`) or at the ends, runs of spaces inside a value as one; escaped characters kept as
/// written (so `\,` and `\2C` still differ: directories write one form consistently).
fn normalize_dn(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let mut chars = dn.chars();
    let mut space = false;
    let mut after_separator = true;
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            space = !after_separator;
            continue;
        }
        let separator = matches!(c, ',' | '+' | '=');
        if space && !separator {
            out.push(' ');
        }
        space = false;
        after_separator = separator;
        out.extend(c.to_lowercase());
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                out.extend(escaped.to_lowercase());
            }
        }
    }
    out
}

/// Is this bind name a DN (`uid=alice,ou=people,…`) rather than a user principal name
/// (`alice@hospital.example`) or `DOMAIN\alice`?
fn looks_like_dn(name: &str) -> bool {
    name.split(',')
        .next()
        .and_then(|rdn| rdn.split_once('='))
        .is_some_and(|(attr, _)| {
            let attr = attr.trim();
            !attr.is_empty()
                && attr
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
}

/// `template` with every `{user}` replaced by `value` (already escaped).
fn fill(template: &str, value: &str) -> String {
    template.replace("{user}", value)
}

/// The rustls configuration for the directory: its CA, else the public web roots.
fn client_config(cfg: &LdapConfig) -> Result<Arc<ClientConfig>, LdapError> {
    let mut roots = RootCertStore::empty();
    match &cfg.ca {
        Some(path) => {
            for cert in crate::tls::load_certificates(path).map_err(LdapError::Tls)? {
                roots.add(cert).map_err(|e| {
                    LdapError::Tls(format!(
                        "{}: not a usable CA certificate: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| LdapError::Tls(format!("TLS versions: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One operation within `timeout`.
async fn bounded<T>(
    timeout: Duration,
    step: &str,
    op: impl std::future::Future<Output = ldap3::result::Result<T>>,
) -> Result<T, LdapError> {
    match tokio::time::timeout(timeout, op).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(op_error(step, e)),
        Err(_) => Err(LdapError::Unreachable(format!(
            "{step}: no answer within {} s",
            timeout.as_secs()
        ))),
    }
}

/// The entries a subtree search finds (ldap3's `search` leaves out referrals); an error
/// result is an error.
async fn search(
    ldap: &mut ldap3::Ldap,
    timeout: Duration,
    step: &str,
    base: &str,
    filter: &str,
    attrs: &[&str],
) -> Result<Vec<SearchEntry>, LdapError> {
    let found = bounded(
        timeout,
        step,
        ldap.search(base, Scope::Subtree, filter, attrs.to_vec()),
    )
    .await?;
    let (entries, result) = (found.0, found.1);
    if result.rc != 0 {
        return Err(result_error(step, &result));
    }
    Ok(entries.into_iter().map(SearchEntry::construct).collect())
}

/// An error while connecting: TLS, StartTLS refused, or unreachable.
fn connect_error(e: ldap3::LdapError, cfg: &LdapConfig) -> LdapError {
    use ldap3::LdapError as E;
    match e {
        E::Io { source } => match source
            .get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            Some(tls) => LdapError::Tls(format!("{}: {tls}", cfg.url)),
            None => LdapError::Unreachable(format!("{}: {source}", cfg.url)),
        },
        E::Rustls { source } => LdapError::Tls(format!("{}: {source}", cfg.url)),
        E::DNSName { source } => LdapError::Tls(format!("{}: {source}", cfg.url)),
        E::LdapResult { result } => LdapError::Tls(format!(
            "{}: StartTLS refused: {}",
            cfg.url,
            describe(&result)
        )),
        E::Timeout { .. } => LdapError::Unreachable(format!(
            "{}: no connection within {} s",
            cfg.url, cfg.timeout_secs
        )),
        E::UrlParsing { .. } | E::UnknownScheme(_) => {
            LdapError::Unreachable(format!("{}: not a usable LDAP URL", cfg.url))
        }
        other => LdapError::Unreachable(format!("{}: {other}", cfg.url)),
    }
}

/// An error of one operation after the connection was made.
fn op_error(step: &str, e: ldap3::LdapError) -> LdapError {
    use ldap3::LdapError as E;
    match e {
        E::LdapResult { result } => result_error(step, &result),
        E::FilterParsing => LdapError::Directory(format!("{step}: the filter is not valid")),
        // The connection went away (closed by the directory, I/O error).
        other => LdapError::Unreachable(format!("{step}: {other}")),
    }
}

fn result_error(step: &str, r: &ldap3::LdapResult) -> LdapError {
    LdapError::Directory(format!("{step}: {}", describe(r)))
}

/// A result code with the directory's diagnostic text, bounded and without control
/// characters.
fn describe(r: &ldap3::LdapResult) -> String {
    let mut text = String::new();
    for c in r.text.chars().take(200) {
        if c.is_control() {
            text.extend(c.escape_default());
        } else {
            text.push(c);
        }
    }
    if text.is_empty() {
        format!("result {}", r.rc)
    } else {
        format!("result {} ({text})", r.rc)
    }
}

/// A task aborted when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;

    fn cfg(url: &str, starttls: bool) -> LdapConfig {
        LdapConfig {
            url: url.into(),
            starttls,
            ca: None,
            bind_dn: "uid={user},ou=people,dc=example,dc=org".into(),
            base_dn: "dc=example,dc=org".into(),
            user_filter: "(uid={user})".into(),
            group_base_dn: None,
            groups: BTreeMap::new(),
            timeout_secs: 2,
        }
    }

    /// A port on 127.0.0.1 with nothing listening: a login that tried to connect would be
    /// `Unreachable`.
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn refused_before_any_network_io() {
        let port = closed_port();
        let c = cfg(&format!("ldaps://127.0.0.1:{port}"), false);
        for (user, password) in [
            ("alice", ""),
            ("", "pw"),
            ("*", "pw"),
            ("al*", "pw"),
            ("alice)(uid=*", "pw"),
            ("uid=alice,ou=x", "pw"),
            ("alice\0", "pw"),
        ] {
            let e = login(&c, user, password).await.unwrap_err();
            assert!(
                matches!(e, LdapError::InvalidCredentials),
                "{user:?}/{password:?}: {e}"
            );
        }
        // The same call with a good name and a password does try to connect.
        let e = login(&c, "alice", "s3cr3t-pw").await.unwrap_err();
        assert!(matches!(e, LdapError::Unreachable(_)), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");

        // Addresses that would send the password in clear are refused before connecting.
        for (url, starttls) in [("ldap", false), ("ldapi", false), ("ldapi", true)] {
            let plain = cfg(&format!("{url}://127.0.0.1:{port}"), starttls);
            let e = login(&plain, "alice", "s3cr3t-pw").await.unwrap_err();
            assert!(matches!(e, LdapError::Tls(_)), "{url}: {e}");
            assert!(!e.to_string().contains("s3cr3t"), "{e}");
        }
    }

    #[test]
    fn the_user_is_escaped_for_dns_and_filters() {
        assert_eq!(
            fill("(uid={user})", &ldap3::ldap_escape("a*)(uid=*")),
            r"(uid=a\2a\29\28uid=\2a)"
        );
        assert_eq!(
            fill("uid={user},ou=people", &ldap3::dn_escape("a,b=c+d")),
            r"uid=a\2cb\3dc\2bd,ou=people"
        );
        // Every `{user}` is replaced.
        assert_eq!(
            fill("(|(uid={user})(cn={user}))", "bob"),
            "(|(uid=bob)(cn=bob))"
        );
    }

    #[test]
    fn dns_compare_without_case_and_separator_spaces() {
        let a = normalize_dn("CN=Fiona Proj1 , OU=Groups,DC=Hospital,DC=Example");
        assert_eq!(a, "cn=fiona proj1,ou=groups,dc=hospital,dc=example");
        assert_eq!(
            normalize_dn("  cn = fiona   proj1,ou=groups , dc=hospital ,dc=example  "),
            a
        );
        assert_ne!(
            normalize_dn("cn=fiona proj2,ou=groups"),
            normalize_dn("cn=fiona proj1,ou=groups")
        );
        // An escaped comma stays part of the value; an escaped space is kept.
        assert_eq!(normalize_dn(r"cn=Smith\, J,ou=x"), r"cn=smith\, j,ou=x");
        assert_ne!(normalize_dn(r"cn=a\,ou=b"), normalize_dn("cn=a,ou=b"));
        assert_eq!(normalize_dn(r"cn=a\ "), r"cn=a\ ");
    }

    #[test]
    fn member_of_values_map_to_grants() {
        let mut groups = BTreeMap::new();
        groups.insert(
            "CN=Fiona PROJ1 Assigners,OU=Groups,DC=hospital,DC=example".to_string(),
            vec!["PROJ1:assigner".to_string()],
        );
        groups.insert(
            "cn=fiona viewers,ou=groups,dc=hospital,dc=example".to_string(),
            vec!["PROJ1:viewer".to_string(), "PROJ2:viewer".to_string()],
        );
        groups.insert(
            "CN=Fiona Admins,OU=Groups,DC=hospital,DC=example".to_string(),
            vec!["admin".to_string()],
        );
        let map = GroupMap::new(&groups).unwrap();

        // memberOf as Active Directory writes it, with other case and spacing.
        let g = map.grants([
            "cn=fiona proj1 assigners, ou=groups, dc=hospital, dc=example",
            "CN=Fiona Viewers,OU=Groups,DC=hospital,DC=example",
            "CN=Domain Users,CN=Users,DC=hospital,DC=example",
        ]);
        assert!(!g.admin);
        assert_eq!(
            g.roles.get("PROJ1"),
            Some(&Role::Assigner),
            "highest role kept"
        );
        assert_eq!(g.roles.get("PROJ2"), Some(&Role::Viewer));

        let g = map.grants(["CN=Fiona Admins,OU=Groups,DC=hospital,DC=example"]);
        assert!(g.admin && g.roles.is_empty());

        // Unmapped groups and a DN that only contains a mapped one grant nothing.
        let g = map.grants([
            "CN=Domain Users,CN=Users,DC=hospital,DC=example",
            "CN=Fiona Admins 2,OU=Groups,DC=hospital,DC=example",
        ]);
        assert!(g.is_empty());

        let mut bad = BTreeMap::new();
        bad.insert("cn=x".to_string(), vec!["PROJ1:owner".to_string()]);
        assert!(GroupMap::new(&bad).is_err());
    }

    #[test]
    fn bind_names_that_are_dns() {
        assert!(looks_like_dn("uid=alice,ou=people,dc=example,dc=org"));
        assert!(looks_like_dn("CN=alice,CN=Users,DC=hospital,DC=example"));
        assert!(!looks_like_dn("alice@hospital.example"));
        assert!(!looks_like_dn(r"HOSPITAL\alice"));
    }
}
