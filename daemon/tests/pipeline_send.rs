//! The pipeline sends a de-identified study to the research PACS once it is back (C-STORE,
//! every instance as written), and a PACS that refuses one instance fails the transfer with
//! the status it answered.

mod common;

use common::pipeline::*;

#[test]
fn a_study_goes_out_to_the_research_pacs_once_it_is_back() {
    require_tool("storescp");
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let (d, spec) = forwarding(
        tmp.path(),
        port,
        "retry_base_secs = 1\nretry_max_secs = 2\nmax_attempts = 50\nverify = false\n",
        (702, Modality::Ct, 2, 3),
        "PROJ1-0007",
    );

    // The research PACS is down: attempts fail, the reason is on the transfer.
    let t = d.transfer_when("a failed attempt", |t| {
        t["deliveries"][0]["attempts"].as_u64().unwrap_or(0) >= 1
    });
    assert_eq!(t["state"], "deidentified");
    let reason = t["deliveries"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("association"), "{reason}");

    // It comes back: everything arrives, nothing twice (storescp +uf: a unique file name per
    // instance received, so a duplicate would show as a seventh file).
    let received = tmp.path().join("pacs");
    std::fs::create_dir_all(&received).unwrap();
    let child = Command::new("storescp")
        .args(["-aet", "RESEARCH", "+xa", "+uf", "-od"])
        .arg(&received)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _scp = KillOnDrop(child);
    let t = d.transfer_when("the transfer to be sent", |t| t["state"] == "sent");
    assert_eq!(t["sent"], 6);
    let got: Vec<PathBuf> = std::fs::read_dir(&received)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(got.len(), 6, "{got:?}");
    let research_uid = t["research_study_uid"].as_str().unwrap();
    for g in &got {
        check_deidentified(g, &spec, research_uid, "PROJ1-0007");
    }
    assert!(
        d.audit_has(|a| a["action"] == "sent"),
        "{}",
        d.json(&["audit"])
    );

    // The research PACS lost the study: `fiona resend` sends it again, all of it.
    let r = d.json(&["resend", "--study", &spec.accession]);
    assert_eq!(r["transfers"].as_array().unwrap().len(), 1, "{r}");
    d.transfer_when("the resent transfer to be sent", |t| {
        t["state"] == "sent" && t["deliveries"][0]["attempts"] == 1
    });
    let got: Vec<PathBuf> = std::fs::read_dir(&received)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(got.len(), 12, "every instance once more");
    let mut uids: Vec<String> = got
        .iter()
        .map(|g| corpus::sop_instance_uid(g).unwrap())
        .collect();
    uids.sort();
    uids.dedup();
    assert_eq!(
        uids.len(),
        6,
        "the same SOP Instance UIDs: the PACS keeps one copy of each"
    );
    // By project and date: none created after a future date, this one (created today)
    // since an old date; a request naming neither is refused.
    let r = d.json(&["resend", "--project", "PROJ1", "--since", "2099-01-01"]);
    assert_eq!(r["transfers"].as_array().unwrap().len(), 0, "{r}");
    let r = d.json(&["resend", "--project", "PROJ1", "--since", "2020-01-01"]);
    assert_eq!(r["transfers"].as_array().unwrap().len(), 1, "{r}");
    assert!(!d.cli(&["resend"]).status.success());
    assert!(d
        .json(&["audit"])
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["action"] == "resend"));
}

#[test]
fn a_research_pacs_refusing_one_instance_fails_the_transfer_with_the_status() {
    let tmp = tempfile::tempdir().unwrap();
    // Orthanc 1.10 answers 0xA700 for an instance its filter raises an error on.
    let (pacs, d) = to_orthanc(
        tmp.path(),
        "function ReceivedInstanceFilter(dicom, origin, info)\n\
           if dicom.InstanceNumber == '3' then error('refused by the test filter') end\n\
           return true\nend\n",
        "retry_base_secs = 1\nretry_max_secs = 1\nmax_attempts = 3\nverify_after_secs = 0\n",
        (704, Modality::Ct, 1, 4),
        "PROJ1-0004",
    );
    let t = d.transfer_when("the transfer to fail", |t| t["state"] == "failed");
    let reason = t["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("status 0xa700"), "{t}");
    assert!(reason.contains("research:"), "{t}");
    assert_eq!(t["deliveries"][0]["attempts"], 3, "{t}");
    // The three others were stored once each, and only they.
    assert_eq!(t["deliveries"][0]["stored"].as_array().unwrap().len(), 3);
    let uid = t["research_study_uid"].as_str().unwrap();
    assert_eq!(pacs.held(uid, "FIONA", &[], &tmp.path().join("q")), 3);
    // The admin sees it in the transfers table.
    let table = String::from_utf8_lossy(&d.cli(&["transfers"]).stdout).to_string();
    assert!(
        table.contains("failed") && table.contains("0xa700"),
        "{table}"
    );
}
