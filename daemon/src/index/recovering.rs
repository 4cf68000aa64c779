//! An index that recovers by itself from I/O errors, and says when it cannot.
//!
//! A storage engine that hits an I/O error (a full disk during a commit, say) may refuse
//! every later operation until its file is opened again; redb does ("previous I/O error").
//! [`Recovering`] wraps any [`Store`] that can [`Reopen`]: it notices an operation that failed
//! on I/O, marks the index failing, and before the next operation reopens it. While the reopen
//! fails (the disk is still full), each operation fails at once with
//! [`StoreError::Unavailable`], carrying the original cause so that the receive stage answers
//! 0xA700 for space and 0x0110 for anything else. Once a reopen succeeds the index works again
//! without a restart.
//!
//! Nothing acknowledged is lost or duplicated by this: a failed commit is not acknowledged,
//! and the engine's reopen returns to its last committed transaction (redb repairs to it).
//!
//! Failures are counted and the state is kept for `fiona status` and the health check
//! ([`Store::health`]): the index counts as failing from an I/O error until a write succeeds
//! again (a reopen alone does not prove that the disk has room), and as unusable while it
//! cannot be reopened. Each change of state is logged once (the error text names the
//! operation and the OS error, never a record's value).

use std::sync::Mutex;

use super::*;

/// An engine whose handle can be closed and opened again on the same file.
pub trait Reopen {
    /// Close the engine's handle and open its file again.
    fn reopen(&self) -> Result<(), StoreError>;
}

#[derive(Debug, Default)]
struct State {
    health: IndexHealth,
    /// Set by an I/O error, cleared by a successful reopen.
    needs_reopen: bool,
}

/// A [`Store`] that reopens its engine after an I/O error.
pub struct Recovering<S> {
    inner: S,
    state: Mutex<State>,
}

