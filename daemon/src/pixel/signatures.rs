//! The known-regions signature library: conditions on header values, each with the rectangles
//! of an image that are known to carry burned-in text and are blanked when the condition holds.
//!
//! The library is data in fiona's own versioned TOML format (documented in
//! `daemon/data/pixel-signatures/README.md`). The default library,
//! `daemon/data/pixel-signatures/default.toml`, is a translation of the signature library of
//! RSNA's Clinical Trial Processor (CTP) and is embedded in the binary; a project may supply its
//! own library text instead, which [`Library::parse`] validates.
//!
//! # Format 1, in short
//!
//! ```toml
//! format = 1
//! library_version = "1.0.0"
//!
//! [[signature]]
//! name = "CT / GE / CT Dose Series"        # unique
//! source = "where the rule comes from"     # optional, provenance
//! note = "free text"                       # optional
//! regions = [[0, 0, 512, 110]]             # [x, y, width, height] in pixels
//! [signature.when]
//! all = [
//!   { attr = "Manufacturer", contains = "GE MEDICAL" },
//!   { any = [ { attr = "Rows", equals = "512" }, { not = { attr = "(0028,0011)", equals = "" } } ] },
//! ]
//! ```
//!
//! A condition is one of `all = [..]` (AND, non-empty), `any = [..]` (OR, non-empty),
//! `not = {..}`, or a test on one attribute: `attr` (a standard keyword or a tag written
//! `(gggg,eeee)`) with exactly one of `equals`, `contains`, `starts_with`, `ends_with` (text),
//! `regex` (must match the whole value, like Java's `String.matches`), `less_than`,
//! `greater_than` (numbers). Text tests are case-insensitive unless `case_sensitive = true`.
//! `anywhere = true` tests every occurrence of the attribute at any depth (see
//! [`HeaderValues::values_anywhere`]) and holds if any occurrence passes.
//!
//! # Value semantics (as CTP's)
//!
//! The value of an attribute is its text with the values of a multi-valued element joined by
//! `\` (`ImageType` reads `DERIVED\SECONDARY`), each value stripped of leading and trailing
//! spaces and NULs. An absent attribute reads as the empty string, so `equals = ""` holds for an
//! absent attribute and `not = { attr = .., contains = "x" }` holds too. Numeric tests read the
//! first value as a decimal number; a value that is not a number fails them (both `less_than`
//! and `greater_than`).
//!
//! # Every matching signature applies
//!
//! CTP applies only the *first* signature whose condition matches. [`Library::regions_for`]
//! returns the rectangles of *every* matching signature. Reasons: an image with burned-in text
//! that two rules describe should lose both areas (blanking a few more pixels of a screen
//! capture costs little; leaving a name costs a lot), and the CTP library itself contains
//! signatures that first-match would make dead (the ADAC dual-detector rule and the GE vessel
//! analysis rule are shadowed by broader rules just above them). It also makes the result
//! independent of the order of the signatures, so a project library can be edited without
//! reasoning about order.
//!
//! No header value ever appears in an error or a log line of this module: errors are about the
//! library text only, and matching does not fail.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, TagRange};
use dicom_core::Tag;
use regex::{Regex, RegexBuilder};
use serde::Deserialize;

/// The library format this build reads.
pub const FORMAT: i64 = 1;

/// The default library, as shipped.
pub const DEFAULT_LIBRARY_TOML: &str = include_str!("../../data/pixel-signatures/default.toml");

/// Conditions nested deeper than this are refused (a library is small and flat in practice).
const MAX_DEPTH: usize = 32;

/// Largest coordinate a rectangle may reach: Rows and Columns are 16-bit.
const MAX_EXTENT: i64 = 65_535;

static DICT: dicom_dictionary_std::StandardDataDictionary =
    dicom_dictionary_std::StandardDataDictionary;

/// The Rows attribute (0028,0010).
pub const ROWS: Attr = Attr {
    tag: 0x0028_0010,
    keyword: Some("Rows"),
};

/// The Columns attribute (0028,0011).
pub const COLUMNS: Attr = Attr {
    tag: 0x0028_0011,
    keyword: Some("Columns"),
};

/// An attribute a condition refers to: its tag, and its standard keyword when it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attr {
    tag: u32,
    keyword: Option<&'static str>,
}

