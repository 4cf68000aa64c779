//! Daemon configuration: embedded defaults, an optional TOML file, then command-line overrides.
//!
//! `fiona serve` with no file runs on [`Config::default`]: AE title `FIONA`, port 11112 on all
//! interfaces, data under `./fiona-data` (or `$FIONA_DATA_DIR`). A TOML file (`--config`) may
//! set any field; unknown fields are an error so a typo never silently falls back to a
//! default. [`Config::validate`] names the offending field in every message.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use serde::Deserialize;

pub use crate::model::{Grant, Grants, Role};
pub use crate::project::validate_ae_title;
pub use crate::project::ProjectConfig;
use crate::project::{DestinationConfig, Projects, RoutingRule};

/// Default DICOM port for unencrypted associations (IANA "dicom").
pub const DEFAULT_PORT: u16 = 11112;
/// Where the trusted bundle keys are installed with the box (`Config::bundle_keys`).
pub const DEFAULT_BUNDLE_KEYS: &str = "/etc/fiona/bundle-keys";
/// Default data directory when neither flag, environment nor file names one.
pub const DEFAULT_DATA_DIR: &str = "./fiona-data";

/// Why a configuration was refused. The message always names the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The whole daemon configuration. Every field has an embedded default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Our AE title; associations must call it (unless `accept_any_called_ae`).
    pub ae_title: String,
    /// Address and port of the DICOM listener.
    pub listen: SocketAddr,
    /// Where the quarantine, index, rejected area and control socket live.
    pub data_dir: PathBuf,
    /// Largest P-DATA PDU we accept (our max PDU length in the A-ASSOCIATE-AC).
    pub max_pdu: u32,
    /// Associations served at once; more are refused with "local limit exceeded".
    pub max_associations: usize,
    /// Accept associations whatever called AE title they use.
    pub accept_any_called_ae: bool,
    /// Seconds to wait for the A-ASSOCIATE-RQ after TCP accept (ARTIM).
    pub acse_timeout_secs: u64,
    /// Connections waiting for their A-ASSOCIATE-RQ at once (each for `acse_timeout_secs`);
    /// more are closed at once. One address may hold a quarter of them.
    pub max_unassociated: usize,
    /// Connections from one address at once (waiting or associated); more are closed at once.
    pub max_connections_per_address: usize,
    /// Seconds an association may go without storing anything (C-ECHO does not count)
    /// before it is aborted; 0 means no bound.
    pub association_idle_secs: u64,
    /// Seconds a peer may stay silent (no complete PDU) before the association is aborted.
    pub idle_timeout_secs: u64,
    /// Upper bound on an association's life, in seconds; 0 means no bound.
    pub association_timeout_secs: u64,
    /// Seconds without a new instance after which a study counts as arrived.
    pub quiet_period_secs: u64,
    /// De-identification passes of one transfer that may fail (e.g. the outbound area cannot
    /// be written) before the transfer is `failed` with the reason; retried with backoff.
    pub deid_max_attempts: u32,
    /// The first wait after a failed de-identification pass, doubled each time (at most 10
    /// minutes).
    pub deid_retry_base_secs: u64,
    /// Refuse C-STORE with 0xA700 when the data file system has less free space than this.
    pub min_free_bytes: u64,
    /// Largest data set a deflated instance may inflate to; more is refused (0xC000) while
    /// it is received, and never inflated again (decompression bombs).
    pub max_inflated_bytes: u64,
    /// Largest ratio of inflated to deflated bytes, checked once 16 MiB are inflated.
    pub max_inflation_ratio: u64,
    /// Seconds that SIGTERM waits for in-flight associations before aborting them.
    pub shutdown_grace_secs: u64,
    /// Optional allow-list of peers. Empty lists allow everyone.
    pub allow: AllowList,
    /// A second listener for DICOM over TLS (`[tls]`, port 2762 by convention); none by
    /// default. Same AE titles, allow-list and association limit as the plain listener.
    pub tls: Option<crate::tls::ListenTls>,
    /// Research projects by name (see [`crate::project`]).
    pub projects: BTreeMap<String, ProjectConfig>,
    /// Routing rules for data that arrives already pseudonymized (`[[routing]]`).
    pub routing: Vec<RoutingRule>,
    /// Research PACS that projects forward to (`[destinations.NAME]`).
    pub destinations: BTreeMap<String, DestinationConfig>,
    /// Days (fractions allowed) an unassigned study stays in the assign list; after that it
    /// is hidden there and may be evicted.
    pub unassigned_visible_days: f64,
    /// Days (fractions allowed) after which an unassigned study is deleted, whatever the
    /// free space: identifiable data is not kept forever. At least `unassigned_visible_days`.
    pub unassigned_retention_days: f64,
    /// Days (fractions allowed) after which a rejected instance's file is deleted.
    pub rejected_retention_days: f64,
    /// Disk-pressure eviction (`[eviction]`).
    pub eviction: EvictionConfig,
    /// The mail server for projects' e-mail notifications (`[smtp]`); none by default.
    pub smtp: Option<SmtpConfig>,
    /// The liveness checks behind the systemd watchdog (`[watchdog]`).
    pub watchdog: WatchdogConfig,
    /// Prometheus metrics over TCP (`[metrics]`); `/metrics` on the control socket always.
    pub metrics: MetricsConfig,
    /// The web page (`[web]`): HTTPS on `web.listen`, accounts, LDAP.
    pub web: WebConfig,
    /// The directory of the trusted bundle keys (minisign `*.pub`): installed with the box,
    /// never set by a configuration file or bundle (`fiona serve --bundle-keys`,
    /// `FIONA_BUNDLE_KEYS`).
    #[serde(skip)]
    pub bundle_keys: PathBuf,
}

