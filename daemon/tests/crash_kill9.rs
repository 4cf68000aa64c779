//! Scenario: while `storescu` sends a few hundred instances, the daemon is killed with
//! SIGKILL at random moments, several rounds. After each restart every instance `storescu` saw
//! acknowledged is in the index with intact bytes, no partial file is indexed, and no temp or
//! orphan file is left in the quarantine. A routing rule assigns the study on arrival: after
//! every restart the study's transfer counts exactly the instances indexed (the assignment
//! and its transfer commit in the same transaction as the instances).

use fiona_tests::fiona_bin;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::harness::{
    acknowledged, indexed_instances as indexed, output_text, partial_temp_files, require_tool,
    spawn_storescu_verbose, stored_files, Daemon, Options,
};

/// A small deterministic PRNG (xorshift) so a failing round can be replayed from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn kill9_never_loses_an_acknowledged_instance() {
    require_tool("storescu");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("corpus");
    std::fs::create_dir_all(&src).unwrap();
    let mut spec = StudySpec::new(4242, Modality::Ct);
    spec.series = 3;
    spec.instances_per_series = 150;
    let files = corpus::write_study(&spec, &src).unwrap();
    let by_uid: BTreeMap<String, PathBuf> = files
        .iter()
        .map(|f| (corpus::sop_instance_uid(f).unwrap(), f.clone()))
        .collect();

    let seed = std::env::var("FIONA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed {seed} (set FIONA_CRASH_SEED to replay)");
    let mut rng = Rng(seed);

    let opts = Options {
        extra_toml: "[projects.CRASH1]\nparticipant_pattern = \"FIONATEST[0-9]{6}\"\n\
                     events = [\"baseline\"]\n\
                     approval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n\
                     [[routing]]\nproject = \"CRASH1\"\nevent = \"baseline\"\n\
                     pattern = \"^FIONATEST[0-9]{6}$\"\nany_sender = true\n"
            .into(),
        ..Options::default()
    };
    let mut d = Daemon::start(&fiona_bin!(), &tmp.path().join("data"), &opts);
    let mut acked: BTreeSet<PathBuf> = BTreeSet::new();
    let rounds = 8;
    let mut kills_mid_transfer = 0;
    let mut rounds_run = 0;
    for round in 0..rounds {
        // Send what has not been acknowledged yet, so the rounds work through the corpus.
        let remaining: Vec<&PathBuf> = files.iter().filter(|f| !acked.contains(*f)).collect();
        if remaining.is_empty() {
            break;
        }
        let child = spawn_storescu_verbose(d.addr, "CRASHSCU", &["-R", "-xe"], &remaining);
        rounds_run += 1;
        let delay = 20 + rng.next() % 250;
        std::thread::sleep(Duration::from_millis(delay));
        d.kill9();
        let log = output_text(child.wait_with_output().unwrap());
        let this_round = acknowledged(&log);
        if this_round.len() < remaining.len() {
            kills_mid_transfer += 1;
        }
        eprintln!(
            "round {round}: killed after {delay} ms, {} acknowledged this round",
            this_round.len()
        );
        acked.extend(this_round);

        d.restart();
        assert!(
            partial_temp_files(&d.data_dir).is_empty(),
            "partial temp files removed at start"
        );
        let idx = indexed(&d);
        // Every acknowledged instance is indexed, with intact bytes.
        for f in &acked {
            let uid = corpus::sop_instance_uid(f).unwrap();
            let stored = idx
                .get(&uid)
                .unwrap_or_else(|| panic!("round {round}: acknowledged {uid} lost (seed {seed})"));
            let (_, sent) = corpus::dataset_bytes(f).unwrap();
            let (_, got) = corpus::dataset_bytes(stored).unwrap();
            assert!(sent == got, "round {round}: {uid} stored bytes differ");
        }
        // Every indexed instance is complete, and nothing unindexed is left on disk.
        for (uid, stored) in &idx {
            let (_, sent) = corpus::dataset_bytes(&by_uid[uid]).unwrap();
            let (_, got) = corpus::dataset_bytes(stored).unwrap();
            assert!(sent == got, "round {round}: indexed {uid} is partial");
        }
        assert_eq!(
            stored_files(&d.data_dir).len(),
            idx.len(),
            "no orphan files"
        );
        let status = d.json(&["status"]);
        assert_eq!(
            status["totals"]["instances"].as_u64().unwrap(),
            idx.len() as u64
        );
        // The assignment made on arrival, and its transfer's count, match the index.
        let transfers = d.json(&["transfers"]);
        let transfers = transfers.as_array().unwrap();
        if idx.is_empty() {
            assert!(transfers.is_empty());
        } else {
            assert_eq!(
                transfers.len(),
                1,
                "round {round}: one assignment (seed {seed})"
            );
            assert_eq!(transfers[0]["participant"], spec.patient_id.as_str());
            assert_eq!(
                transfers[0]["instances"].as_u64().unwrap(),
                idx.len() as u64,
                "round {round}: transfer count equals indexed instances (seed {seed})"
            );
        }
    }
    eprintln!(
        "{} rounds, {kills_mid_transfer} killed mid-transfer, {} instances acknowledged in all",
        rounds_run,
        acked.len()
    );
    assert!(
        kills_mid_transfer > 0,
        "at least one kill must land mid-transfer"
    );
    // Finally everything goes through, and nothing is duplicated.
    let out = fiona_tests::harness::storescu(d.addr, "FIONA", &["-R", "-xe"], &files);
    assert!(out.status.success());
    assert_eq!(indexed(&d).len(), files.len());
    assert_eq!(stored_files(&d.data_dir).len(), files.len());
}