impl Attr {
    /// Reads a keyword (`Manufacturer`) or a tag (`(0008,0070)`, `[0008,0070]`, `0008,0070`).
    /// A keyword must name a single standard element (not a repeating group such as the
    /// overlay groups, which must be written as a tag).
    pub fn parse(text: &str) -> Result<Attr, String> {
        let text = text.trim();
        let inner = text
            .strip_prefix('(')
            .and_then(|t| t.strip_suffix(')'))
            .or_else(|| text.strip_prefix('[').and_then(|t| t.strip_suffix(']')))
            .unwrap_or(text);
        if let Some((g, e)) = inner.split_once(',') {
            let hex = |s: &str| {
                let s = s.trim();
                if s.len() == 4 {
                    u16::from_str_radix(s, 16).ok()
                } else {
                    None
                }
            };
            let (Some(g), Some(e)) = (hex(g), hex(e)) else {
                return Err(format!("`{text}` is not a tag written (gggg,eeee)"));
            };
            let keyword = DICT.by_tag(Tag(g, e)).map(|entry| entry.alias());
            return Ok(Attr {
                tag: (u32::from(g) << 16) | u32::from(e),
                keyword,
            });
        }
        let entry = DICT
            .by_name(inner)
            .ok_or_else(|| format!("`{text}` is not a standard attribute keyword"))?;
        match entry.tag_range() {
            TagRange::Single(t) => Ok(Attr {
                tag: (u32::from(t.0) << 16) | u32::from(t.1),
                keyword: Some(entry.alias()),
            }),
            _ => Err(format!(
                "`{text}` names a repeating group of elements; write the tag (gggg,eeee) instead"
            )),
        }
    }

    /// The tag as `0xggggeeee`.
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// The standard keyword of the tag, if the dictionary has one. For a tag in a repeating
    /// group such as (6000,0022) this is the group's keyword (`OverlayDescription`); the tag
    /// is what identifies the element.
    pub fn keyword(&self) -> Option<&'static str> {
        self.keyword
    }

    /// The tag as (group, element).
    pub fn group_element(&self) -> (u16, u16) {
        ((self.tag >> 16) as u16, (self.tag & 0xFFFF) as u16)
    }
}

impl std::fmt::Display for Attr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (g, e) = self.group_element();
        match self.keyword {
            Some(k) => write!(f, "{k} ({g:04X},{e:04X})"),
            None => write!(f, "({g:04X},{e:04X})"),
        }
    }
}

/// Where the library reads header values from. Implemented by the pixel stage over the
/// decoded data set; [`HeaderMap`] is a plain implementation.
pub trait HeaderValues {
    /// The text of the attribute in the top-level data set, or for group 0002 in the file meta
    /// information; `None` if absent. Values of a multi-valued element are joined by `\`;
    /// numbers (US, IS, DS, ...) are given in decimal as DICOM writes them (`512`). Padding
    /// need not be removed (the library strips spaces and NULs around each value).
    fn value(&self, attr: &Attr) -> Option<String>;

    /// Every occurrence of the attribute at any depth: the top-level value (if present) and
    /// the value in every item of every sequence, recursively, each formatted as for
    /// [`HeaderValues::value`]. Used by conditions marked `anywhere = true` (for attributes
    /// such as CodeMeaning that live inside code sequences). The default gives the top-level
    /// value only; an implementation that cannot search sequences should keep that default
    /// (such conditions then see less, as CTP does).
    fn values_anywhere(&self, attr: &Attr) -> Vec<String> {
        self.value(attr).into_iter().collect()
    }
}

/// A plain set of header values keyed by tag: top-level values, and values found inside
/// sequence items (seen only by `anywhere` conditions).
#[derive(Clone, Debug, Default)]
pub struct HeaderMap {
    top: BTreeMap<u32, String>,
    nested: BTreeMap<u32, Vec<String>>,
}

impl HeaderMap {
    /// An empty header.
    pub fn new() -> HeaderMap {
        HeaderMap::default()
    }

    /// Sets the top-level value of `attr` (keyword or tag, see [`Attr::parse`]).
    pub fn set(&mut self, attr: &str, value: impl Into<String>) -> Result<&mut Self, String> {
        let attr = Attr::parse(attr)?;
        self.top.insert(attr.tag, value.into());
        Ok(self)
    }

    /// Adds a value of `attr` found inside a sequence item.
    pub fn add_nested(
        &mut self,
        attr: &str,
        value: impl Into<String>,
    ) -> Result<&mut Self, String> {
        let attr = Attr::parse(attr)?;
        self.nested.entry(attr.tag).or_default().push(value.into());
        Ok(self)
    }
}

impl HeaderValues for HeaderMap {
    fn value(&self, attr: &Attr) -> Option<String> {
        self.top.get(&attr.tag).cloned()
    }

    fn values_anywhere(&self, attr: &Attr) -> Vec<String> {
        let mut all: Vec<String> = self.top.get(&attr.tag).cloned().into_iter().collect();
        if let Some(nested) = self.nested.get(&attr.tag) {
            all.extend(nested.iter().cloned());
        }
        all
    }
}

