//! How a project's de-identification settings (`project::deid`, plain data) are checked and
//! become an [`Engine`] for one assignment.

use std::path::Path;

use super::dates::participant_offset;
use super::engine::{Assignment, DatePolicy, Engine, ExtraRule, RuleAction, Settings};
use super::secret::{parse_configured, SecretStore};
use super::uid::UidMapper;
pub use crate::project::deid::{
    DatePolicyName, DatesConfig, DeidConfig, RuleActionName, RuleConfig, UidMode,
};

/// Attributes a rule may not touch: the identity and clinical-trial attributes fiona writes
/// itself, and the de-identification record.
fn reserved(tag: u32) -> bool {
    matches!(tag, 0x0010_0010 | 0x0010_0020 | 0x0028_0303) || tag >> 16 == 0x0012
}

impl RuleConfig {
    /// The rule as the engine applies it; the message says what is wrong.
    pub fn compile(&self) -> Result<ExtraRule, String> {
        use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
        let dict = dicom_dictionary_std::StandardDataDictionary;
        let text = self.tag.trim();
        let hex = text.trim_start_matches('(').trim_end_matches(')');
        let tag = match hex.split_once(',') {
            Some((g, e)) => {
                let g = u16::from_str_radix(g.trim(), 16)
                    .map_err(|_| format!("`{text}`: not a tag (GGGG,EEEE)"))?;
                let e = u16::from_str_radix(e.trim(), 16)
                    .map_err(|_| format!("`{text}`: not a tag (GGGG,EEEE)"))?;
                dicom_core::Tag(g, e)
            }
            None => dict
                .by_name(text)
                .and_then(|e| match e.tag_range() {
                    dicom_core::dictionary::TagRange::Single(t) => Some(t),
                    _ => None,
                })
                .ok_or_else(|| format!("`{text}`: not a known attribute keyword"))?,
        };
        let entry = dict.by_tag(tag).ok_or_else(|| {
            format!("`{text}`: not a standard attribute (private elements go in safe_private)")
        })?;
        let t = (u32::from(tag.group()) << 16) | u32::from(tag.element());
        if tag.group() % 2 == 1 || tag.group() <= 0x0002 || reserved(t) {
            return Err(format!(
                "`{text}`: fiona writes this attribute itself; a rule cannot change it"
            ));
        }
        let action = match (self.action, &self.value) {
            (RuleActionName::Replace, Some(v)) => {
                let vr = entry.vr().relaxed();
                let vr_s = vr.to_string();
                if !matches!(
                    vr_s,
                    "AE" | "AS"
                        | "CS"
                        | "DA"
                        | "DS"
                        | "DT"
                        | "IS"
                        | "LO"
                        | "LT"
                        | "PN"
                        | "SH"
                        | "ST"
                        | "TM"
                        | "UC"
                        | "UR"
                        | "UT"
                ) {
                    return Err(format!(
                        "`{text}` is {vr_s}: replace works on text attributes only"
                    ));
                }
                if v.contains(['\r', '\n']) && !matches!(vr_s, "LT" | "ST" | "UT") {
                    return Err(format!("`{text}`: the value may not contain line breaks"));
                }
                RuleAction::Replace(v.clone())
            }
            (RuleActionName::Replace, None) => {
                return Err(format!("`{text}`: replace needs a value"))
            }
            (_, Some(_)) => return Err(format!("`{text}`: only replace takes a value")),
            (RuleActionName::Keep, None) => RuleAction::Keep,
            (RuleActionName::Remove, None) => RuleAction::Remove,
            (RuleActionName::Empty, None) => RuleAction::Empty,
        };
        Ok(ExtraRule { tag: t, action })
    }
}