/// `[web]`: the web page served by the daemon, HTTPS only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Serve the web page at all.
    pub enabled: bool,
    /// Address and port of the HTTPS listener.
    pub listen: SocketAddr,
    /// PEM certificate chain and private key; when neither is set, a self-signed pair is
    /// made at first start and kept in the data directory (`web/`).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The page's address as browsers reach it (`https://fiona.example.org:8443`): the
    /// one-time setup link names it, and forms are accepted only from this origin (besides
    /// the listener's own address). Default: `https://` and `listen`.
    pub public_url: Option<String>,
    /// Minutes (fractions allowed) without a request after which a session ends.
    pub session_idle_minutes: f64,
    /// Hours (fractions allowed) after login after which a session ends, whatever the
    /// activity.
    pub session_max_hours: f64,
    /// Failed logins of one account (within `lockout_minutes`) that lock it for
    /// `lockout_minutes`.
    pub max_failures_per_account: u32,
    /// Failed logins from one address (within `lockout_minutes`) after which that address
    /// may not try again for `lockout_minutes`.
    pub max_failures_per_address: u32,
    /// Minutes (fractions allowed).
    pub lockout_minutes: f64,
    /// Accounts provisioned by configuration (`[[web.accounts]]`), besides those made with
    /// `fiona user add`. A name may not be in both.
    pub accounts: Vec<WebAccount>,
    /// Log in against a directory (`[web.ldap]`): Active Directory or OpenLDAP.
    pub ldap: Option<LdapConfig>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            cert: None,
            key: None,
            public_url: None,
            session_idle_minutes: 30.0,
            session_max_hours: 12.0,
            max_failures_per_account: 5,
            max_failures_per_address: 20,
            lockout_minutes: 15.0,
            accounts: Vec::new(),
            ldap: None,
        }
    }
}

/// One provisioned web account (`[[web.accounts]]`). Its `Debug` never prints the hash.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebAccount {
    pub name: String,
    /// An Argon2id hash in PHC format (`fiona user hash` makes one).
    pub password_hash: String,
    /// Everything, on every project, plus users, rejected and parked instances.
    #[serde(default)]
    pub admin: bool,
    /// Role per project.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    #[serde(default)]
    pub disabled: bool,
}

