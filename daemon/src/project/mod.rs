//! Research projects, routing rules and destinations as configuration: plain data types,
//! validated as a whole, so the signed bundle that will carry them later can reuse them.
//!
//! ```toml
//! [projects.PROJ1]
//! participant_pattern = "^PROJ1-[0-9]{4}$"   # every participant ID must match
//! events = ["baseline", "followup"]
//! approval = "REK 2024/12345"                 # the ethics approval (REK) reference
//! approval_start = "2025-01-01"               # assignments allowed from this date ...
//! approval_end = "2030-12-31"                 # ... through this date (UTC calendar dates)
//! state = "active"                            # or "archived"
//! destinations = ["research"]                 # names of [destinations.NAME]
//! auto_id = { ae_title = "PROJ1AUTO", prefix = "PROJ1-", digits = 4, event = "baseline" }
//! [projects.PROJ1.deid]                       # de-identification (see project::deid)
//!
//! [[routing]]                                 # data that arrives already pseudonymized
//! project = "PROJ1"
//! event = "baseline"
//! called_ae = "FIONAQC"                       # optional; calling_ae likewise
//! field = "patient_id"                        # or "patient_name"
//! pattern = "^QC-(PROJ1-[0-9]{4})$"
//! capture = 1                                 # 0 (default): the whole value
//!
//! [destinations.research]                     # where a project forwards to
//! host = "10.1.2.3"
//! port = 11112
//! ae_title = "RESEARCHPACS"
//! ```
//!
//! The project's secret (UID mapping, date offsets, auto-ID keys) is `deid.secret`, or the
//! one generated once in `<data_dir>/secrets/NAME.key`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize};

pub mod deid;
pub mod pixel;

pub use deid::DeidConfig;
pub use pixel::{OcrConfig, PixelConfig};

/// A project is active until archived; an archived project accepts no new assignments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectState {
    #[default]
    Active,
    Archived,
}

/// A calendar date in configuration: `"2030-12-31"` or a TOML date `2030-12-31`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDate(pub time::Date);

impl std::fmt::Display for ConfigDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}",
            d.year(),
            u8::from(d.month()),
            d.day()
        )
    }
}

/// Parse `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<time::Date> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s.trim(), &fmt).ok()
}

impl<'de> Deserialize<'de> for ConfigDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Toml(toml::value::Datetime),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Toml(t) => match (t.date, t.time) {
                (Some(date), None) => date.to_string(),
                _ => return Err(serde::de::Error::custom("expected a date without a time")),
            },
        };
        parse_date(&text)
            .map(ConfigDate)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a YYYY-MM-DD date")))
    }
}

/// Generated participant IDs for studies sent to the project's own AE title.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoIdConfig {
    /// Studies that call this AE title are assigned to the project with a generated ID.
    pub ae_title: String,
    /// Generated IDs are `prefix` followed by `digits` decimal digits.
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_auto_digits")]
    pub digits: u32,
    /// The event every auto-assigned study gets.
    pub event: String,
}

fn default_auto_digits() -> u32 {
    6
}

/// One research project's configuration (`[projects.NAME]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectConfig {
    /// Regular expression every participant ID of the project must match (whole value).
    pub participant_pattern: String,
    /// Event names a study may be assigned to (e.g. `baseline`).
    pub events: Vec<String>,
    /// The ethics approval (REK) reference, shown in listings and exports.
    pub approval: String,
    /// First and last day (UTC) on which the project accepts assignments.
    pub approval_start: Option<ConfigDate>,
    pub approval_end: Option<ConfigDate>,
    pub state: ProjectState,
    /// Names of `[destinations.NAME]` this project forwards to.
    pub destinations: Vec<String>,
    pub auto_id: Option<AutoIdConfig>,
    /// De-identification settings (`[projects.NAME.deid]`).
    pub deid: DeidConfig,
    /// Pixel scrubbing settings (`[projects.NAME.pixel]`).
    pub pixel: PixelConfig,
    /// Who is told when a transfer is verified at every destination
    /// (`[projects.NAME.notify]`).
    pub notify: NotifyConfig,
}

