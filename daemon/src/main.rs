//! The `fiona` binary: parses the command line and hands it to [`fiona::cli::run`] (the
//! commands live in the library's `cli` module).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `fiona studies | head`: a reader that stops early ends the listing quietly instead of
    // a panic ("failed printing to stdout") from println!.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    // A command-line error exits 1, not clap's 2: exit status 2 is `fiona selftest`'s
    // "warnings only", which the selftest unit counts as success (SuccessExitStatus=2).
    let cli = match fiona::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::FAILURE;
        }
        // --help and --version: printed on stdout, exit 0.
        Err(e) => e.exit(),
    };
    match fiona::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("fiona: {}", e.message);
            }
            ExitCode::from(e.code)
        }
    }
}
