//! Long operations of the control API as jobs inside the daemon.
//!
//! An admin command that may take minutes at project scale (`fiona verify --project`, which
//! asks the research PACS about every study; `fiona resend`, which reads every outbound file)
//! must not depend on one HTTP request staying open: the client's socket has a read timeout,
//! and a connection is no place to hold state for minutes. So `POST` starts a job and answers
//! at once with its ID; the client follows it (`GET /v1/jobs/ID?wait_ms=N`, which returns
//! when the job finishes or after at most [`MAX_WAIT`]), prints its progress and, when it is
//! done, its result.
//!
//! Bounds: at most [`MAX_RUNNING`] jobs run at once (more are refused, not queued); a
//! finished job's result is kept for [`KEEP_FOR`] and at most [`MAX_KEPT`] finished jobs are
//! kept (the oldest go first). Jobs do not survive a restart: one that was running is gone,
//! and the client says so. A job's result holds what its route would have answered (no patient
//! data beyond what that route shows).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Jobs running at once.
pub const MAX_RUNNING: usize = 4;
/// Finished jobs kept.
pub const MAX_KEPT: usize = 64;
/// How long a finished job's result is kept.
pub const KEEP_FOR: Duration = Duration::from_secs(3600);
/// The longest a `GET` waits for a job to finish (well under the client's read timeout).
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// How far a job is: `done` of `total` steps (what a step is depends on the job).
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn advance(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Done,
    Failed,
}

/// A job as the control API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    /// `verify`, `resend`.
    pub kind: String,
    pub state: JobState,
    /// Steps done and in all (e.g. transfers checked of those to check).
    pub done: u64,
    pub total: u64,
    pub started_ms: i64,
    #[serde(default)]
    pub finished_ms: Option<i64>,
    /// When done: what the operation's route answers.
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    /// When failed: why.
    #[serde(default)]
    pub error: Option<String>,
}

struct Entry {
    kind: String,
    started_ms: i64,
    progress: Arc<Progress>,
    /// Set once, when the job ends.
    outcome: Option<(i64, Result<serde_json::Value, String>)>,
    /// Woken when the job ends (waiting `GET`s).
    finished: Arc<tokio::sync::Notify>,
}

impl Entry {
    fn view(&self, id: &str) -> JobView {
        let (done, total) = self.progress.get();
        let (state, finished_ms, result, error) = match &self.outcome {
            None => (JobState::Running, None, None, None),
            Some((t, Ok(v))) => (JobState::Done, Some(*t), Some(v.clone()), None),
            Some((t, Err(e))) => (JobState::Failed, Some(*t), None, Some(e.clone())),
        };
        JobView {
            id: id.to_string(),
            kind: self.kind.clone(),
            state,
            done,
            total,
            started_ms: self.started_ms,
            finished_ms,
            result,
            error,
        }
    }
}

/// Why a job was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    #[error("{MAX_RUNNING} jobs are running already; try again when one has finished")]
    Busy,
}

