//! `fiona serve`: open the quarantine and index, recover, and run the DICOM listener and the
//! control API until SIGTERM or SIGINT.
//!
//! Under systemd (`Type=notify`, `NOTIFY_SOCKET`): `READY=1` once recovery is done and the
//! listeners are bound, `STOPPING=1` at the first SIGTERM or SIGINT, and the watchdog's pings
//! and `STATUS=` lines in between (`watchdog.rs`). Without `NOTIFY_SOCKET` nothing is sent.

use std::io::Write;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::assign::Policy;
use crate::bundle::ConfigSource;
use crate::committer::Committer;
use crate::config::Config;
use crate::index::recovering::Recovering;
use crate::index::redb_store::RedbStore;
use crate::index::{Origin, RejectRecord, Store};
use crate::quarantine::{Quarantine, RejectedFile};
use crate::scp::{self, Node};

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("index: {0}")]
    Index(#[from] crate::index::StoreError),
    #[error("start-up recovery failed: {0}")]
    Recovery(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("control socket: {0}")]
    Control(std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Everything `serve` opened, before the listener runs. Tests use [`Daemon::open`] and
/// [`Daemon::run`] directly.
pub struct Daemon {
    pub node: Arc<Node>,
    /// De-identification of assigned, arrived studies into the outbound area.
    pub pipeline: Arc<crate::pipeline::Pipeline>,
    /// The TLS listener's configuration, when `[tls]` is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Daemon {
    /// Open (or create) the data directory, the index, run recovery, start the committer.
    pub fn open(config: Config) -> Result<Daemon, ServeError> {
        Self::open_from(config, ConfigSource::Defaults)
    }

    /// [`Daemon::open`], saying where the configuration came from (`fiona status`, the
    /// selftest); makes the box's key pair for provisioning bundles at first start.
    pub fn open_from(config: Config, source: ConfigSource) -> Result<Daemon, ServeError> {
        let data_dir = config.data_dir.clone();
        crate::header::InflateLimits {
            max_bytes: config.max_inflated_bytes,
            max_ratio: config.max_inflation_ratio,
        }
        .install();
        let dd = |source| ServeError::DataDir {
            path: data_dir.display().to_string(),
            source,
        };
        crate::quarantine::owner_only_umask();
        std::fs::create_dir_all(&data_dir).map_err(dd)?;
        // A data directory made by someone else, or by an older fiona, may be wider.
        let tightened = crate::quarantine::tighten(&data_dir).map_err(dd)?;
        if tightened > 0 {
            tracing::warn!(
                entries = tightened,
                "data directory had group or other permissions: made owner-only"
            );
        }
        let quarantine = Quarantine::open(&data_dir).map_err(dd)?;
        let store: Arc<dyn Store> =
            Arc::new(Recovering::new(RedbStore::open(&quarantine.index_path())?));
        let indexed = store.instance_keys()?;
        let s3 = store.clone();
        let s4 = store.clone();
        let recovery = quarantine
            .recover(
                &|k| indexed.contains(k),
                &|k| match s3.rejection(k) {
                    Ok(Some(r)) if r.evicted_ms.is_some() => RejectedFile::Evicted,
                    Ok(None) => RejectedFile::Unknown,
                    // Recorded, or the index cannot say: keep the file as it is.
                    _ => RejectedFile::Recorded,
                },
                &mut |key, file, bytes, mtime_ms| {
                    s4.record_rejection(&RejectRecord {
                        key: key.to_string(),
                        file: file.to_string(),
                        bytes,
                        received_ms: mtime_ms,
                        status: 0,
                        reason: "kept after a crash; the reason was lost".into(),
                        origin: Origin::default(),
                        evicted_ms: None,
                    })
                    .map_err(|e| std::io::Error::other(e.to_string()))
                },
            )
            .map_err(ServeError::Recovery)?;
        tracing::info!(
            temp_files_removed = recovery.temp_files_removed,
            orphans_removed = recovery.orphans_removed,
            rejected_reindexed = recovery.rejected_reindexed,
            evicted_removed = recovery.evicted_removed,
            "quarantine recovered"
        );
        if crate::pipeline::test_faults_enabled() {
            tracing::warn!(
                "test fault switches are on (FIONA_TEST_FAULTS=1): for tests only, never in service"
            );
        }
        let outbound_removed = crate::evict::recover(&*store, &data_dir)?;
        if outbound_removed > 0 {
            tracing::info!(
                directories = outbound_removed,
                "outbound copies of evicted studies removed"
            );
        }
        quarantine.start_pool().map_err(dd)?;
        let projects = config
            .compile_projects()
            .map_err(|e| ServeError::Other(e.to_string()))?;
        let policy = Arc::new(
            Policy::new(projects, &data_dir, config.unassigned_visible_days)
                .map_err(ServeError::Other)?,
        );
        let committer =
            Committer::start(store.clone(), quarantine.clone(), policy.clone()).map_err(dd)?;
        let tls = match &config.tls {
            Some(t) => Some(
                crate::tls::server_config(t).map_err(|e| ServeError::Other(format!("tls: {e}")))?,
            ),
            None => None,
        };
        let config = Arc::new(config);
        let wake = Arc::new(tokio::sync::Notify::new());
        let pipeline = Arc::new(
            crate::pipeline::Pipeline::new(
                store.clone(),
                quarantine.clone(),
                config.clone(),
                wake.clone(),
            )
            .map_err(ServeError::Other)?,
        );
        let box_key =
            crate::bundle::BoxKey::load_or_create(&data_dir).map_err(ServeError::Other)?;
        let mut node = Node::new(config, store, quarantine, committer, policy, wake);
        node.config_source = source;
        node.box_key = Some(Arc::new(box_key));
        let node = Arc::new(node);
        Ok(Daemon {
            node,
            pipeline,
            tls,
        })
    }

    /// Bind, publish the bound address in `run/dicom.addr` (and the TLS listener's in
    /// `run/dicom-tls.addr`), serve until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let cfg = self.node.config.clone();
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: cfg.listen.to_string(),
                    source,
                })?;
        let local = listener.local_addr().map_err(|source| ServeError::Listen {
            addr: cfg.listen.to_string(),
            source,
        })?;
        let tls_listener = match (&cfg.tls, &self.tls) {
            (Some(t), Some(config)) => {
                let l = TcpListener::bind(t.listen)
                    .await
                    .map_err(|source| ServeError::Listen {
                        addr: t.listen.to_string(),
                        source,
                    })?;
                let addr = l.local_addr().map_err(|source| ServeError::Listen {
                    addr: t.listen.to_string(),
                    source,
                })?;
                publish_addr(&self.node.quarantine, "dicom-tls.addr", &addr.to_string())
                    .map_err(ServeError::Control)?;
                tracing::info!(listen = %addr, "fiona listening for DICOM over TLS");
                Some((l, config.clone()))
            }
            _ => None,
        };
        let metrics_listener = match cfg.metrics.listen {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Listen {
                        addr: addr.to_string(),
                        source,
                    })?;
                let bound = l.local_addr().map_err(|source| ServeError::Listen {
                    addr: addr.to_string(),
                    source,
                })?;
                publish_addr(&self.node.quarantine, "metrics.addr", &bound.to_string())
                    .map_err(ServeError::Control)?;
                tracing::info!(listen = %bound, "fiona serving metrics");
                Some(l)
            }
            None => None,
        };
        let web_bound = crate::web::bind(&self.node)
            .await
            .map_err(ServeError::Other)?;
        if let Some(b) = &web_bound {
            publish_addr(&self.node.quarantine, "web.addr", &b.addr.to_string())
                .map_err(ServeError::Control)?;
        }
        publish_addr(&self.node.quarantine, "dicom.addr", &local.to_string())
            .map_err(ServeError::Control)?;
        let control_stop = CancellationToken::new();
        // Bound here, so READY=1 below means the control socket answers too.
        let control_listener = crate::control::bind(&self.node).map_err(ServeError::Control)?;
        let control = tokio::spawn(crate::control::serve_on(
            control_listener,
            self.node.clone(),
            local.to_string(),
            control_stop.clone(),
        ));
        tracing::info!(
            ae_title = %cfg.ae_title,
            listen = %local,
            max_associations = cfg.max_associations,
            "fiona listening"
        );
        let metrics = metrics_listener.map(|l| {
            tokio::spawn(crate::control::serve_metrics(
                self.node.clone(),
                l,
                control_stop.clone(),
            ))
        });
        let web = web_bound.map(|b| {
            tokio::spawn(crate::web::serve(
                b,
                self.node.clone(),
                local.to_string(),
                control_stop.clone(),
            ))
        });
        let pipeline_stop = CancellationToken::new();
        let pipeline = tokio::spawn(self.pipeline.clone().run(pipeline_stop.clone()));
        let housekeeping = tokio::spawn(housekeeping(self.node.clone(), pipeline_stop.clone()));
        let notifications = tokio::spawn(crate::notify::run(
            self.node.store.clone(),
            self.node.config.clone(),
            self.node.clock.clone(),
            Arc::new(tokio::sync::Notify::new()),
            pipeline_stop.clone(),
        ));
        // Nothing is sent without NOTIFY_SOCKET; a failed send changes nothing here (systemd
        // reports a unit that never became ready).
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        let watchdog = crate::watchdog::Watchdog::start(
            self.node.clone(),
            self.pipeline.clone(),
            local,
            shutdown.clone(),
        )
        .map_err(|e| ServeError::Other(format!("watchdog thread: {e}")))?;
        // A bundle on trial: the selftest decides whether it stays. Bundles dropped in the
        // inbox are applied as they come.
        let trial = tokio::spawn(crate::provision::run_trial(self.node.clone(), local));
        let inbox = tokio::spawn(crate::provision::watch_inbox(
            self.node.clone(),
            pipeline_stop.clone(),
        ));
        // A restart (a bundle applied or rolled back) stops the daemon like SIGTERM; `fiona
        // serve` then starts again on the configuration now current.
        let restart = self.node.restart.clone();
        let s2 = shutdown.clone();
        tokio::spawn(async move {
            restart.cancelled().await;
            tracing::info!("restarting on the configuration now current");
            s2.cancel();
        });
        let stopping = shutdown.clone();
        let restarting = self.node.restart.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            // A restart keeps the process (and its PID): systemd is told it reloads, and
            // READY=1 follows once the daemon runs again.
            let _ = if restarting.is_cancelled() {
                sd_notify::notify(&[
                    sd_notify::NotifyState::Reloading,
                    sd_notify::NotifyState::Status("restarting on a new configuration"),
                ])
            } else {
                sd_notify::notify(&[
                    sd_notify::NotifyState::Stopping,
                    sd_notify::NotifyState::Status("stopping"),
                ])
            };
        });
        let plain = scp::run(listener, self.node.clone(), None, shutdown.clone());
        match tls_listener {
            Some((l, config)) => {
                tokio::join!(
                    plain,
                    scp::run(l, self.node.clone(), Some(config), shutdown)
                );
            }
            None => plain.await,
        }
        watchdog.stop();
        pipeline_stop.cancel();
        trial.abort();
        let _ = inbox.await;
        if let Err(e) = pipeline.await {
            tracing::error!(error = %e, "pipeline task");
        }
        if let Err(e) = housekeeping.await {
            tracing::error!(error = %e, "housekeeping task");
        }
        if let Err(e) = notifications.await {
            tracing::error!(error = %e, "notification task");
        }
        control_stop.cancel();
        if let Some(m) = metrics {
            match m.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "metrics listener"),
                Err(e) => tracing::error!(error = %e, "metrics task"),
            }
        }
        if let Some(w) = web {
            if let Err(e) = w.await {
                tracing::error!(error = %e, "web task");
            }
        }
        match control.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ServeError::Control(e)),
            Err(e) => return Err(ServeError::Other(format!("control task: {e}"))),
        }
        for f in ["dicom.addr", "dicom-tls.addr", "metrics.addr", "web.addr"] {
            let _ = std::fs::remove_file(self.node.quarantine.run_dir().join(f));
        }
        tracing::info!("fiona stopped");
        Ok(())
    }
}

