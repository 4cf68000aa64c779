//! The daemon as a whole: `fiona status` (counts, disk, associations, the index's health,
//! the watchdog's checks),
//! `fiona health` (exit status for monitors), `fiona rejected` (the rejected area),
//! `fiona projects` (the configured projects) and `fiona audit` (the audit trail).

use super::output::{human_age, human_bytes, iso_ms, print_json};
use super::table::{Align, Table};
use super::{show, Global};
use crate::control::api::{AuditRecord, DiskReport, ProjectView, RejectRecord, StatusView};
use crate::control::client::call;
use crate::index::IoFailure;

#[derive(clap::Args, Debug)]
pub struct EvictArgs {
    /// List what a pass would evict now and why; change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn evict(g: &Global, a: EvictArgs) -> Result<(), String> {
    if a.dry_run {
        return show(g, call::evict_plan(), |p| {
            print_disk(&p.report);
            if p.candidates.is_empty() {
                println!("nothing would be evicted now");
                return;
            }
            let mut t = Table::new(&[
                ("WHAT", Align::Left),
                ("KEY", Align::Left),
                ("REASON", Align::Left),
                ("SIZE", Align::Right),
                ("SINCE", Align::Left),
            ]);
            for c in &p.candidates {
                t.row([
                    c.kind.clone(),
                    c.key.clone(),
                    c.reason.to_string(),
                    human_bytes(c.bytes),
                    iso_ms(c.since_ms),
                ]);
            }
            t.print();
        });
    }
    show(g, call::evict(), |r| {
        match &r.last_pass {
            Some(p) if p.at_ms == r.surveyed_ms => println!(
                "evicted {} studies ({} instances) and {} rejected files, {}",
                p.studies,
                p.instances,
                p.rejected_files,
                human_bytes(p.bytes)
            ),
            _ => println!("nothing evicted"),
        }
        print_disk(&r);
    })
}

/// The housekeeping report's lines.
fn print_disk(d: &DiskReport) {
    println!(
        "free {} of {} (evicting below {}, up to {})",
        human_bytes(d.free_bytes),
        human_bytes(d.total_bytes),
        human_bytes(d.high_water_free_bytes),
        human_bytes(d.target_free_bytes)
    );
    println!(
        "held {}: evictable {}, unsent transfers {}, parked {}, receiving {}, waiting {}",
        human_bytes(d.held_bytes),
        human_bytes(d.evictable_bytes),
        human_bytes(d.unsent_bytes),
        human_bytes(d.parked_bytes),
        human_bytes(d.receiving_bytes),
        human_bytes(d.waiting_bytes)
    );
    if let Some(p) = &d.pressure {
        println!("{p}");
    }
}

pub fn status(g: &Global) -> Result<(), String> {
    show(g, call::status(), |s| print_status(&s))
}

pub fn health(g: &Global) -> Result<(), String> {
    let client = g.client()?;
    // An unhealthy daemon answers 503 with the same body: it answered, it is just unhealthy.
    let v = client
        .send(&call::health().json())
        .map_err(|e| e.to_string())?;
    let h: crate::control::api::HealthView = super::parse(v.clone())?;
    if g.json {
        print_json(&v)?;
    } else if h.healthy {
        println!("healthy");
    }
    if h.healthy {
        Ok(())
    } else {
        Err(format!("unhealthy: {}", h.problems.join("; ")))
    }
}

pub fn rejected(g: &Global) -> Result<(), String> {
    show(g, call::rejected(), |v| print_rejected(&v))
}

pub fn projects(g: &Global) -> Result<(), String> {
    show(g, call::projects(), |v| print_projects(&v))
}

pub fn audit(g: &Global) -> Result<(), String> {
    show(g, call::audit(), |v| print_audit(&v))
}

