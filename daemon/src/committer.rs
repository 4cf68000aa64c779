//! Group commit: makes directory entries durable and commits index records for instances of
//! all associations together, so concurrent associations share one fsync of each directory
//! and one index commit.
//!
//! One OS thread owns the write side of the index. It takes every request waiting, fsyncs each
//! distinct directory once, commits the batch in one transaction, and only then answers each
//! waiter. A waiter whose answer is `Ok` may acknowledge its instance.
//!
//! If a commit fails, every instance of the batch is answered with the error (its file is
//! removed: it was never acknowledged, so the peer will resend). The error says whether the
//! disk was full, so the peer is told to retry later (0xA700) rather than that fiona failed.
//!
//! Liveness: the thread ticks its [`Beat`] on every loop, and the watchdog sends it a
//! [`Committer::probe`] each round, which an idle thread answers at once by ticking; a thread
//! stuck on a batch stops ticking, and one that died makes the probe fail.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::assign::Policy;
use crate::health::Beat;
use crate::index::{CommitOutcome, NewInstance, Store};
use crate::quarantine::{sync_dir, DurableFile, Quarantine};

/// Largest batch committed at once.
pub const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<CommitOutcome, CommitFailure>>;

/// Why a commit failed: a message (operation and OS error, no record values) and whether
/// the cause was a full disk.
#[derive(Debug, Clone)]
pub struct CommitFailure {
    pub message: String,
    pub disk_full: bool,
}

impl CommitFailure {
    fn stopped() -> CommitFailure {
        CommitFailure {
            message: "committer stopped".into(),
            disk_full: false,
        }
    }
}

impl std::fmt::Display for CommitFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

struct Request {
    instance: NewInstance,
    dir: PathBuf,
    reply: Reply,
}

/// What the committer thread is asked.
enum Msg {
    /// Index a durable file.
    Commit(Box<Request>),
    /// Tick the heartbeat (the watchdog asks whether the thread still loops).
    Probe,
}

/// Handle to the committer thread. Cloning shares the thread.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::UnboundedSender<Msg>,
    /// Ticked by the thread on every loop and probe.
    beat: Arc<Beat>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl Committer {
    /// Start the committer thread. It ends when every handle is dropped, after answering
    /// what it has.
    pub fn start(
        store: Arc<dyn Store>,
        quarantine: Quarantine,
        policy: Arc<Policy>,
    ) -> std::io::Result<Committer> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let beat = Arc::new(Beat::default());
        let b = beat.clone();
        std::thread::Builder::new()
            .name("fiona-committer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    b.tick();
                    let mut batch = Vec::new();
                    if let Msg::Commit(r) = first {
                        batch.push(*r);
                    }
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(Msg::Commit(r)) => batch.push(*r),
                            Ok(Msg::Probe) => {}
                            Err(_) => break,
                        }
                    }
                    if !batch.is_empty() {
                        commit_batch(&*store, &quarantine, &policy, batch);
                        b.tick();
                    }
                }
            })?;
        Ok(Committer { tx, beat })
    }

    /// Ask the thread to tick its heartbeat; `false` when the thread is gone.
    pub fn probe(&self) -> bool {
        self.tx.send(Msg::Probe).is_ok()
    }

    /// The thread's heartbeat: ticked on every loop, so its age says how long the thread has
    /// been busy with one batch (or has not answered a probe).
    pub fn beat(&self) -> &Beat {
        &self.beat
    }

    /// Index a durable file; resolves once its record is committed (or failed).
    pub async fn commit(
        &self,
        file: &DurableFile,
        instance: NewInstance,
    ) -> Result<CommitOutcome, CommitFailure> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Commit(Box::new(Request {
                instance,
                dir: file.dir.clone(),
                reply,
            })))
            .map_err(|_| CommitFailure::stopped())?;
        rx.await.map_err(|_| CommitFailure::stopped())?
    }
}

