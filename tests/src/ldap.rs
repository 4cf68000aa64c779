//! A real OpenLDAP `slapd` (Debian packages `slapd` and `ldap-utils`) for tests that log in
//! through a directory: started as the current user in a test's directory, on two free ports
//! of 127.0.0.1, `ldaps://` and `ldap://` (for StartTLS), with a CA and a server certificate
//! made by the test (`pki`), killed when dropped.
//!
//! The directory: `dc=fiona,dc=test` with `ou=people` (users are `inetOrgPerson` entries
//! `uid=NAME`, passwords stored `{SSHA}`) and `ou=groups` (`groupOfNames` entries `cn=NAME`
//! with `member` DNs). The `memberof` overlay keeps each user's `memberOf` (as Active Directory
//! does), so both ways of reading groups can be tested. Only bound users may read; a simple
//! bind needs TLS (`security simple_bind=128`: a bind in clear is refused with
//! "confidentiality required"), so a login that works went over TLS.
//!
//! Entries are added while it runs, with `ldapadd` as the directory's root (`rootdn`) over
//! `ldaps://`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::free_port;
use crate::pki::Ca;

/// The suffix of the test directory.
pub const BASE_DN: &str = "dc=fiona,dc=test";
/// Where users are (`uid=NAME,ou=people,dc=fiona,dc=test`).
pub const PEOPLE_DN: &str = "ou=people,dc=fiona,dc=test";
/// Where groups are (`cn=NAME,ou=groups,dc=fiona,dc=test`).
pub const GROUPS_DN: &str = "ou=groups,dc=fiona,dc=test";
const ROOT_DN: &str = "cn=admin,dc=fiona,dc=test";
// The directory root's password: a test directory on 127.0.0.1 that lives as long as a test.
const ROOT_PASSWORD: &str = "fiona-test-root";

/// A running `slapd`.
pub struct Slapd {
    /// `ldaps://127.0.0.1:PORT`
    pub ldaps_url: String,
    /// `ldap://127.0.0.1:PORT` (StartTLS).
    pub ldap_url: String,
    /// The CA (PEM) that signed slapd's certificate (for 127.0.0.1 and localhost).
    pub ca_pem: PathBuf,
    /// [`BASE_DN`].
    pub base_dn: String,
    /// The directory with slapd's configuration, database and log.
    dir: PathBuf,
    child: Option<Child>,
}

/// `name` on the PATH or in /usr/sbin (where Debian puts slapd, outside a user's PATH);
/// a missing tool fails the test, saying what to install.
fn tool(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: tests/run.sh installs it (Debian packages slapd and ldap-utils)"
            )
        })
}