impl std::fmt::Debug for WebAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebAccount")
            .field("name", &self.name)
            .field("admin", &self.admin)
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// `[web.ldap]`: log in with a directory account. A simple bind as the user, over LDAPS
/// (`ldaps://`) or StartTLS (`ldap://` with `starttls = true`; a password never goes in
/// clear), then the user's groups are read and mapped to roles (`ldap.rs`). There is no
/// service account: the user's own bind reads its entry and groups.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldaps://host:636` or `ldap://host:389` (then `starttls` must be true).
    pub url: String,
    #[serde(default)]
    pub starttls: bool,
    /// PEM file of the CA that signed the directory's certificate (default: the public web
    /// roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The DN (or Active Directory user principal name) the user binds as; `{user}` is the
    /// login name, escaped: `uid={user},ou=people,dc=example,dc=org` or
    /// `{user}@hospital.example`.
    pub bind_dn: String,
    /// Where the user's entry is searched for after the bind (to read its groups).
    pub base_dn: String,
    /// The filter that finds the user's entry; `{user}` is the login name, escaped.
    #[serde(default = "default_ldap_user_filter")]
    pub user_filter: String,
    /// When set, groups are searched under this DN with `(member=USER-DN)` (OpenLDAP's
    /// `groupOfNames`); otherwise the user entry's `memberOf` values are the groups (Active
    /// Directory).
    #[serde(default)]
    pub group_base_dn: Option<String>,
    /// Group DN to grants: `admin`, or `PROJECT:ROLE` (`viewer`, `assigner`, `manager`).
    /// A user in no mapped group may not log in.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    #[serde(default = "default_ldap_timeout")]
    pub timeout_secs: u64,
}

fn default_ldap_user_filter() -> String {
    "(|(uid={user})(sAMAccountName={user}))".into()
}

fn default_ldap_timeout() -> u64 {
    10
}

/// Is `name` a valid web account name: 1 to 64 of letters, digits and `._-@`.
pub fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// The SMTP server notifications go through (`[smtp]`): STARTTLS always. Its `Debug` never
/// prints the password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// The sender address.
    pub from: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// PEM file of the CA that signed the server's certificate (default: the public web
    /// roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default = "default_smtp_timeout")]
    pub timeout_secs: u64,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("ca", &self.ca)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

fn default_smtp_port() -> u16 {
    587
}

fn default_smtp_timeout() -> u64 {
    30
}

/// When housekeeping evicts under disk pressure (`[eviction]`; see `evict`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvictionConfig {
    /// A pass evicts when the data file system has less free space than this (percent).
    pub high_water_free_percent: f64,
    /// ... until this much is free (percent), or nothing more may go.
    pub target_free_percent: f64,
    /// Hours (fractions allowed) a transfer stays after it is verified at every destination
    /// before its study may be evicted; also how long a rejected file stays before pressure
    /// may take it.
    pub grace_hours: f64,
    /// Seconds between housekeeping passes (free space, retention, eviction).
    pub interval_secs: f64,
}

impl Default for EvictionConfig {
    fn default() -> Self {
        EvictionConfig {
            high_water_free_percent: 20.0,
            target_free_percent: 25.0,
            grace_hours: 24.0,
            interval_secs: 60.0,
        }
    }
}

/// `[watchdog]`: how the liveness checks judge (see `health.rs`, `watchdog.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogConfig {
    /// Seconds between C-ECHOs through our own DICOM listener; 0 switches the check off.
    pub echo_interval_secs: u64,
    /// Seconds a component may go without progress (a heartbeat, a successful echo) before
    /// its check fails and the watchdog pings stop.
    pub stall_secs: u64,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            echo_interval_secs: 60,
            stall_secs: 600,
        }
    }
}

impl WatchdogConfig {
    pub fn stall(&self) -> Duration {
        Duration::from_secs(self.stall_secs)
    }
    pub fn echo_interval(&self) -> Option<Duration> {
        (self.echo_interval_secs > 0).then(|| Duration::from_secs(self.echo_interval_secs))
    }
}

/// `[metrics]`: an optional TCP listener for Prometheus.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address and port serving `GET /metrics` over plain HTTP; none by default.
    pub listen: Option<SocketAddr>,
}

