//! Arrival notifications (issue 16): when a transfer is verified at every destination, its
//! project's `[projects.NAME.notify]` channels get one message each, saying project,
//! participant ID, event, instance count, research StudyInstanceUID and time, nothing else.
//!
//! * A webhook gets an HTTP POST of the JSON [`Notice`] (ureq) with `X-Fiona-Signature:
//!   sha256=HEX`, the HMAC-SHA256 of the body under the project's `webhook_secret`, and
//!   `X-Fiona-Delivery: ID` (the outbox ID, the same on every retry, for deduplication).
//! * E-mail goes through `[smtp]` with STARTTLS (lettre), one message to the addresses.
//!
//! **Durable outbox.** [`enqueue`] writes one [`OutboxRecord`] per channel inside the index
//! transaction that marks the transfer verified, so a crash cannot separate the two. The
//! sender ([`run`]) delivers what is due, then removes the record and appends an audit record
//! (`notified`) in one transaction; a failure is retried with backoff (5 s doubling to an
//! hour), without end: a notification waits in the outbox until it is delivered. A crash
//! between a delivery and its removal sends that message once more, with the same delivery ID.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, SmtpConfig};
use crate::index::{Store, StoreError, Tables};
use crate::model::{AuditRecord, Channel, Notice, OutboxRecord, TransferRecord};
use crate::project::NotifyConfig;

/// The first wait after a failed delivery; doubled each time up to [`RETRY_MAX`].
pub const RETRY_BASE: Duration = Duration::from_secs(5);
pub const RETRY_MAX: Duration = Duration::from_secs(3600);
/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Queue the project's notifications of a transfer that was just verified (inside the
/// transaction that marks it). Returns how many were queued.
pub fn enqueue(
    t: &mut dyn Tables,
    cfg: &NotifyConfig,
    tr: &TransferRecord,
    now_ms: i64,
) -> Result<u32, StoreError> {
    let notice = Notice {
        project: tr.project.clone(),
        participant: tr.participant.clone(),
        event: tr.event.clone(),
        instances: tr.sent,
        research_study_uid: tr.research_study_uid.clone(),
        verified_at: crate::clock::iso_ms(now_ms),
    };
    let mut channels = Vec::new();
    if let Some(url) = &cfg.webhook {
        channels.push(Channel::Webhook { url: url.clone() });
    }
    if !cfg.email.is_empty() {
        channels.push(Channel::Email {
            to: cfg.email.clone(),
        });
    }
    let mut n = 0;
    for channel in channels {
        t.put_outbox(&OutboxRecord {
            id: ulid::Ulid::generate().to_string(),
            transfer: tr.id.clone(),
            channel,
            notice: notice.clone(),
            created_ms: now_ms,
            attempts: 0,
            next_attempt_ms: now_ms,
            last_error: None,
        })?;
        n += 1;
    }
    Ok(n)
}

/// `sha256=HEX`: the HMAC-SHA256 of `body` under `secret`, as `X-Fiona-Signature` carries it.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The wait before attempt `attempts + 1`.
pub fn backoff(attempts: u32) -> Duration {
    RETRY_BASE
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

/// Deliver one notification (blocking). The error says what went wrong, never a data value.
pub fn deliver(config: &Config, r: &OutboxRecord) -> Result<(), String> {
    match &r.channel {
        Channel::Webhook { url } => {
            let project = config
                .projects
                .get(&r.notice.project)
                .ok_or("the project is no longer configured")?;
            let secret = project
                .notify
                .webhook_secret
                .as_deref()
                .ok_or("the project has no notify.webhook_secret")?;
            post(url, secret, project.notify.webhook_ca.as_deref(), r)
        }
        Channel::Email { to } => {
            let smtp = config.smtp.as_ref().ok_or("no [smtp] server configured")?;
            mail(smtp, to, &r.notice)
        }
    }
}

fn post(
    url: &str,
    secret: &str,
    ca: Option<&std::path::Path>,
    r: &OutboxRecord,
) -> Result<(), String> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let body = serde_json::to_vec(&r.notice).map_err(|e| e.to_string())?;
    let mut tls = TlsConfig::builder();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| format!("webhook_ca {}: {e}", ca.display()))?;
        let cert =
            Certificate::from_pem(&pem).map_err(|e| format!("webhook_ca {}: {e}", ca.display()))?;
        tls = tls.root_certs(RootCerts::new_with_certs(&[cert]));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .tls_config(tls.build())
        .build()
        .into();
    let resp = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Fiona-Signature", signature(secret, &body))
        .header("X-Fiona-Delivery", &r.id)
        .send(&body[..])
        .map_err(|e| format!("webhook: {e}"))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("webhook answered HTTP {}", status.as_u16()))
    }
}

/// The e-mail's text: the notice's fields, one per line.
pub fn mail_text(n: &Notice) -> String {
    format!(
        "A transfer was verified at every research PACS of its project.\n\n\
         project: {}\nparticipant: {}\nevent: {}\ninstances: {}\nresearch StudyInstanceUID: {}\nverified at: {}\n",
        n.project, n.participant, n.event, n.instances, n.research_study_uid, n.verified_at
    )
}

