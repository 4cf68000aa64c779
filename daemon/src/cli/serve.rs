//! `fiona serve` (the daemon: DICOM node, pipeline and control API, until SIGTERM or
//! SIGINT) and `fiona check-config` (validate a configuration file, start nothing).

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::Global;
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
}

pub fn serve(g: &Global, a: ServeArgs) -> Result<(), String> {
    g.no_json("serve")?;
    let mut cfg = g.config()?;
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
    run(cfg)
}

fn run(cfg: Config) -> Result<(), String> {
    let sink = crate::logging::init();
    tracing::debug!(?sink, "logging initialised");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fiona-rt")
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    rt.block_on(async move {
        let daemon = tokio::task::spawn_blocking(move || crate::serve::Daemon::open(cfg))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let shutdown = CancellationToken::new();
        let s2 = shutdown.clone();
        tokio::spawn(async move {
            crate::serve::termination_signal().await;
            s2.cancel();
        });
        daemon.run(shutdown).await.map_err(|e| e.to_string())
    })
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