/// Arrival notifications of a project (`[projects.NAME.notify]`): a webhook and/or e-mail.
/// Its `Debug` never prints the secret.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// `http://` or `https://` URL that gets a JSON POST per verified transfer.
    pub webhook: Option<String>,
    /// Key of the `X-Fiona-Signature` HMAC-SHA256 of the body (at least 16 characters).
    pub webhook_secret: Option<String>,
    /// PEM file of the CA that signed an `https://` webhook's certificate (default: the
    /// public web roots).
    pub webhook_ca: Option<PathBuf>,
    /// Addresses that get an e-mail per verified transfer (through `[smtp]`).
    pub email: Vec<String>,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("webhook", &self.webhook)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<set>"),
            )
            .field("webhook_ca", &self.webhook_ca)
            .field("email", &self.email)
            .finish()
    }
}

impl NotifyConfig {
    /// Whether anything is configured.
    pub fn any(&self) -> bool {
        self.webhook.is_some() || !self.email.is_empty()
    }

    /// Check the plain data; the message names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match (&self.webhook, &self.webhook_secret) {
            (Some(url), secret) => {
                let rest = url
                    .strip_prefix("https://")
                    .or_else(|| url.strip_prefix("http://"))
                    .ok_or(("webhook", "must start with http:// or https://".to_string()))?;
                if rest.is_empty() || rest.starts_with('/') || url.chars().any(char::is_whitespace)
                {
                    return Err(("webhook", "names no host".into()));
                }
                if secret.as_ref().is_none_or(|s| s.chars().count() < 16) {
                    return Err((
                        "webhook_secret",
                        "a webhook needs a secret of at least 16 characters (the receiver checks the signature with it)".into(),
                    ));
                }
            }
            (None, Some(_)) => {
                return Err(("webhook_secret", "set without `webhook`".into()));
            }
            (None, None) => {}
        }
        for a in &self.email {
            let ok = a.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty()
                    && host.contains('.')
                    && !a
                        .chars()
                        .any(|c| c.is_whitespace() || c == '<' || c == '>' || c == ',')
            });
            if !ok {
                return Err(("email", format!("`{a}` is not an e-mail address")));
            }
        }
        Ok(())
    }
}

/// An AE title is 1 to 16 characters of the default repertoire, no backslash or control
/// characters, and not only spaces (PS3.5 6.2, VR AE).
pub fn validate_ae_title(ae: &str) -> Result<(), String> {
    let trimmed = ae.trim();
    if trimmed.is_empty() {
        return Err("AE title must not be empty".into());
    }
    if ae.len() > 16 {
        return Err(format!("AE title is {} characters, at most 16", ae.len()));
    }
    if ae
        .chars()
        .any(|c| !c.is_ascii() || c.is_ascii_control() || c == '\\')
    {
        return Err("AE title may only hold printable ASCII without backslash".into());
    }
    Ok(())
}

/// A research PACS (`[destinations.NAME]`), optionally over TLS, with the query AE used for
/// verification.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub host: String,
    pub port: u16,
    /// The destination's AE title (called AE of our associations).
    pub ae_title: String,
    /// Our AE title towards it; fiona's own when absent.
    #[serde(default)]
    pub calling_ae_title: Option<String>,
    /// Attempts (associations) before a transfer to it is marked failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First wait before a retry, doubled each time (with jitter) up to `retry_max_secs`.
    #[serde(default = "default_retry_base")]
    pub retry_base_secs: u64,
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
    /// The AE title that answers C-FIND for verification; `ae_title` when absent.
    #[serde(default)]
    pub query_ae_title: Option<String>,
    /// Its port; `port` when absent.
    #[serde(default)]
    pub query_port: Option<u16>,
    /// Verify by C-FIND after sending (switch off for a destination that cannot answer).
    #[serde(default = "default_true")]
    pub verify: bool,
    /// Seconds to wait after sending before the first verification (a PACS may index what
    /// it received a little later).
    #[serde(default = "default_verify_after")]
    pub verify_after_secs: u64,
    /// Send and query over TLS (`[destinations.NAME.tls]`); plain TCP when absent.
    #[serde(default)]
    pub tls: Option<crate::tls::DestinationTls>,
}

fn default_verify_after() -> u64 {
    10
}

fn default_true() -> bool {
    true
}

fn default_max_attempts() -> u32 {
    8
}
fn default_retry_base() -> u64 {
    30
}
fn default_retry_max() -> u64 {
    3600
}

/// Which header value a routing rule matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleField {
    #[default]
    PatientId,
    PatientName,
}

