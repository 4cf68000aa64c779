//! kill -9 in the middle of sending: the transfer completes and verifies after the restart;
//! a PACS that answers 0x0111 (duplicate) for what it already holds does not fail it; attempts
//! that kills interrupt count towards `max_attempts` (issue 14, item 7).

mod common;

use common::pipeline::*;

#[test]
fn after_kill_9_mid_transfer_the_transfer_completes_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let total = 60;
    // A slow PACS (a busy loop per instance) so that fiona is killed mid-association.
    let (pacs, mut d) = to_orthanc(
        tmp.path(),
        SLOW_PACS,
        "retry_base_secs = 1\nverify_after_secs = 0\n",
        (706, Modality::Ct, 1, total),
        "PROJ1-0006",
    );
    let mut at_kill = 0;
    d.wait_for("instances at the PACS", Duration::from_secs(60), || {
        at_kill = pacs.stored_files();
        at_kill >= 3
    });
    d.kill9();
    assert!(
        (at_kill as u32) < total,
        "not killed mid-transfer: {at_kill} stored"
    );
    d.restart();
    let t = d.transfer_when("the transfer to be verified after the restart", finished);
    assert_eq!(t["state"], "verified", "{t}");
    // Complete by the replay itself, not by verification finding gaps.
    assert_eq!(t["deliveries"][0]["resent_after_verify"], 0, "{t}");
    assert_eq!(t["sent"], total, "{t}");
    let uid = t["research_study_uid"].as_str().unwrap();
    assert_eq!(
        pacs.held(uid, "FIONA", &[], &tmp.path().join("q")),
        total as usize
    );
}

/// Issue 14, item 7: after a kill -9 mid-send the attempt in flight is sent again; a PACS
/// that answers 0x0111 (duplicate) for what it already holds does not fail the transfer: the
/// duplicates count as stored once C-FIND confirms them, and the transfer says so. Progress
/// is recorded during the attempt, so the restart re-sends only the last second's instances,
/// and the interrupted attempt is counted.
#[test]
fn a_pacs_answering_duplicate_after_kill_9_ends_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let total = 40;
    let port = free_port();
    let state = tmp.path().join("pacs");
    let _pacs = dup_pacs(&state, port, 100);
    let (mut d, _) = forwarding(
        tmp.path(),
        port,
        "retry_base_secs = 1\nverify_after_secs = 0\n",
        (714, Modality::Ct, 1, total),
        "PROJ1-0714",
    );
    d.wait_for("instances at the PACS", Duration::from_secs(60), || {
        lines(&state.join("held.txt")) >= 12
    });
    d.kill9();
    let at_kill = lines(&state.join("held.txt"));
    assert!(at_kill < total as usize, "not killed mid-transfer");
    d.restart();
    let t = d.transfer_when("the transfer to be verified after the restart", finished);
    assert_eq!(t["state"], "verified", "{t}");
    let dups = lines(&state.join("dups.txt"));
    let delivery = &t["deliveries"][0];
    eprintln!(
        "killed with {at_kill} held; {dups} instances sent again and answered 0x0111; attempts {}",
        delivery["attempts"]
    );
    assert!(dups >= 1, "the instance in flight was sent again: {t}");
    // Progress is written every second (10 instances at 100 ms each), plus the one in flight.
    assert!(
        dups <= 12,
        "{dups} re-sent: progress was not recorded during the attempt"
    );
    assert_eq!(
        delivery["duplicates"].as_array().unwrap().len(),
        dups,
        "{t}"
    );
    assert_eq!(
        delivery["attempts"], 2,
        "the interrupted attempt counts: {t}"
    );
    assert_eq!(delivery["resent_after_verify"], 0, "{t}");
    assert!(
        delivery["reason"]
            .as_str()
            .is_some_and(|r| r.contains("C-FIND confirmed")),
        "{t}"
    );
    assert_eq!(lines(&state.join("held.txt")), total as usize);
    let audit = String::from_utf8_lossy(&d.cli(&["audit"]).stdout).into_owned();
    assert!(audit.contains("answered duplicate 0x0111"), "{audit}");
}

/// A crash loop ends at `max_attempts`: every attempt a kill interrupts counts.
#[test]
fn attempts_interrupted_by_kill_9_count_towards_max_attempts() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let state = tmp.path().join("pacs");
    let _pacs = dup_pacs(&state, port, 300);
    let (mut d, _) = forwarding(
        tmp.path(),
        port,
        "retry_base_secs = 1\nmax_attempts = 2\n",
        (715, Modality::Ct, 1, 30),
        "PROJ1-0715",
    );
    for round in 1..=2 {
        let before = lines(&state.join("held.txt"));
        d.wait_for(
            &format!("round {round}: sending"),
            Duration::from_secs(60),
            || lines(&state.join("held.txt")) >= before + 2,
        );
        d.kill9();
        d.restart();
    }
    let t = d.transfer_when("the transfer to fail", finished);
    assert_eq!(t["state"], "failed", "{t}");
    let delivery = &t["deliveries"][0];
    assert_eq!(delivery["attempts"], 2, "{t}");
    assert!(t["reason"].as_str().unwrap().contains("interrupted"), "{t}");
}
