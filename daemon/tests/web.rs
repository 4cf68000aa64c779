//! The web page in headless Chromium (WebDriver) and by hand-made requests (curl), on
//! 127.0.0.1: the setup link, accounts and roles, a study sent by `storescu` assigned on the
//! page and followed to verified at Orthanc, forged forms and URLs typed by hand, CSRF and
//! Origin checks, logout, expiry, lockout, coupling upload errors, security headers, a
//! panicking handler. Screenshots of each page go to `target/web-screenshots/` (and to
//! `docs/web/` with `FIONA_WEB_SCREENSHOTS=docs`).

mod common;

use common::pipeline::*;
use fiona_tests::web::{base_url, csrf_of, curl, curl_login, setup_link, Browser};

const ADMIN_PW: &str = "correct horse battery staple";
const NURSE_PW: &str = "nurse password 2026";
const OUTSIDER_PW: &str = "outsider password 2026";

fn shots() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var("FIONA_WEB_SCREENSHOTS").as_deref() {
        Ok("docs") => root.join("docs/web"),
        _ => root.join("target/web-screenshots"),
    }
}

fn config(port: u16) -> String {
    format!(
        "{}destinations = [\"research\"]\n\n[projects.PROJ2]\nparticipant_pattern = \"P2-[0-9]{{3}}\"\n\
         events = [\"baseline\"]\napproval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n\n\
         [destinations.research]\nhost = \"127.0.0.1\"\nport = {port}\nae_title = \"RESEARCH\"\n",
        PROJECT.trim_start()
    )
}

/// Wait until the daemon lists `accession` as a study that has arrived (quiet).
fn wait_arrived(d: &Daemon, accession: &str) {
    d.wait_for("study arrived", Duration::from_secs(60), || {
        d.json(&["studies"]).as_array().is_some_and(|v| {
            v.iter()
                .any(|s| s["accession_number"] == accession && s["state"] == "arrived")
        })
    });
}

