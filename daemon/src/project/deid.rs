//! A project's de-identification settings as plain data (`[projects.NAME.deid]` in the TOML
//! file). The de-identification stage checks them and makes its engine from them
//! (`deid::settings`: `DeidConfig::validate`, `DeidConfig::engine`); nothing here names it.
//!
//! ```toml
//! [projects.PROJ1.deid]
//! uid_mode = "conformant"            # or "legacy" (the old system's identifiers; weaker)
//! secret = "64 hex digits"           # optional: else generated once in <data_dir>/secrets/
//! dates = { policy = "shift", min_days = -365, max_days = -30 }   # or "keep", "remove";
//!                                    # fixed_days = 42 shifts every participant alike
//! sponsor = "Helse Bergen"           # (0012,0010); the project name when empty
//! site_id = "HUS"                    # (0012,0030)
//! site_name = "Haukeland"            # (0012,0031)
//! safe_private = [{ creator = "SIEMENS CSA HEADER", element = 0x10 }]
//!
//! [projects.PROJ1.deid.options]      # PS3.15 options (dates: use `dates` above)
//! retain_safe_private = true
//! clean_descriptors = true
//! ```
//!
//! Every field has a default: the basic profile, per-participant shift of 30 to 365 days
//! back, private attributes removed, conformant UIDs, a generated secret.

use serde::{Deserialize, Serialize};

/// The options of PS3.15 Table E.1-1 a project selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileOptions {
    pub retain_safe_private: bool,
    pub retain_uids: bool,
    pub retain_device_identity: bool,
    pub retain_institution_identity: bool,
    pub retain_patient_characteristics: bool,
    pub retain_full_dates: bool,
    pub retain_modified_dates: bool,
    pub clean_descriptors: bool,
    pub clean_structured_content: bool,
    pub clean_graphics: bool,
}

impl ProfileOptions {
    /// The two longitudinal-date options exclude each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.retain_full_dates && self.retain_modified_dates {
            return Err(
                "retain_full_dates and retain_modified_dates exclude each other".to_string(),
            );
        }
        Ok(())
    }
}

/// A private element a project keeps: its block's creator and its element byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafePrivate {
    pub creator: String,
    pub element: u8,
}

/// How UIDs are mapped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UidMode {
    #[default]
    Conformant,
    Legacy,
}

/// The date policy as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatesConfig {
    pub policy: DatePolicyName,
    /// Per-participant shift range, in days (both ends included).
    pub min_days: i32,
    pub max_days: i32,
    /// When set, every participant is shifted by this many days.
    pub fixed_days: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatePolicyName {
    Remove,
    Keep,
    Shift,
}

impl Default for DatesConfig {
    fn default() -> Self {
        DatesConfig {
            policy: DatePolicyName::Shift,
            min_days: -365,
            max_days: -30,
            fixed_days: None,
        }
    }
}

/// What a project rule does (`[[projects.NAME.deid.rules]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleActionName {
    Keep,
    Remove,
    Empty,
    Replace,
}

/// One extra rule: `{ tag = "0008,1030" or "StudyDescription", action = "keep", value = ".." }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub tag: String,
    pub action: RuleActionName,
    /// The value for `replace`.
    #[serde(default)]
    pub value: Option<String>,
}

/// `[projects.NAME.deid]`. Its `Debug` never prints the secret.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeidConfig {
    pub options: ProfileOptions,
    pub dates: DatesConfig,
    pub safe_private: Vec<SafePrivate>,
    /// Extra keep/remove/empty/replace rules, applied before the table.
    pub rules: Vec<RuleConfig>,
    pub uid_mode: UidMode,
    pub secret: Option<String>,
    pub sponsor: String,
    pub site_id: String,
    pub site_name: String,
}

impl std::fmt::Debug for DeidConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeidConfig")
            .field("options", &self.options)
            .field("dates", &self.dates)
            .field("safe_private", &self.safe_private)
            .field("rules", &self.rules)
            .field("uid_mode", &self.uid_mode)
            .field(
                "secret",
                &if self.secret.is_some() {
                    "<configured>"
                } else {
                    "<generated in data_dir/secrets>"
                },
            )
            .field("sponsor", &self.sponsor)
            .field("site_id", &self.site_id)
            .field("site_name", &self.site_name)
            .finish()
    }
}
