//! The pipeline's time rules on a manual clock: the quiet period, the de-identification
//! backoff, the sending backoff and `verify_after_secs` are decided by what the clock says,
//! so these tests move it instead of waiting. The peers are ports nobody listens on
//! (connection refused at once).

use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;
use crate::header::HeaderFields;
use crate::index::redb_store::RedbStore;
use crate::model::{NewInstance, Origin, TransferKind, Via};

const T0: i64 = 1_800_000_000_000;

/// A port on 127.0.0.1 that nobody listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    pipeline: Pipeline,
    transfer: String,
}

/// One study received at `T0`, a transfer of it in `state`, and a pipeline on a manual
/// clock at `T0`; project P forwards to `research` on a closed port.
fn fixture(state: TransferState) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let port = closed_port();
    let config = Config::from_toml(&format!(
        "data_dir = \"{}\"\nquiet_period_secs = 15\ndeid_max_attempts = 2\n\
         deid_retry_base_secs = 30\n\n[projects.PROJ1]\nparticipant_pattern = \"PROJ1-[0-9]+\"\n\
         events = [\"baseline\"]\napproval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n\
         destinations = [\"research\"]\n\n[destinations.research]\n\
         host = \"127.0.0.1\"\nport = {port}\nae_title = \"RESEARCH\"\nmax_attempts = 3\n\
         retry_base_secs = 60\nretry_max_secs = 3600\nverify_after_secs = 120\n",
        tmp.path().display()
    ))
    .unwrap();
    let quarantine = Quarantine::open(tmp.path()).unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&tmp.path().join("index.redb")).unwrap());
    let header = HeaderFields {
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        sop_instance_uid: "2.25.1".into(),
        study_instance_uid: "2.25.2".into(),
        series_instance_uid: "2.25.3".into(),
        modality: "CT".into(),
        ..HeaderFields::default()
    };
    let out = store
        .commit(
            &[NewInstance {
                key: "I1".into(),
                file: "objects/I1.dcm".into(),
                bytes: 10,
                transfer_syntax: "1.2.840.10008.1.2.1".into(),
                received_ms: T0,
                origin: Origin::default(),
                header,
            }],
            &crate::index::NoArrival,
            T0,
        )
        .unwrap();
    let study_key = match &out[0] {
        crate::model::CommitOutcome::Stored { study_key } => study_key.clone(),
        o => panic!("{o:?}"),
    };
    let t = TransferRecord {
        id: "T1".into(),
        study_key,
        project: "PROJ1".into(),
        participant: "PROJ1-1".into(),
        event: "baseline".into(),
        kind: TransferKind::Assignment,
        via: Via::Manual,
        actor: "test".into(),
        created_ms: T0,
        series: vec!["2.25.3".into()],
        instances: 1,
        state,
        state_ms: T0,
        reason: None,
        research_study_uid: "2.25.9".into(),
        replaces: None,
        sent: 0,
        verified_ms: None,
        deidentified: 1,
        dropped: 0,
        parked: vec![],
        deliveries: vec![],
        deid_attempts: 0,
        next_deid_ms: 0,
    };
    store
        .write_assign(&mut |tables| tables.put_transfer(&t))
        .unwrap();
    let clock = Arc::new(ManualClock::at(T0));
    let pipeline = Pipeline::new(
        store.clone(),
        quarantine,
        Arc::new(config),
        Arc::new(tokio::sync::Notify::new()),
    )
    .unwrap()
    .with_clock(clock.clone());
    Fixture {
        _tmp: tmp,
        store,
        clock,
        pipeline,
        transfer: "T1".into(),
    }
}

impl Fixture {
    fn transfer(&self) -> TransferRecord {
        self.store.transfer(&self.transfer).unwrap().unwrap()
    }

    /// A de-identified output in the transfer's outbound directory.
    fn write_output(&self) {
        let dir = self.pipeline.outbound_dir(&self.transfer);
        std::fs::create_dir_all(&dir).unwrap();
        let mut f = crate::part10::file_meta(
            "1.2.840.10008.5.1.4.1.1.2",
            "2.25.7",
            "1.2.840.10008.1.2.1",
            "",
        );
        // (0008,0060) CS "CT"
        f.extend_from_slice(&[0x08, 0, 0x60, 0, b'C', b'S', 2, 0, b'C', b'T']);
        std::fs::write(outbound::output_path(&dir, "I1"), f).unwrap();
    }

    fn delivery(&self) -> Delivery {
        self.transfer().deliveries[0].clone()
    }
}

#[test]
fn the_quiet_period_is_read_from_the_clock() {
    let f = fixture(TransferState::Requested);
    f.clock.set_ms(T0 + 15_000 - 1);
    assert!(
        f.pipeline.ready().unwrap().is_empty(),
        "study still arriving"
    );
    f.clock.advance_ms(1);
    let ready = f.pipeline.ready().unwrap();
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].id, "T1");
}