impl DeidConfig {
    /// Check the settings; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.options.retain_full_dates || self.options.retain_modified_dates {
            return Err(
                "deid.options: set the date options through deid.dates.policy (keep or shift)"
                    .into(),
            );
        }
        if let Some(s) = &self.secret {
            if parse_configured(s).is_none() {
                return Err("deid.secret: expected 64 hex digits".into());
            }
        }
        if self.dates.min_days > self.dates.max_days {
            return Err("deid.dates: min_days is greater than max_days".into());
        }
        if self.dates.fixed_days.is_some() && self.dates.policy != DatePolicyName::Shift {
            return Err("deid.dates.fixed_days: only with policy = \"shift\"".into());
        }
        if !self.safe_private.is_empty() && !self.options.retain_safe_private {
            return Err(
                "deid.safe_private: listed, but deid.options.retain_safe_private is false".into(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.rules {
            let c = r.compile().map_err(|e| format!("deid.rules: {e}"))?;
            if !seen.insert(c.tag) {
                return Err(format!("deid.rules: `{}` has two rules", r.tag));
            }
        }
        Ok(())
    }

    /// The engine for one assignment. The secret comes from the configuration, or is read
    /// (or generated once) in `<data_dir>/secrets/`.
    pub fn engine(&self, data_dir: &Path, assignment: Assignment) -> Result<Engine, String> {
        self.validate()?;
        let key = match &self.secret {
            Some(s) => parse_configured(s).ok_or("deid.secret: expected 64 hex digits")?,
            None => SecretStore::new(data_dir)
                .get_or_create(&assignment.project)
                .map_err(|e| e.to_string())?,
        };
        let dates = match self.dates.policy {
            DatePolicyName::Remove => DatePolicy::Remove,
            DatePolicyName::Keep => DatePolicy::Keep,
            DatePolicyName::Shift => DatePolicy::Shift {
                days: self.dates.fixed_days.unwrap_or_else(|| {
                    participant_offset(
                        &key,
                        &assignment.participant,
                        self.dates.min_days,
                        self.dates.max_days,
                    )
                }),
            },
        };
        let uids = match self.uid_mode {
            UidMode::Conformant => UidMapper::Conformant { key },
            UidMode::Legacy => UidMapper::Legacy {
                project: assignment.project.clone(),
            },
        };
        Engine::new(
            Settings {
                rules: self
                    .rules
                    .iter()
                    .map(RuleConfig::compile)
                    .collect::<Result<_, _>>()?,
                options: self.options,
                dates,
                safe_private: self.safe_private.clone(),
                sponsor: self.sponsor.clone(),
                site_id: self.site_id.clone(),
                site_name: self.site_name.clone(),
            },
            uids,
            assignment,
        )
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_example() {
        let c: DeidConfig = toml::from_str(
            r#"
uid_mode = "legacy"
dates = { policy = "shift", fixed_days = 42 }
sponsor = "Helse Bergen"
safe_private = [{ creator = "SIEMENS CSA HEADER", element = 0x10 }]
[options]
retain_safe_private = true
clean_descriptors = true
"#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.uid_mode, UidMode::Legacy);
        assert_eq!(c.dates.fixed_days, Some(42));
        assert_eq!(c.safe_private[0].element, 0x10);
    }

    #[test]
    fn invalid_settings_name_the_field() {
        for (toml, field) in [
            ("secret = \"abc\"", "deid.secret"),
            ("dates = { min_days = 10, max_days = 1 }", "deid.dates"),
            (
                "dates = { policy = \"keep\", fixed_days = 3 }",
                "deid.dates.fixed_days",
            ),
            ("[options]\nretain_full_dates = true", "deid.options"),
            (
                "safe_private = [{ creator = \"X\", element = 1 }]",
                "deid.safe_private",
            ),
        ] {
            let c: DeidConfig = toml::from_str(toml).unwrap();
            let e = c.validate().unwrap_err();
            assert!(e.contains(field), "{toml}: {e}");
        }
        assert!(toml::from_str::<DeidConfig>("uid_mode = \"other\"").is_err());
        assert!(toml::from_str::<DeidConfig>("colour = 1").is_err());
    }

    #[test]
    fn extra_rules_parse_and_refuse_what_they_cannot_do() {
        let c: DeidConfig = toml::from_str(
            r#"
rules = [
  { tag = "StudyDescription", action = "keep" },
  { tag = "(0008,0080)", action = "replace", value = "Research site" },
  { tag = "0018,0050", action = "remove" },
  { tag = "0008,1040", action = "empty" },
]
"#,
        )
        .unwrap();
        c.validate().unwrap();
        let r: Vec<_> = c.rules.iter().map(|r| r.compile().unwrap()).collect();
        assert_eq!(r[0].tag, 0x0008_1030);
        assert_eq!(r[1].action, RuleAction::Replace("Research site".into()));
        for (rule, want) in [
            (
                "{ tag = \"PatientName\", action = \"keep\" }",
                "writes this attribute",
            ),
            (
                "{ tag = \"0012,0062\", action = \"remove\" }",
                "writes this attribute",
            ),
            ("{ tag = \"0009,1001\", action = \"keep\" }", "safe_private"),
            ("{ tag = \"NoSuchKeyword\", action = \"keep\" }", "keyword"),
            ("{ tag = \"0008,zz30\", action = \"keep\" }", "not a tag"),
            (
                "{ tag = \"0008,1030\", action = \"replace\" }",
                "needs a value",
            ),
            (
                "{ tag = \"0008,1030\", action = \"keep\", value = \"x\" }",
                "only replace",
            ),
            (
                "{ tag = \"0028,0010\", action = \"replace\", value = \"1\" }",
                "text attributes",
            ),
        ] {
            let c: DeidConfig = toml::from_str(&format!("rules = [{rule}]")).unwrap();
            let e = c.validate().unwrap_err();
            assert!(e.contains("deid.rules") && e.contains(want), "{rule}: {e}");
        }
        let c: DeidConfig = toml::from_str(
            "rules = [{ tag = \"0008,1030\", action = \"keep\" }, { tag = \"StudyDescription\", action = \"remove\" }]",
        )
        .unwrap();
        assert!(c.validate().unwrap_err().contains("two rules"));
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = DeidConfig {
            secret: Some("ab".repeat(32)),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("abab"));
    }
}
