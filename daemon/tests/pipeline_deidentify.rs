//! The daemon's pipeline, first stage: DCMTK `storescu` sends an ultrasound study with text
//! burned into its pixels to fiona on 127.0.0.1; it is assigned; once the study is quiet the
//! pipeline de-identifies it, without anyone acting, into the outbound area. Checked: every
//! text box black, the research StudyInstanceUID and the pseudonym in every output, no
//! clinical identifier in any output or file name, and an instance whose pixel data cannot be
//! decoded parked with its reason, shown by `fiona transfers`, `fiona parked` and the status,
//! with no output.

mod common;

use common::pipeline::*;

#[test]
fn an_assigned_study_is_deidentified_and_scrubbed_without_anyone_acting() {
    require_tool("dcmodify");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = Daemon::start(
        &fiona_bin!(),
        &data,
        &Options {
            extra_toml: PROJECT.into(),
            quiet_period_secs: 1,
            ..Options::default()
        },
    );

    // Three ultrasound images with burned-in text, and a fourth whose pixel data does not
    // fit its attributes (it is stored, but cannot be decoded).
    let (spec, files) = write(&tmp.path().join("in"), 701, Modality::Us, 1, 4, 256);
    for f in &files[..3] {
        burn_text(f, &burns()).unwrap();
    }
    fiona_tests::harness::make_undecodable(&files[3]);
    d.store_ok(&files);

    let assigned = d.assign(&spec.accession, "PROJ1", "PROJ1-0042", "baseline");
    let transfer = assigned["transfer"].as_str().unwrap().to_string();

    let t = d.transfer_when("the transfer to be de-identified", |t| {
        t["state"] == "deidentified"
    });
    assert_eq!(t["id"], transfer.as_str());
    assert_eq!(t["instances"], 4);
    assert_eq!(t["deidentified"], 3);
    let parked = t["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 1, "{t}");
    let reason = parked[0]["reason"].as_str().unwrap();
    assert!(reason.contains("pixel data cannot be scrubbed"), "{reason}");

    // Shown to the admin: the parked list, the transfers table and the status.
    let p = d.cli(&["parked"]);
    let text = String::from_utf8_lossy(&p.stdout);
    assert!(p.status.success());
    assert!(
        text.contains(&transfer) && text.contains(parked[0]["instance"].as_str().unwrap()),
        "{text}"
    );
    assert!(text.contains("pixel data cannot be scrubbed"), "{text}");
    assert_eq!(d.json(&["status"])["instances_parked"], 1);
    let table = String::from_utf8_lossy(&d.cli(&["transfers"]).stdout).to_string();
    assert!(
        table.contains("PARKED") && table.contains("deidentified"),
        "{table}"
    );

    // The outputs: in the data directory, named by fiona's keys, de-identified and scrubbed.
    let outbound = data.join("outbound").join(&transfer);
    let outputs: Vec<PathBuf> = std::fs::read_dir(&outbound)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(outputs.len(), 3, "{outputs:?}");
    assert!(!outputs
        .iter()
        .any(|o| o.file_name().unwrap().to_string_lossy()
            == format!("{}.dcm", parked[0]["instance"].as_str().unwrap())));
    let research_uid = t["research_study_uid"].as_str().unwrap();
    for o in &outputs {
        let name = o.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.contains(&spec.study_uid) && !name.contains(&spec.patient_id));
        check_deidentified(o, &spec, research_uid, "PROJ1-0042");
        let obj = open_file(o).unwrap();
        let text = |tag| header_text(&obj, tag);
        assert_eq!(text(Tag(0x0028, 0x0301)), "NO");
        let dec = decode(&obj, 1 << 30).unwrap();
        let cols = dec.layout.columns;
        for (bx, by, bw, bh) in burns().iter().map(Burn::rect) {
            for y in by..by + bh {
                for x in bx..bx + bw {
                    let at = ((y * cols + x) * 3) as usize;
                    assert_eq!(
                        &dec.data[at..at + 3],
                        &[0, 0, 0],
                        "{name}: ({x},{y}) not black"
                    );
                }
            }
        }
    }
    // Nothing of the study's pixels outside the data directory: no temp images.
    let stray: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n != "data" && n != "in" && !n.ends_with(".toml") && !n.ends_with(".log"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    // The log tells what happened (the parked instance and why) with no patient data.
    // (Logged around the recording of the state: wait for the lines.)
    d.wait_for(
        "the parked instance and the transfer in the log",
        Duration::from_secs(30),
        || {
            let log = d.log();
            log.contains("instance parked") && log.contains("transfer de-identified")
        },
    );
    let log = d.log();
    for secret in [
        &spec.patient_id,
        &spec.patient_name,
        &spec.accession,
        &spec.study_uid,
    ] {
        assert!(!log.contains(secret.as_str()), "the log holds patient data");
    }
}