/// Housekeeping (`evict`): a pass at start and every `eviction.interval_secs`, on a blocking
/// thread. A pass that fails is logged and tried again at the next interval.
async fn housekeeping(node: Arc<Node>, stop: CancellationToken) {
    let s = crate::evict::Settings::from_config(&node.config);
    let mut last_pressure: Option<(String, std::time::Instant)> = None;
    loop {
        let n = node.clone();
        let s2 = s.clone();
        let r = tokio::task::spawn_blocking(move || {
            n.housekeeping.run_pass(
                &*n.store,
                &n.quarantine,
                &s2,
                "housekeeping",
                n.clock.now_ms(),
            )
        })
        .await;
        match r {
            Ok(Ok(report)) => {
                // Say why nothing may go, when space is short: on change, else every 10 min.
                if let Some(p) = report.pressure {
                    let again = last_pressure.as_ref().is_none_or(|(was, at)| {
                        *was != p || at.elapsed() >= std::time::Duration::from_secs(600)
                    });
                    if again {
                        tracing::warn!("disk space short and nothing may be evicted: {p}");
                        last_pressure = Some((p, std::time::Instant::now()));
                    }
                } else {
                    last_pressure = None;
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "housekeeping pass failed"),
            Err(e) => tracing::error!(error = %e, "housekeeping task"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(s.interval) => {}
        }
    }
}

fn publish_addr(q: &Quarantine, name: &str, addr: &str) -> std::io::Result<()> {
    let run = q.run_dir();
    let tmp = run.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{addr}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, run.join(name))
}

/// Resolve on the first SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = i.recv() => tracing::info!("SIGINT received, shutting down"),
            }
        }
        _ => std::future::pending().await,
    }
}
