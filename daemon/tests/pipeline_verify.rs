//! Verification by C-FIND at the research PACS: a sent study is verified; an instance the
//! PACS acknowledged but lost is found and sent again; one it always loses fails the transfer
//! after three re-sends.

mod common;

use common::pipeline::*;

#[test]
fn a_sent_study_is_verified_by_c_find_at_the_research_pacs() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let pacs = dcmqrscp(&tmp.path().join("pacs"), port);
    let (d, _) = forwarding(
        tmp.path(),
        port,
        "retry_base_secs = 1\nverify_after_secs = 0\n",
        (703, Modality::Mr, 2, 2),
        "PROJ1-0003",
    );
    let t = d.transfer_when("the transfer to be verified", |t| t["state"] == "verified");
    assert_eq!(t["sent"], 4);
    assert!(t["verified_ms"].as_i64().unwrap() > 0);
    assert!(t["deliveries"][0]["verified_ms"].as_i64().is_some());
    assert!(
        d.audit_has(|a| a["action"] == "verified"),
        "{}",
        d.json(&["audit"])
    );

    // On demand: `fiona verify` asks the PACS again and reports nothing missing...
    let r = d.cli(&["verify", "--project", "PROJ1"]);
    let text = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(
        r.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(
        text.contains("1 transfers checked, 0 instances missing"),
        "{text}"
    );
    let rows = d.json(&["verify", "--project", "PROJ1"]);
    assert_eq!(rows[0]["sent"], 4, "{rows}");
    assert_eq!(rows[0]["held"], 4, "{rows}");
    // ... and fails, saying so, when the PACS cannot be asked.
    drop(pacs);
    let r = d.cli(&["verify", "--project", "PROJ1"]);
    let text = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(!r.status.success(), "{text}");
    assert!(text.contains("1 destinations not answering"), "{text}");
}

#[test]
fn an_instance_the_pacs_acknowledged_but_lost_is_found_by_verification_and_sent_again() {
    let tmp = tempfile::tempdir().unwrap();
    // The first time instance 2 arrives, Orthanc answers success and drops it (its filter
    // returns false); the second time it keeps it.
    let (pacs, d) = to_orthanc(
        tmp.path(),
        "seen = false\n\
         function ReceivedInstanceFilter(dicom, origin, info)\n\
           if dicom.InstanceNumber == '2' and not seen then seen = true return false end\n\
           return true\nend\n",
        "retry_base_secs = 1\nverify_after_secs = 0\n",
        (705, Modality::Mr, 1, 4),
        "PROJ1-0005",
    );
    let t = d.transfer_when("the transfer to be verified", finished);
    assert_eq!(t["state"], "verified", "{t}");
    assert_eq!(t["deliveries"][0]["resent_after_verify"], 1, "{t}");
    assert!(
        d.audit_has(|a| a["action"] == "resend"
            && a["detail"].as_str().unwrap_or("").contains("lacks 1 of 4")),
        "{}",
        d.json(&["audit"])
    );
    let uid = t["research_study_uid"].as_str().unwrap();
    assert_eq!(pacs.held(uid, "FIONA", &[], &tmp.path().join("q")), 4);
}

/// An instance the PACS acknowledges and always loses: re-sent three times, then the
/// transfer fails and says so (it said "re-send 4 of 3").
#[test]
fn an_instance_the_pacs_always_loses_fails_the_transfer_after_three_resends() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pacs, d) = to_orthanc(
        tmp.path(),
        "function ReceivedInstanceFilter(dicom, origin, info)\n\
           return dicom.InstanceNumber ~= '2'\nend\n",
        "retry_base_secs = 1\nverify_after_secs = 0\n",
        (707, Modality::Mr, 1, 3),
        "PROJ1-0007",
    );
    let t = d.transfer_when("the transfer to finish", finished);
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(t["deliveries"][0]["resent_after_verify"], 4, "{t}");
    let reason = t["reason"].as_str().unwrap_or_default();
    assert!(
        reason.ends_with("the destination lacks 1 of 3 instances after 3 re-sends"),
        "{t}"
    );
}