#[test]
fn the_web_page_from_login_to_verified() {
    require_tool("storescu");
    require_tool("curl");
    let tmp = tempfile::tempdir().unwrap();
    let pacs_port = free_port();
    let pacs = orthanc(tmp.path(), pacs_port, "");
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: config(pacs_port),
            quiet_period_secs: 1,
            env: vec![("FIONA_TEST_FAULTS".into(), "1".into())],
            ..Options::default()
        },
    );
    let base = base_url(&d);
    let shots = shots();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (spec, files) = write(&tmp.path().join("in"), 7, Modality::Ct, 2, 2, 32);
    let mut seen_urls: Vec<String> = Vec::new();
    let mut seen_titles: Vec<String> = Vec::new();

    rt.block_on(async {
        let b = Browser::start().await;

        // A fresh box: every page says set-up is needed; the link from the log works once.
        b.goto(&format!("{base}/")).await;
        assert!(b.text().await.contains("no account yet"), "{}", b.text().await);
        let link = setup_link(&d);
        b.goto(&format!("{base}{link}")).await;
        b.screenshot(&shots, "setup").await;
        b.fill("name", "admin").await;
        b.fill("password", ADMIN_PW).await;
        b.fill("confirm", "not the same password").await;
        b.click("main form button[type=submit]").await;
        let t = b.text().await;
        assert!(t.contains("The two passwords differ"), "{t}");
        b.fill("name", "admin").await;
        b.fill("password", ADMIN_PW).await;
        b.fill("confirm", ADMIN_PW).await;
        b.click("main form button[type=submit]").await;
        let status = b.text().await;
        assert!(status.contains("Receiving") && status.contains("Signed in as admin"), "{status}");
        // Health names where the configuration came from and the last selftest (none yet).
        assert!(status.contains("selftest: not run since start"), "{status}");
        assert!(status.contains("configuration: file"), "{status}");
        assert_eq!(curl(&format!("{base}{link}"), None, None, None).status, 404, "the link works once");

        // The admin adds a study nurse (assigner in PROJ1) and an outsider (manager in PROJ2).
        b.goto(&format!("{base}/admin/users")).await;
        for (name, pw, project, role) in [("nurse", NURSE_PW, "PROJ1", "assigner"), ("outsider", OUTSIDER_PW, "PROJ2", "manager")] {
            b.fill("new-name", name).await;
            b.fill("new-password", pw).await;
            b.select(&format!("new-role-{project}"), role).await;
            b.click("form[action='/admin/users'] button[type=submit]").await;
            assert!(b.text().await.contains(&format!("Account {name} added")), "{}", b.text().await);
        }
        b.screenshot(&shots, "users").await;
        assert_eq!(b.unlabeled().await, Vec::<String>::new(), "Users: every control has a label");

        // A study arrives from a modality.
        d.store_ok(&files);
        wait_arrived(&d, &spec.accession);
        b.goto(&format!("{base}/")).await;
        b.screenshot(&shots, "status").await;
        b.click("form[action='/logout'] button").await;
        assert!(b.url().await.ends_with("/login"));

        // The nurse finds it on Assign, filters by accession number (a POST: the number stays
        // out of the URL), and assigns it.
        let t = b.login(&base, "nurse", NURSE_PW).await;
        assert!(t.contains("Signed in as nurse"), "{t}");
        assert!(!t.contains("Users"), "only admins see Users: {t}");
        b.goto(&format!("{base}/assign")).await;
        let list = b.text().await;
        assert!(list.contains(&spec.accession), "{list}");
        assert!(!list.contains(&spec.patient_name) && !list.contains(&spec.patient_id), "Assign shows no patient name or ID");
        b.fill("accession", &spec.accession).await;
        b.click("form[action='/assign'] button[type=submit]").await;
        assert!(b.text().await.contains("1 unassigned studies match"), "{}", b.text().await);
        b.screenshot(&shots, "assign").await;
        assert_eq!(b.unlabeled().await, Vec::<String>::new(), "Assign: every control has a label");
        // Usable in a narrow window: the page itself does not scroll sideways.
        b.window(400, 900).await;
        assert!(!b.overflows().await, "Assign is wider than a 400-pixel window");
        b.screenshot(&shots, "assign-narrow").await;
        b.window(1280, 1000).await;
        b.click("a[href^='/study/']").await;
        let study_url = b.url().await;
        let key = study_url.rsplit('/').next().unwrap().to_string();
        b.select("project", "PROJ1").await;
        b.fill("participant", "PROJ1-12").await;
        b.select("event", "baseline").await;
        b.click("main form button[type=submit]").await;
        let refused = b.text().await;
        assert!(refused.contains("does not match project `PROJ1`'s pattern `PROJ1-[0-9]{4}`"), "{refused}");
        b.screenshot(&shots, "study").await;
        assert_eq!(b.unlabeled().await, Vec::<String>::new(), "Study: every control has a label");
        b.fill("participant", "PROJ1-0001").await;
        b.select("event", "baseline").await;
        b.click("main form button[type=submit]").await;
        let transfer_url = b.url().await;
        assert!(transfer_url.contains("/transfer/"), "{transfer_url}");
        let transfer = transfer_url.rsplit('/').next().unwrap().to_string();
        let done = b
            .reload_until("transfer verified", Duration::from_secs(120), |t| t.contains("verified") || t.contains("failed"))
            .await;
        assert_eq!(b.text_of("transfer-state").await, "verified", "{done}");
        b.screenshot(&shots, "transfer").await;
        assert_eq!(pacs.stored_files(), 4, "Orthanc holds the study");
        b.goto(&format!("{base}/transfers")).await;
        let tl = b.text().await;
        assert!(tl.contains("PROJ1-0001") && tl.contains("verified"), "{tl}");
        b.screenshot(&shots, "transfers").await;
        let nurse = b.session().await.expect("session cookie");
        let csv = curl(&format!("{base}/transfers.csv?project=PROJ1"), Some(&nurse), None, None);
        assert_eq!(csv.status, 200);
        assert!(csv.body.starts_with("transfer,created,project,participant,event,state"), "{}", csv.body);
        assert!(csv.body.contains(&format!("{transfer},")) && csv.body.contains(",PROJ1-0001,baseline,verified,"), "{}", csv.body);

        // A coupling list with errors: nothing loaded, every bad line named.
        let bad = tmp.path().join("coupling.csv");
        std::fs::write(
            &bad,
            "accession_number,project,participant,event\nACC-1,PROJ1,PROJ1-0002,baseline\nACC-2,PROJ1,nope,baseline\nACC-3,PROJ1,PROJ1-0003,never\n",
        )
        .unwrap();
        b.goto(&format!("{base}/coupling")).await;
        b.fill_file("file", &bad).await;
        b.click("form[action='/coupling'] button[type=submit]").await;
        let rep = b.text().await;
        assert!(rep.contains("Nothing was loaded: 2 bad lines"), "{rep}");
        let html = b.html().await;
        assert!(html.contains("<td class=\"num\">3</td>") && html.contains("<td class=\"num\">4</td>"), "line numbers 3 and 4: {html}");
        b.screenshot(&shots, "coupling").await;
        assert_eq!(b.unlabeled().await, Vec::<String>::new(), "Coupling: every control has a label");
        let loaded = d.json(&["coupling", "list"]);
        assert_eq!(loaded.as_array().map(Vec::len), Some(0), "nothing loaded: {loaded}");

        // Forms without the session's CSRF token, or from another origin, change nothing.
        let form = |csrf: &str| format!("csrf={csrf}&project=PROJ1&participant=PROJ1-0009&event=baseline");
        let url = format!("{base}/study/{key}");
        let good = csrf_of(&url, &nurse);
        assert_eq!(curl(&url, Some(&nurse), Some(&form("")), Some(&base)).status, 403, "no token");
        assert_eq!(curl(&url, Some(&nurse), Some(&form(&"0".repeat(64))), Some(&base)).status, 403, "wrong token");
        assert_eq!(curl(&url, Some(&nurse), Some(&form(&good)), Some("https://evil.example")).status, 403, "other origin");
        assert_eq!(curl(&url, Some(&nurse), Some(&form(&good)), None).status, 403, "no origin");
        let audit = d.json(&["audit"]);
        assert!(
            !audit.as_array().unwrap().iter().any(|a| a["participant"] == "PROJ1-0009"),
            "a refused form changed nothing"
        );

        // Logout ends the session: the old cookie is worth nothing.
        b.click("form[action='/logout'] button").await;
        let after = curl(&format!("{base}/transfers"), Some(&nurse), None, None);
        assert_eq!((after.status, after.header("location").as_deref()), (303, Some("/login")));

        // The outsider (PROJ2) neither sees nor can post to PROJ1.
        let t = b.login(&base, "outsider", OUTSIDER_PW).await;
        assert!(t.contains("Signed in as outsider"), "{t}");
        let out = b.session().await.unwrap();
        for path in [
            format!("/transfer/{transfer}"),
            "/transfers?project=PROJ1".to_string(),
            "/transfers.csv?project=PROJ1".to_string(),
            "/audit?project=PROJ1".to_string(),
            "/admin/users".to_string(),
            "/review?project=PROJ1".to_string(),
        ] {
            assert_eq!(curl(&format!("{base}{path}"), Some(&out), None, None).status, 403, "{path}");
        }
        b.goto(&format!("{base}/transfer/{transfer}")).await;
        assert!(b.text().await.contains("Not allowed"));
        b.goto(&format!("{base}/transfers")).await;
        let tl = b.text().await;
        assert!(!tl.contains("PROJ1-0001"), "{tl}");
        let csrf = csrf_of(&format!("{base}/study/{key}"), &out);
        let forged = curl(&url, Some(&out), Some(&form(&csrf)), Some(&base));
        assert_eq!(forged.status, 403, "a forged form for PROJ1");
        let resend = curl(&format!("{base}/transfer/{transfer}/resend"), Some(&out), Some(&format!("csrf={csrf}")), Some(&base));
        assert_eq!(resend.status, 403, "resend of another project's transfer");
        b.click("form[action='/logout'] button").await;

        // Review lists what left the box for PROJ1: the pseudonym, none of the originals.
        b.login(&base, "admin", ADMIN_PW).await;
        b.goto(&format!("{base}/review?project=PROJ1")).await;
        let rv = b.text().await;
        assert!(rv.contains("1 transfers, 4 instances"), "{rv}");
        assert!(rv.contains("PatientName") && rv.contains("PROJ1-0001"), "{rv}");
        let html = b.html().await;
        for original in [&spec.patient_name, &spec.patient_id, &spec.accession, &spec.study_uid] {
            assert!(!html.contains(original.as_str()), "Review shows the original {original}");
        }
        b.screenshot(&shots, "review").await;

        // A manager sends the transfer again from its page; it goes through to verified again.
        b.goto(&format!("{base}/transfer/{transfer}")).await;
        b.click("form[action$='/resend'] button").await;
        let again = b
            .reload_until("resent transfer verified", Duration::from_secs(120), |t| {
                t.contains("verified") || t.contains("failed")
            })
            .await;
        assert_eq!(b.text_of("transfer-state").await, "verified", "{again}");
        assert!(d.audit_has(|a| a["action"] == "resend" && a["actor"] == "web:admin"));

        // The admin sees the audit trail with the web users as actors.
        b.goto(&format!("{base}/audit")).await;
        let at = b.text().await;
        assert!(at.contains("web:nurse") && at.contains("web:admin") && at.contains("account_add"), "{at}");
        b.screenshot(&shots, "audit").await;
        for (u, t) in b.history() {
            seen_urls.push(u);
            seen_titles.push(t);
        }
        b.close().await;
    });

    // Lockout after repeated failures, audited; the right password is refused meanwhile.
    for _ in 0..5 {
        assert!(curl_login(&base, "nurse", "wrong password!").is_none());
    }
    let locked = curl(
        &format!("{base}/login"),
        None,
        Some(&fiona_tests::web::form(&[
            ("name", "nurse"),
            ("password", NURSE_PW),
        ])),
        Some(&base),
    );
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert!(d.audit_has(|a| a["action"] == "web_lockout"
        && a["detail"]
            .as_str()
            .is_some_and(|s| s.contains("account nurse locked"))));

    // Security headers on every answer; TLS below 1.2 refused.
    let a = curl(&format!("{base}/login"), None, None, None);
    assert_eq!(
        a.header("strict-transport-security").as_deref(),
        Some("max-age=31536000")
    );
    let csp = a.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(a.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(a.header("cache-control").as_deref(), Some("no-store"));
    let old = Command::new("curl")
        .args([
            "-sk",
            "--tls-max",
            "1.1",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("{base}/login"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&old.stdout),
        "000",
        "TLS 1.1 refused"
    );

    // A handler that panics answers 500; the daemon goes on.
    let admin = curl_login(&base, "admin", ADMIN_PW).expect("admin login");
    assert_eq!(
        curl(&format!("{base}/fault/panic"), Some(&admin), None, None).status,
        500
    );
    assert_eq!(
        curl(&format!("{base}/"), Some(&admin), None, None).status,
        200
    );
    assert_eq!(
        fiona_tests::harness::echoscu(d.addr, "TEST", "FIONA")
            .status
            .code(),
        Some(0)
    );

    // A client that names an IP address as the TLS server name (wrk does): rustls warns and
    // quotes it; that line, peer bytes, must not reach the log.
    let host = base.trim_start_matches("https://").to_string();
    let sni = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo | timeout 10 openssl s_client -connect {host} -servername 127.0.0.1"
        ))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&sni.stdout).contains("BEGIN CERTIFICATE"),
        "handshake"
    );
    assert_eq!(
        curl(&format!("{base}/"), Some(&admin), None, None).status,
        200
    );
    assert!(
        !d.log().contains("SNI"),
        "rustls's warning quoting the client's server name"
    );

    // No accession number, patient name or ID in a URL, a page title or the log.
    let log = d.log();
    for secret in [&spec.accession, &spec.patient_name, &spec.patient_id] {
        assert!(!log.contains(secret.as_str()), "the log holds {secret}");
        for u in seen_urls.iter().chain(seen_titles.iter()) {
            assert!(!u.contains(secret.as_str()), "{u} holds {secret}");
        }
    }
}

