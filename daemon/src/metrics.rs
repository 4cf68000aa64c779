//! Prometheus metrics (`GET /metrics` on the control socket, and on `[metrics] listen` when
//! set), in the Prometheus text exposition format 0.0.4 (crate `prometheus-client`).
//!
//! Two kinds of values, two places:
//!
//! * **Live** ([`Metrics`], one per process, [`global`]): what code records as it works,
//!   counters and histograms the stages update (de-identification and OCR durations, per
//!   destination attempts, failures and send latency). A new live metric is a field of
//!   [`Metrics`], created in [`Metrics::new`] and registered in [`Metrics::register`]; code
//!   records into `metrics::global().FIELD`.
//! * **Read at scrape** ([`Sample`]): what already lives elsewhere and is only read when
//!   Prometheus asks: the receive stage's counters (`node::Stats`), transfers by state and
//!   destination queues (from the index), parked instances, free disk space, the watchdog's
//!   checks. A new scrape-time value is a field of [`Sample`] (filled where the sample is
//!   taken, `control::metrics_sample`) and one `gauge`/`counter` line in
//!   [`Sample::register`].
//!
//! Every name starts with `fiona_`. Labels carry only project names, destination names,
//! transfer states and check names (configuration and fixed text): never a patient value, a
//! UID, an accession number or anything a peer sent.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A destination, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabel {
    pub destination: String,
}

/// A project and a transfer state, as labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectStateLabels {
    project: String,
    state: String,
}

/// A watchdog check, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabel {
    check: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn send_histogram() -> Histogram {
    // 50 ms to about 7 minutes.
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

/// Live metrics: recorded by the code as it works.
#[derive(Debug)]
pub struct Metrics {
    /// Seconds to de-identify one instance (header engine and pixel stage together).
    pub deid_seconds: Histogram,
    /// Seconds of one OCR call (Tesseract on one frame).
    pub ocr_seconds: Histogram,
    /// Seconds of one send attempt (one association) per destination.
    pub send_seconds: HistogramFamily<DestinationLabel>,
    /// Send attempts begun per destination.
    pub send_attempts: Family<DestinationLabel, Counter>,
    /// Send attempts that did not store everything (retried later or given up).
    pub send_failures: Family<DestinationLabel, Counter>,
    /// Studies evicted by housekeeping passes since start (`evict.rs`).
    pub evicted_studies: Counter,
    /// Rejected files evicted since start.
    pub evicted_rejected: Counter,
    /// Bytes housekeeping deleted since start (originals, outbound copies, rejected files).
    pub evicted_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            // 10 ms to about 80 s.
            deid_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            ocr_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            send_seconds: Family::new_with_constructor(send_histogram),
            send_attempts: Family::default(),
            send_failures: Family::default(),
            evicted_studies: Counter::default(),
            evicted_rejected: Counter::default(),
            evicted_bytes: Counter::default(),
        }
    }

    /// A destination's label.
    pub fn destination(name: &str) -> DestinationLabel {
        DestinationLabel {
            destination: name.to_string(),
        }
    }

    /// Register every live metric (handles share their values) in `r`.
    fn register(&self, r: &mut Registry) {
        r.register(
            "deidentify_seconds",
            "Time to de-identify one instance (header and pixels)",
            self.deid_seconds.clone(),
        );
        r.register(
            "ocr_seconds",
            "Time of one OCR run on one frame",
            self.ocr_seconds.clone(),
        );
        r.register(
            "destination_send_seconds",
            "Time of one send attempt (one association) to a destination",
            self.send_seconds.clone(),
        );
        r.register(
            "destination_send_attempts",
            "Send attempts begun, per destination",
            self.send_attempts.clone(),
        );
        r.register(
            "destination_send_failures",
            "Send attempts that did not store every instance, per destination",
            self.send_failures.clone(),
        );
        r.register(
            "evicted_studies",
            "Studies evicted by housekeeping (retention or disk pressure) since start",
            self.evicted_studies.clone(),
        );
        r.register(
            "evicted_rejected_files",
            "Rejected files evicted by housekeeping since start",
            self.evicted_rejected.clone(),
        );
        r.register(
            "evicted_bytes",
            "Bytes housekeeping deleted since start",
            self.evicted_bytes.clone(),
        );
    }
}

/// The process's live metrics (one daemon per process: stages record into it without a
/// handle passed through every layer).
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Values read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Receive stage counters since start (`node::Stats`).
    pub instances_stored: u64,
    pub instances_duplicate: u64,
    pub instances_rejected: u64,
    pub instances_out_of_resources: u64,
    pub bytes_stored: u64,
    pub associations_active: u64,
    pub associations_total: u64,
    pub associations_refused: u64,
    /// Transfers by (project, state), from the index.
    pub transfers: BTreeMap<(String, String), u64>,
    /// Per destination: transfers de-identified and not yet sent there (nor given up).
    pub queue_depth: BTreeMap<String, u64>,
    /// Instances parked on transfers.
    pub instances_parked: u64,
    /// Free bytes of the data file system (`None`: could not be read).
    pub free_bytes: Option<u64>,
    /// The watchdog's checks: name and whether it passed.
    pub checks: Vec<(String, bool)>,
    /// The last housekeeping survey (`None` before the first).
    pub disk: Option<DiskSample>,
    /// Arrival notifications waiting in the outbox.
    pub notifications_pending: u64,
}

