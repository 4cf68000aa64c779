//! The de-identification stage (issue 3), built up piece by piece. Present so far:
//!
//! * [`dates`]: DA/DT shifting, per-participant offsets from the project secret;
//! * [`profile`]: PS3.15 Table E.1-1 and its options, resolved to one action per attribute;
//! * [`uid`]: the UID mapping (conformant and legacy modes);
//! * [`secret`]: the per-project secret, generated once and kept durably;
//! * [`values`]: VR length limits, padding, character-safe cutting, dummy values.
//!
//! Still to come: the engine that applies the profile to a data set at every depth, dates,
//! identity and clinical-trial attributes, character sets, the `fiona deid` command.

pub mod dates;
pub mod profile;
pub mod secret;
pub mod uid;
pub mod values;