#[test]
fn a_failing_deidentification_backs_off_by_the_clock_then_fails() {
    let f = fixture(TransferState::Requested);
    // The outbound area cannot be written: a file stands where its directory should be.
    let area = f.pipeline.outbound_dir("x");
    let area = area.parent().unwrap();
    std::fs::write(area, b"not a directory").unwrap();
    let now = T0 + 20_000;
    f.clock.set_ms(now);
    let t = f.transfer();
    match f.pipeline.deidentify_step(&t) {
        Step::RetryAt { at_ms, reason } => {
            assert_eq!(
                at_ms,
                now + 30_000,
                "deid_retry_base_secs after the first failure"
            );
            assert!(reason.contains("attempt 1 of 2"), "{reason}");
        }
        s => panic!("{s:?}"),
    }
    assert_eq!(f.transfer().next_deid_ms, now + 30_000);
    f.clock.set_ms(now + 30_000 - 1);
    assert!(
        f.pipeline.ready().unwrap().is_empty(),
        "not before its time"
    );
    f.clock.set_ms(now + 30_000);
    let ready = f.pipeline.ready().unwrap();
    assert_eq!(ready.len(), 1);
    match f.pipeline.deidentify_step(&ready[0]) {
        Step::Failed { reason } => assert!(reason.contains("failed 2 times"), "{reason}"),
        s => panic!("{s:?}"),
    }
    let t = f.transfer();
    assert_eq!(t.state, TransferState::Failed);
    assert_eq!(
        t.state_ms,
        now + 30_000,
        "the transition is stamped by the clock"
    );
}

#[test]
fn a_removed_project_fails_the_transfer() {
    let f = fixture(TransferState::Requested);
    let mut t = f.transfer();
    t.project = "GONE".into();
    f.store
        .write_assign(&mut |tables| tables.put_transfer(&t))
        .unwrap();
    match f.pipeline.deidentify_step(&t) {
        Step::Failed { reason } => assert!(reason.contains("no longer configured"), "{reason}"),
        s => panic!("{s:?}"),
    }
    assert_eq!(f.transfer().state, TransferState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_backs_off_by_the_clock() {
    let f = fixture(TransferState::Deidentified);
    f.write_output();
    f.pipeline.send_pass(None).await;
    let d = f.delivery();
    assert_eq!(d.attempts, 1);
    assert!(!d.done && !d.failed);
    // retry_base_secs = 60, jitter of a quarter either way.
    assert!(
        (T0 + 45_000..=T0 + 75_000).contains(&d.next_attempt_ms),
        "{}",
        d.next_attempt_ms - T0
    );
    // Not due yet: nothing is tried.
    f.clock.set_ms(d.next_attempt_ms - 1);
    f.pipeline.send_pass(None).await;
    assert_eq!(f.delivery().attempts, 1);
    // Due: the second attempt, and the wait doubles (120 s, +/- a quarter).
    let second = d.next_attempt_ms;
    f.clock.set_ms(second);
    f.pipeline.send_pass(None).await;
    let d = f.delivery();
    assert_eq!(d.attempts, 2);
    assert!(
        (second + 90_000..=second + 150_000).contains(&d.next_attempt_ms),
        "{}",
        d.next_attempt_ms - second
    );
    // The third of max_attempts = 3 fails the transfer with the reason.
    f.clock.set_ms(d.next_attempt_ms);
    f.pipeline.send_pass(None).await;
    let t = f.transfer();
    assert_eq!(t.state, TransferState::Failed);
    assert!(t.deliveries[0].failed);
    assert!(t.reason.unwrap().contains("research"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_waits_verify_after_secs_by_the_clock() {
    let f = fixture(TransferState::Deidentified);
    f.write_output();
    // Sent: the destination confirmed every instance at T0.
    let mut d = Delivery {
        destination: "research".into(),
        stored: vec!["I1".into()],
        attempts: 1,
        ..Delivery::default()
    };
    let dest = f.pipeline.config.destinations["research"].clone();
    send::settle_send(&mut d, Step::Done, T0, &dest);
    assert!(d.done);
    assert_eq!(d.next_attempt_ms, T0 + 120_000);
    f.pipeline.record_delivery(&f.transfer(), d, 1).unwrap();
    assert_eq!(f.transfer().state, TransferState::Sent);
    // Before verify_after_secs the C-FIND is not asked (the closed port would count an error).
    f.clock.set_ms(T0 + 120_000 - 1);
    f.pipeline.verify_pass(None).await;
    assert_eq!(f.delivery().verify_errors, 0);
    // Then it is, and the refused connection backs off by the clock.
    f.clock.set_ms(T0 + 120_000);
    f.pipeline.verify_pass(None).await;
    let d = f.delivery();
    assert_eq!(d.verify_errors, 1);
    assert!(d.reason.unwrap().starts_with("verification:"));
    assert!((T0 + 120_000 + 45_000..=T0 + 120_000 + 75_000).contains(&d.next_attempt_ms));
    assert_eq!(f.transfer().state, TransferState::Sent);
}

#[test]
fn a_verification_done_step_stamps_the_clock_and_a_missing_one_resends() {
    let mut d = Delivery {
        destination: "research".into(),
        done: true,
        ..Delivery::default()
    };
    verify::settle_verify(&mut d, Step::Done, T0 + 5);
    assert_eq!(d.verified_ms, Some(T0 + 5));
    let mut d = Delivery::default();
    verify::settle_verify(
        &mut d,
        Step::RetryAt {
            at_ms: 0,
            reason: "verification: lacks 1 of 2".into(),
        },
        T0,
    );
    assert_eq!(d.next_attempt_ms, 0);
    assert!(!d.failed && d.verified_ms.is_none());
    verify::settle_verify(
        &mut d,
        Step::Failed {
            reason: "gone".into(),
        },
        T0,
    );
    assert!(d.failed);
    assert_eq!(d.reason.as_deref(), Some("gone"));
}
