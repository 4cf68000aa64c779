//! `fiona serve` (the daemon: DICOM node, pipeline and control API, until SIGTERM or
//! SIGINT) and `fiona check-config` (validate a configuration file, start nothing).

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::Global;
use crate::bundle::{store, Attempt, ConfigSource};
use crate::clock::Clock;
use crate::config::Config;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Listen address, HOST:PORT (overrides the config file).
    #[arg(long)]
    listen: Option<String>,
    /// Our AE title (overrides the config file).
    #[arg(long)]
    ae_title: Option<String>,
    /// The web page's HTTPS address, HOST:PORT, or `off` (overrides the config file).
    #[arg(long)]
    web_listen: Option<String>,
    /// The directory of the trusted bundle keys (minisign `*.pub`, at most two), installed
    /// with the box.
    #[arg(long, env = "FIONA_BUNDLE_KEYS", default_value = crate::config::DEFAULT_BUNDLE_KEYS)]
    bundle_keys: std::path::PathBuf,
}

pub fn serve(g: &Global, a: ServeArgs) -> Result<(), String> {
    g.no_json("serve")?;
    let (mut cfg, source) = configuration(g)?;
    cfg.bundle_keys = a.bundle_keys;
    if let Some(l) = a.listen {
        cfg.listen = l.parse().map_err(|_| {
            format!("invalid --listen `{l}`: expected HOST:PORT, e.g. 127.0.0.1:11112")
        })?;
    }
    match a.web_listen.as_deref() {
        Some("off") => cfg.web.enabled = false,
        Some(l) => {
            cfg.web.listen = l.parse().map_err(|_| {
                format!("invalid --web-listen `{l}`: expected HOST:PORT (127.0.0.1:8443) or `off`")
            })?;
        }
        None => {}
    }
    if let Some(ae) = a.ae_title {
        cfg.ae_title = ae;
    }
    cfg.validate().map_err(|e| e.to_string())?;
    run(cfg, source)
}

/// The configuration to run: the current bundle's when one is applied (`--config` is then
/// ignored, with a warning), else the `--config` file, else the embedded defaults. A bundle
/// on trial that cannot even be loaded is rolled back here, and the one before it loaded.
fn configuration(g: &Global) -> Result<(Config, ConfigSource), String> {
    let cfg = g.config()?;
    let data_dir = cfg.data_dir.clone();
    let fallback = match &g.config {
        Some(p) => ConfigSource::File {
            path: p.display().to_string(),
        },
        None => ConfigSource::Defaults,
    };
    store::clean_staging(&data_dir);
    let Some(dir) = store::current_dir(&data_dir) else {
        return Ok((cfg, fallback));
    };
    match store::load_config(&dir, &data_dir) {
        Ok(bundled) => {
            if g.config.is_some() {
                eprintln!(
                    "fiona: --config is ignored: this box is configured by the bundle in {}",
                    dir.display()
                );
            }
            let info = store::current_info(&data_dir)
                .ok_or_else(|| format!("{}: the bundle's record is missing", dir.display()))?;
            Ok((bundled, ConfigSource::Bundle(info)))
        }
        Err(e) if matches!(store::pending(&data_dir), Ok(Some(_))) => {
            roll_back_at_start(
                &data_dir,
                &format!("its configuration cannot be loaded: {e}"),
            )?;
            configuration(g)
        }
        Err(e) => Err(format!(
            "the current bundle's configuration ({}) cannot be loaded: {e}",
            dir.display()
        )),
    }
}

/// A bundle on trial that stops the daemon from starting: back to the one before, the
/// reason recorded (and audited once the daemon runs, `provision::run_trial`).
fn roll_back_at_start(data_dir: &std::path::Path, reason: &str) -> Result<(), String> {
    let last = store::last_attempt(data_dir);
    let serial = store::pending(data_dir).ok().flatten().map(|p| p.serial);
    eprintln!("fiona: the bundle on trial (serial {serial:?}) is rolled back: {reason}");
    let attempt = Attempt {
        bundle_id: last.as_ref().and_then(|a| a.bundle_id.clone()),
        serial,
        signer: last.as_ref().and_then(|a| a.signer.clone()),
        result: "rolled_back".into(),
        code: Some("start".into()),
        reason: Some(format!("the daemon could not start on it: {reason}")),
        time_ms: crate::clock::SystemClock.now_ms(),
        audited: false,
    };
    store::rollback(data_dir, &attempt)
}

fn run(cfg: Config, source: ConfigSource) -> Result<(), String> {
    let sink = crate::logging::init();
    tracing::debug!(?sink, "logging initialised");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fiona-rt")
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    let data_dir = cfg.data_dir.clone();
    let outcome = rt.block_on(async move {
        let opened =
            tokio::task::spawn_blocking(move || crate::serve::Daemon::open_from(cfg, source))
                .await
                .map_err(|e| e.to_string())?;
        let daemon = match opened {
            Ok(d) => d,
            Err(e) => {
                if matches!(store::pending(&data_dir), Ok(Some(_))) {
                    roll_back_at_start(&data_dir, &e.to_string())?;
                    return Ok(true);
                }
                return Err(e.to_string());
            }
        };
        let restart = daemon.node.restart.clone();
        let shutdown = CancellationToken::new();
        let s2 = shutdown.clone();
        tokio::spawn(async move {
            crate::serve::termination_signal().await;
            s2.cancel();
        });
        let r = daemon.run(shutdown).await.map_err(|e| e.to_string());
        match r {
            Ok(()) => Ok(restart.is_cancelled()),
            Err(e) if matches!(store::pending(&data_dir), Ok(Some(_))) => {
                roll_back_at_start(&data_dir, &e)?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
    match outcome {
        Ok(true) => Err(restart_in_place()),
        Ok(false) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Start `fiona serve` again in this process (same PID, arguments and environment: systemd
/// sees the same main process), on the configuration now current. Returns only on failure.
fn restart_in_place() -> String {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "fiona".into());
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .exec();
    format!("cannot restart: {err}")
}

/// Validate the file named by `--config` and print the effective configuration.
pub fn check_config(g: &Global) -> Result<(), String> {
    g.no_json("check-config")?;
    let Some(file) = &g.config else {
        return Err("check-config checks a configuration file: name it with --config FILE".into());
    };
    let cfg = g.config()?;
    // What only the stages can check: each project's pixel stage and de-identification
    // settings, each destination's TLS files.
    crate::pipeline::build_stages(&cfg)?;
    println!("{file:?}: valid");
    println!("{cfg:#?}");
    Ok(())
}