/// Make the first admin through the setup link, by hand.
fn first_admin(d: &Daemon, base: &str) {
    let link = setup_link(d);
    let a = curl(
        &format!("{base}{link}"),
        None,
        Some(&fiona_tests::web::form(&[
            ("name", "admin"),
            ("password", ADMIN_PW),
            ("confirm", ADMIN_PW),
        ])),
        Some(base),
    );
    assert_eq!(a.status, 303, "{}", a.body);
}

#[test]
fn sessions_end_when_idle_and_when_too_old() {
    require_tool("curl");
    let tmp = tempfile::tempdir().unwrap();
    // Idle after 2 s, at most 6 s after login.
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: "[web]\nlisten = \"127.0.0.1:0\"\nsession_idle_minutes = 0.0334\nsession_max_hours = 0.00167\n".into(),
            ..Options::default()
        },
    );
    let base = base_url(&d);
    first_admin(&d, &base);
    let home = format!("{base}/");
    let ok = |c: &str| curl(&home, Some(c), None, None).status == 200;

    // Idle: a session unused for longer than the idle time is gone.
    let c = curl_login(&base, "admin", ADMIN_PW).unwrap();
    assert!(ok(&c));
    std::thread::sleep(Duration::from_millis(2500));
    let gone = curl(&home, Some(&c), None, None);
    assert_eq!(
        (gone.status, gone.header("location").as_deref()),
        (303, Some("/login"))
    );

    // Absolute: a session used every half second still ends, 6 s after login.
    let c = curl_login(&base, "admin", ADMIN_PW).unwrap();
    let start = Instant::now();
    while ok(&c) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the session never ended"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "ended after {:?}, before the absolute limit",
        start.elapsed()
    );
}