impl Slapd {
    /// Start slapd in `dir` (created) with the base entries (`dc=fiona,dc=test`,
    /// `ou=people`, `ou=groups`); returns once both ports accept connections.
    pub fn start(dir: &Path) -> Slapd {
        let slapd = tool("slapd");
        std::fs::create_dir_all(dir.join("db")).expect("slapd dir");
        let ca = Ca::new(&dir.join("pki"), "ldap-ca");
        let server = ca.leaf("slapd");
        let conf = dir.join("slapd.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "include /etc/ldap/schema/core.schema\n\
                 include /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/nis.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\n\
                 modulepath /usr/lib/ldap\n\
                 moduleload back_mdb\n\
                 moduleload memberof\n\
                 pidfile {d}/slapd.pid\n\
                 argsfile {d}/slapd.args\n\
                 TLSCACertificateFile {ca}\n\
                 TLSCertificateFile {cert}\n\
                 TLSCertificateKeyFile {key}\n\
                 security simple_bind=128\n\
                 database mdb\n\
                 suffix \"{BASE_DN}\"\n\
                 rootdn \"{ROOT_DN}\"\n\
                 rootpw {ROOT_PASSWORD}\n\
                 directory {d}/db\n\
                 overlay memberof\n\
                 access to attrs=userPassword by self =xw by anonymous auth by * none\n\
                 access to * by users read by * none\n",
                ca = ca.id.cert.display(),
                cert = server.cert.display(),
                key = server.key.display(),
            ),
        )
        .expect("write slapd.conf");
        let (ldaps_port, ldap_port) = (free_port(), free_port());
        let ldaps_url = format!("ldaps://127.0.0.1:{ldaps_port}");
        let ldap_url = format!("ldap://127.0.0.1:{ldap_port}");
        let log = std::fs::File::create(dir.join("slapd.log")).expect("slapd.log");
        // `-d 0`: stay in the foreground (a child we can kill), log nothing but errors.
        let child = Command::new(slapd)
            .arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(format!("{ldaps_url}/ {ldap_url}/"))
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("slapd.log"))
            .stderr(log)
            .spawn()
            .expect("start slapd");
        let mut s = Slapd {
            ldaps_url,
            ldap_url,
            ca_pem: ca.id.cert.clone(),
            base_dn: BASE_DN.to_string(),
            dir: dir.to_owned(),
            child: Some(child),
        };
        s.wait_until_listening(&[ldaps_port, ldap_port]);
        s.add_ldif(&format!(
            "dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\no: fiona\ndc: fiona\n\n\
             dn: {PEOPLE_DN}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: {GROUPS_DN}\nobjectClass: organizationalUnit\nou: groups\n"
        ));
        s
    }

    fn wait_until_listening(&mut self, ports: &[u16]) {
        let start = Instant::now();
        loop {
            if ports
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
            {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || start.elapsed() > Duration::from_secs(10) {
                panic!("slapd did not start ({exited:?}); its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// slapd's log (errors only).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default()
    }

    /// The DN of user `uid`.
    pub fn user_dn(&self, uid: &str) -> String {
        format!("uid={uid},{PEOPLE_DN}")
    }

    /// The DN of group `cn`.
    pub fn group_dn(&self, cn: &str) -> String {
        format!("cn={cn},{GROUPS_DN}")
    }

    /// Add user `uid` (cn and sn `uid`) with `password`; returns its DN.
    pub fn add_user(&self, uid: &str, password: &str) -> String {
        self.add_user_with(uid, password, &format!("cn: {uid}\nsn: {uid}\n"))
    }

    /// Add user `uid` with `password` and the LDIF attribute lines `attrs` (which must give
    /// `cn` and `sn`); returns its DN.
    pub fn add_user_with(&self, uid: &str, password: &str, attrs: &str) -> String {
        let dn = self.user_dn(uid);
        self.add_ldif(&format!(
            "dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\n{attrs}userPassword: {}\n",
            ssha(password)
        ));
        dn
    }

    /// Add group `cn` with the users `members` (uids; at least one: `groupOfNames` needs a
    /// member); returns its DN. Add users before the groups they are in, so `memberOf` is set.
    pub fn add_group(&self, cn: &str, members: &[&str]) -> String {
        let dn = self.group_dn(cn);
        let mut ldif = format!("dn: {dn}\nobjectClass: groupOfNames\ncn: {cn}\n");
        for m in members {
            ldif.push_str(&format!("member: {}\n", self.user_dn(m)));
        }
        self.add_ldif(&ldif);
        dn
    }

    /// Add the entries of `ldif` as the directory's root.
    pub fn add_ldif(&self, ldif: &str) {
        let mut child = Command::new(tool("ldapadd"))
            .args([
                "-x",
                "-H",
                &self.ldaps_url,
                "-D",
                ROOT_DN,
                "-w",
                ROOT_PASSWORD,
            ])
            // This CA, whatever the machine's ldap.conf says (environment variables come
            // last; LDAPNOINIT would ignore them too).
            .env("LDAPTLS_CACERT", &self.ca_pem)
            .env("LDAPTLS_REQCERT", "demand")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ldapadd");
        child
            .stdin
            .take()
            .expect("ldapadd stdin")
            .write_all(ldif.as_bytes())
            .expect("write to ldapadd");
        let out = child.wait_with_output().expect("ldapadd");
        assert!(
            out.status.success(),
            "ldapadd: {}\n{ldif}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stop slapd now (a test of what happens without a directory).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `{SSHA}` of `password`, made by `slappasswd`.
fn ssha(password: &str) -> String {
    let out = Command::new(tool("slappasswd"))
        .args(["-h", "{SSHA}", "-s", password])
        .output()
        .expect("run slappasswd");
    assert!(
        out.status.success(),
        "slappasswd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
