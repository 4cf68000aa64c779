//! Print what a fuzz target sees for some input files, e.g. a crash artifact:
//!
//! ```text
//! cargo run --manifest-path daemon/fuzz/Cargo.toml --example show -- header_scan FILE...
//! cargo run --manifest-path daemon/fuzz/Cargo.toml --example show -- dimse_command FILE...
//! ```
//!
//! For `header_scan` it prints the result fed whole and fed in the input's chunk size, then
//! runs the target's property check (which panics on a violation).

use fiona_fuzz::{check, chunk_size, show, TRANSFER_SYNTAXES};

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args
        .next()
        .expect("usage: show header_scan|dimse_command FILE...");
    for path in args {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        println!("{path}: {} bytes", data.len());
        match target.as_str() {
            "header_scan" => {
                let [ts, chunk, body @ ..] = &data[..] else {
                    println!("  too short");
                    continue;
                };
                let ts = TRANSFER_SYNTAXES[usize::from(*ts % 4)];
                let chunk = chunk_size(*chunk);
                println!(
                    "  transfer syntax {ts}, chunk {chunk}, data set {} bytes",
                    body.len()
                );
                println!("  whole:   {}", show(&check(ts, [body])));
                println!("  chunked: {}", show(&check(ts, body.chunks(chunk))));
                fiona_fuzz::header_scan(&data);
                println!("  properties hold");
            }
            "dimse_command" => {
                println!("  parse: {:?}", fiona::dimse::Command::parse(&data));
                fiona_fuzz::dimse_command(&data);
                println!("  properties hold");
            }
            t => panic!("unknown target {t}"),
        }
    }
}
