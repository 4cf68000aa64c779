//! The `fiona` command line: the clap definitions and [`run`], which hands each command to
//! its group's module. `serve` runs the daemon ([`serve`]); `deid` works on files by itself
//! ([`deid`]); every other command is a client of the running daemon's control API
//! ([`crate::control::client`]) and prints its answer as a table ([`table`]) or, with
//! `--json`, as the JSON the daemon sent.
//!
//! | module         | commands                                        |
//! |----------------|-------------------------------------------------|
//! | [`serve`]      | `serve`, `check-config`                         |
//! | [`studies`]    | `studies`, `study`                              |
//! | [`assign`]     | `assign`, `coupling import`, `coupling list`    |
//! | [`transfers`]  | `transfers`, `parked`, `resend`, `verify`       |
//! | [`status`]     | `status`, `health`, `rejected`, `projects`, `audit` |
//! | [`review`]     | `review`                                        |
//! | [`user`]       | `user list\|add\|passwd\|roles\|disable\|enable\|hash` |
//! | [`deid`]       | `deid`                                          |
//!
//! `--config`, `--data-dir` and `--json` are global: they may stand before or after the
//! command. The top layer of the crate: nothing in it uses this module.

pub mod assign;
pub mod bundle;
pub mod deid;
pub mod output;
pub mod review;
pub mod serve;
pub mod status;
pub mod studies;
pub mod table;
pub mod transfers;
pub mod user;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::control::client::{Call, Client};

#[derive(Parser, Debug)]
#[command(
    name = "fiona",
    version,
    about = "Research-imaging gateway: DICOM node with a crash-safe quarantine"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The options of every command. The data directory is `--data-dir`, else the config
/// file's, else `$FIONA_DATA_DIR`, else `./fiona-data`.
#[derive(Args, Debug, Clone, Default)]
pub struct Global {
    /// TOML configuration file.
    #[arg(long, short = 'c', global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (overrides the config file).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Print JSON for scripts (the daemon's answer), instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What a study or a file is assigned to: `--project`, `--participant`, `--event`.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Research project (names the secret and is written as the protocol).
    #[arg(long)]
    pub project: String,
    /// Pseudonymized participant ID (for `assign`, it must match the project's pattern).
    #[arg(long)]
    pub participant: String,
    /// Event name, e.g. baseline.
    #[arg(long)]
    pub event: String,
}