/// Who may open associations. Each non-empty list must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowList {
    /// Calling AE titles allowed (exact match after trimming spaces).
    pub calling_ae_titles: Vec<String>,
    /// Source addresses: single IPs (`10.0.0.5`) or CIDR blocks (`10.1.0.0/16`).
    pub addresses: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ae_title: "FIONA".into(),
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            data_dir: std::env::var_os("FIONA_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            max_pdu: 131_072,
            max_associations: 32,
            accept_any_called_ae: false,
            acse_timeout_secs: 10,
            max_unassociated: 16,
            max_connections_per_address: 16,
            association_idle_secs: 120,
            idle_timeout_secs: 120,
            association_timeout_secs: 4 * 3600,
            quiet_period_secs: 15,
            deid_max_attempts: 8,
            deid_retry_base_secs: 5,
            min_free_bytes: 1 << 30,
            max_inflated_bytes: crate::header::DEFAULT_MAX_INFLATED_BYTES,
            max_inflation_ratio: crate::header::DEFAULT_MAX_INFLATION_RATIO,
            shutdown_grace_secs: 10,
            allow: AllowList::default(),
            tls: None,
            projects: BTreeMap::new(),
            routing: Vec::new(),
            destinations: BTreeMap::new(),
            unassigned_visible_days: 7.0,
            unassigned_retention_days: 30.0,
            rejected_retention_days: 30.0,
            eviction: EvictionConfig::default(),
            smtp: None,
            watchdog: WatchdogConfig::default(),
            metrics: MetricsConfig::default(),
            web: WebConfig::default(),
            bundle_keys: PathBuf::from(DEFAULT_BUNDLE_KEYS),
        }
    }
}

