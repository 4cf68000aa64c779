//! A research PACS that accepts connections and never answers holds neither the other
//! destination nor the receive side.

mod common;

use common::pipeline::*;

#[test]
fn a_hung_research_pacs_holds_neither_the_other_destination_nor_the_receive_side() {
    let tmp = tempfile::tempdir().unwrap();
    // "stuck" accepts connections and never answers.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stuck_port = stuck.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in stuck.incoming() {
            held.push(c);
        }
    });
    let port = free_port();
    let pacs = orthanc(tmp.path(), port, "");
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: format!(
                "{}destinations = [\"stuck\", \"research\"]\n\n\
                 [destinations.stuck]\nhost = \"127.0.0.1\"\nport = {stuck_port}\nae_title = \"STUCK\"\n\n\
                 [destinations.research]\nhost = \"127.0.0.1\"\nport = {port}\nae_title = \"RESEARCH\"\n\
                 verify_after_secs = 0\n",
                PROJECT.trim_start()
            ),
            quiet_period_secs: 1,
            ..Options::default()
        },
    );
    let (spec, files) = write(&tmp.path().join("in"), 707, Modality::Ct, 1, 3, 32);
    assert!(storescu(d.addr, "FIONA", &[], &files).status.success());
    d.assign(&spec.accession, "PROJ1", "PROJ1-0007", "baseline");
    let delivery = |t: &Value, name: &str| {
        t["deliveries"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["destination"] == name).cloned())
            .unwrap_or(Value::Null)
    };
    let t = d.transfer_when("the responsive destination to be verified", |t| {
        delivery(t, "research")["verified_ms"].is_i64()
    });
    // The responsive destination did not wait for the stuck one (no wall clock needed): the
    // stuck one has begun its first attempt (counted when it begins) and not finished it (no
    // reason yet; its bound is 30 s + 5 s per instance), and the transfer as a whole waits.
    let stuck = delivery(&t, "stuck");
    assert_eq!(stuck["attempts"].as_u64().unwrap_or(0), 1, "{t}");
    assert!(stuck["reason"].is_null() && stuck["done"] == false, "{t}");
    assert_eq!(t["state"], "deidentified", "{t}");
    let uid = t["research_study_uid"].as_str().unwrap();
    assert_eq!(pacs.held(uid, "FIONA", &[], &tmp.path().join("q")), 3);
    // Receiving goes on meanwhile, while the stuck attempt still runs.
    let (_, more) = write(&tmp.path().join("more"), 708, Modality::Ct, 1, 2, 32);
    assert!(storescu(d.addr, "FIONA", &[], &more).status.success());
    let t = d.json(&["transfers"])[0].clone();
    assert!(delivery(&t, "stuck")["reason"].is_null(), "{t}");
}
