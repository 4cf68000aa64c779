//! Scenario: web accounts through `fiona user` on the real daemon. A hash made by
//! `fiona user hash` provisions a `[[web.accounts]]` entry (`check-config` accepts it, the web
//! page logs it in); a local account is added, listed (no hash, no password in any output or
//! the log), given a new password, new roles, disabled and enabled again through the CLI, each
//! change audited with the Unix user as actor and visible at the web page's login (curl over
//! HTTPS on 127.0.0.1). Bad requests are refused with their reason.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use fiona_tests::fiona_bin;
use fiona_tests::harness::{require_tool, Daemon, Options};
use serde_json::Value;

const FIRST: &str = "correct horse battery staple";
const SECOND: &str = "another passphrase, longer";
const PROVISIONED: &str = "provisioned by the bundle";

/// Run `cmd` with `stdin` piped in; its output.
fn with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `fiona ARGS` with `stdin` piped in (and `--data-dir` when a daemon is given).
fn fiona(d: Option<&Daemon>, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(fiona_bin!());
    cmd.args(args);
    if let Some(d) = d {
        cmd.arg("--data-dir").arg(&d.data_dir);
    }
    with_stdin(&mut cmd, stdin)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A refused command: exit status 1 and `reason` on stderr.
fn refused(o: &Output, reason: &str) {
    assert!(!o.status.success(), "should be refused: {}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(reason), "expected `{reason}` in: {err}");
}

/// The HTTP status of a login on the web page (303: logged in, 401: refused). The password
/// goes to curl on stdin, as a browser's form would send it.
fn login(web: &str, name: &str, password: &str) -> String {
    let out = with_stdin(
        Command::new("curl").args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Origin: https://{web}"),
            "--data-urlencode",
            &format!("name={name}"),
            "--data-urlencode",
            "password@-",
            &format!("https://{web}/login"),
        ]),
        password,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn users(d: &Daemon) -> Value {
    d.json(&["user", "list"])
}

fn user<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {list}"))
}

/// The Unix user this test runs as: the actor the daemon must name (`user:NAME`).
fn unix_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid{}", nix::unistd::geteuid()))
}

fn config(hash: &str) -> String {
    format!(
        r#"
[projects.PROJ1]
participant_pattern = "PROJ1-[0-9]{{4}}"
events = ["baseline"]
approval_start = "2025-01-01"
approval_end = "2099-12-31"

[web]
listen = "127.0.0.1:0"

[[web.accounts]]
name = "bundle"
password_hash = "{hash}"
roles = {{ PROJ1 = "viewer" }}
"#
    )
}