/// The last housekeeping survey's figures (`evict::DiskReport`, as plain numbers).
#[derive(Debug, Clone, Default)]
pub struct DiskSample {
    pub held_bytes: u64,
    pub evictable_bytes: u64,
    pub unsent_bytes: u64,
    pub parked_bytes: u64,
    pub studies_evicted: u64,
    /// Below the high-water mark with nothing evictable.
    pub pressure: bool,
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    r.register(name, help, ConstCounter::new(v));
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: u64) {
    let g: Gauge = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    r.register(name, help, g);
}

impl Sample {
    /// Register this sample's values in `r`.
    fn register(&self, r: &mut Registry) {
        counter(
            r,
            "instances_received",
            "Instances stored since start (acknowledged with success)",
            self.instances_stored,
        );
        counter(
            r,
            "instances_duplicate",
            "Instances received again since start (answered success, stored once)",
            self.instances_duplicate,
        );
        counter(
            r,
            "instances_rejected",
            "Instances refused since start (kept in the rejected area)",
            self.instances_rejected,
        );
        counter(
            r,
            "instances_refused_for_space",
            "Instances refused since start because the disk was full or below the floor",
            self.instances_out_of_resources,
        );
        counter(
            r,
            "received_bytes",
            "Bytes of instances stored since start",
            self.bytes_stored,
        );
        counter(
            r,
            "associations",
            "Associations accepted since start",
            self.associations_total,
        );
        counter(
            r,
            "associations_refused",
            "Connections and associations refused since start",
            self.associations_refused,
        );
        gauge(
            r,
            "associations_active",
            "Associations open now",
            self.associations_active,
        );
        let transfers = Family::<ProjectStateLabels, Gauge>::default();
        for ((project, state), n) in &self.transfers {
            transfers
                .get_or_create(&ProjectStateLabels {
                    project: project.clone(),
                    state: state.clone(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        r.register(
            "transfers",
            "Transfers by project and state (from the index)",
            transfers,
        );
        let queue = Family::<DestinationLabel, Gauge>::default();
        for (d, n) in &self.queue_depth {
            queue
                .get_or_create(&Metrics::destination(d))
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        r.register(
            "destination_queue_transfers",
            "Transfers de-identified and waiting to be sent to a destination",
            queue,
        );
        gauge(
            r,
            "instances_parked",
            "Instances parked on transfers (waiting for a person)",
            self.instances_parked,
        );
        if let Some(free) = self.free_bytes {
            gauge(
                r,
                "disk_free_bytes",
                "Free bytes of the data file system",
                free,
            );
        }
        if let Some(d) = &self.disk {
            for (name, help, v) in [
                (
                    "disk_held_bytes",
                    "Bytes of originals and rejected files the index names (last housekeeping survey)",
                    d.held_bytes,
                ),
                (
                    "disk_evictable_bytes",
                    "Bytes a housekeeping pass may delete now (retention due; under pressure every category)",
                    d.evictable_bytes,
                ),
                (
                    "disk_unsent_bytes",
                    "Bytes held by transfers not verified at every destination (never evicted)",
                    d.unsent_bytes,
                ),
                (
                    "disk_parked_bytes",
                    "Bytes held by studies with parked instances (never evicted)",
                    d.parked_bytes,
                ),
                (
                    "studies_evicted",
                    "Studies in the index whose files were evicted",
                    d.studies_evicted,
                ),
                (
                    "disk_pressure",
                    "1 when free space is below the high-water mark and nothing may be evicted",
                    u64::from(d.pressure),
                ),
            ] {
                gauge(r, name, help, v);
            }
        }
        gauge(
            r,
            "notifications_pending",
            "Arrival notifications waiting in the outbox",
            self.notifications_pending,
        );
        let checks = Family::<CheckLabel, Gauge>::default();
        for (c, ok) in &self.checks {
            checks
                .get_or_create(&CheckLabel { check: c.clone() })
                .set(i64::from(*ok));
        }
        r.register(
            "health_check",
            "Watchdog checks: 1 passing, 0 failing",
            checks,
        );
    }
}

/// The text exposition of the live metrics and `sample`.
pub fn encode(live: &Metrics, sample: &Sample) -> String {
    let mut r = Registry::with_prefix("fiona");
    live.register(&mut r);
    sample.register(&mut r);
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a metric.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &r) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_every_family_with_its_labels() {
        let m = Metrics::new();
        m.deid_seconds.observe(0.2);
        m.send_attempts
            .get_or_create(&Metrics::destination("research"))
            .inc();
        let mut s = Sample {
            instances_stored: 6,
            free_bytes: Some(1 << 30),
            checks: vec![("echo".into(), true), ("pipeline".into(), false)],
            disk: Some(DiskSample {
                evictable_bytes: 4096,
                pressure: true,
                ..DiskSample::default()
            }),
            ..Sample::default()
        };
        s.transfers.insert(("PROJ1".into(), "sent".into()), 1);
        s.queue_depth.insert("research".into(), 0);
        let text = encode(&m, &s);
        for line in [
            "fiona_instances_received_total 6",
            "fiona_transfers{project=\"PROJ1\",state=\"sent\"} 1",
            "fiona_destination_queue_transfers{destination=\"research\"} 0",
            "fiona_destination_send_attempts_total{destination=\"research\"} 1",
            "fiona_health_check{check=\"pipeline\"} 0",
            "fiona_health_check{check=\"echo\"} 1",
            "fiona_deidentify_seconds_count 1",
            "fiona_disk_free_bytes 1073741824",
            "fiona_disk_evictable_bytes 4096",
            "fiona_disk_pressure 1",
            "fiona_notifications_pending 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
