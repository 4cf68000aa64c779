//! LDAP login (issue 17) against a real OpenLDAP `slapd` started by the test
//! (`fiona_tests::ldap::Slapd`: LDAPS and StartTLS on 127.0.0.1, a CA made by the test, simple
//! binds only over TLS, `groupOfNames` groups and the `memberof` overlay). The configuration is
//! `[web.ldap]` as an admin writes it, read and validated by `Config::from_toml`.
//!
//! Shown: alice, in a group mapped to `PROJ1:assigner`, logs in over LDAPS and StartTLS, with
//! groups found by a search under `group_base_dn` and by her entry's `memberOf`; carol gets
//! `admin` from a second group (and `PROJ1:viewer` from a group whose DN is written in another
//! case and spacing); a wrong password, an unknown user and names with filter metacharacters
//! are `InvalidCredentials`; an empty password is refused without a bind (also with slapd
//! stopped); a user in no mapped group is `NoRole`; a certificate from another CA, or checked
//! against the public web roots, is `Tls`; an entry found by `user_filter` that is not the one
//! bound is refused; a closed port and a silent server are `Unreachable` within
//! `timeout_secs`. No error message carries the password.

use std::path::Path;
use std::time::Duration;

use fiona::config::{Config, Grants, LdapConfig, Role};
use fiona::ldap::{login, LdapError};
use fiona_tests::harness::free_port;
use fiona_tests::ldap::Slapd;
use fiona_tests::pki::Ca;

const ALICE: &str = "alice's pass phrase";
const BOB: &str = "bob-Pa55word";
const CAROL: &str = "carol (admin) pw";

/// A login that hangs fails the test here instead of hanging it.
const AT_MOST: Duration = Duration::from_secs(60);

/// slapd with alice (PROJ1 assigners, staff), bob (staff only), carol (PROJ1 viewers, fiona
/// admins, staff).
fn directory(dir: &Path) -> Slapd {
    let s = Slapd::start(&dir.join("slapd"));
    s.add_user("alice", ALICE);
    s.add_user("bob", BOB);
    s.add_user("carol", CAROL);
    s.add_group("proj1-assigners", &["alice"]);
    s.add_group("proj1-viewers", &["carol"]);
    s.add_group("fiona-admins", &["carol"]);
    s.add_group("staff", &["alice", "bob", "carol"]);
    s
}

/// How the configuration finds a user's groups.
#[derive(Debug, Clone, Copy)]
enum Groups {
    /// `group_base_dn`: a search for `(member=USER-DN)` (OpenLDAP).
    Search,
    /// The user entry's `memberOf` (Active Directory's way).
    MemberOf,
}

/// `[web.ldap]` for `url` (StartTLS for `ldap://`), validated with the rest of a
/// configuration that has project PROJ1. `extra` is more `[web.ldap]` lines.
fn config(s: &Slapd, url: &str, groups: Groups, extra: &str) -> LdapConfig {
    let group_base = match groups {
        Groups::Search => format!("group_base_dn = \"ou=groups,{}\"", s.base_dn),
        Groups::MemberOf => String::new(),
    };
    let text = format!(
        r#"
[projects.PROJ1]
participant_pattern = ".*"
events = ["baseline"]
approval_start = "2025-01-01"
approval_end = "2099-12-31"

[web.ldap]
url = "{url}"
starttls = {starttls}
bind_dn = "uid={{user}},ou=people,{base}"
base_dn = "{base}"
{group_base}
{extra}

[web.ldap.groups]
"{assigners}" = ["PROJ1:assigner"]
"CN=Proj1-Viewers, OU=Groups, DC=fiona, DC=test" = ["PROJ1:viewer"]
"{admins}" = ["admin"]
"#,
        starttls = url.starts_with("ldap://"),
        base = s.base_dn,
        assigners = s.group_dn("proj1-assigners"),
        admins = s.group_dn("fiona-admins"),
    );
    let mut cfg = Config::from_toml(&text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .web
        .ldap
        .expect("[web.ldap]");
    if !extra.contains("ca =") {
        cfg.ca = Some(s.ca_pem.clone());
    }
    cfg
}

async fn try_login(cfg: &LdapConfig, user: &str, password: &str) -> Result<Grants, LdapError> {
    let r = tokio::time::timeout(AT_MOST, login(cfg, user, password))
        .await
        .unwrap_or_else(|_| panic!("login of {user:?} did not end within {AT_MOST:?}"));
    if let Err(e) = &r {
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(
                password.is_empty() || !text.contains(password),
                "the password is in the error: {text}"
            );
        }
    }
    r
}

async fn refused(cfg: &LdapConfig, user: &str, password: &str) -> LdapError {
    match try_login(cfg, user, password).await {
        Ok(g) => panic!("{user:?} logged in with {g:?}"),
        Err(e) => e,
    }
}

fn grants(admin: bool, roles: &[(&str, Role)]) -> Grants {
    Grants {
        admin,
        roles: roles.iter().map(|(p, r)| (p.to_string(), *r)).collect(),
    }
}