#[test]
fn local_accounts_are_managed_with_fiona_user() {
    require_tool("curl");
    let tmp = tempfile::tempdir().unwrap();

    // `fiona user hash`: no daemon; the hash verifies and provisions a configured account.
    let out = fiona(
        None,
        &["user", "hash", "bundle"],
        &format!("{PROVISIONED}\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(fiona::web::auth::verify_password(&hash, PROVISIONED));
    assert!(!fiona::web::auth::verify_password(&hash, FIRST));
    refused(
        &fiona(None, &["user", "hash"], "too short\n"),
        "at least 12 characters",
    );
    refused(&fiona(None, &["user", "hash"], ""), "no password on stdin");

    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: config(&hash),
            ..Options::default()
        },
    );
    let check = Command::new(fiona_bin!())
        .args(["check-config", "--config"])
        .arg(&d.config_path)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        !text(&check).contains(&hash),
        "check-config printed the hash"
    );
    let web = std::fs::read_to_string(d.data_dir.join("run/web.addr"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(
        login(&web, "bundle", PROVISIONED),
        "303",
        "configured account"
    );

    // Add: the password from stdin; listed with its roles, never with a hash.
    let out = fiona(
        Some(&d),
        &["user", "add", "alice", "--role", "PROJ1=assigner"],
        &format!("{FIRST}\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "alice added: PROJ1:assigner"
    );
    let list = users(&d);
    let alice = user(&list, "alice");
    assert_eq!(alice["source"], "local");
    assert_eq!(alice["grants"]["roles"]["PROJ1"], "assigner");
    assert_eq!(alice["grants"]["admin"], false);
    assert_eq!(alice["disabled"], false);
    assert_eq!(user(&list, "bundle")["source"], "config");
    assert_eq!(user(&list, "bundle")["grants"]["roles"]["PROJ1"], "viewer");
    let table = d.cli(&["user", "list"]);
    assert!(table.status.success());
    for shown in [list.to_string(), text(&table)] {
        assert!(!shown.contains("argon2"), "a hash is listed: {shown}");
        assert!(!shown.contains("password_hash"), "{shown}");
        assert!(!shown.contains(FIRST), "{shown}");
    }
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.lines().any(|l| l.starts_with("alice ")
            && l.contains("PROJ1:assigner")
            && l.contains("active")),
        "{table}"
    );
    assert_eq!(login(&web, "alice", FIRST), "303");

    // Bad requests, each with its reason; nothing changes.
    let add = |name: &str, extra: &[&str], pw: &str| {
        let mut a = vec!["user", "add", name];
        a.extend_from_slice(extra);
        fiona(Some(&d), &a, pw)
    };
    refused(
        &add("bob", &["--admin"], "short\n"),
        "the password must have at least 12 characters",
    );
    refused(
        &add("bobbobbobbob", &["--admin"], "BOBBOBBOBBOB\n"),
        "must not be the account name",
    );
    refused(
        &add("bob", &["--role", "NOPE=viewer"], &format!("{FIRST}\n")),
        "project NOPE is not configured",
    );
    refused(
        &add("bob", &["--role", "PROJ1=boss"], &format!("{FIRST}\n")),
        "`boss` is not a role (viewer, assigner, manager)",
    );
    refused(
        &add("bob", &["--role", "PROJ1"], &format!("{FIRST}\n")),
        "expected PROJECT=ROLE",
    );
    refused(
        &add("bad/name", &["--admin"], &format!("{FIRST}\n")),
        "is not a valid account name",
    );
    refused(&add("bob", &["--admin"], ""), "no password on stdin");
    refused(
        &add("alice", &["--admin"], &format!("{FIRST}\n")),
        "account `alice` exists already",
    );
    refused(
        &add("bundle", &["--admin"], &format!("{FIRST}\n")),
        "`bundle` is an account of the configuration",
    );
    refused(
        &fiona(
            Some(&d),
            &["user", "passwd", "nobody"],
            &format!("{SECOND}\n"),
        ),
        "no local account `nobody`",
    );
    refused(
        &d.cli(&["user", "disable", "nobody"]),
        "no local account `nobody`",
    );
    for change in [vec!["disable"], vec!["roles", "--admin"]] {
        let mut a = vec!["user"];
        a.extend_from_slice(&change);
        a.insert(2, "bundle");
        refused(
            &d.cli(&a),
            "account of the configuration ([[web.accounts]]): change it there",
        );
    }
    refused(
        &fiona(
            Some(&d),
            &["user", "passwd", "bundle"],
            &format!("{SECOND}\n"),
        ),
        "change it there",
    );
    refused(
        &fiona(Some(&d), &["user", "passwd", "alice"], "short\n"),
        "at least 12 characters",
    );
    refused(
        &d.cli(&["user", "roles", "alice", "--role", "NOPE=manager"]),
        "project NOPE is not configured",
    );
    let after = users(&d);
    assert_eq!(after.as_array().unwrap().len(), 2, "{after}");
    assert_eq!(user(&after, "alice"), alice, "refusals changed nothing");

    // A new password: the old one stops working, the new one works.
    let out = fiona(
        Some(&d),
        &["user", "passwd", "alice"],
        &format!("{SECOND}\r\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(login(&web, "alice", FIRST), "401");
    assert_eq!(login(&web, "alice", SECOND), "303");

    // New roles replace the old ones.
    let out = d.cli(&[
        "user",
        "roles",
        "alice",
        "--admin",
        "--role",
        "PROJ1=manager",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let a = users(&d);
    let a = user(&a, "alice");
    assert_eq!(a["grants"]["admin"], true);
    assert_eq!(a["grants"]["roles"]["PROJ1"], "manager");

    // Disabled: listed so, and no login; enabled: logs in again.
    let out = d.json(&["user", "disable", "alice"]);
    assert_eq!(out["user"]["disabled"], true, "{out}");
    assert_eq!(user(&users(&d), "alice")["disabled"], true);
    assert_eq!(login(&web, "alice", SECOND), "401");
    let out = d.cli(&["user", "enable", "alice"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(user(&users(&d), "alice")["disabled"], false);
    assert_eq!(login(&web, "alice", SECOND), "303");

    // Audited, in order, with the Unix user as actor; no password or hash in the trail.
    let trail = d.json(&["audit"]);
    let accounts: Vec<&Value> = trail
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"].as_str().unwrap_or("").starts_with("account_"))
        .collect();
    let actions: Vec<&str> = accounts
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "account_add",
            "account_password",
            "account_roles",
            "account_disable",
            "account_enable"
        ],
        "{trail}"
    );
    let me = unix_user();
    for r in &accounts {
        let actor = r["actor"].as_str().unwrap();
        assert!(
            actor.starts_with("user:") && actor.contains(&me),
            "actor {actor}, expected user:{me}"
        );
        assert!(r["detail"].as_str().unwrap().contains("alice"), "{r}");
    }
    let trail = trail.to_string();
    for secret in [FIRST, SECOND, "argon2"] {
        assert!(!trail.contains(secret), "{secret} in the audit trail");
    }

    // No password and no hash in the daemon's log.
    let log = d.log();
    for secret in [FIRST, SECOND, PROVISIONED, "argon2", hash.as_str()] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}