/// A rectangle in pixels, origin at the top left; never empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    /// The part of the rectangle inside an image of `columns` x `rows` (either unknown:
    /// no clipping on that axis); `None` if nothing is left.
    pub fn clip(&self, columns: Option<u32>, rows: Option<u32>) -> Option<Rect> {
        let end_x = self.x.saturating_add(self.width);
        let end_y = self.y.saturating_add(self.height);
        let end_x = columns.map_or(end_x, |c| end_x.min(c));
        let end_y = rows.map_or(end_y, |r| end_y.min(r));
        if end_x <= self.x || end_y <= self.y {
            return None;
        }
        Some(Rect {
            x: self.x,
            y: self.y,
            width: end_x - self.x,
            height: end_y - self.y,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TextOp {
    Equals,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Clone, Debug)]
enum Test {
    /// `needle` is lower-cased when the test is case-insensitive.
    Text {
        op: TextOp,
        needle: String,
        case_sensitive: bool,
    },
    /// Anchored to the whole value.
    Regex(Regex),
    LessThan(f64),
    GreaterThan(f64),
}

impl Test {
    fn check(&self, value: &str) -> bool {
        match self {
            Test::Text {
                op,
                needle,
                case_sensitive,
            } => {
                let hay: Cow<'_, str> = if *case_sensitive {
                    Cow::Borrowed(value)
                } else {
                    Cow::Owned(value.to_lowercase())
                };
                match op {
                    TextOp::Equals => *hay == **needle,
                    TextOp::Contains => hay.contains(needle.as_str()),
                    TextOp::StartsWith => hay.starts_with(needle.as_str()),
                    TextOp::EndsWith => hay.ends_with(needle.as_str()),
                }
            }
            Test::Regex(re) => re.is_match(value),
            Test::LessThan(limit) => first_number(value).is_some_and(|v| v < *limit),
            Test::GreaterThan(limit) => first_number(value).is_some_and(|v| v > *limit),
        }
    }
}

fn first_number(value: &str) -> Option<f64> {
    let first = value.split('\\').next().unwrap_or("").trim();
    first.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Strips spaces and NULs around each value of a `\`-joined multi-value.
fn normalise(raw: &str) -> String {
    let trim = |s: &str| s.trim_matches(|c: char| c == ' ' || c == '\0').to_string();
    if raw.contains('\\') {
        raw.split('\\').map(trim).collect::<Vec<_>>().join("\\")
    } else {
        trim(raw)
    }
}

#[derive(Clone, Debug)]
enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Test {
        attr: Attr,
        anywhere: bool,
        test: Test,
    },
}

impl Condition {
    fn holds<H: HeaderValues + ?Sized>(&self, header: &H) -> bool {
        match self {
            Condition::All(cs) => cs.iter().all(|c| c.holds(header)),
            Condition::Any(cs) => cs.iter().any(|c| c.holds(header)),
            Condition::Not(c) => !c.holds(header),
            Condition::Test {
                attr,
                anywhere: false,
                test,
            } => test.check(&normalise(&header.value(attr).unwrap_or_default())),
            Condition::Test {
                attr,
                anywhere: true,
                test,
            } => {
                let values = header.values_anywhere(attr);
                if values.is_empty() {
                    test.check("")
                } else {
                    values.iter().any(|v| test.check(&normalise(v)))
                }
            }
        }
    }
}

/// One signature: a condition and the rectangles blanked when it holds.
#[derive(Clone, Debug)]
pub struct Signature {
    name: String,
    source: Option<String>,
    note: Option<String>,
    when: Condition,
    regions: Vec<Rect>,
}

impl Signature {
    /// The signature's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the rule comes from (provenance), if the library says.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Free-text note.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// The rectangles as written in the library (not clipped).
    pub fn regions(&self) -> &[Rect] {
        &self.regions
    }

    /// Whether the header matches the signature's condition.
    pub fn matches<H: HeaderValues + ?Sized>(&self, header: &H) -> bool {
        self.when.holds(header)
    }
}

/// A validated signature library.
#[derive(Clone, Debug)]
pub struct Library {
    library_version: String,
    signatures: Vec<Signature>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignature {
    name: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    note: Option<String>,
    when: RawCondition,
    regions: Vec<[i64; 4]>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    all: Option<Vec<RawCondition>>,
    any: Option<Vec<RawCondition>>,
    not: Option<Box<RawCondition>>,
    attr: Option<String>,
    anywhere: Option<bool>,
    case_sensitive: Option<bool>,
    equals: Option<String>,
    contains: Option<String>,
    starts_with: Option<String>,
    ends_with: Option<String>,
    regex: Option<String>,
    less_than: Option<f64>,
    greater_than: Option<f64>,
}

impl RawCondition {
    fn compile(self, path: &str, depth: usize) -> Result<Condition, String> {
        if depth > MAX_DEPTH {
            return Err(format!("{path}: conditions nested deeper than {MAX_DEPTH}"));
        }
        let kinds = [
            self.all.is_some(),
            self.any.is_some(),
            self.not.is_some(),
            self.attr.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if kinds != 1 {
            return Err(format!(
                "{path}: a condition needs exactly one of `all`, `any`, `not`, `attr`"
            ));
        }
        let has_test_keys = self.anywhere.is_some()
            || self.case_sensitive.is_some()
            || self.equals.is_some()
            || self.contains.is_some()
            || self.starts_with.is_some()
            || self.ends_with.is_some()
            || self.regex.is_some()
            || self.less_than.is_some()
            || self.greater_than.is_some();
        let list = |items: Vec<RawCondition>, key: &str| -> Result<Vec<Condition>, String> {
            if has_test_keys {
                return Err(format!("{path}: `{key}` cannot be combined with test keys"));
            }
            if items.is_empty() {
                return Err(format!("{path}.{key}: empty list"));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, c)| c.compile(&format!("{path}.{key}[{i}]"), depth + 1))
                .collect()
        };
        if let Some(items) = self.all {
            return Ok(Condition::All(list(items, "all")?));
        }
        if let Some(items) = self.any {
            return Ok(Condition::Any(list(items, "any")?));
        }
        if let Some(inner) = self.not {
            if has_test_keys {
                return Err(format!("{path}: `not` cannot be combined with test keys"));
            }
            return Ok(Condition::Not(Box::new(
                inner.compile(&format!("{path}.not"), depth + 1)?,
            )));
        }
        let Some(attr_text) = self.attr else {
            // Unreachable: exactly one of the four kinds is present and the other three
            // returned above. Kept as an error rather than a panic.
            return Err(format!("{path}: missing `attr`"));
        };
        let attr = Attr::parse(&attr_text).map_err(|e| format!("{path}: {e}"))?;
        let case_sensitive = self.case_sensitive.unwrap_or(false);
        let mut tests: Vec<Test> = Vec::new();
        let text = |op: TextOp, needle: String| Test::Text {
            op,
            needle: if case_sensitive {
                needle
            } else {
                needle.to_lowercase()
            },
            case_sensitive,
        };
        if let Some(n) = self.equals {
            tests.push(text(TextOp::Equals, n));
        }
        if let Some(n) = self.contains {
            if n.is_empty() {
                return Err(format!(
                    "{path}: `contains` with an empty string always holds"
                ));
            }
            tests.push(text(TextOp::Contains, n));
        }
        if let Some(n) = self.starts_with {
            if n.is_empty() {
                return Err(format!(
                    "{path}: `starts_with` with an empty string always holds"
                ));
            }
            tests.push(text(TextOp::StartsWith, n));
        }
        if let Some(n) = self.ends_with {
            if n.is_empty() {
                return Err(format!(
                    "{path}: `ends_with` with an empty string always holds"
                ));
            }
            tests.push(text(TextOp::EndsWith, n));
        }
        if let Some(pattern) = self.regex {
            let re = RegexBuilder::new(&format!("^(?:{pattern})$"))
                .case_insensitive(!case_sensitive)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("{path}: invalid `regex`: {e}"))?;
            tests.push(Test::Regex(re));
        }
        for (key, limit) in [
            ("less_than", self.less_than),
            ("greater_than", self.greater_than),
        ] {
            if let Some(limit) = limit {
                if !limit.is_finite() {
                    return Err(format!("{path}: `{key}` must be a finite number"));
                }
                if self.case_sensitive.is_some() {
                    return Err(format!(
                        "{path}: `case_sensitive` has no meaning for `{key}`"
                    ));
                }
                tests.push(if key == "less_than" {
                    Test::LessThan(limit)
                } else {
                    Test::GreaterThan(limit)
                });
            }
        }
        if tests.len() != 1 {
            return Err(format!(
                "{path}: `attr` needs exactly one test of `equals`, `contains`, `starts_with`, \
                 `ends_with`, `regex`, `less_than`, `greater_than` (found {})",
                tests.len()
            ));
        }
        let test = tests.remove(0);
        Ok(Condition::Test {
            attr,
            anywhere: self.anywhere.unwrap_or(false),
            test,
        })
    }
}

impl Library {
    /// Reads and validates a library. Errors name the signature (by name, or by position if it
    /// has none) and the place in its condition.
    pub fn parse(text: &str) -> Result<Library, String> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| format!("not a valid TOML document: {e}"))?;
        match table.remove("format") {
            None => return Err("missing `format` (this build reads format 1)".to_string()),
            Some(toml::Value::Integer(FORMAT)) => {}
            Some(toml::Value::Integer(n)) => {
                return Err(format!(
                    "unsupported library format {n} (this build reads format {FORMAT})"
                ))
            }
            Some(_) => return Err("`format` must be an integer".to_string()),
        }
        let library_version = match table.remove("library_version") {
            Some(toml::Value::String(v)) if !v.trim().is_empty() => v,
            Some(toml::Value::String(_)) => return Err("`library_version` is empty".to_string()),
            Some(_) => return Err("`library_version` must be a string".to_string()),
            None => return Err("missing `library_version`".to_string()),
        };
        let raw_signatures = match table.remove("signature") {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items,
            Some(_) => return Err("`signature` must be an array of tables".to_string()),
        };
        if let Some(key) = table.keys().next() {
            return Err(format!("unknown top-level key `{key}`"));
        }

        let mut names = HashSet::new();
        let mut signatures = Vec::with_capacity(raw_signatures.len());
        for (index, value) in raw_signatures.into_iter().enumerate() {
            let label = match value.get("name").and_then(|n| n.as_str()) {
                Some(name) => format!("signature \"{name}\""),
                None => format!("signature #{} (unnamed)", index + 1),
            };
            let raw: RawSignature = value
                .try_into()
                .map_err(|e: toml::de::Error| format!("{label}: {}", e.message().trim_end()))?;
            let name = raw.name.trim().to_string();
            if name.is_empty() {
                return Err(format!("{label}: empty `name`"));
            }
            if !names.insert(name.clone()) {
                return Err(format!("{label}: name used by an earlier signature"));
            }
            let when = raw
                .when
                .compile("when", 0)
                .map_err(|e| format!("{label}: {e}"))?;
            if raw.regions.is_empty() {
                return Err(format!("{label}: no `regions`"));
            }
            let mut regions = Vec::with_capacity(raw.regions.len());
            for (i, [x, y, w, h]) in raw.regions.into_iter().enumerate() {
                let bad = |what: &str| format!("{label}: regions[{i}]: {what}");
                if x < 0 || y < 0 {
                    return Err(bad("x and y must not be negative"));
                }
                if w <= 0 || h <= 0 {
                    return Err(bad("width and height must be positive"));
                }
                if x.saturating_add(w) > MAX_EXTENT || y.saturating_add(h) > MAX_EXTENT {
                    return Err(bad("the rectangle reaches beyond 65535 pixels"));
                }
                // The checks above bound every value to 0..=65535, so the casts are exact.
                regions.push(Rect {
                    x: x as u32,
                    y: y as u32,
                    width: w as u32,
                    height: h as u32,
                });
            }
            signatures.push(Signature {
                name,
                source: raw.source,
                note: raw.note,
                when,
                regions,
            });
        }
        Ok(Library {
            library_version,
            signatures,
        })
    }

    /// The library shipped with fiona (a translation of CTP's), embedded at build time.
    #[allow(clippy::expect_used)]
    pub fn default_library() -> Library {
        // Invariant: the embedded text is a constant checked by the unit test
        // `default_library_parses_and_has_every_ctp_block`, so parsing cannot fail at run time.
        Library::parse(DEFAULT_LIBRARY_TOML).expect("embedded default signature library is valid")
    }

    /// The library's own version string.
    pub fn library_version(&self) -> &str {
        &self.library_version
    }

    /// The signatures, in library order.
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    /// The rectangles to blank for an image with this header: those of every matching
    /// signature, in library order, each paired with its signature's name. When Rows and
    /// Columns are known (a positive integer) the rectangles are clipped to the image, and a
    /// rectangle wholly outside it is left out. Rectangles of different signatures may
    /// overlap.
    pub fn regions_for<H: HeaderValues + ?Sized>(&self, header: &H) -> Vec<(&str, Rect)> {
        let dimension = |attr: &Attr| {
            header
                .value(attr)
                .and_then(|v| first_number_u32(&v))
                .filter(|n| *n > 0)
        };
        let columns = dimension(&COLUMNS);
        let rows = dimension(&ROWS);
        let mut out = Vec::new();
        for signature in &self.signatures {
            if signature.matches(header) {
                for rect in &signature.regions {
                    if let Some(clipped) = rect.clip(columns, rows) {
                        out.push((signature.name.as_str(), clipped));
                    }
                }
            }
        }
        out
    }
}

fn first_number_u32(value: &str) -> Option<u32> {
    let first = value.split('\\').next().unwrap_or("");
    first
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks (`{ ... }` conditions) in CTP's DicomPixelAnonymizer.script at commit
    /// 361e90f8032fbb343000f3397159ae24a001229a, counted by hand and with `grep -c '{'`.
    const CTP_BLOCKS: usize = 52;

    fn header(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.set(k, *v).unwrap();
        }
        h
    }

    fn rect(x: u32, y: u32, width: u32, height: u32) -> Rect {
        Rect {
            x,
            y,
            width,
            height,
        }
    }

    fn lib(body: &str) -> Result<Library, String> {
        Library::parse(&format!("format = 1\nlibrary_version = \"test\"\n{body}"))
    }

    #[test]
    fn default_library_parses_and_has_every_ctp_block() {
        let lib = Library::parse(DEFAULT_LIBRARY_TOML).unwrap();
        assert_eq!(lib.signatures().len(), CTP_BLOCKS);
        assert_eq!(Library::default_library().signatures().len(), CTP_BLOCKS);
        assert!(!lib.library_version().is_empty());
        for s in lib.signatures() {
            let source = s.source().unwrap();
            assert!(
                source.starts_with("CTP DicomPixelAnonymizer.script line "),
                "{source}"
            );
        }
        // Each CTP block is cited by its own line.
        let lines: HashSet<&str> = lib
            .signatures()
            .iter()
            .map(|s| s.source().unwrap().split(':').next().unwrap())
            .collect();
        assert_eq!(lines.len(), CTP_BLOCKS);
    }

    #[test]
    fn tags_used_by_ctp_resolve_to_the_keywords_used_in_the_translation() {
        for (tag, keyword) in [
            ("[0008,0070]", "Manufacturer"),
            ("[0008,1090]", "ManufacturerModelName"),
            ("[0028,0010]", "Rows"),
            ("[0028,0011]", "Columns"),
            ("[0018,1030]", "ProtocolName"),
        ] {
            assert_eq!(Attr::parse(tag).unwrap(), Attr::parse(keyword).unwrap());
        }
        assert_eq!(Attr::parse("Rows").unwrap(), ROWS);
        assert_eq!(Attr::parse("Columns").unwrap(), COLUMNS);
        assert_eq!(Attr::parse("(6000,0022)").unwrap().tag(), 0x6000_0022);
    }

    /// CTP line 214: Siemens ANTARES ultrasound, three rectangles.
    fn antares() -> HeaderMap {
        header(&[
            ("Modality", "US"),
            ("Manufacturer", "SIEMENS"),
            ("ManufacturerModelName", "ACUSON Antares"),
            ("Rows", "768"),
            ("Columns", "1024"),
        ])
    }

    #[test]
    fn matching_header_gets_exactly_its_rectangles() {
        let lib = Library::default_library();
        // "ACUSON Antares" also contains "ACUSON", but the ACUSON rule wants 600 x 800.
        let got = lib.regions_for(&antares());
        assert_eq!(
            got,
            vec![
                ("US / Siemens / ANTARES", rect(0, 0, 1024, 60)),
                ("US / Siemens / ANTARES", rect(200, 60, 20, 20)),
                ("US / Siemens / ANTARES", rect(800, 65, 104, 14)),
            ]
        );
    }

    #[test]
    fn header_differing_in_one_attribute_gets_nothing() {
        let lib = Library::default_library();
        for (attr, value) in [
            ("Modality", "CT"),
            ("Manufacturer", "GE MEDICAL SYSTEMS"),
            ("ManufacturerModelName", "Sequoia"),
            ("Rows", "767"),
            ("Columns", "800"),
        ] {
            let mut h = antares();
            h.set(attr, value).unwrap();
            assert_eq!(lib.regions_for(&h), vec![], "changed {attr}");
        }
        // Absent is not a match either.
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("Modality", "US"),
            ("Manufacturer", "SIEMENS"),
            ("Rows", "768"),
        ] {
            h.set(k, v).unwrap();
        }
        h.set("Columns", "1024").unwrap();
        assert_eq!(lib.regions_for(&h), vec![]);
    }

    #[test]
    fn every_matching_signature_applies_and_rectangles_are_clipped() {
        let lib = Library::default_library();
        // ADAC 832 x 1024 dual detector: both ADAC blocks match (CTP would take the first).
        let h = header(&[
            ("Manufacturer", "ADAC"),
            ("Rows", "832"),
            ("Columns", "1024"),
            ("ProtocolName", "DUAL DETECTOR WB"),
        ]);
        let got = lib.regions_for(&h);
        assert_eq!(
            got,
            vec![
                ("Other / ADAC / 832 x 1024", rect(0, 0, 1024, 80)),
                // 762 + 80 = 842 > 832 rows: clipped.
                ("Other / ADAC / 832 x 1024", rect(0, 762, 1024, 70)),
                (
                    "Other / ADAC / 832 x 1024 dual detector",
                    rect(0, 0, 1024, 130)
                ),
                (
                    "Other / ADAC / 832 x 1024 dual detector",
                    rect(0, 762, 1024, 70)
                ),
            ]
        );
        // Lumify: 768 pixels wide as written, clipped to a 600-column image.
        let h = header(&[
            ("Manufacturer", "Philips"),
            ("ManufacturerModelName", "Lumify"),
            ("Rows", "768"),
            ("Columns", "600"),
        ]);
        assert_eq!(
            lib.regions_for(&h),
            vec![("US / Philips / Lumify 768 rows", rect(0, 0, 600, 35))]
        );
    }

    #[test]
    fn clip_drops_rectangles_outside_the_image() {
        let r = rect(800, 65, 104, 14);
        assert_eq!(r.clip(Some(800), Some(600)), None);
        assert_eq!(r.clip(None, None), Some(r));
        assert_eq!(r.clip(Some(850), None), Some(rect(800, 65, 50, 14)));
        assert_eq!(r.clip(None, Some(65)), None);
    }

    #[test]
    fn and_or_not_semantics() {
        let lib = lib(r#"
[[signature]]
name = "s"
regions = [[0, 0, 10, 10]]
[signature.when]
all = [
  { attr = "Manufacturer", contains = "acme" },
  { any = [ { attr = "SeriesDescription", contains = "AAA" }, { attr = "SeriesDescription", contains = "Report" } ] },
  { not = { attr = "ImageType", contains = "ORIGINAL" } },
]
"#)
        .unwrap();
        let s = &lib.signatures()[0];
        let base = [
            ("Manufacturer", "ACME Corp"),
            ("ImageType", "DERIVED\\SECONDARY"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            header(&pairs)
        };
        assert!(s.matches(&with(&[("SeriesDescription", "aaa stent")])));
        assert!(s.matches(&with(&[("SeriesDescription", "Dose report")])));
        assert!(!s.matches(&with(&[("SeriesDescription", "Axial")])));
        // AND: one member false.
        let mut h = with(&[("SeriesDescription", "Report")]);
        h.set("Manufacturer", "Other").unwrap();
        assert!(!s.matches(&h));
        // NOT: the negated test holds.
        let mut h = with(&[("SeriesDescription", "Report")]);
        h.set("ImageType", "ORIGINAL\\PRIMARY").unwrap();
        assert!(!s.matches(&h));
        // NOT of an absent attribute holds (absent reads as "").
        let h = header(&[("Manufacturer", "acme"), ("SeriesDescription", "Report")]);
        assert!(s.matches(&h));
    }

    #[test]
    fn case_sensitivity() {
        let lib = lib(r#"
[[signature]]
name = "insensitive"
regions = [[0, 0, 1, 1]]
when = { attr = "Manufacturer", contains = "GE Medical" }

[[signature]]
name = "sensitive"
regions = [[0, 0, 1, 1]]
when = { attr = "ImplementationVersionName", contains = "MINDRAY", case_sensitive = true }

[[signature]]
name = "equals insensitive"
regions = [[0, 0, 1, 1]]
when = { attr = "Modality", equals = "us" }

[[signature]]
name = "regex"
regions = [[0, 0, 1, 1]]
when = { attr = "StationName", regex = "ct[0-9]+" }
"#)
        .unwrap();
        let [insensitive, sensitive, equals, regex] = lib.signatures() else {
            panic!("four signatures");
        };
        assert!(insensitive.matches(&header(&[("Manufacturer", "GE MEDICAL SYSTEMS")])));
        assert!(insensitive.matches(&header(&[("Manufacturer", "ge medical")])));
        assert!(sensitive.matches(&header(&[("ImplementationVersionName", "MINDRAY_1")])));
        assert!(!sensitive.matches(&header(&[("ImplementationVersionName", "Mindray_1")])));
        assert!(equals.matches(&header(&[("Modality", "US")])));
        assert!(!equals.matches(&header(&[("Modality", "USX")])));
        assert!(regex.matches(&header(&[("StationName", "CT12")])));
        // Whole-value match, like Java's String.matches.
        assert!(!regex.matches(&header(&[("StationName", "CT12 room")])));
    }

    #[test]
    fn values_are_trimmed_and_multi_values_joined() {
        let lib = Library::default_library();
        // Padded values and a padded multi-valued ImageType still match CTP line 75.
        let h = header(&[
            ("ImageType", "DERIVED \\SECONDARY \\OTHER"),
            ("Modality", "CT"),
            ("Manufacturer", "SIEMENS "),
            ("Rows", "860 "),
        ]);
        assert_eq!(
            lib.regions_for(&h),
            vec![("CT / Siemens / CT Dose Series", rect(0, 0, 1132, 60))]
        );
    }

    #[test]
    fn anywhere_sees_nested_values_and_top_level_does_not() {
        let lib = Library::default_library();
        let mut h = HeaderMap::new();
        h.add_nested("CodeMeaning", "IEC Body Dosimetry Phantom")
            .unwrap();
        let got = lib.regions_for(&h);
        assert_eq!(
            got,
            vec![(
                "CT / GE / CT Dose Series (IEC Body Dosimetry Phantom)",
                rect(0, 0, 512, 200)
            )]
        );
        let top_only = self::lib(
            "[[signature]]\nname = \"t\"\nregions = [[0, 0, 1, 1]]\n\
             when = { attr = \"CodeMeaning\", contains = \"phantom\" }\n",
        )
        .unwrap();
        assert!(top_only.regions_for(&h).is_empty());
    }

    #[test]
    fn numeric_tests() {
        let lib = lib(r#"
[[signature]]
name = "wide"
regions = [[0, 0, 1, 1]]
when = { all = [ { attr = "Columns", greater_than = 1000 }, { attr = "WindowWidth", less_than = 2.5 } ] }
"#)
        .unwrap();
        let s = &lib.signatures()[0];
        assert!(s.matches(&header(&[("Columns", "1024"), ("WindowWidth", "1\\1")])));
        assert!(!s.matches(&header(&[("Columns", "800"), ("WindowWidth", "1")])));
        assert!(!s.matches(&header(&[("Columns", "1024"), ("WindowWidth", "wide")])));
    }

    fn refused(body: &str) -> String {
        match lib(body) {
            Ok(_) => panic!("accepted: {body}"),
            Err(e) => e,
        }
    }

    #[test]
    fn bad_libraries_are_refused_naming_the_signature() {
        let cases: &[(&str, &str)] = &[
            (
                "[[signature]]\nname = \"empty regions\"\nregions = []\n\
                 when = { attr = \"Rows\", equals = \"1\" }\n",
                "no `regions`",
            ),
            (
                "[[signature]]\nname = \"zero width\"\nregions = [[0, 0, 0, 5]]\n\
                 when = { attr = \"Rows\", equals = \"1\" }\n",
                "width and height must be positive",
            ),
            (
                "[[signature]]\nname = \"negative\"\nregions = [[-1, 0, 5, 5]]\n\
                 when = { attr = \"Rows\", equals = \"1\" }\n",
                "must not be negative",
            ),
            (
                "[[signature]]\nname = \"huge\"\nregions = [[65000, 0, 1000, 5]]\n\
                 when = { attr = \"Rows\", equals = \"1\" }\n",
                "beyond 65535",
            ),
            (
                "[[signature]]\nname = \"overflow\"\nregions = [[9223372036854775807, 0, 9223372036854775807, 5]]\n\
                 when = { attr = \"Rows\", equals = \"1\" }\n",
                "beyond 65535",
            ),
            (
                "[[signature]]\nname = \"bad regex\"\nregions = [[0, 0, 5, 5]]\n\
                 when = { attr = \"SeriesDescription\", regex = \"(unclosed\" }\n",
                "invalid `regex`",
            ),
            (
                "[[signature]]\nname = \"typo keyword\"\nregions = [[0, 0, 5, 5]]\n\
                 when = { attr = \"Manufactuer\", contains = \"GE\" }\n",
                "not a standard attribute keyword",
            ),
            (
                "[[signature]]\nname = \"two tests\"\nregions = [[0, 0, 5, 5]]\n\
                 when = { attr = \"Rows\", equals = \"1\", contains = \"1\" }\n",
                "exactly one test",
            ),
            (
                "[[signature]]\nname = \"no test\"\nregions = [[0, 0, 5, 5]]\n\
                 when = { attr = \"Rows\" }\n",
                "exactly one test",
            ),
            (
                "[[signature]]\nname = \"empty all\"\nregions = [[0, 0, 5, 5]]\n\
                 when = { all = [] }\n",
                "when.all: empty list",
            ),
            (
                "[[signature]]\nname = \"mixed\"\nregions = [[0, 0, 5, 5]]\n\
                 when = { any = [ { attr = \"Rows\", equals = \"1\" } ], attr = \"Rows\" }\n",
                "exactly one of",
            ),
            (
                "[[signature]]\nname = \"unknown key\"\nregions = [[0, 0, 5, 5]]\n\
                 when = { attr = \"Rows\", equal = \"1\" }\n",
                "unknown field `equal`",
            ),
            (
                "[[signature]]\nname = \"nested bad\"\nregions = [[0, 0, 5, 5]]\n\
                 when = { all = [ { attr = \"Rows\", equals = \"1\" }, { not = { attr = \"Rows\" } } ] }\n",
                "when.all[1].not: `attr` needs exactly one test",
            ),
            (
                "[[signature]]\nname = \"repeating keyword\"\nregions = [[0, 0, 5, 5]]\n\
                 when = { attr = \"OverlayDescription\", contains = \"x\" }\n",
                "repeating group",
            ),
        ];
        for (body, expected) in cases {
            let err = refused(body);
            let name = body
                .split('"')
                .nth(1)
                .unwrap_or_else(|| panic!("case has a name: {body}"));
            assert!(
                err.starts_with(&format!("signature \"{name}\": ")),
                "{err} does not name {name}"
            );
            assert!(err.contains(expected), "{err} lacks {expected}");
        }
    }

    #[test]
    fn bad_library_level_texts_are_refused() {
        let two = "[[signature]]\nname = \"dup\"\nregions = [[0, 0, 5, 5]]\n\
                   when = { attr = \"Rows\", equals = \"1\" }\n";
        let err = refused(&format!("{two}{two}"));
        assert!(
            err.starts_with("signature \"dup\": name used by an earlier"),
            "{err}"
        );

        let err = refused(
            "[[signature]]\nregions = [[0, 0, 5, 5]]\nwhen = { attr = \"Rows\", equals = \"1\" }\n",
        );
        assert!(err.starts_with("signature #1 (unnamed): "), "{err}");

        let err = Library::parse("format = 2\nlibrary_version = \"x\"\n").unwrap_err();
        assert!(err.contains("unsupported library format 2"), "{err}");
        let err = Library::parse("library_version = \"x\"\n").unwrap_err();
        assert!(err.contains("missing `format`"), "{err}");
        let err = Library::parse("format = 1\n").unwrap_err();
        assert!(err.contains("missing `library_version`"), "{err}");
        let err = refused("[[signatures]]\nname = \"x\"\n");
        assert!(err.contains("unknown top-level key `signatures`"), "{err}");
        let err =
            Library::parse("format = 1\nlibrary_version = \"x\"\n[[signature]\n").unwrap_err();
        assert!(err.starts_with("not a valid TOML document"), "{err}");
    }

    #[test]
    fn odd_header_values_do_not_upset_matching() {
        // Matching cannot fail, so values have no path into an error; parse errors quote
        // library text only. Check that an odd header value does not upset matching.
        let lib = Library::default_library();
        let h = header(&[("PatientName", "DOE^JANE"), ("Rows", "not a number")]);
        assert!(lib.regions_for(&h).is_empty());
    }
}