impl Global {
    /// The configuration file (or the defaults) with `--data-dir` applied.
    pub fn config(&self) -> Result<Config, String> {
        let mut cfg = match &self.config {
            Some(p) => Config::from_file(p).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        Ok(cfg)
    }

    /// A client of the daemon on this data directory.
    pub fn client(&self) -> Result<Client, String> {
        Client::new(&self.config()?.data_dir).map_err(|e| e.to_string())
    }

    /// Refuse `--json` for a command that prints no answer of the daemon.
    fn no_json(&self, command: &str) -> Result<(), String> {
        if self.json {
            return Err(format!("`fiona {command}` has no JSON output (--json)"));
        }
        Ok(())
    }
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the DICOM node (C-ECHO, C-STORE) and the control API.
    Serve(serve::ServeArgs),
    /// List the studies in the quarantine, with their assignments.
    ///
    /// Unassigned studies older than `unassigned_visible_days` (default 7) are left out;
    /// `--all` shows them too, marked hidden.
    Studies(studies::StudiesArgs),
    /// Assign a study to a research project, participant and event (or correct it).
    ///
    /// The participant ID must match the project's pattern; a new ID that matches is
    /// remembered for the project. Assigning the same study to another project adds a second
    /// assignment; assigning it again to the same project with another participant or event
    /// is a correction (recorded, with a new transfer).
    Assign(assign::AssignArgs),
    /// Coupling lists: accession number or StudyInstanceUID -> project, participant, event.
    Coupling {
        #[command(subcommand)]
        cmd: assign::CouplingCmd,
    },
    /// Transfers (one per assignment, correction or later addition) and their state.
    Transfers(transfers::TransfersArgs),
    /// The configured projects: pattern, events, approval, whether they take assignments now.
    Projects,
    /// The audit trail: every assignment, correction, refusal, rule match and coupling import.
    Audit,
    /// What left the box for a project: every tag of its de-identified outputs (at any
    /// depth) with keyword, VR, in how many instances, how many distinct values and a few
    /// samples, then the private creators. Kept in the index, so it outlives eviction.
    Review(review::ReviewArgs),
    /// Show one study and its series.
    Study(studies::StudyArgs),
    /// Counts, bytes, free disk and associations of the running daemon.
    Status,
    /// Whether the running daemon is healthy (the index works). Exit status 0 when healthy,
    /// 1 otherwise, with the problems on stderr: for monitors and the watchdog.
    Health,
    /// Send transfers again (e.g. after the research PACS lost data): a study's, or a
    /// project's (optionally those created since a date). The PACS keeps one copy per SOP
    /// Instance UID. A parked transfer is de-identified again (e.g. after its project's
    /// settings changed).
    Resend(transfers::ResendArgs),
    /// Ask the research PACS (C-FIND) what it holds of a project's sent studies and report
    /// what it is missing. Exit status 1 when anything is missing or a PACS cannot be asked.
    Verify(transfers::VerifyArgs),
    /// Instances the pipeline parked (could not scrub or de-identify), with the reasons.
    Parked,
    /// Instances that were refused and kept in the rejected area, with the reason.
    Rejected,
    /// Run a housekeeping pass now: retention (unassigned studies and rejected files past
    /// their retention) and, below the high-water mark, eviction of verified studies, hidden
    /// unassigned studies and old rejected files until the target is free. Never unsent,
    /// parked or receiving data. With `--dry-run`: list what would go and why.
    Evict(status::EvictArgs),
    /// De-identify a file or a directory tree: header profile, and the pixel stage (known
    /// regions and OCR) as the project sets it.
    ///
    /// Uses the project's `[projects.NAME.deid]` settings from `--config`, else the default
    /// profile: basic profile, dates shifted per participant, private attributes removed, and
    /// the project secret kept in the data directory (generated on first use). A directory's
    /// outputs are named by their new SOP Instance UID.
    Deid(deid::DeidArgs),
    /// Validate a configuration file (`--config FILE`) and print the effective configuration.
    CheckConfig,
    /// Web page accounts: list, add, set a password, change roles, disable, enable (local
    /// accounts, kept in the index); `hash` makes a password hash for `[[web.accounts]]`.
    /// Passwords are read from stdin, never taken from the command line.
    User {
        #[command(subcommand)]
        cmd: user::UserCmd,
    },
    /// Provisioning bundles: apply a signed bundle, show the current one, print the box's
    /// key; `manifest` and `pack` make a bundle on the admin's machine.
    Bundle {
        #[command(subcommand)]
        cmd: bundle::BundleCmd,
    },
    /// Prove the box works: data directory, index, configuration, DICOM listener, a synthetic
    /// study through each project's de-identification, certificates, destinations, OCR
    /// models, clock. Exit status 0 (passed), 1 (a failure) or 2 (warnings only).
    Selftest(bundle::SelftestArgs),
}

/// Why a command did not succeed: the message for stderr and the exit status.
#[derive(Debug)]
pub struct Failure {
    /// Empty when the command printed what there was to say (`fiona selftest` with warnings).
    pub message: String,
    pub code: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { message, code: 1 }
    }
}

/// Run one command. `Err` holds the message for stderr and the exit status (1, or 2 for a
/// selftest that passed with warnings).
pub fn run(cli: Cli) -> Result<(), Failure> {
    let g = &cli.global;
    let done = match cli.cmd {
        Cmd::Selftest(a) => {
            return match bundle::selftest(g, a)? {
                0 => Ok(()),
                code => Err(Failure {
                    message: String::new(),
                    code,
                }),
            }
        }
        Cmd::Bundle { cmd } => bundle::bundle(g, cmd),
        Cmd::Serve(a) => serve::serve(g, a),
        Cmd::CheckConfig => serve::check_config(g),
        Cmd::Studies(a) => studies::studies(g, a),
        Cmd::Study(a) => studies::study(g, a),
        Cmd::Assign(a) => assign::assign(g, a),
        Cmd::Coupling { cmd } => assign::coupling(g, cmd),
        Cmd::Transfers(a) => transfers::transfers(g, a),
        Cmd::Parked => transfers::parked(g),
        Cmd::Resend(a) => transfers::resend(g, a),
        Cmd::Verify(a) => transfers::verify(g, a),
        Cmd::Status => status::status(g),
        Cmd::Health => status::health(g),
        Cmd::Rejected => status::rejected(g),
        Cmd::Evict(a) => status::evict(g, a),
        Cmd::Projects => status::projects(g),
        Cmd::Audit => status::audit(g),
        Cmd::Review(a) => review::review(g, a),
        Cmd::Deid(a) => deid::deid(g, a),
        Cmd::User { cmd } => user::user(g, cmd),
    };
    done.map_err(Failure::from)
}

/// Make `call` to the daemon and print the answer: as JSON with `--json`, else by `print`.
fn show<A: DeserializeOwned>(
    g: &Global,
    call: Call<A>,
    print: impl FnOnce(A),
) -> Result<(), String> {
    let client = g.client()?;
    if g.json {
        let v = client.send(&call.json()).map_err(|e| e.to_string())?;
        return output::print_json(&v);
    }
    print(client.send(&call).map_err(|e| e.to_string())?);
    Ok(())
}

/// A job's result as JSON, parsed into what the command prints.
fn parse<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("unexpected answer from daemon: {e}"))
}