/// A routing rule for data that arrives already pseudonymized (`[[routing]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRule {
    /// A name for the audit trail; `routing[N]` when absent.
    #[serde(default)]
    pub name: String,
    pub project: String,
    pub event: String,
    #[serde(default)]
    pub called_ae: Option<String>,
    #[serde(default)]
    pub calling_ae: Option<String>,
    #[serde(default)]
    pub field: RuleField,
    /// Regular expression on the field; the participant ID is the whole match or a group.
    pub pattern: String,
    /// Capture group number (0: whole match) ...
    #[serde(default)]
    pub capture: usize,
    /// ... or group name (wins over `capture`).
    #[serde(default)]
    pub capture_name: Option<String>,
    /// Match whatever AE titles the sender uses. Without it a rule must name `called_ae` or
    /// `calling_ae`, so a loose pattern cannot pull clinical traffic into a project.
    #[serde(default)]
    pub any_sender: bool,
}

/// Project names: 5 to 20 characters, letters, digits, '-' and '_' (they name secret files
/// and appear in DICOM as the protocol ID, LO).
pub fn validate_project_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if !(5..=20).contains(&n) {
        return Err(format!(
            "project name `{name}` is {n} characters; it must be 5 to 20"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "project name `{name}` may only hold letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

/// A participant ID as DICOM can carry it (PatientID is LO: 64 characters, no backslash or
/// control characters) and a file name could never be made from it by accident.
pub fn validate_participant_syntax(id: &str) -> Result<(), String> {
    if id.is_empty() || id.trim() != id {
        return Err("participant ID must be non-empty without surrounding spaces".into());
    }
    if id.chars().count() > 64 {
        return Err("participant ID is longer than 64 characters".into());
    }
    if id.chars().any(|c| c.is_control() || c == '\\') {
        return Err("participant ID holds a control character or backslash".into());
    }
    Ok(())
}

/// Anchor a configured pattern so it must match the whole value.
fn whole(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

/// A validated project, ready to check assignments.
#[derive(Debug, Clone)]
pub struct Project {
    pub name: String,
    pub config: ProjectConfig,
    pattern: Regex,
}

/// Why an assignment to a project is refused. The message is meant for the person assigning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown project `{0}`")]
    UnknownProject(String),
    #[error("project `{0}` is archived and accepts no new assignments")]
    Archived(String),
    #[error("project `{project}`: its ethics approval starts on {start}")]
    NotYetApproved { project: String, start: String },
    #[error("project `{project}`: its ethics approval ended on {end}")]
    ApprovalEnded { project: String, end: String },
    #[error(
        "participant ID `{participant}` does not match project `{project}`'s pattern `{pattern}`"
    )]
    Pattern {
        project: String,
        participant: String,
        pattern: String,
    },
    #[error("participant ID: {0}")]
    Syntax(String),
    #[error("participant ID `{participant}` is already used in project `{project}` for another patient (a different PatientID); check the ID, or assign with --allow-other-patient if it is the same person under another hospital ID")]
    OtherPatient {
        project: String,
        participant: String,
    },
    #[error("project `{project}` has no event `{event}` (events: {events})")]
    UnknownEvent {
        project: String,
        event: String,
        events: String,
    },
}

impl Project {
    pub fn new(name: &str, config: &ProjectConfig) -> Result<Project, String> {
        validate_project_name(name)?;
        if config.participant_pattern.is_empty() {
            return Err("participant_pattern: required (a regular expression)".into());
        }
        let pattern = Regex::new(&whole(&config.participant_pattern))
            .map_err(|e| format!("participant_pattern: {e}"))?;
        if config.events.is_empty() {
            return Err("events: list at least one event name".into());
        }
        for e in &config.events {
            if e.is_empty() || e.chars().count() > 64 || e.chars().any(|c| c.is_control()) {
                return Err(format!("events: `{e}` is not a usable event name"));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for e in &config.events {
            if !seen.insert(e) {
                return Err(format!("events: `{e}` is listed twice"));
            }
        }
        if config.state == ProjectState::Active
            && (config.approval_start.is_none() || config.approval_end.is_none())
        {
            return Err(
                "approval_start and approval_end: required for an active project (the ethics approval's first and last day)"
                    .into(),
            );
        }
        if let (Some(s), Some(e)) = (config.approval_start, config.approval_end) {
            if s > e {
                return Err(format!("approval_start {s} is after approval_end {e}"));
            }
        }
        if let Some(a) = &config.auto_id {
            validate_ae_title(&a.ae_title).map_err(|r| format!("auto_id.ae_title: {r}"))?;
            if !config.events.contains(&a.event) {
                return Err(format!("auto_id.event: `{}` is not in events", a.event));
            }
            if !(1..=18).contains(&a.digits) {
                return Err("auto_id.digits: must be 1 to 18".into());
            }
            for sample in [0u64, 10u64.pow(a.digits) - 1] {
                let id = auto_id_string(a, sample);
                if !pattern.is_match(&id) {
                    return Err(format!(
                        "auto_id: generated IDs such as `{id}` do not match participant_pattern"
                    ));
                }
                validate_participant_syntax(&id).map_err(|r| format!("auto_id: {r}"))?;
            }
        }
        Ok(Project {
            name: name.to_string(),
            config: config.clone(),
            pattern,
        })
    }

    /// Whether the project accepts a new assignment on `today` (UTC).
    pub fn accepts(&self, today: time::Date) -> Result<(), Refusal> {
        if self.config.state == ProjectState::Archived {
            return Err(Refusal::Archived(self.name.clone()));
        }
        if let Some(s) = self.config.approval_start {
            if today < s.0 {
                return Err(Refusal::NotYetApproved {
                    project: self.name.clone(),
                    start: s.to_string(),
                });
            }
        }
        if let Some(e) = self.config.approval_end {
            if today > e.0 {
                return Err(Refusal::ApprovalEnded {
                    project: self.name.clone(),
                    end: e.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Check a participant ID against the project's pattern.
    pub fn check_participant(&self, id: &str) -> Result<(), Refusal> {
        validate_participant_syntax(id).map_err(Refusal::Syntax)?;
        if !self.pattern.is_match(id) {
            return Err(Refusal::Pattern {
                project: self.name.clone(),
                participant: id.to_string(),
                pattern: self.config.participant_pattern.clone(),
            });
        }
        Ok(())
    }

    pub fn check_event(&self, event: &str) -> Result<(), Refusal> {
        if self.config.events.iter().any(|e| e == event) {
            Ok(())
        } else {
            Err(Refusal::UnknownEvent {
                project: self.name.clone(),
                event: event.to_string(),
                events: self.config.events.join(", "),
            })
        }
    }

    /// Every check of a new assignment: project open, ID fits, event known.
    pub fn check_assignment(
        &self,
        participant: &str,
        event: &str,
        today: time::Date,
    ) -> Result<(), Refusal> {
        self.accepts(today)?;
        self.check_participant(participant)?;
        self.check_event(event)
    }
}

/// The ID an auto-ID project gives number `n`.
pub fn auto_id_string(a: &AutoIdConfig, n: u64) -> String {
    format!("{}{:0width$}", a.prefix, n, width = a.digits as usize)
}

/// A compiled routing rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub config: RoutingRule,
    regex: Regex,
}

impl Rule {
    /// The participant ID this rule takes from an arriving study, if it matches.
    pub fn participant_for(
        &self,
        called_ae: &str,
        calling_ae: &str,
        patient_id: &str,
        patient_name: &str,
    ) -> Option<String> {
        let c = &self.config;
        if c.called_ae
            .as_deref()
            .is_some_and(|a| a.trim() != called_ae.trim())
        {
            return None;
        }
        if c.calling_ae
            .as_deref()
            .is_some_and(|a| a.trim() != calling_ae.trim())
        {
            return None;
        }
        let value = match c.field {
            RuleField::PatientId => patient_id,
            RuleField::PatientName => patient_name,
        }
        .trim_end_matches([' ', '\0']);
        let caps = self.regex.captures(value)?;
        let m = match &c.capture_name {
            Some(n) => caps.name(n)?,
            None => caps.get(c.capture)?,
        };
        Some(m.as_str().to_string())
    }
}

/// Every project and rule of a configuration, validated and compiled.
#[derive(Debug, Clone, Default)]
pub struct Projects {
    pub projects: BTreeMap<String, Project>,
    pub rules: Vec<Rule>,
}

impl Projects {
    /// Validate projects, rules and destinations together; the error names the place.
    pub fn compile(
        projects: &BTreeMap<String, ProjectConfig>,
        rules: &[RoutingRule],
        destinations: &BTreeMap<String, DestinationConfig>,
        our_ae: &str,
    ) -> Result<Projects, (&'static str, String)> {
        for (name, d) in destinations {
            if d.host.trim().is_empty() {
                return Err(("destinations", format!("`{name}`: host must not be empty")));
            }
            if d.port == 0 {
                return Err(("destinations", format!("`{name}`: port must not be 0")));
            }
            validate_ae_title(&d.ae_title)
                .map_err(|r| ("destinations", format!("`{name}`: ae_title: {r}")))?;
            if let Some(t) = &d.tls {
                crate::tls::server_name(t, &d.host)
                    .map_err(|r| ("destinations", format!("`{name}`: tls.server_name: {r}")))?;
                if t.certificate.is_some() != t.private_key.is_some() {
                    return Err((
                        "destinations",
                        format!("`{name}`: tls.certificate and tls.private_key go together"),
                    ));
                }
            }
        }
        let mut out = Projects::default();
        let mut auto_aes: BTreeMap<String, String> = BTreeMap::new();
        let mut secrets: BTreeMap<String, String> = BTreeMap::new();
        for (name, cfg) in projects {
            if let Some(s) = &cfg.deid.secret {
                // The secret is what keeps projects' UIDs, dates and auto-IDs unrelated.
                if let Some(other) = secrets.insert(s.trim().to_ascii_lowercase(), name.clone()) {
                    return Err((
                        "projects",
                        format!("projects `{other}` and `{name}` have the same deid.secret; each project needs its own"),
                    ));
                }
            }
            let p = Project::new(name, cfg)
                .map_err(|r| ("projects", format!("project `{name}`: {r}")))?;
            cfg.notify.validate().map_err(|(field, r)| {
                ("projects", format!("project `{name}`: notify.{field}: {r}"))
            })?;
            for d in &cfg.destinations {
                if !destinations.contains_key(d) {
                    return Err((
                        "projects",
                        format!("project `{name}`: destination `{d}` is not defined under [destinations]"),
                    ));
                }
            }
            if let Some(a) = &cfg.auto_id {
                let ae = a.ae_title.trim().to_string();
                if ae == our_ae.trim() {
                    return Err((
                        "projects",
                        format!("project `{name}`: auto_id.ae_title must differ from the node's ae_title"),
                    ));
                }
                if let Some(other) = auto_aes.insert(ae.clone(), name.clone()) {
                    return Err((
                        "projects",
                        format!("projects `{other}` and `{name}` share auto_id.ae_title `{ae}`"),
                    ));
                }
            }
            out.projects.insert(name.clone(), p);
        }
        for (i, r) in rules.iter().enumerate() {
            let name = if r.name.is_empty() {
                format!("routing[{i}]")
            } else {
                r.name.clone()
            };
            let Some(p) = out.projects.get(&r.project) else {
                return Err((
                    "routing",
                    format!("{name}: unknown project `{}`", r.project),
                ));
            };
            p.check_event(&r.event)
                .map_err(|e| ("routing", format!("{name}: {e}")))?;
            if r.called_ae.is_none() && r.calling_ae.is_none() && !r.any_sender {
                return Err((
                    "routing",
                    format!("{name}: name called_ae or calling_ae (or set any_sender = true to match every sender)"),
                ));
            }
            for ae in [&r.called_ae, &r.calling_ae].into_iter().flatten() {
                validate_ae_title(ae).map_err(|e| ("routing", format!("{name}: {e}")))?;
            }
            if let Some(ae) = &r.called_ae {
                if let Some(p) = auto_aes.get(ae.trim()) {
                    return Err((
                        "routing",
                        format!("{name}: called_ae `{ae}` is project `{p}`'s auto-ID AE title"),
                    ));
                }
            }
            let regex =
                Regex::new(&r.pattern).map_err(|e| ("routing", format!("{name}: pattern: {e}")))?;
            match &r.capture_name {
                Some(n) if !regex.capture_names().any(|c| c == Some(n.as_str())) => {
                    return Err(("routing", format!("{name}: pattern has no group `{n}`")));
                }
                None if r.capture >= regex.captures_len() => {
                    return Err((
                        "routing",
                        format!("{name}: pattern has no capture group {}", r.capture),
                    ));
                }
                _ => {}
            }
            out.rules.push(Rule {
                name,
                config: r.clone(),
                regex,
            });
        }
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Result<&Project, Refusal> {
        self.projects
            .get(name)
            .ok_or_else(|| Refusal::UnknownProject(name.to_string()))
    }

    /// The project whose auto-ID AE title is `called_ae`.
    pub fn auto_id_project(&self, called_ae: &str) -> Option<&Project> {
        self.projects.values().find(|p| {
            p.config
                .auto_id
                .as_ref()
                .is_some_and(|a| a.ae_title.trim() == called_ae.trim())
        })
    }

    /// Called AE titles the node answers besides its own: auto-ID and routing titles.
    pub fn extra_called_ae_titles(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .projects
            .values()
            .filter_map(|p| {
                p.config
                    .auto_id
                    .as_ref()
                    .map(|a| a.ae_title.trim().to_string())
            })
            .chain(
                self.rules
                    .iter()
                    .filter_map(|r| r.config.called_ae.as_ref().map(|a| a.trim().to_string())),
            )
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(toml_text: &str) -> Result<Project, String> {
        let c: ProjectConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        Project::new("PROJ1", &c)
    }

    fn date(s: &str) -> time::Date {
        parse_date(s).unwrap()
    }

    const BASE: &str =
        "participant_pattern = \"PROJ1-[0-9]{4}\"\nevents = [\"baseline\", \"followup\"]\n";
    const DATES: &str = "approval_start = \"2025-01-01\"\napproval_end = \"2030-12-31\"\n";

    #[test]
    fn names_are_5_to_20_safe_characters() {
        assert!(validate_project_name("PROJ1").is_ok());
        assert!(validate_project_name("A_long-project_name1").is_ok());
        assert!(validate_project_name("PROJ").is_err());
        assert!(validate_project_name("A_long-project_name12").is_err());
        assert!(validate_project_name("PROJ 1").is_err());
        assert!(validate_project_name("PRØJ1").is_err());
    }

    #[test]
    fn pattern_matches_the_whole_id() {
        let p = project(&format!("{BASE}{DATES}")).unwrap();
        assert!(p.check_participant("PROJ1-0001").is_ok());
        let e = p.check_participant("XPROJ1-0001").unwrap_err();
        assert!(matches!(e, Refusal::Pattern { .. }));
        assert!(e.to_string().contains("PROJ1-[0-9]{4}"), "{e}");
        assert!(p.check_participant("PROJ1-00011").is_err());
        assert!(p.check_participant("").is_err());
        assert!(p.check_event("baseline").is_ok());
        assert!(p
            .check_event("week2")
            .unwrap_err()
            .to_string()
            .contains("baseline, followup"));
    }

    #[test]
    fn archived_and_approval_window() {
        let p = project(&format!(
            "{BASE}approval_start = \"2025-01-01\"\napproval_end = 2026-06-30\n"
        ))
        .unwrap();
        assert!(p.accepts(date("2025-01-01")).is_ok());
        assert!(p.accepts(date("2026-06-30")).is_ok());
        let e = p.accepts(date("2026-07-01")).unwrap_err().to_string();
        assert!(e.contains("ended on 2026-06-30"), "{e}");
        assert!(p
            .accepts(date("2024-12-31"))
            .unwrap_err()
            .to_string()
            .contains("starts on"));
        let a = project(&format!("{BASE}state = \"archived\"\n")).unwrap();
        assert!(a
            .accepts(date("2025-05-05"))
            .unwrap_err()
            .to_string()
            .contains("archived"));
    }

    #[test]
    fn invalid_projects_say_why() {
        for (t, want) in [
            ("events = [\"baseline\"]", "participant_pattern"),
            ("participant_pattern = \"(\"\nevents = [\"b\"]", "participant_pattern"),
            ("participant_pattern = \"X\"", "events"),
            ("participant_pattern = \"X\"\nevents = [\"b\", \"b\"]", "twice"),
            ("participant_pattern = \"X\"\nevents = [\"b\"]", "required for an active project"),
            (
                "participant_pattern = \"X\"\nevents = [\"b\"]\napproval_start = \"2026-01-02\"\napproval_end = \"2026-01-01\"",
                "after",
            ),
            ("participant_pattern = \"X\"\nevents = [\"b\"]\napproval_end = \"31.12.2026\"", "YYYY-MM-DD"),
            (
                "participant_pattern = \"P[0-9]{3}\"\nevents = [\"b\"]\napproval_start = 2025-01-01\napproval_end = 2030-12-31\nauto_id = { ae_title = \"AUTO\", prefix = \"P\", digits = 4, event = \"b\" }",
                "do not match",
            ),
            (
                "participant_pattern = \"P[0-9]{3}\"\nevents = [\"b\"]\napproval_start = 2025-01-01\napproval_end = 2030-12-31\nauto_id = { ae_title = \"AUTO\", prefix = \"P\", digits = 3, event = \"x\" }",
                "auto_id.event",
            ),
        ] {
            let e = project(t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    fn compile(t: &str) -> Result<Projects, (&'static str, String)> {
        #[derive(Deserialize)]
        struct C {
            #[serde(default)]
            projects: BTreeMap<String, ProjectConfig>,
            #[serde(default)]
            routing: Vec<RoutingRule>,
            #[serde(default)]
            destinations: BTreeMap<String, DestinationConfig>,
        }
        let c: C = toml::from_str(t).unwrap();
        Projects::compile(&c.projects, &c.routing, &c.destinations, "FIONA")
    }

    #[test]
    fn routing_rules_take_the_capture() {
        let ps = compile(&format!(
            "[projects.PROJ1]\n{BASE}{DATES}\n[[routing]]\nproject = \"PROJ1\"\nevent = \"baseline\"\n\
             called_ae = \"FIONAQC\"\npattern = \"^QC-(PROJ1-[0-9]{{4}})$\"\ncapture = 1\n\
             [[routing]]\nname = \"byname\"\nproject = \"PROJ1\"\nevent = \"followup\"\n\
             calling_ae = \"CT1\"\nfield = \"patient_name\"\npattern = \"^Phantom\\\\^(?P<id>.*)$\"\ncapture_name = \"id\"\n"
        ))
        .unwrap();
        let r = &ps.rules[0];
        assert_eq!(
            r.participant_for("FIONAQC", "CT1", "QC-PROJ1-0042", "X")
                .as_deref(),
            Some("PROJ1-0042")
        );
        assert_eq!(
            r.participant_for("FIONA", "CT1", "QC-PROJ1-0042", "X"),
            None
        );
        assert_eq!(r.participant_for("FIONAQC", "CT1", "PROJ1-0042", "X"), None);
        assert_eq!(
            ps.rules[1]
                .participant_for("FIONA", "CT1", "", "Phantom^PROJ1-0001")
                .as_deref(),
            Some("PROJ1-0001")
        );
        assert_eq!(
            ps.rules[1].participant_for("FIONA", "MR2", "", "Phantom^PROJ1-0001"),
            None
        );
        assert_eq!(ps.extra_called_ae_titles(), vec!["FIONAQC".to_string()]);
    }

    #[test]
    fn compile_errors_name_the_section() {
        let base = format!("[projects.PROJ1]\n{BASE}{DATES}");
        for (t, field, want) in [
            (
                format!("{base}destinations = [\"nowhere\"]\n"),
                "projects",
                "nowhere",
            ),
            (
                format!("{base}\n[[routing]]\nproject = \"OTHER1\"\nevent = \"baseline\"\npattern = \"x\"\n"),
                "routing",
                "unknown project",
            ),
            (
                format!("{base}\n[[routing]]\nproject = \"PROJ1\"\nevent = \"baseline\"\npattern = \"x\"\nany_sender = true\ncapture = 2\n"),
                "routing",
                "capture group 2",
            ),
            (
                format!("{base}\n[[routing]]\nproject = \"PROJ1\"\nevent = \"baseline\"\npattern = \"x\"\n"),
                "routing",
                "called_ae or calling_ae",
            ),
            (
                "[projects.PRJ]\nparticipant_pattern = \"x\"\nevents = [\"b\"]\n".to_string(),
                "projects",
                "5 to 20",
            ),
            (
                "[destinations.r]\nhost = \"\"\nport = 104\nae_title = \"R\"\n".to_string(),
                "destinations",
                "host",
            ),
        ] {
            let (f, e) = compile(&t).unwrap_err();
            assert_eq!(f, field, "{t}");
            assert!(e.contains(want), "{t}: {e}");
        }
    }
}