fn commit_batch(store: &dyn Store, quarantine: &Quarantine, policy: &Policy, batch: Vec<Request>) {
    let started = std::time::Instant::now();
    let dirs: BTreeSet<&PathBuf> = batch.iter().map(|r| &r.dir).collect();
    let mut failure: Option<CommitFailure> = None;
    for d in dirs {
        if let Err(e) = sync_dir(d) {
            failure = Some(CommitFailure {
                message: format!("directory fsync failed: {e}"),
                disk_full: crate::quarantine::is_disk_full(&e),
            });
            break;
        }
    }
    let instances: Vec<NewInstance> = batch.iter().map(|r| r.instance.clone()).collect();
    let result = match failure {
        Some(f) => Err(f),
        None => {
            let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
            store
                .commit(&instances, policy, now)
                .map_err(|e| CommitFailure {
                    message: e.to_string(),
                    disk_full: e.is_disk_full(),
                })
        }
    };
    let n = batch.len();
    match result {
        Ok(outcomes) => {
            for (req, outcome) in batch.into_iter().zip(outcomes) {
                if let CommitOutcome::Duplicate { .. } = &outcome {
                    // This copy is not indexed; the first copy stays. Removal is best-effort:
                    // a leftover is an unindexed orphan that start-up recovery deletes.
                    let _ = std::fs::remove_file(quarantine.object_path(&req.instance.file));
                }
                let _ = req.reply.send(Ok(outcome));
            }
            tracing::debug!(
                batch = n,
                micros = started.elapsed().as_micros() as u64,
                "index commit"
            );
        }
        Err(e) => {
            tracing::error!(
                batch = n,
                disk_full = e.disk_full,
                error = %e,
                "index commit failed"
            );
            for req in batch {
                let _ = std::fs::remove_file(quarantine.object_path(&req.instance.file));
                let _ = req.reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::HeaderFields;
    use crate::index::redb_store::RedbStore;
    use crate::index::Origin;

    fn instance(file: &crate::quarantine::DurableFile, sop: &str) -> NewInstance {
        NewInstance {
            key: file.key.to_string(),
            file: file.relative.clone(),
            bytes: file.bytes,
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            received_ms: 0,
            origin: Origin::default(),
            header: HeaderFields {
                sop_instance_uid: sop.into(),
                study_instance_uid: "1.2".into(),
                series_instance_uid: "1.2.3".into(),
                ..HeaderFields::default()
            },
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_index_once_and_drop_duplicate_files() {
        let d = tempfile::tempdir().unwrap();
        let q = Quarantine::open(d.path()).unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&q.index_path()).unwrap());
        let c = Committer::start(store.clone(), q.clone(), Arc::default()).unwrap();
        let mut files = Vec::new();
        for (i, sop) in ["1.2.3.1", "1.2.3.2", "1.2.3.1"].iter().enumerate() {
            let mut inc = q.begin(time::OffsetDateTime::now_utc()).unwrap();
            inc.write(&[i as u8; 100]).unwrap();
            files.push((inc.make_durable().unwrap(), *sop));
        }
        let outcomes = futures_join(&c, &files).await;
        let stored = outcomes
            .iter()
            .filter(|o| matches!(o, CommitOutcome::Stored { .. }))
            .count();
        assert_eq!(stored, 2, "{outcomes:?}");
        assert_eq!(store.totals().unwrap().instances, 2);
        // Exactly the indexed files remain on disk.
        let on_disk = files
            .iter()
            .filter(|(f, _)| q.object_path(&f.relative).exists())
            .count();
        assert_eq!(on_disk, 2);
    }

    async fn futures_join(
        c: &Committer,
        files: &[(crate::quarantine::DurableFile, &str)],
    ) -> Vec<CommitOutcome> {
        let mut handles = Vec::new();
        for (f, sop) in files {
            let c = c.clone();
            let (f, inst) = (f.clone(), instance(f, sop));
            handles.push(tokio::spawn(async move { c.commit(&f, inst).await }));
        }
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap().unwrap());
        }
        out
    }
}