/// The daemon's jobs, by ID (a ULID: sorts by start time).
#[derive(Default)]
pub struct Jobs {
    entries: Mutex<BTreeMap<String, Entry>>,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        // A panic while the lock was held leaves plain data behind (no invariant spans
        // more than one field's assignment), so the map is still usable.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drop finished jobs older than [`KEEP_FOR`], then the oldest finished beyond
    /// [`MAX_KEPT`].
    fn prune(map: &mut BTreeMap<String, Entry>, now: i64) {
        let keep_ms = KEEP_FOR.as_millis() as i64;
        map.retain(|_, e| e.outcome.as_ref().is_none_or(|(t, _)| now - t < keep_ms));
        let finished: Vec<String> = map
            .iter()
            .filter(|(_, e)| e.outcome.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        if finished.len() > MAX_KEPT {
            for k in &finished[..finished.len() - MAX_KEPT] {
                map.remove(k);
            }
        }
    }

    /// Start `work` as a job of `kind` on the runtime; returns its view at once.
    pub fn start<F, Fut>(self: &Arc<Self>, kind: &str, work: F) -> Result<JobView, JobError>
    where
        F: FnOnce(Arc<Progress>) -> Fut,
        Fut: std::future::Future<Output = Result<serde_json::Value, String>> + Send + 'static,
    {
        let now = now_ms();
        let progress = Arc::new(Progress::default());
        let finished = Arc::new(tokio::sync::Notify::new());
        let id = ulid::Ulid::generate().to_string();
        let view = {
            let mut map = self.lock();
            Self::prune(&mut map, now);
            if map.values().filter(|e| e.outcome.is_none()).count() >= MAX_RUNNING {
                return Err(JobError::Busy);
            }
            let e = Entry {
                kind: kind.to_string(),
                started_ms: now,
                progress: progress.clone(),
                outcome: None,
                finished: finished.clone(),
            };
            let v = e.view(&id);
            map.insert(id.clone(), e);
            v
        };
        let fut = work(progress);
        let jobs = self.clone();
        let kind = kind.to_string();
        tokio::spawn(async move {
            // A panic inside the job ends it as failed instead of leaving it running.
            let r = match tokio::spawn(fut).await {
                Ok(r) => r,
                Err(_) => Err("the job stopped unexpectedly (see the daemon's log)".into()),
            };
            match &r {
                Ok(_) => tracing::info!(job = %id, kind = %kind, "job done"),
                Err(e) => tracing::warn!(job = %id, kind = %kind, error = %e, "job failed"),
            }
            if let Some(e) = jobs.lock().get_mut(&id) {
                e.outcome = Some((now_ms(), r));
            }
            finished.notify_waiters();
        });
        Ok(view)
    }

    /// A job's view; `wait` (at most [`MAX_WAIT`]) for it to finish first when it is running.
    pub async fn get(&self, id: &str, wait: Duration) -> Option<JobView> {
        let notified = {
            let map = self.lock();
            let e = map.get(id)?;
            if e.outcome.is_some() || wait.is_zero() {
                return Some(e.view(id));
            }
            e.finished.clone()
        };
        // Registered before the state is read again, so an end in between is not missed.
        let woken = notified.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if self.lock().get(id).is_some_and(|e| e.outcome.is_none()) {
            let _ = tokio::time::timeout(wait.min(MAX_WAIT), woken).await;
        }
        self.lock().get(id).map(|e| e.view(id))
    }

    /// Every job kept, oldest first (without results).
    pub fn list(&self) -> Vec<JobView> {
        let mut map = self.lock();
        Self::prune(&mut map, now_ms());
        map.iter()
            .map(|(id, e)| JobView {
                result: None,
                ..e.view(id)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_reports_progress_and_its_result() {
        let jobs = Arc::new(Jobs::default());
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let v = jobs
            .start("verify", move |p| async move {
                p.set_total(2);
                p.advance();
                g.notified().await;
                p.advance();
                Ok(serde_json::json!([1, 2]))
            })
            .unwrap();
        assert_eq!(v.state, JobState::Running);
        // Running: a wait returns after its bound with the progress so far.
        let mut seen = jobs.get(&v.id, Duration::from_millis(50)).await.unwrap();
        while seen.done < 1 {
            seen = jobs.get(&v.id, Duration::from_millis(50)).await.unwrap();
        }
        assert_eq!(seen.state, JobState::Running);
        assert_eq!((seen.done, seen.total), (1, 2));
        gate.notify_one();
        let mut end = jobs.get(&v.id, MAX_WAIT).await.unwrap();
        while end.state == JobState::Running {
            end = jobs.get(&v.id, MAX_WAIT).await.unwrap();
        }
        assert_eq!(end.state, JobState::Done);
        assert_eq!(end.result, Some(serde_json::json!([1, 2])));
        assert_eq!((end.done, end.total), (2, 2));
        assert!(jobs.get("nope", Duration::ZERO).await.is_none());
        assert_eq!(jobs.list().len(), 1);
    }

    #[tokio::test]
    async fn running_jobs_are_bounded_and_failures_kept() {
        let jobs = Arc::new(Jobs::default());
        // Permits, not a notification: a job that has not started waiting yet still sees it.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut ids = Vec::new();
        for _ in 0..MAX_RUNNING {
            let g = gate.clone();
            let v = jobs
                .start("verify", move |_| async move {
                    let _ = g.acquire().await;
                    Err("peer gone".to_string())
                })
                .unwrap();
            ids.push(v.id);
        }
        assert_eq!(
            jobs.start("verify", |_| async { Ok(serde_json::Value::Null) })
                .unwrap_err(),
            JobError::Busy
        );
        gate.add_permits(MAX_RUNNING);
        for id in &ids {
            let mut v = jobs.get(id, MAX_WAIT).await.unwrap();
            while v.state == JobState::Running {
                v = jobs.get(id, MAX_WAIT).await.unwrap();
            }
            assert_eq!(v.state, JobState::Failed);
            assert_eq!(v.error.as_deref(), Some("peer gone"));
        }
        // Room again once they finished.
        jobs.start("verify", |_| async { Ok(serde_json::Value::Null) })
            .unwrap();
    }

    #[test]
    fn finished_jobs_are_pruned_by_age_and_number() {
        let mut map = BTreeMap::new();
        let entry = |finished: Option<i64>| Entry {
            kind: "verify".into(),
            started_ms: 0,
            progress: Arc::default(),
            outcome: finished.map(|t| (t, Ok(serde_json::Value::Null))),
            finished: Arc::default(),
        };
        let now = 10 * KEEP_FOR.as_millis() as i64;
        map.insert("00-old".to_string(), entry(Some(0)));
        map.insert("01-running".to_string(), entry(None));
        for i in 0..MAX_KEPT + 3 {
            map.insert(format!("02-{i:04}"), entry(Some(now)));
        }
        Jobs::prune(&mut map, now);
        assert!(!map.contains_key("00-old"));
        assert!(map.contains_key("01-running"));
        assert_eq!(map.len(), MAX_KEPT + 1);
        assert!(!map.contains_key("02-0000") && map.contains_key("02-0003"));
    }
}