fn mail(smtp: &SmtpConfig, to: &[String], n: &Notice) -> Result<(), String> {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{Message, SmtpTransport, Transport};
    let mut builder = Message::builder()
        .from(smtp.from.parse().map_err(|e| format!("smtp.from: {e}"))?)
        .subject(format!(
            "fiona: {} {} {} verified",
            n.project, n.participant, n.event
        ))
        .header(ContentType::TEXT_PLAIN);
    for a in to {
        builder = builder.to(a.parse().map_err(|e| format!("notify.email: {e}"))?);
    }
    let message = builder
        .body(mail_text(n))
        .map_err(|e| format!("e-mail: {e}"))?;
    let mut tls = TlsParameters::builder(smtp.host.clone());
    if let Some(ca) = &smtp.ca {
        let pem = std::fs::read(ca).map_err(|e| format!("smtp.ca {}: {e}", ca.display()))?;
        let cert =
            Certificate::from_pem(&pem).map_err(|e| format!("smtp.ca {}: {e}", ca.display()))?;
        tls = tls.add_root_certificate(cert);
    }
    let tls = tls.build_rustls().map_err(|e| format!("smtp TLS: {e}"))?;
    let mut transport = SmtpTransport::builder_dangerous(&smtp.host)
        .port(smtp.port)
        .tls(Tls::Required(tls))
        .timeout(Some(Duration::from_secs(smtp.timeout_secs)));
    if let (Some(u), Some(p)) = (&smtp.username, &smtp.password) {
        transport = transport.credentials(Credentials::new(u.clone(), p.clone()));
    }
    transport
        .build()
        .send(&message)
        .map(|_| ())
        .map_err(|e| format!("smtp: {e}"))
}

/// Record a delivery's outcome: delivered (removed, audited) or retried later.
pub fn record(
    store: &dyn Store,
    r: &OutboxRecord,
    outcome: &Result<(), String>,
    now_ms: i64,
) -> Result<(), StoreError> {
    store.write_assign(&mut |t| {
        match outcome {
            Ok(()) => {
                if t.remove_outbox(&r.id)? {
                    t.append_audit(AuditRecord {
                        seq: 0,
                        time_ms: now_ms,
                        actor: "notify".into(),
                        action: "notified".into(),
                        study_key: None,
                        project: Some(r.notice.project.clone()),
                        participant: Some(r.notice.participant.clone()),
                        event: Some(r.notice.event.clone()),
                        transfer: Some(r.transfer.clone()),
                        detail: format!(
                            "{} delivered after {} attempts",
                            r.channel.kind(),
                            r.attempts + 1
                        ),
                    })?;
                }
            }
            Err(why) => {
                if let Some(mut cur) = t.outbox_entry(&r.id)? {
                    cur.attempts += 1;
                    cur.next_attempt_ms = now_ms + backoff(cur.attempts).as_millis() as i64;
                    let mut why = why.clone();
                    why.truncate(why.floor_char_boundary(500));
                    cur.last_error = Some(why);
                    t.put_outbox(&cur)?;
                }
            }
        }
        Ok(())
    })
}

/// The sender: every second (or when woken), deliver what is due, one at a time.
pub async fn run(
    store: Arc<dyn Store>,
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    wake: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    loop {
        let s = store.clone();
        let now = clock.now_ms();
        let due = tokio::task::spawn_blocking(move || s.outbox()).await;
        let due: Vec<OutboxRecord> = match due {
            Ok(Ok(v)) => v.into_iter().filter(|r| r.next_attempt_ms <= now).collect(),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "notification outbox unreadable");
                Vec::new()
            }
            Err(e) => {
                tracing::error!(error = %e, "notification outbox task");
                Vec::new()
            }
        };
        for r in due {
            if stop.is_cancelled() {
                return;
            }
            let (s, c, clk) = (store.clone(), config.clone(), clock.clone());
            let done = tokio::task::spawn_blocking(move || {
                let outcome = deliver(&c, &r);
                let recorded = record(&*s, &r, &outcome, clk.now_ms());
                (r, outcome, recorded)
            })
            .await;
            match done {
                Ok((r, outcome, recorded)) => {
                    match &outcome {
                        Ok(()) => tracing::info!(
                            project = %r.notice.project,
                            transfer = %r.transfer,
                            channel = r.channel.kind(),
                            "notification delivered"
                        ),
                        Err(why) => tracing::warn!(
                            project = %r.notice.project,
                            transfer = %r.transfer,
                            channel = r.channel.kind(),
                            attempts = r.attempts + 1,
                            retry_in_s = backoff(r.attempts + 1).as_secs(),
                            error = %why,
                            "notification not delivered"
                        ),
                    }
                    if let Err(e) = recorded {
                        tracing::error!(error = %e, "notification outcome not recorded");
                    }
                }
                Err(e) => tracing::error!(error = %e, "notification task"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(30), RETRY_MAX);
    }
}