#[tokio::test]
async fn grants_over_ldaps_and_starttls_with_both_ways_of_finding_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let s = directory(tmp.path());
    for url in [&s.ldaps_url, &s.ldap_url] {
        for groups in [Groups::Search, Groups::MemberOf] {
            let cfg = config(&s, url, groups, "");
            let alice = try_login(&cfg, "alice", ALICE).await;
            assert_eq!(
                alice.as_ref().ok(),
                Some(&grants(false, &[("PROJ1", Role::Assigner)])),
                "{url} {groups:?}: {alice:?}"
            );
            // Two mapped groups: admin, and a viewer's role whose DN is configured in
            // another case and spacing than the directory writes it.
            let carol = try_login(&cfg, "carol", CAROL).await;
            assert_eq!(
                carol.as_ref().ok(),
                Some(&grants(true, &[("PROJ1", Role::Viewer)])),
                "{url} {groups:?}: {carol:?}"
            );
        }
    }
}

#[tokio::test]
async fn wrong_passwords_unknown_users_and_metacharacters_are_invalid_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let s = directory(tmp.path());
    for url in [&s.ldaps_url, &s.ldap_url] {
        let cfg = config(&s, url, Groups::Search, "");
        for (user, password) in [
            ("alice", BOB),
            ("alice", "alice's pass phrase "),
            ("mallory", ALICE),
            // Names that would match alice's entry (or any) if they reached a filter or a DN
            // unescaped.
            ("*", ALICE),
            ("al*", ALICE),
            ("alice)(uid=*", ALICE),
            ("alice,ou=people", ALICE),
            ("uid=alice", ALICE),
        ] {
            let e = refused(&cfg, user, password).await;
            assert!(
                matches!(e, LdapError::InvalidCredentials),
                "{url} {user:?}: {e:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_empty_password_is_refused_without_a_bind() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = directory(tmp.path());
    let cfg = config(&s, &s.ldaps_url, Groups::Search, "");
    // slapd itself would answer a bind with a name and no password "unwilling to perform"
    // (a `Directory` error); an unauthenticated bind never leaves fiona.
    let e = refused(&cfg, "alice", "").await;
    assert!(matches!(e, LdapError::InvalidCredentials), "{e:?}");

    s.stop();
    let e = refused(&cfg, "alice", "").await;
    assert!(matches!(e, LdapError::InvalidCredentials), "{e:?}");
    // The directory is gone indeed: with a password, the login tries and cannot reach it.
    let e = refused(&cfg, "alice", ALICE).await;
    assert!(matches!(e, LdapError::Unreachable(_)), "{e:?}");
}

#[tokio::test]
async fn a_user_in_no_mapped_group_has_no_role() {
    let tmp = tempfile::tempdir().unwrap();
    let s = directory(tmp.path());
    for groups in [Groups::Search, Groups::MemberOf] {
        let cfg = config(&s, &s.ldaps_url, groups, "");
        let e = refused(&cfg, "bob", BOB).await;
        assert!(matches!(e, LdapError::NoRole), "{groups:?}: {e:?}");
    }
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = directory(tmp.path());
    let stranger = Ca::new(&tmp.path().join("stranger"), "stranger");
    for url in [&s.ldaps_url, &s.ldap_url] {
        let ca = format!("ca = \"{}\"", stranger.id.cert.display());
        let cfg = config(&s, url, Groups::Search, &ca);
        let e = refused(&cfg, "alice", ALICE).await;
        assert!(
            matches!(&e, LdapError::Tls(m) if m.contains("certificate")),
            "{url}: {e:?}"
        );
        // Without `ca`, the public web roots: the test CA is not one of them.
        let mut cfg = config(&s, url, Groups::Search, "");
        cfg.ca = None;
        let e = refused(&cfg, "alice", ALICE).await;
        assert!(
            matches!(&e, LdapError::Tls(m) if m.contains("certificate")),
            "{url}: {e:?}"
        );
    }
}

#[tokio::test]
async fn the_entry_found_must_be_the_one_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let s = directory(tmp.path());
    // erin binds as herself, but a careless filter on `sn` finds dave, an admin.
    s.add_user_with("erin", "erin-pw", "cn: erin\nsn: Erin Smith\n");
    s.add_user_with("dave", "dave-pw", "cn: dave\nsn: erin\n");
    s.add_ldif(&format!(
        "dn: {}\nchangetype: modify\nadd: member\nmember: {}\n",
        s.group_dn("fiona-admins"),
        s.user_dn("dave")
    ));
    for groups in [Groups::Search, Groups::MemberOf] {
        let cfg = config(&s, &s.ldaps_url, groups, "user_filter = \"(sn={user})\"");
        let e = refused(&cfg, "erin", "erin-pw").await;
        assert!(
            matches!(&e, LdapError::Directory(m) if m.contains("not the one")),
            "{groups:?}: {e:?}"
        );
        // dave himself is an admin through that filter.
        let dave = config(&s, &s.ldaps_url, groups, "user_filter = \"(uid={user})\"");
        let g = try_login(&dave, "dave", "dave-pw").await;
        assert_eq!(g.ok(), Some(grants(true, &[])), "{groups:?}");
    }
}

#[tokio::test]
async fn closed_ports_and_silent_servers_are_unreachable_within_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let s = directory(tmp.path());
    let closed = free_port();
    // Accepts connections (the kernel does) and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = listener.local_addr().unwrap().port();
    for url in [
        format!("ldaps://127.0.0.1:{closed}"),
        format!("ldap://127.0.0.1:{closed}"),
        format!("ldaps://127.0.0.1:{silent}"),
        format!("ldap://127.0.0.1:{silent}"),
    ] {
        let cfg = config(&s, &url, Groups::Search, "timeout_secs = 1");
        let e = refused(&cfg, "alice", ALICE).await;
        assert!(matches!(e, LdapError::Unreachable(_)), "{url}: {e:?}");
    }
    drop(listener);
}
