//! The daemon's shared state ([`Node`]), in the daemon layer: the receive stage (`scp`) and
//! the control API (`control`) both use it, and neither reaches the other through it.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, Throttle};
use crate::assign::Policy;
use crate::bundle::{BoxKey, ConfigSource};
use crate::clock::{Clock, SystemClock};
use crate::committer::Committer;
use crate::config::{Config, IpNet};
use crate::health::{Health, SelftestReport};
use crate::index::Store;
use crate::quarantine::Quarantine;

/// Counters of the receive stage, for `fiona status` and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub associations_active: AtomicU64,
    pub associations_total: AtomicU64,
    pub associations_refused: AtomicU64,
    pub instances_stored: AtomicU64,
    pub instances_duplicate: AtomicU64,
    pub instances_rejected: AtomicU64,
    pub instances_out_of_resources: AtomicU64,
    pub bytes_stored: AtomicU64,
}

/// The daemon's shared state: configuration, index, quarantine, group commit, counters,
/// assignment policy, and the receive stage's admission state. Built once by `serve`, shared
/// by the receive stage, the pipeline's wake-up and the control API.
pub struct Node {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The index (the authority on what is stored).
    pub store: Arc<dyn Store>,
    /// Where instance bytes go.
    pub quarantine: Quarantine,
    /// Group commit of index records.
    pub committer: Committer,
    /// Counters for status and logs.
    pub stats: Arc<Stats>,
    /// Projects, rules and secrets that assignment decides with.
    pub policy: Arc<Policy>,
    /// Called AE titles answered: ours, plus auto-ID and routing titles.
    pub(crate) called_titles: Vec<String>,
    /// Bounds concurrent associations.
    pub(crate) limit: Arc<Semaphore>,
    /// Budgets of connections before they associate (see `admission`).
    pub(crate) admission: Arc<Admission>,
    /// Log lines of refused connections, throttled.
    pub(crate) refusals_logged: Throttle,
    /// Parsed address allow-list (empty: everyone).
    pub(crate) allow_addrs: Vec<IpNet>,
    /// Wakes the pipeline (a new assignment or re-send need not wait for its next tick).
    pub pipeline_wake: Arc<tokio::sync::Notify>,
    /// What "now" is for the control API: a study's quiet period and the visibility window
    /// of unassigned studies (the system clock; tests hand in a manual one).
    pub clock: Arc<dyn Clock>,
    /// The last housekeeping report (disk, evictable, unsent) and the pass lock.
    pub housekeeping: Arc<crate::evict::Housekeeping>,
    /// The watchdog's latest verdicts (`watchdog.rs` writes them; status and metrics read).
    pub health: Arc<Health>,
    /// Cancelled to make `fiona serve` stop and start again on the configuration now current
    /// (a bundle applied or rolled back: `provision.rs`).
    pub restart: CancellationToken,
    /// Where the running configuration came from (`fiona status`, the selftest).
    pub config_source: ConfigSource,
    /// The box's key pair for provisioning bundles (made at first start).
    pub box_key: Option<Arc<BoxKey>>,
    /// The last selftest's report (`fiona selftest`, after a bundle is applied).
    pub selftest: Mutex<Option<SelftestReport>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").finish_non_exhaustive()
    }
}

impl Node {
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        quarantine: Quarantine,
        committer: Committer,
        policy: Arc<Policy>,
        pipeline_wake: Arc<tokio::sync::Notify>,
    ) -> Node {
        let mut called_titles = vec![config.ae_title.trim().to_string()];
        called_titles.extend(policy.projects.extra_called_ae_titles());
        Node {
            policy,
            called_titles,
            limit: Arc::new(Semaphore::new(config.max_associations)),
            admission: Arc::new(Admission::new(
                config.max_unassociated,
                config.max_connections_per_address,
            )),
            refusals_logged: Throttle::new(Duration::from_secs(10)),
            allow_addrs: config.address_allow_list(),
            config,
            store,
            quarantine,
            committer,
            stats: Arc::new(Stats::default()),
            pipeline_wake,
            clock: Arc::new(SystemClock),
            housekeeping: Arc::new(crate::evict::Housekeeping::default()),
            health: Arc::default(),
            restart: CancellationToken::new(),
            config_source: ConfigSource::Defaults,
            box_key: None,
            selftest: Mutex::new(None),
        }
    }
}
