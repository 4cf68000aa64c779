//! The web page from outside: headless Chromium driven over WebDriver (Debian's `chromium`
//! and `chromium-driver`, fantoccini), and plain HTTPS requests by `curl` for what a browser
//! would not send (forged forms, a missing CSRF token, another origin).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{free_port, require_tool, wait_until_listening, Daemon};

/// The session cookie's name.
pub const COOKIE: &str = "__Host-fiona";

/// The web page's base address of a daemon the harness started (`run/web.addr`).
pub fn base_url(d: &Daemon) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = std::fs::read_to_string(d.data_dir.join("run/web.addr")) {
            return format!("https://{}", s.trim());
        }
        assert!(
            Instant::now() < deadline,
            "the web page never started; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The one-time setup link from the daemon's log.
pub fn setup_link(d: &Daemon) -> String {
    let log = d.log();
    let i = log
        .find("/setup/")
        .unwrap_or_else(|| panic!("no setup link in the log:\n{log}"));
    let token: String = log[i + 7..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    format!("/setup/{token}")
}

/// A child and its process group, killed on drop.
struct KillGroupOnDrop(std::process::Child);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A headless Chromium under chromedriver, ended on drop.
pub struct Browser {
    pub client: fantoccini::Client,
    /// Every (URL, title) a page's text was read at.
    history: std::sync::Mutex<Vec<(String, String)>>,
    _driver: KillGroupOnDrop,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start chromedriver on a free port and a new headless Chromium session that accepts
    /// the page's self-signed certificate.
    pub async fn start() -> Browser {
        require_tool("chromedriver");
        require_tool("chromium");
        let port = free_port();
        // In a process group of its own, so the browsers it starts end with it (a test that
        // fails never reaches `close`).
        use std::os::unix::process::CommandExt;
        let driver = KillGroupOnDrop(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver"),
        );
        wait_until_listening(port, "chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--ignore-certificate-errors",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }),
        );
        caps.insert("acceptInsecureCerts".into(), serde_json::Value::Bool(true));
        // chromedriver on 127.0.0.1: plain HTTP, no TLS stack needed.
        let http = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = fantoccini::ClientBuilder::new(http)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("WebDriver session");
        Browser {
            client,
            history: Default::default(),
            _driver: driver,
            _profile: profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// The page's visible text (its URL and title go into the history).
    pub async fn text(&self) -> String {
        let (u, t) = (self.url().await, self.title().await);
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((u, t));
        // A page that refreshes itself may be replaced while it is read: read again.
        let mut tries = 0;
        loop {
            let r = match self.client.find(fantoccini::Locator::Css("body")).await {
                Ok(b) => b.text().await,
                Err(e) => Err(e),
            };
            match r {
                Ok(t) => return t,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 50, "page text: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// The text of the element with this id.
    pub async fn text_of(&self, id: &str) -> String {
        self.client
            .find(fantoccini::Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no element #{id}: {e}"))
            .text()
            .await
            .expect("text")
    }

    pub async fn html(&self) -> String {
        self.client.source().await.expect("page source")
    }

    pub async fn title(&self) -> String {
        self.client.title().await.expect("title")
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.expect("url").to_string()
    }

    /// Type into the field with this id (cleared first).
    pub async fn fill(&self, id: &str, value: &str) {
        let e = self
            .client
            .find(fantoccini::Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no field #{id}: {e}"));
        e.clear().await.expect("clear");
        e.send_keys(value).await.expect("type");
    }

    /// Choose a file for the file input with this id.
    pub async fn fill_file(&self, id: &str, path: &Path) {
        self.client
            .find(fantoccini::Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no file input #{id}: {e}"))
            .send_keys(&path.display().to_string())
            .await
            .expect("choose file");
    }

    /// Choose an option of the select with this id, by value.
    pub async fn select(&self, id: &str, value: &str) {
        let e = self
            .client
            .find(fantoccini::Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no select #{id}: {e}"));
        e.select_by_value(value).await.expect("select");
    }

    /// Click the element a CSS selector finds (a link or a submit button) and wait until the
    /// next page has loaded.
    pub async fn click(&self, css: &str) {
        let old = self
            .client
            .find(fantoccini::Locator::Css("html"))
            .await
            .expect("html");
        self.client
            .find(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("nothing matches {css}: {e}"))
            .click()
            .await
            .expect("click");
        let start = Instant::now();
        // The old page's root goes stale once the browser has left it.
        while old.tag_name().await.is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "clicking {css} loaded no page"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.wait_loaded().await;
    }

    async fn wait_loaded(&self) {
        let start = Instant::now();
        loop {
            let state = self
                .client
                .execute("return document.readyState", vec![])
                .await
                .ok()
                .and_then(|v| v.as_str().map(str::to_string));
            if state.as_deref() == Some("complete") {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the page never finished loading"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The session cookie's value, if the browser holds one.
    pub async fn session(&self) -> Option<String> {
        self.client
            .get_named_cookie(COOKIE)
            .await
            .ok()
            .map(|c| c.value().to_string())
    }

    /// Forget every cookie (a different person at the same browser).
    pub async fn forget(&self) {
        self.client
            .delete_all_cookies()
            .await
            .expect("delete cookies");
    }

    /// Log in on the login page; returns the page text after.
    pub async fn login(&self, base: &str, name: &str, password: &str) -> String {
        self.goto(&format!("{base}/login")).await;
        self.fill("name", name).await;
        self.fill("password", password).await;
        self.click("form[action='/login'] button[type=submit]")
            .await;
        self.text().await
    }

    /// Save a PNG of the page as `dir/name.png`.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        std::fs::create_dir_all(dir).expect("screenshot dir");
        let png = self.client.screenshot().await.expect("screenshot");
        let p = dir.join(format!("{name}.png"));
        std::fs::write(&p, png).expect("write screenshot");
        p
    }

    /// Reload until the page text satisfies `done` (a generous bound: no timing is
    /// asserted).
    pub async fn reload_until(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        loop {
            let t = self.text().await;
            if done(&t) {
                return t;
            }
            assert!(
                start.elapsed() < within,
                "{what}: page never got there:\n{t}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.client.refresh().await.expect("reload");
        }
    }

    /// Form controls of the page without a label (neither `<label for>` nor inside a
    /// `<label>`), by id or name: every control must have one.
    pub async fn unlabeled(&self) -> Vec<String> {
        let v = self
            .client
            .execute(
                "return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))\
                 .filter(e => e.labels.length === 0).map(e => e.id || e.name)",
                vec![],
            )
            .await
            .expect("script");
        serde_json::from_value(v).expect("a list of names")
    }

    /// Whether the page is wider than the window (a horizontal scroll bar for the whole
    /// page; wide tables scroll inside their own box instead).
    pub async fn overflows(&self) -> bool {
        self.client
            .execute(
                "return document.documentElement.scrollWidth > window.innerWidth",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(true)
    }

    pub async fn window(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("window size");
    }

    /// The (URL, title) of every page whose text was read.
    pub fn history(&self) -> Vec<(String, String)> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// The answer to a request made by curl (no certificate check: the page's own self-signed
/// one).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// `curl` a URL: `cookie` is the session, `form` a urlencoded body (then POST) and `origin`
/// the Origin header sent with it.
pub fn curl(url: &str, cookie: Option<&str>, form: Option<&str>, origin: Option<&str>) -> Answer {
    let dir = tempfile::tempdir().expect("tmp");
    let headers = dir.path().join("h");
    let mut c = Command::new("curl");
    c.args(["-sk", "-o", "-", "-D"]).arg(&headers);
    if let Some(k) = cookie {
        c.args(["-H", &format!("Cookie: {COOKIE}={k}")]);
    }
    if let Some(f) = form {
        c.args(["--data-raw", f]);
    }
    if let Some(o) = origin {
        c.args(["-H", &format!("Origin: {o}")]);
    }
    let out = c.arg(url).output().expect("run curl");
    let headers = std::fs::read_to_string(&headers).unwrap_or_default();
    let status = headers
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// A urlencoded form body.
pub fn form(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Log in with curl; returns the session cookie.
pub fn curl_login(base: &str, name: &str, password: &str) -> Option<String> {
    let a = curl(
        &format!("{base}/login"),
        None,
        Some(&form(&[("name", name), ("password", password)])),
        Some(base),
    );
    let c = a.header("set-cookie")?;
    let v = c.strip_prefix(&format!("{COOKIE}="))?;
    Some(v.split(';').next()?.to_string())
}

/// The CSRF token of the page at `url` for this session (from its first form).
pub fn csrf_of(url: &str, cookie: &str) -> String {
    let a = curl(url, Some(cookie), None, None);
    let i = a
        .body
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field at {url}: {}", a.status));
    a.body[i + 19..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect()
}
