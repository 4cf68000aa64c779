//! Review (issue 17): the inventory of what left the box. DCMTK `storescu` sends a CT study
//! of a known patient to fiona on 127.0.0.1; it is assigned, de-identified, sent to a DCMTK
//! research PACS and verified. `fiona review PROJ1 --json` then lists the de-identified
//! values (the participant ID as PatientName and PatientID, the research UIDs, the instance
//! counts) and none of the originals: the patient's name, ID, accession number and every
//! study, series and SOP Instance UID are searched in the whole answer. The study
//! de-identified again (`fiona resend` after its outputs were lost) adds no instance twice.

mod common;

use std::collections::BTreeSet;

use common::pipeline::*;

/// The inventory's entry for `path`.
fn tag<'a>(inv: &'a Value, path: &str) -> &'a Value {
    inv["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["path"] == path)
        .unwrap_or_else(|| panic!("no {path} in {inv:#}"))
}

fn samples(t: &Value) -> Vec<String> {
    t["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn review_lists_the_deidentified_values_and_none_of_the_originals() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let _pacs = dcmqrscp(&tmp.path().join("pacs"), port);
    let (d, spec) = forwarding(
        tmp.path(),
        port,
        "retry_base_secs = 1\nverify_after_secs = 0\n",
        (709, Modality::Ct, 2, 3),
        "PROJ1-0042",
    );
    // Before anything left: a configured project has an empty inventory; an unknown one is
    // refused with a clear message.
    let out = d.cli(&["review", "NOPE"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("unknown project NOPE"), "{err}");

    let t = d.transfer_when("the transfer to be verified", |t| t["state"] == "verified");
    let transfer = t["id"].as_str().unwrap().to_string();
    let research_uid = t["research_study_uid"].as_str().unwrap().to_string();

    // What was released: the research UIDs of every output.
    let mut series_uids = BTreeSet::new();
    let mut sop_uids = BTreeSet::new();
    for e in std::fs::read_dir(data.join("outbound").join(&transfer)).unwrap() {
        let obj = open_file(e.unwrap().path()).unwrap();
        series_uids.insert(header_text(&obj, Tag(0x0020, 0x000E)));
        sop_uids.insert(header_text(&obj, Tag(0x0008, 0x0018)));
    }
    assert_eq!((series_uids.len(), sop_uids.len()), (2, 6));

    let inv = d.json(&["review", "PROJ1"]);
    assert_eq!(inv["project"], "PROJ1");
    assert_eq!(
        (inv["transfers"].as_u64(), inv["instances"].as_u64()),
        (Some(1), Some(6))
    );
    // The participant ID stands for the patient's name and ID, in every instance.
    for (path, keyword) in [("(0010,0010)", "PatientName"), ("(0010,0020)", "PatientID")] {
        let t = tag(&inv, path);
        assert_eq!(t["keyword"], keyword);
        // (No value in the message: a failure would print the original.)
        assert!(samples(t) == ["PROJ1-0042"], "{path} holds another value");
        assert_eq!(
            (t["instances"].as_u64(), t["distinct"].as_u64()),
            (Some(6), Some(1))
        );
    }
    // The research UIDs: one study, two series, six instances, all as released.
    let study = tag(&inv, "(0020,000D)");
    assert_eq!(samples(study), [research_uid.as_str()]);
    let series = tag(&inv, "(0020,000E)");
    assert_eq!(series["distinct"], 2);
    assert!(
        samples(series).iter().all(|s| series_uids.contains(s)),
        "{series}"
    );
    let sops = tag(&inv, "(0008,0018)");
    assert_eq!(
        (sops["instances"].as_u64(), sops["distinct"].as_u64()),
        (Some(6), Some(6))
    );
    assert_eq!(samples(sops).len(), 5, "at most five samples");
    assert!(samples(sops).iter().all(|s| sop_uids.contains(s)), "{sops}");
    assert_eq!(tag(&inv, "(0008,0016)")["distinct"], 1, "one SOP class");
    // Pixel data by its size only.
    let pixels = tag(&inv, "(7FE0,0010)");
    assert_eq!(samples(pixels), ["<2048 bytes>"], "32 x 32 x 16 bits");
    // None of the originals anywhere in the answer.
    let text = serde_json::to_string(&inv).unwrap();
    let family = spec.patient_name.split('^').next().unwrap().to_string();
    let mut originals = vec![
        spec.patient_name.clone(),
        family,
        spec.patient_id.clone(),
        spec.accession.clone(),
        spec.study_uid.clone(),
    ];
    for s in 1..=spec.series {
        originals.push(spec.series_uid(s));
        for i in 1..=spec.instances_per_series {
            originals.push(spec.sop_instance_uid(s, i));
        }
    }
    for o in &originals {
        assert!(
            !text.contains(o.as_str()),
            "the inventory holds an original value"
        );
    }
    // The table: one row per tag, then the private creators.
    let out = d.cli(&["review", "PROJ1"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(
        table.starts_with("project PROJ1: 1 transfers, 6 instances"),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("(0010,0010)")
            && l.contains("PatientName")
            && l.contains("PROJ1-0042")),
        "{table}"
    );
    assert!(table.contains("private creators"), "{table}");

    // The outputs lost and the transfer re-queued: de-identified again, its values merged,
    // its instances not counted twice.
    std::fs::remove_dir_all(data.join("outbound").join(&transfer)).unwrap();
    let out = d.cli(&["resend", "--study", &spec.accession]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.wait_for(
        "the transfer de-identified again",
        Duration::from_secs(90),
        || {
            let again = d
                .json(&["audit"])
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["action"] == "deidentified")
                .count();
            again == 2
        },
    );
    let inv2 = d.json(&["review", "PROJ1"]);
    assert_eq!(
        (inv2["transfers"].as_u64(), inv2["instances"].as_u64()),
        (Some(1), Some(6))
    );
    assert_eq!(tag(&inv2, "(0010,0010)")["instances"], 6);
    assert_eq!(
        tag(&inv2, "(0008,0018)")["distinct"],
        6,
        "the same UIDs again"
    );
    assert!(inv2["updated_ms"].as_i64() > inv["updated_ms"].as_i64());
}
