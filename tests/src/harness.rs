//! Run the real `fiona` binary in a temp data directory on 127.0.0.1 and drive it with DCMTK.
//!
//! The daemon binds `127.0.0.1:0` and publishes the bound address in `run/dicom.addr`; the
//! harness waits for that file and for the control socket before a test talks to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Fail with a clear message when a peer tool is missing (CI installs DCMTK).
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not installed: run the README's test command (it installs dcmtk and dicom3tools)"
    );
}

/// A running daemon.
pub struct Daemon {
    bin: PathBuf,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log_path: PathBuf,
    /// Environment variables the daemon is started with (test switches).
    pub env: Vec<(String, String)>,
}

/// Settings a test usually changes; anything else goes in `extra_toml`.
#[derive(Debug, Clone)]
pub struct Options {
    pub ae_title: String,
    pub quiet_period_secs: u64,
    pub min_free_bytes: u64,
    pub extra_toml: String,
    /// Environment variables for the daemon (test switches, `NOTIFY_SOCKET`). The harness
    /// removes systemd's own (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`) unless set here.
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ae_title: "FIONA".into(),
            quiet_period_secs: 2,
            min_free_bytes: 0,
            extra_toml: String::new(),
            env: Vec::new(),
        }
    }
}

impl Daemon {
    /// Write a config for `data_dir` and start the daemon.
    pub fn start(bin: &Path, data_dir: &Path, opts: &Options) -> Daemon {
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let config_path = data_dir.parent().unwrap_or(data_dir).join(format!(
            "{}.toml",
            data_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("fiona")
        ));
        // The web page on a free port (its embedded default, 8443, would clash between tests),
        // unless the test configures `[web]` itself.
        let web = if opts.extra_toml.contains("[web]") {
            ""
        } else {
            "\n[web]\nlisten = \"127.0.0.1:0\"\n"
        };
        let toml = format!(
            "ae_title = \"{}\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nquiet_period_secs = {}\nmin_free_bytes = {}\n{}\n{web}",
            opts.ae_title,
            data_dir.display(),
            opts.quiet_period_secs,
            opts.min_free_bytes,
            opts.extra_toml
        );
        std::fs::write(&config_path, toml).expect("write config");
        let mut d = Daemon {
            bin: bin.to_owned(),
            data_dir: data_dir.to_owned(),
            config_path,
            child: None,
            addr: "127.0.0.1:0".parse().expect("addr"),
            log_path: data_dir.with_extension("log"),
            env: opts.env.clone(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let addr_file = self.data_dir.join("run").join("dicom.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open log");
        let child = Command::new(&self.bin)
            .args(["serve", "--config"])
            .arg(&self.config_path)
            // A test binary may ask for more (FIONA_TEST_LOG=debug): the log hygiene test.
            .env(
                "FIONA_LOG",
                std::env::var("FIONA_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn fiona");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = std::fs::read_to_string(&addr_file) {
                if let Ok(a) = s.trim().parse() {
                    self.addr = a;
                    if self.data_dir.join("run/control.sock").exists() {
                        break;
                    }
                }
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("fiona exited early ({st}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "fiona did not start; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The control socket file appears at bind; wait until it answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["status", "--json"]).status.code() != Some(0) {
            assert!(Instant::now() < deadline, "control socket never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Poll `done` until it holds; after `within` (a generous bound: no timing is asserted)
    /// fail with the daemon's log.
    pub fn wait_for(&self, what: &str, within: Duration, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < within,
                "timed out waiting for {what}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Send `files` with `storescu` (called AE `FIONA`); every one must be stored.
    pub fn store_ok(&self, files: &[PathBuf]) {
        let out = storescu(self.addr, "FIONA", &[], files);
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Whether the audit trail has a record `matches` accepts.
    pub fn audit_has(&self, matches: impl Fn(&serde_json::Value) -> bool) -> bool {
        self.json(&["audit"])
            .as_array()
            .is_some_and(|a| a.iter().any(matches))
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Run `fiona ARGS --data-dir DIR`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .expect("run fiona cli")
    }

    /// `fiona SUBCOMMAND --json`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.cli(&a);
        assert!(
            out.status.success(),
            "fiona {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json output")
    }

    /// `fiona assign STUDY --project P --participant ID --event E --json` (`study`: the
    /// study's key or accession number); panics when it fails.
    pub fn assign(
        &self,
        study: &str,
        project: &str,
        participant: &str,
        event: &str,
    ) -> serde_json::Value {
        self.json(&[
            "assign",
            study,
            "--project",
            project,
            "--participant",
            participant,
            "--event",
            event,
        ])
    }

    /// The first transfer (`fiona transfers`) once `done` holds for it; panics with the
    /// transfer and the log after 90 s.
    pub fn transfer_when(
        &self,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let t = self.json(&["transfers"])[0].clone();
            if done(&t) {
                return t;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "timed out waiting for {what}: {t}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// kill -9, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// After the daemon restarted itself (a provisioning bundle applied or rolled back): wait
    /// until its listener's address is published again and the control socket answers, and
    /// take the new address.
    pub fn reread_addr(&mut self) {
        let addr_file = self.data_dir.join("run").join("dicom.addr");
        self.wait_for("the listener's address", Duration::from_secs(60), || {
            std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
                .is_some()
                && self.cli(&["status", "--json"]).status.code() == Some(0)
        });
        let s = std::fs::read_to_string(&addr_file).expect("dicom.addr");
        self.addr = s.trim().parse().expect("dicom.addr");
    }

    /// Start again on the same data directory and config.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Peak resident set size of the daemon so far, in KiB (from /proc).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `storescu` to the daemon with `TCP_NODELAY=1` (Nagle dominates on loopback otherwise).
/// Make an image undecodable without touching its structure: Rows set to 300 with
/// `dcmodify`, so the pixel data is shorter than the header says (a pixel stage must park it).
pub fn make_undecodable(file: &Path) {
    require_tool("dcmodify");
    let st = Command::new("dcmodify")
        .args(["-nb", "-i", "(0028,0010)=300"])
        .arg(file)
        .status()
        .expect("run dcmodify");
    assert!(st.success(), "dcmodify {}", file.display());
}

pub fn storescu(addr: SocketAddr, called_ae: &str, args: &[&str], files: &[PathBuf]) -> Output {
    require_tool("storescu");
    Command::new("storescu")
        .env("TCP_NODELAY", "1")
        .args(["-aet", "TESTSCU", "-aec", called_ae])
        .args(args)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .args(files)
        .output()
        .expect("run storescu")
}

/// `echoscu` to the daemon.
pub fn echoscu(addr: SocketAddr, calling_ae: &str, called_ae: &str) -> Output {
    echoscu_with(addr, calling_ae, called_ae, &[])
}

/// `echoscu` to the daemon with extra options (e.g. DCMTK's TLS options).
pub fn echoscu_with(
    addr: SocketAddr,
    calling_ae: &str,
    called_ae: &str,
    extra: &[String],
) -> Output {
    require_tool("echoscu");
    Command::new("echoscu")
        .env("TCP_NODELAY", "1")
        .args(["-aet", calling_ae, "-aec", called_ae])
        .args(extra)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .output()
        .expect("run echoscu")
}

/// A file's data set bytes as stored by the daemon, by SOP Instance UID, found through
/// `fiona study --json` listings is not possible (no paths there), so tests walk `objects/`.
pub fn stored_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(days) = std::fs::read_dir(data_dir.join("objects")) else {
        return out;
    };
    for d in days.flatten() {
        if let Ok(files) = std::fs::read_dir(d.path()) {
            for f in files.flatten() {
                let p = f.path();
                if p.extension().and_then(|e| e.to_str()) == Some("dcm") {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// Start `storescu -v` (verbose: one line per response) in the background.
pub fn spawn_storescu_verbose(
    addr: SocketAddr,
    calling_ae: &str,
    args: &[&str],
    files: &[impl AsRef<std::ffi::OsStr>],
) -> Child {
    require_tool("storescu");
    Command::new("storescu")
        .env("TCP_NODELAY", "1")
        .args(["-v", "-aet", calling_ae, "-aec", "FIONA"])
        .args(args)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .args(files)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn storescu")
}

/// Run `storescu -v` to completion; returns its combined output.
pub fn storescu_verbose(
    addr: SocketAddr,
    calling_ae: &str,
    args: &[&str],
    files: &[impl AsRef<std::ffi::OsStr>],
) -> String {
    output_text(
        spawn_storescu_verbose(addr, calling_ae, args, files)
            .wait_with_output()
            .expect("storescu"),
    )
}

/// stdout and stderr of a finished process, as text.
pub fn output_text(out: Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// (file, response line) for every file `storescu -v` got a response for.
pub fn storescu_responses(log: &str) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut current: Option<PathBuf> = None;
    for line in log.lines() {
        if let Some(f) = line.strip_prefix("I: Sending file: ") {
            current = Some(PathBuf::from(f.trim()));
        } else if line.contains("Received Store Response") {
            if let Some(f) = current.take() {
                out.push((f, line.to_string()));
            }
        }
    }
    out
}

/// Files that `storescu -v` saw acknowledged with status Success.
pub fn acknowledged(log: &str) -> Vec<PathBuf> {
    storescu_responses(log)
        .into_iter()
        .filter(|(_, l)| l.contains("(Success)"))
        .map(|(f, _)| f)
        .collect()
}

/// Every indexed instance of the daemon: SOP Instance UID -> stored file.
pub fn indexed_instances(d: &Daemon) -> std::collections::BTreeMap<String, PathBuf> {
    let mut out = std::collections::BTreeMap::new();
    for s in d.json(&["studies"]).as_array().expect("studies") {
        let key = s["key"].as_str().expect("key");
        for i in d
            .json(&["study", key, "--instances"])
            .as_array()
            .expect("instances")
        {
            let uid = i["sop_instance_uid"].as_str().expect("uid").to_string();
            let file = d.data_dir.join(i["file"].as_str().expect("file"));
            assert!(out.insert(uid, file).is_none(), "an instance indexed twice");
        }
    }
    out
}

/// Temp files under the data directory that hold bytes: a half-written instance. (The
/// daemon keeps a few empty temp files ready in a pool; those are not partial.)
pub fn partial_temp_files(data_dir: &Path) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                let path = e.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.to_string_lossy().ends_with(".tmp")
                    && std::fs::metadata(&path)
                        .map(|m| m.len() > 0)
                        .unwrap_or(false)
                {
                    out.push(path);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(data_dir, &mut out);
    out
}

/// `fiona deid` for the test assignment (project PROJ1, participant PROJ001, event baseline),
/// with `location` = `("--data-dir", dir)` or `("--config", file)`.
pub fn fiona_deid(bin: &Path, location: (&str, &Path), input: &Path, output: &Path) -> Output {
    fiona_deid_command(bin, location, input, output)
        .output()
        .expect("run fiona deid")
}

/// The command [`fiona_deid`] runs, to add to it (e.g. an environment) before running it.
pub fn fiona_deid_command(
    bin: &Path,
    location: (&str, &Path),
    input: &Path,
    output: &Path,
) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "deid",
        "--project",
        "PROJ1",
        "--participant",
        "PROJ001",
        "--event",
        "baseline",
        location.0,
    ])
    .arg(location.1)
    .arg(input)
    .arg(output);
    c
}

/// A child process killed (and reaped) when dropped: peers such as `storescp` and
/// `dcmqrscp` that tests start.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until something accepts TCP connections on 127.0.0.1:`port` (10 s at most).
pub fn wait_until_listening(port: u16, what: &str) {
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{what} did not start listening on port {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// DCMTK `dcmqrscp` as the research PACS (AE title RESEARCH) in `dir` on `port`: it stores what
/// it receives and answers C-FIND. Killed when the guard is dropped.
pub fn dcmqrscp(dir: &Path, port: u16) -> KillOnDrop {
    require_tool("dcmqrscp");
    let db = dir.join("db");
    std::fs::create_dir_all(&db).unwrap();
    let cfg = dir.join("qr.cfg");
    std::fs::write(
        &cfg,
        format!(
            "NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n\
             HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n\
             AETable BEGIN\nRESEARCH {} RW (200, 1024mb) ANY\nAETable END\n",
            db.display()
        ),
    )
    .unwrap();
    let child = Command::new("dcmqrscp")
        .arg("-c")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(child);
    wait_until_listening(port, "dcmqrscp");
    guard
}

/// The Python of the venv `tests/run.sh` makes for the real-file tests (pydicom,
/// pydicom-data, deid-data, pylibjpeg, pynetdicom): `FIONA_TEST_PYTHON`, else run.sh's default
/// venv when it exists. Panics, saying how to get it, when there is none.
pub fn venv_python() -> PathBuf {
    let from_env = std::env::var_os("FIONA_TEST_PYTHON").map(PathBuf::from);
    let default = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/fiona-real-venv/bin/python"));
    let p = from_env
        .clone()
        .or(default.filter(|p| p.is_file()))
        .unwrap_or_default();
    assert!(
        p.is_file(),
        "this test needs the real-file Python venv (pydicom, pydicom-data, deid-data, \
         pylibjpeg, pynetdicom): run tests/run.sh, which installs it and exports \
         FIONA_TEST_PYTHON (now: {from_env:?})"
    );
    p
}

/// Whether the tests run as root (mounting a tmpfs needs it; CI runs as root).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A small tmpfs, unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the file system under `dir` with a ballast file, then give back `leave` bytes.
pub fn fill(dir: &std::path::Path, leave: u64) -> PathBuf {
    use std::io::Write;
    let p = dir.join("ballast");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0x5a_u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("ballast: {e}"),
        }
    }
    let _ = f.sync_all();
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(leave)).unwrap();
    let _ = f.sync_all();
    p
}