impl<S> fmt::Debug for Recovering<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recovering").finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl<S: Store + Reopen> Recovering<S> {
    pub fn new(inner: S) -> Recovering<S> {
        Recovering {
            inner,
            state: Mutex::new(State {
                health: IndexHealth {
                    usable: true,
                    ..IndexHealth::default()
                },
                needs_reopen: false,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain counters; a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// If the index is failing, try to reopen it; an error if that fails.
    fn ensure_open(&self) -> Result<(), StoreError> {
        let cause = {
            let st = self.state();
            if !st.needs_reopen {
                return Ok(());
            }
            st.health.failing.unwrap_or(IoFailure::Other)
        };
        match self.inner.reopen() {
            Ok(()) => {
                let mut st = self.state();
                st.needs_reopen = false;
                st.health.usable = true;
                st.health.reopened += 1;
                tracing::warn!(
                    reopened = st.health.reopened,
                    "index reopened after an I/O error; working again"
                );
                Ok(())
            }
            Err(e) => {
                let why = e.to_string();
                {
                    let mut st = self.state();
                    st.health.io_errors += 1;
                    st.health.usable = false;
                }
                tracing::debug!(error = %why, "index still cannot be reopened");
                Err(StoreError::Unavailable {
                    // A reopen that fails for space says so; otherwise keep the first cause.
                    cause: e
                        .io_failure()
                        .filter(|f| *f == IoFailure::DiskFull)
                        .unwrap_or(cause),
                    why,
                })
            }
        }
    }

    /// Run one read operation, noting an I/O failure.
    fn run<T>(&self, op: impl FnOnce(&S) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.ensure_open()?;
        let r = op(&self.inner);
        if let Err(e) = &r {
            self.note(e);
        }
        r
    }

    /// Run one write operation: as [`Self::run`], and a success ends the failing state.
    fn write<T>(&self, op: impl FnOnce(&S) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let r = self.run(op);
        if r.is_ok() {
            let mut st = self.state();
            if st.health.failing.take().is_some() {
                st.health.failing_since_ms = None;
                tracing::info!("index writes work again");
            }
        }
        r
    }

    fn note(&self, e: &StoreError) {
        let Some(kind) = e.io_failure() else { return };
        let mut st = self.state();
        st.health.io_errors += 1;
        st.health.last_error = Some(e.to_string());
        st.needs_reopen = true;
        if st.health.failing.is_none() {
            st.health.failing_since_ms = Some(now_ms());
            tracing::error!(
                error = %e,
                "index I/O error: the index will be reopened before its next use"
            );
        }
        // A full disk is the more useful thing to report (the admin can act on it).
        if st.health.failing != Some(IoFailure::DiskFull) {
            st.health.failing = Some(kind);
        }
    }
}

impl<S: Store + Reopen> Store for Recovering<S> {
    fn commit(
        &self,
        batch: &[NewInstance],
        hook: &dyn OnArrival,
        now_ms: i64,
    ) -> Result<Vec<CommitOutcome>, StoreError> {
        self.write(|s| s.commit(batch, hook, now_ms))
    }
    fn write_assign(
        &self,
        f: &mut dyn FnMut(&mut dyn Tables) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.write(|s| s.write_assign(f))
    }
    fn assignments(&self, study_key: Option<&str>) -> Result<Vec<AssignmentRecord>, StoreError> {
        self.run(|s| s.assignments(study_key))
    }
    fn transfers(&self) -> Result<Vec<TransferRecord>, StoreError> {
        self.run(|s| s.transfers())
    }
    fn transfer(&self, id: &str) -> Result<Option<TransferRecord>, StoreError> {
        self.run(|s| s.transfer(id))
    }
    fn transfer_instances(&self, id: &str) -> Result<Vec<String>, StoreError> {
        self.run(|s| s.transfer_instances(id))
    }
    fn audit_trail(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.run(|s| s.audit_trail())
    }
    fn couplings(&self) -> Result<Vec<CouplingEntry>, StoreError> {
        self.run(|s| s.couplings())
    }
    fn participants(&self) -> Result<Vec<ParticipantRecord>, StoreError> {
        self.run(|s| s.participants())
    }
    fn has_sop_instance(&self, sop_instance_uid: &str) -> Result<bool, StoreError> {
        self.run(|s| s.has_sop_instance(sop_instance_uid))
    }
    fn instance_keys(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        self.run(|s| s.instance_keys())
    }
    fn record_rejection(&self, r: &RejectRecord) -> Result<(), StoreError> {
        self.write(|s| s.record_rejection(r))
    }
    fn has_rejection(&self, key: &str) -> Result<bool, StoreError> {
        self.run(|s| s.has_rejection(key))
    }
    fn rejection(&self, key: &str) -> Result<Option<RejectRecord>, StoreError> {
        self.run(|s| s.rejection(key))
    }
    fn rejections(&self) -> Result<Vec<RejectRecord>, StoreError> {
        self.run(|s| s.rejections())
    }
    fn outbox(&self) -> Result<Vec<OutboxRecord>, StoreError> {
        self.run(|s| s.outbox())
    }
    fn accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        self.run(|s| s.accounts())
    }
    fn last_arrival_ms(&self) -> Result<Option<i64>, StoreError> {
        self.run(|s| s.last_arrival_ms())
    }
    fn review(&self, project: &str) -> Result<Option<ReviewInventory>, StoreError> {
        self.run(|s| s.review(project))
    }
    fn transfer_counts(&self) -> Result<TransferCounts, StoreError> {
        self.run(|s| s.transfer_counts())
    }
    fn studies_received_since(&self, since_ms: i64) -> Result<u64, StoreError> {
        self.run(|s| s.studies_received_since(since_ms))
    }
    fn unassigned_studies(
        &self,
        since_ms: i64,
        skip: usize,
        limit: Option<usize>,
    ) -> Result<(u64, Vec<StudyRecord>), StoreError> {
        self.run(|s| s.unassigned_studies(since_ms, skip, limit))
    }
    fn transfers_in(&self, states: &[TransferState]) -> Result<Vec<TransferRecord>, StoreError> {
        self.run(|s| s.transfers_in(states))
    }
    fn project_transfer_counts(
        &self,
        project: &str,
        filter: &TransferFilter,
    ) -> Result<std::collections::BTreeMap<TransferState, u64>, StoreError> {
        self.run(|s| s.project_transfer_counts(project, filter))
    }
    fn project_transfers(
        &self,
        project: &str,
        filter: &TransferFilter,
        skip: usize,
        limit: Option<usize>,
    ) -> Result<Vec<TransferRecord>, StoreError> {
        self.run(|s| s.project_transfers(project, filter, skip, limit))
    }
    fn studies(&self) -> Result<Vec<StudyRecord>, StoreError> {
        self.run(|s| s.studies())
    }
    fn study(&self, key: &str) -> Result<Option<StudyRecord>, StoreError> {
        self.run(|s| s.study(key))
    }
    fn series_of(&self, study_key: &str) -> Result<Vec<SeriesRecord>, StoreError> {
        self.run(|s| s.series_of(study_key))
    }
    fn instances_of(&self, study_key: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        self.run(|s| s.instances_of(study_key))
    }
    fn totals(&self) -> Result<Totals, StoreError> {
        self.run(|s| s.totals())
    }
    /// Tries a reopen first when failing, so that a health check sees recovery at once.
    fn health(&self) -> IndexHealth {
        let _ = self.ensure_open();
        self.state().health.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::Policy;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    /// A store whose operations fail on I/O while `broken`, until reopened with `fixed` set.
    #[derive(Default)]
    struct Flaky {
        broken: AtomicBool,
        fixed: AtomicBool,
        reopens: AtomicU64,
    }

    fn full() -> StoreError {
        StoreError::Engine {
            op: "commit",
            io: Some(IoFailure::DiskFull),
            source: "No space left on device (os error 28)".into(),
        }
    }

    impl Reopen for Flaky {
        fn reopen(&self) -> Result<(), StoreError> {
            self.reopens.fetch_add(1, Ordering::SeqCst);
            if self.fixed.load(Ordering::SeqCst) {
                self.broken.store(false, Ordering::SeqCst);
                Ok(())
            } else {
                Err(full())
            }
        }
    }

    macro_rules! flaky_ops {
        ($($name:ident ( $($a:ident : $t:ty),* ) -> $r:ty;)*) => {
            $(fn $name(&self, $(_: $t),*) -> Result<$r, StoreError> {
                if self.broken.load(Ordering::SeqCst) { Err(full()) } else { Ok(Default::default()) }
            })*
        };
    }

    impl Store for Flaky {
        fn commit(
            &self,
            _: &[NewInstance],
            _: &dyn OnArrival,
            _: i64,
        ) -> Result<Vec<CommitOutcome>, StoreError> {
            if self.broken.load(Ordering::SeqCst) {
                Err(full())
            } else {
                Ok(vec![])
            }
        }
        fn write_assign(
            &self,
            _: &mut dyn FnMut(&mut dyn Tables) -> Result<(), StoreError>,
        ) -> Result<(), StoreError> {
            Ok(())
        }
        fn transfer(&self, _: &str) -> Result<Option<TransferRecord>, StoreError> {
            Ok(None)
        }
        fn study(&self, _: &str) -> Result<Option<StudyRecord>, StoreError> {
            Ok(None)
        }
        fn rejection(&self, _: &str) -> Result<Option<RejectRecord>, StoreError> {
            Ok(None)
        }
        flaky_ops! {
            assignments(k: Option<&str>) -> Vec<AssignmentRecord>;
            transfers() -> Vec<TransferRecord>;
            transfer_instances(id: &str) -> Vec<String>;
            audit_trail() -> Vec<AuditRecord>;
            couplings() -> Vec<CouplingEntry>;
            participants() -> Vec<ParticipantRecord>;
            has_sop_instance(u: &str) -> bool;
            instance_keys() -> std::collections::HashSet<String>;
            record_rejection(r: &RejectRecord) -> ();
            has_rejection(k: &str) -> bool;
            rejections() -> Vec<RejectRecord>;
            outbox() -> Vec<OutboxRecord>;
            accounts() -> Vec<crate::model::AccountRecord>;
            review(p: &str) -> Option<ReviewInventory>;
            studies() -> Vec<StudyRecord>;
            series_of(k: &str) -> Vec<SeriesRecord>;
            instances_of(k: &str) -> Vec<InstanceRecord>;
            totals() -> Totals;
        }
    }

    #[test]
    fn fails_with_its_cause_until_a_reopen_works() {
        let r = Recovering::new(Flaky::default());
        assert!(r.commit(&[], &Policy::default(), 0).is_ok());
        assert_eq!(r.health().failing, None);
        r.inner.broken.store(true, Ordering::SeqCst);
        let e = r.commit(&[], &Policy::default(), 0).unwrap_err();
        assert!(e.is_disk_full());
        let h = r.health();
        assert_eq!(h.failing, Some(IoFailure::DiskFull));
        assert!(h.failing_since_ms.is_some());
        // Still full: every operation fails at once as disk-full, after one reopen try each.
        let tries = r.inner.reopens.load(Ordering::SeqCst);
        let e = r.totals().unwrap_err();
        assert!(
            matches!(e, StoreError::Unavailable { .. }) && e.is_disk_full(),
            "{e}"
        );
        assert_eq!(r.inner.reopens.load(Ordering::SeqCst), tries + 1);
        assert!(!r.health().usable);
        // Space freed: the next operation reopens and works; failing until a write works.
        r.inner.fixed.store(true, Ordering::SeqCst);
        assert!(r.totals().is_ok());
        let h = r.health();
        assert!(h.usable);
        assert_eq!(h.failing, Some(IoFailure::DiskFull));
        assert!(r.commit(&[], &Policy::default(), 0).is_ok());
        let h = r.health();
        assert_eq!(h.failing, None);
        assert_eq!(h.reopened, 1);
        assert!(h.io_errors >= 3, "{h:?}");
        assert!(h.last_error.unwrap().contains("os error 28"));
    }
}