fn print_status(s: &StatusView) {
    println!("fiona {} ({} on {})", s.version, s.ae_title, s.listen);
    let mut t = Table::headless(&[Align::Left, Align::Left]).gap(1);
    t.row(["data dir", s.data_dir.as_str()]);
    t.row(["uptime".to_string(), human_age(s.uptime_secs as i64)]);
    t.row([
        "quarantine".to_string(),
        format!(
            "{} studies ({} receiving, {} arrived), {} series, {} instances, {}",
            s.totals.studies,
            s.studies_receiving,
            s.studies_arrived,
            s.totals.series,
            s.totals.instances,
            human_bytes(s.totals.bytes)
        ),
    ]);
    t.row([
        "rejected".to_string(),
        format!(
            "{} instances, {}",
            s.totals.rejected,
            human_bytes(s.totals.rejected_bytes)
        ),
    ]);
    if s.instances_parked > 0 {
        t.row([
            "parked".to_string(),
            format!(
                "{} instances not passed on, {} transfers with nothing to send (see `fiona parked`)",
                s.instances_parked, s.transfers_parked
            ),
        ]);
    }
    t.row([
        "disk".to_string(),
        format!(
            "{} free of {} (floor {})",
            human_bytes(s.free_bytes),
            human_bytes(s.total_bytes),
            human_bytes(s.min_free_bytes)
        ),
    ]);
    if s.notifications_pending > 0 {
        t.row([
            "notifications".to_string(),
            format!(
                "{} waiting{}",
                s.notifications_pending,
                s.notifications_last_error
                    .as_deref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            ),
        ]);
    }
    let d = &s.disk;
    if d.surveyed_ms > 0 {
        t.row([
            "held".to_string(),
            format!(
                "{}: {} evictable, {} by unsent transfers, {} parked, {} receiving, {} waiting (grace, assign window)",
                human_bytes(d.held_bytes),
                human_bytes(d.evictable_bytes),
                human_bytes(d.unsent_bytes),
                human_bytes(d.parked_bytes),
                human_bytes(d.receiving_bytes),
                human_bytes(d.waiting_bytes)
            ),
        ]);
        if let Some(p) = &d.pressure {
            t.row(["DISK PRESSURE".to_string(), p.clone()]);
        }
        if let Some(p) = &d.last_pass {
            t.row([
                "last eviction".to_string(),
                format!(
                    "{}: {} studies, {} rejected files, {}",
                    iso_ms(p.at_ms),
                    p.studies,
                    p.rejected_files,
                    human_bytes(p.bytes)
                ),
            ]);
        }
    }
    t.row([
        "associations".to_string(),
        format!(
            "{} active, {} since start, {} refused",
            s.associations_active, s.associations_total, s.associations_refused
        ),
    ]);
    t.row([
        "since start".to_string(),
        format!(
            "{} stored, {} duplicates, {} rejected, {} refused for space",
            s.instances_stored_since_start,
            s.instances_duplicate_since_start,
            s.instances_rejected_since_start,
            s.instances_out_of_resources_since_start
        ),
    ]);
    let ix = &s.index;
    let index = match ix.failing {
        None if ix.io_errors == 0 => "ok".to_string(),
        None => format!(
            "ok ({} I/O errors since start, reopened {} times; last: {})",
            ix.io_errors,
            ix.reopened,
            ix.last_error.as_deref().unwrap_or("-")
        ),
        Some(kind) => format!(
            "FAILING ({}{}) for {}: {} I/O errors; last: {}",
            if ix.usable { "" } else { "cannot be opened, " },
            match kind {
                IoFailure::DiskFull => "disk full",
                IoFailure::Other => "I/O error",
            },
            human_age(
                ix.failing_since_ms
                    .map(|t| (time::OffsetDateTime::now_utc().unix_timestamp() * 1000 - t) / 1000)
                    .unwrap_or(0)
            ),
            ix.io_errors,
            ix.last_error.as_deref().unwrap_or("-")
        ),
    };
    t.row(["index".to_string(), index]);
    if !s.checks.is_empty() {
        let failing: Vec<String> = s
            .checks
            .iter()
            .filter(|c| !c.healthy)
            .map(|c| format!("{} FAILING: {}", c.check, c.detail))
            .collect();
        let line = if failing.is_empty() {
            let names: Vec<&str> = s.checks.iter().map(|c| c.check.as_str()).collect();
            format!("ok ({})", names.join(", "))
        } else {
            failing.join("; ")
        };
        t.row(["checks".to_string(), line]);
    }
    if let Some(src) = &s.config_source {
        t.row(["configuration".to_string(), src.describe()]);
    }
    match &s.selftest {
        Some(r) => {
            use crate::control::api::Verdict;
            let verdict = match r.verdict {
                Verdict::Ok => "passed".to_string(),
                Verdict::Warning => format!(
                    "passed with warnings ({})",
                    r.checks
                        .iter()
                        .filter(|c| c.verdict == Verdict::Warning)
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Verdict::Failure => format!("FAILED: {}", r.failures()),
            };
            t.row([
                "selftest".to_string(),
                format!("{verdict} at {}", crate::clock::iso_ms(r.time_ms)),
            ]);
        }
        None => t.row(["selftest", "not run since start (fiona selftest)"]),
    }
    if let Some(e) = &s.index_error {
        t.row([String::new(), format!("(counts above unavailable: {e})")]);
    }
    t.print();
}

fn print_rejected(v: &[RejectRecord]) {
    if v.is_empty() {
        println!("no rejected instances");
        return;
    }
    let mut t = Table::new(&[
        ("KEY", Align::Left),
        ("STATUS", Align::Right),
        ("BYTES", Align::Right),
        ("FROM", Align::Left),
        ("REASON", Align::Left),
    ]);
    for r in v {
        t.row([
            r.key.clone(),
            format!("{:#06x}", r.status),
            human_bytes(r.bytes),
            r.origin.calling_ae.clone(),
            r.reason.clone(),
        ]);
    }
    t.print();
}

fn print_projects(v: &[ProjectView]) {
    if v.is_empty() {
        println!("no projects configured (see docs/CONFIG.md, [projects.NAME])");
    }
    for p in v {
        println!(
            "{}  [{}{}]",
            p.name,
            p.state,
            p.refusal
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_else(|| ", takes assignments".into())
        );
        println!(
            "  participant IDs  {} ({} known)",
            p.participant_pattern, p.participants
        );
        println!("  events           {}", p.events.join(", "));
        println!(
            "  approval         {} {} .. {}",
            p.approval,
            p.approval_start.as_deref().unwrap_or("-"),
            p.approval_end.as_deref().unwrap_or("-")
        );
        if let Some(ae) = &p.auto_id_ae_title {
            println!("  auto-ID AE title {ae}");
        }
        if !p.destinations.is_empty() {
            println!("  destinations     {}", p.destinations.join(", "));
        }
        let t: Vec<String> = p
            .transfers
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        println!(
            "  transfers        {}",
            if t.is_empty() {
                "none".into()
            } else {
                t.join(", ")
            }
        );
    }
}

fn print_audit(v: &[AuditRecord]) {
    let mut t = Table::headless(&[
        Align::Right,
        Align::Left,
        Align::Left,
        Align::Left,
        Align::Left,
        Align::Left,
        Align::Left,
        Align::Left,
        Align::Left,
    ])
    .gap(1);
    let or_dash = |s: Option<&str>| s.unwrap_or("-").to_string();
    let empty_dash = |s: Option<&str>| s.filter(|s| !s.is_empty()).unwrap_or("-").to_string();
    for a in v {
        t.row([
            a.seq.to_string(),
            iso_ms(a.time_ms),
            a.action.clone(),
            a.actor.clone(),
            or_dash(a.study_key.as_deref()),
            or_dash(a.project.as_deref()),
            empty_dash(a.participant.as_deref()),
            empty_dash(a.event.as_deref()),
            a.detail.clone(),
        ]);
    }
    t.print();
}