#[test]
fn directory_accounts_log_in_with_the_roles_of_their_groups() {
    require_tool("curl");
    let tmp = tempfile::tempdir().unwrap();
    let slapd = fiona_tests::ldap::Slapd::start(&tmp.path().join("slapd"));
    slapd.add_user("alice", "alice directory pw");
    slapd.add_user("bob", "bob directory pw");
    slapd.add_group("proj1-assigners", &["alice"]);
    let config = format!(
        "{}\n[web]\nlisten = \"127.0.0.1:0\"\n\n[web.ldap]\nurl = \"{}\"\nca = \"{}\"\n\
         bind_dn = \"uid={{user}},ou=people,{base}\"\nbase_dn = \"{base}\"\ngroup_base_dn = \"ou=groups,{base}\"\n\n\
         [web.ldap.groups]\n\"{}\" = [\"PROJ1:assigner\"]\n",
        PROJECT.trim_start(),
        slapd.ldaps_url,
        slapd.ca_pem.display(),
        slapd.group_dn("proj1-assigners"),
        base = slapd.base_dn,
    );
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: config,
            ..Options::default()
        },
    );
    let base = base_url(&d);
    // No local account but no admin group either: the setup link is armed.
    first_admin(&d, &base);
    let alice = curl_login(&base, "alice", "alice directory pw")
        .expect("alice logs in through the directory");
    let home = curl(&format!("{base}/"), Some(&alice), None, None);
    assert_eq!(home.status, 200);
    assert!(
        home.body.contains("Signed in as <strong>alice</strong>"),
        "{}",
        home.body
    );
    assert_eq!(
        curl(&format!("{base}/assign"), Some(&alice), None, None).status,
        200,
        "assigner in PROJ1"
    );
    assert_eq!(
        curl(&format!("{base}/admin/users"), Some(&alice), None, None).status,
        403,
        "not an admin"
    );
    assert!(
        curl_login(&base, "alice", "wrong").is_none(),
        "wrong password"
    );
    assert!(
        curl_login(&base, "bob", "bob directory pw").is_none(),
        "bob is in no mapped group"
    );
    assert!(d.log().contains("in no group mapped to a role"));
    assert!(!d.log().contains("directory pw"), "no password in the log");
}

