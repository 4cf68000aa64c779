//! Provisioning bundles (issue 18; `provisioning/README.md` is the admin's how-to): the box
//! is configured only by a signed bundle.
//!
//! * `format.rs`: the bundle file (a tar of `manifest.json`, its minisign signature and the
//!   files it lists) and [`verify`], every check before anything is trusted, in memory;
//! * `keys.rs`: the trusted signers' public keys (installed with the box) and the box's own
//!   age key pair, to which secrets in a bundle are encrypted;
//! * `store.rs`: applied bundles on disk under `<data_dir>/config/`, the `current` symlink
//!   switched by one rename, the highest serial, the trial of a new configuration and its
//!   rollback.
//!
//! What runs it in the daemon (the control API's apply, the inbox, the selftest after a
//! switch, the restart) is `provision.rs`, above the stages it checks the configuration with.

pub mod format;
pub mod keys;
pub mod store;

pub use format::{verify, Context, Manifest, Refusal, TrustedKey, Verified};
pub use keys::{BoxKey, MAX_TRUSTED_KEYS};
pub use store::{AppliedInfo, Attempt, Pending};

/// Where the running configuration came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ConfigSource {
    /// No file and no bundle: the embedded defaults.
    Defaults,
    /// A file named by `--config` (development, or a box not provisioned yet).
    File { path: String },
    /// A verified bundle (`config/current`).
    Bundle(AppliedInfo),
}

impl ConfigSource {
    /// One line for people: `bundle hospital-a serial 7 signed by KEY`, `file /etc/x.toml`,
    /// `embedded defaults`.
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::Defaults => "embedded defaults (no bundle applied)".into(),
            ConfigSource::File { path } => format!("file {path} (not a signed bundle)"),
            ConfigSource::Bundle(b) => format!(
                "bundle {} serial {} signed by key {}",
                b.bundle_id, b.serial, b.signer
            ),
        }
    }
}