impl Config {
    /// Read a TOML file over the embedded defaults and validate it.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parse TOML text over the embedded defaults and validate it.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Make every relative file path absolute under `base` (a provisioning bundle's
    /// directory: its `fiona.toml` names files beside it). Absolute paths are left alone.
    pub fn resolve_relative(&mut self, base: &Path) {
        fn fix(p: &mut PathBuf, base: &Path) {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        fn fix_opt(p: &mut Option<PathBuf>, base: &Path) {
            if let Some(p) = p {
                fix(p, base);
            }
        }
        fix_opt(&mut self.web.cert, base);
        fix_opt(&mut self.web.key, base);
        if let Some(l) = &mut self.web.ldap {
            fix_opt(&mut l.ca, base);
        }
        if let Some(s) = &mut self.smtp {
            fix_opt(&mut s.ca, base);
        }
        if let Some(t) = &mut self.tls {
            fix(&mut t.certificate, base);
            fix(&mut t.private_key, base);
            fix_opt(&mut t.client_ca, base);
        }
        for d in self.destinations.values_mut() {
            if let Some(t) = &mut d.tls {
                fix(&mut t.ca, base);
                fix_opt(&mut t.certificate, base);
                fix_opt(&mut t.private_key, base);
            }
        }
        for p in self.projects.values_mut() {
            fix_opt(&mut p.notify.webhook_ca, base);
            fix_opt(&mut p.pixel.library, base);
        }
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_ae_title(&self.ae_title).map_err(|r| invalid("ae_title", r))?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        // PS3.8 9.3.1: the receiver's maximum must be at least the minimum PDU size.
        if !(dicom_ul::pdu::MINIMUM_PDU_SIZE..=dicom_ul::pdu::MAXIMUM_PDU_SIZE)
            .contains(&self.max_pdu)
        {
            return Err(invalid(
                "max_pdu",
                format!(
                    "{} is outside {}..={}",
                    self.max_pdu,
                    dicom_ul::pdu::MINIMUM_PDU_SIZE,
                    dicom_ul::pdu::MAXIMUM_PDU_SIZE
                ),
            ));
        }
        if self.max_inflated_bytes < (1 << 20) {
            return Err(invalid("max_inflated_bytes", "must be at least 1 MiB"));
        }
        if self.max_inflation_ratio < 2 {
            return Err(invalid("max_inflation_ratio", "must be at least 2"));
        }
        if self.max_associations == 0 || self.max_associations > 4096 {
            return Err(invalid("max_associations", "must be between 1 and 4096"));
        }
        if self.deid_max_attempts == 0 {
            return Err(invalid("deid_max_attempts", "must be at least 1"));
        }
        if self.deid_retry_base_secs == 0 || self.deid_retry_base_secs > 600 {
            return Err(invalid("deid_retry_base_secs", "must be between 1 and 600"));
        }
        if self.max_unassociated == 0 || self.max_unassociated > 4096 {
            return Err(invalid("max_unassociated", "must be between 1 and 4096"));
        }
        if self.max_connections_per_address == 0 || self.max_connections_per_address > 4096 {
            return Err(invalid(
                "max_connections_per_address",
                "must be between 1 and 4096",
            ));
        }
        for (field, v) in [
            ("acse_timeout_secs", self.acse_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be at least 1 second"));
            }
        }
        for ae in &self.allow.calling_ae_titles {
            validate_ae_title(ae).map_err(|r| invalid("allow.calling_ae_titles", r))?;
        }
        for a in &self.allow.addresses {
            IpNet::parse(a).map_err(|r| invalid("allow.addresses", r))?;
        }
        if !(self.unassigned_visible_days > 0.0 && self.unassigned_visible_days <= 3650.0) {
            return Err(invalid(
                "unassigned_visible_days",
                "must be more than 0 and at most 3650 days",
            ));
        }
        if !(self.unassigned_retention_days >= self.unassigned_visible_days
            && self.unassigned_retention_days <= 36500.0)
        {
            return Err(invalid(
                "unassigned_retention_days",
                "must be at least `unassigned_visible_days` (a study on the assign list is kept) and at most 36500 days",
            ));
        }
        if !(self.rejected_retention_days > 0.0 && self.rejected_retention_days <= 36500.0) {
            return Err(invalid(
                "rejected_retention_days",
                "must be more than 0 and at most 36500 days",
            ));
        }
        let e = &self.eviction;
        if !(e.high_water_free_percent > 0.0 && e.high_water_free_percent < 100.0) {
            return Err(invalid(
                "eviction.high_water_free_percent",
                "must be more than 0 and less than 100",
            ));
        }
        if !(e.target_free_percent >= e.high_water_free_percent && e.target_free_percent < 100.0) {
            return Err(invalid(
                "eviction.target_free_percent",
                "must be at least `high_water_free_percent` and less than 100",
            ));
        }
        if !(e.grace_hours >= 0.0 && e.grace_hours <= 87600.0) {
            return Err(invalid(
                "eviction.grace_hours",
                "must be at least 0 and at most 87600 hours",
            ));
        }
        if !(e.interval_secs >= 0.05 && e.interval_secs <= 86400.0) {
            return Err(invalid(
                "eviction.interval_secs",
                "must be at least 0.05 and at most 86400 seconds",
            ));
        }
        if let Some(s) = &self.smtp {
            if s.host.trim().is_empty() {
                return Err(invalid("smtp.host", "must not be empty"));
            }
            if s.port == 0 {
                return Err(invalid("smtp.port", "must not be 0"));
            }
            if !s.from.contains('@') {
                return Err(invalid("smtp.from", "must be an e-mail address"));
            }
            if s.username.is_some() != s.password.is_some() {
                return Err(invalid(
                    "smtp.password",
                    "username and password go together",
                ));
            }
        }
        if self.smtp.is_none() {
            if let Some((name, _)) = self
                .projects
                .iter()
                .find(|(_, p)| !p.notify.email.is_empty())
            {
                return Err(invalid(
                    "smtp",
                    format!("project `{name}` sends e-mail notifications: configure [smtp]"),
                ));
            }
        }
        if let Some(t) = &self.tls {
            // Port 0 (any free port, as in tests) cannot clash.
            if t.listen == self.listen && t.listen.port() != 0 {
                return Err(invalid(
                    "tls.listen",
                    "must differ from `listen` (TLS has its own port, 2762 by convention)",
                ));
            }
        }
        if self.watchdog.stall_secs == 0 || self.watchdog.stall_secs > 86_400 {
            return Err(invalid(
                "watchdog.stall_secs",
                "must be between 1 and 86400 seconds",
            ));
        }
        if self.watchdog.echo_interval_secs > 86_400 {
            return Err(invalid(
                "watchdog.echo_interval_secs",
                "must be at most 86400 seconds (0 switches the echo check off)",
            ));
        }
        if let Some(m) = self.metrics.listen {
            let tls = self.tls.as_ref().map(|t| t.listen);
            // Port 0 (any free port, as in tests) cannot clash.
            if m.port() != 0 && (m == self.listen || Some(m) == tls) {
                return Err(invalid(
                    "metrics.listen",
                    "must differ from the DICOM listeners (`listen`, `tls.listen`)",
                ));
            }
        }
        self.validate_web()?;
        self.compile_projects()?;
        Ok(())
    }

    fn validate_web(&self) -> Result<(), ConfigError> {
        let w = &self.web;
        if w.cert.is_some() != w.key.is_some() {
            return Err(invalid("web.key", "`cert` and `key` go together"));
        }
        if w.enabled && w.listen.port() != 0 {
            let tls = self.tls.as_ref().map(|t| t.listen);
            if w.listen == self.listen
                || Some(w.listen) == tls
                || Some(w.listen) == self.metrics.listen
            {
                return Err(invalid(
                    "web.listen",
                    "must differ from the DICOM and metrics listeners",
                ));
            }
        }
        if let Some(u) = &w.public_url {
            if !u.starts_with("https://") || u.trim_end_matches('/').len() <= "https://".len() {
                return Err(invalid("web.public_url", "must be an https:// address"));
            }
        }
        if !(w.session_idle_minutes >= 0.01 && w.session_idle_minutes <= 1440.0) {
            return Err(invalid(
                "web.session_idle_minutes",
                "must be between 0.01 and 1440",
            ));
        }
        if !(w.session_max_hours >= 0.001 && w.session_max_hours <= 168.0) {
            return Err(invalid(
                "web.session_max_hours",
                "must be between 0.001 and 168",
            ));
        }
        if w.max_failures_per_account == 0 || w.max_failures_per_address == 0 {
            return Err(invalid(
                "web.max_failures_per_account",
                "failure limits must be at least 1",
            ));
        }
        if !(w.lockout_minutes >= 0.01 && w.lockout_minutes <= 1440.0) {
            return Err(invalid(
                "web.lockout_minutes",
                "must be between 0.01 and 1440",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in &w.accounts {
            if !valid_account_name(&a.name) {
                return Err(invalid(
                    "web.accounts",
                    format!(
                        "`{}` is not a valid account name (1 to 64 letters, digits, `._-@`)",
                        a.name
                    ),
                ));
            }
            if !seen.insert(a.name.as_str()) {
                return Err(invalid(
                    "web.accounts",
                    format!("`{}` is listed twice", a.name),
                ));
            }
            if !a.password_hash.starts_with("$argon2id$") {
                return Err(invalid(
                    "web.accounts",
                    format!(
                        "`{}`: password_hash must be an Argon2id hash (`fiona user hash`)",
                        a.name
                    ),
                ));
            }
            for p in a.roles.keys() {
                if !self.projects.contains_key(p) {
                    return Err(invalid(
                        "web.accounts",
                        format!("`{}`: project `{p}` is not configured", a.name),
                    ));
                }
            }
        }
        if let Some(l) = &w.ldap {
            let plain = l.url.starts_with("ldap://");
            if !plain && !l.url.starts_with("ldaps://") {
                return Err(invalid(
                    "web.ldap.url",
                    "must start with ldaps:// or ldap://",
                ));
            }
            if plain && !l.starttls {
                return Err(invalid(
                    "web.ldap.starttls",
                    "an ldap:// address needs `starttls = true` (passwords never go in clear)",
                ));
            }
            if !l.url.starts_with("ldap://") && l.starttls {
                return Err(invalid(
                    "web.ldap.starttls",
                    "StartTLS goes with ldap://, not ldaps://",
                ));
            }
            if !l.bind_dn.contains("{user}") {
                return Err(invalid("web.ldap.bind_dn", "must contain `{user}`"));
            }
            if !l.user_filter.contains("{user}") {
                return Err(invalid("web.ldap.user_filter", "must contain `{user}`"));
            }
            if l.timeout_secs == 0 || l.timeout_secs > 300 {
                return Err(invalid(
                    "web.ldap.timeout_secs",
                    "must be between 1 and 300",
                ));
            }
            for grants in l.groups.values() {
                for g in grants {
                    match Grant::parse(g).map_err(|r| invalid("web.ldap.groups", r))? {
                        Grant::Project(p, _) if !self.projects.contains_key(&p) => {
                            return Err(invalid(
                                "web.ldap.groups",
                                format!("project `{p}` is not configured"),
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Projects, routing rules and destinations, validated and compiled.
    pub fn compile_projects(&self) -> Result<Projects, ConfigError> {
        Projects::compile(
            &self.projects,
            &self.routing,
            &self.destinations,
            &self.ae_title,
        )
        .map_err(|(field, reason)| invalid(field, reason))
    }

    pub fn acse_timeout(&self) -> Duration {
        Duration::from_secs(self.acse_timeout_secs)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    pub fn association_idle(&self) -> Option<Duration> {
        (self.association_idle_secs > 0).then(|| Duration::from_secs(self.association_idle_secs))
    }
    pub fn association_timeout(&self) -> Option<Duration> {
        (self.association_timeout_secs > 0)
            .then(|| Duration::from_secs(self.association_timeout_secs))
    }
    pub fn quiet_period(&self) -> Duration {
        Duration::from_secs(self.quiet_period_secs)
    }

    /// The parsed address allow-list (validated, so parsing cannot fail here).
    pub fn address_allow_list(&self) -> Vec<IpNet> {
        self.allow
            .addresses
            .iter()
            .filter_map(|a| IpNet::parse(a).ok())
            .collect()
    }
}

/// An IP address or CIDR block from the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let (addr_s, prefix_s) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_s {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }

    /// Whether `ip` lies in this block. IPv4-mapped IPv6 peers match IPv4 blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_as_documented() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.ae_title, "FIONA");
        assert_eq!(c.listen.port(), 11112);
        assert_eq!(c.quiet_period_secs, 15);
    }

    #[test]
    fn file_overrides_defaults() {
        let c = Config::from_toml(
            "ae_title = \"GATE\"\nlisten = \"127.0.0.1:4242\"\nquiet_period_secs = 3\n\
             [allow]\ncalling_ae_titles = [\"CT1\"]\naddresses = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        assert_eq!(c.ae_title, "GATE");
        assert_eq!(c.listen, "127.0.0.1:4242".parse().unwrap());
        assert_eq!(c.quiet_period_secs, 3);
        assert_eq!(c.max_pdu, Config::default().max_pdu);
        assert_eq!(c.allow.calling_ae_titles, vec!["CT1"]);
        assert_eq!(c.metrics.listen, None, "no metrics listener by default");
        let c = Config::from_toml(
            "[metrics]\nlisten = \"127.0.0.1:9464\"\n[watchdog]\necho_interval_secs = 5\n",
        )
        .unwrap();
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.watchdog.echo_interval(), Some(Duration::from_secs(5)));
        assert_eq!(c.watchdog.stall_secs, 600);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("ae_title = \"THIS_IS_FAR_TOO_LONG\"", "ae_title"),
            ("max_pdu = 10", "max_pdu"),
            ("max_associations = 0", "max_associations"),
            ("idle_timeout_secs = 0", "idle_timeout_secs"),
            ("[allow]\naddresses = [\"nonsense\"]", "allow.addresses"),
            (
                "[allow]\ncalling_ae_titles = [\"\"]",
                "allow.calling_ae_titles",
            ),
            ("[watchdog]\nstall_secs = 0", "watchdog.stall_secs"),
            (
                "[watchdog]\necho_interval_secs = 100000",
                "watchdog.echo_interval_secs",
            ),
            (
                "listen = \"127.0.0.1:4242\"\n[metrics]\nlisten = \"127.0.0.1:4242\"",
                "metrics.listen",
            ),
            ("[metrics]\nlisten = \"localhost\"", "listen"),
        ];
        for (toml, field) in cases {
            let e = Config::from_toml(toml).unwrap_err().to_string();
            assert!(e.contains(field), "{toml:?} gave {e:?}");
        }
        let e = Config::from_toml("ae_titel = \"X\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ae_titel"), "{e}");
        let e = Config::from_toml("listen = \"nowhere\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn cidr_matching() {
        let n = IpNet::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = IpNet::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(IpNet::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(IpNet::parse("10.0.0.0/33").is_err());
    }
}
