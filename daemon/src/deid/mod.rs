//! The de-identification stage (issue 3), built up piece by piece. Present so far:
//!
//! * [`uid`]: the UID mapping (conformant and legacy modes);
//! * [`secret`]: the per-project secret, generated once and kept durably.
//!
//! Still to come: the PS3.15 Annex E profile and its options, dates, identity, character
//! sets, the `fiona deid` command.

pub mod secret;
pub mod uid;