#[test]
fn provisioned_accounts_log_in_with_their_roles_and_no_setup_link_is_offered() {
    require_tool("curl");
    let tmp = tempfile::tempdir().unwrap();
    let hash = fiona::web::auth::hash_password("viewer password 1").unwrap();
    let config = format!(
        "{}\n[web]\nlisten = \"127.0.0.1:0\"\n\n[[web.accounts]]\nname = \"vera\"\npassword_hash = \"{hash}\"\nroles = {{ PROJ1 = \"viewer\" }}\n\n\
         [[web.accounts]]\nname = \"gone\"\npassword_hash = \"{hash}\"\nadmin = true\ndisabled = true\n",
        PROJECT.trim_start()
    );
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: config,
            ..Options::default()
        },
    );
    let base = base_url(&d);
    assert!(
        !d.log().contains("/setup/"),
        "accounts exist: no setup link"
    );
    let vera = curl_login(&base, "vera", "viewer password 1").expect("vera logs in");
    let get = |path: &str| curl(&format!("{base}{path}"), Some(&vera), None, None).status;
    assert_eq!(get("/"), 200);
    assert_eq!(get("/transfers?project=PROJ1"), 200, "viewer of PROJ1");
    assert_eq!(get("/assign"), 403, "a viewer does not assign");
    assert_eq!(get("/coupling"), 403);
    assert_eq!(
        get("/review?project=PROJ1"),
        403,
        "a viewer is not a manager"
    );
    assert_eq!(get("/admin/users"), 403);
    assert!(curl_login(&base, "vera", "viewer password 2").is_none());
    assert!(
        curl_login(&base, "gone", "viewer password 1").is_none(),
        "a disabled account"
    );
}
