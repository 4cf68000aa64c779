//! The de-identification stage (issue 3):
//!
//! * [`engine`]: applies the profile to a data set's header at every depth and writes the
//!   assignment's identity and the clinical-trial attributes;
//! * [`dates`]: DA/DT shifting, per-participant offsets from the project secret;
//! * [`profile`]: PS3.15 Table E.1-1 and its options, resolved to one action per attribute;
//! * [`uid`]: the UID mapping (conformant and legacy modes);
//! * [`secret`]: the per-project secret, generated once and kept durably;
//! * [`settings`]: a project's settings as configuration, and the engine they make;
//! * [`un`]: standard attributes encoded as UN read again with their dictionary VR;
//! * [`values`]: VR length limits, padding, character-safe cutting, dummy values;
//! * [`outbound`]: the outbound area, and [`outbound::Released`], the only thing sending takes;
//! * [`review`]: what an output holds (every element, at every depth, hashed and sampled), for
//!   its project's review inventory;
//! * [`file`]: one Part-10 file: bounded structural check, the header through dicom-object,
//!   pixel data copied through unread, the output written unnamed and linked into place.
//!
//! `fiona deid` runs it on files and directory trees; the daemon's pipeline (`pipeline::deidentify`)
//! runs the pixel stage, then this, into the outbound area.

pub mod dates;
pub mod engine;
pub mod file;
pub mod outbound;
pub mod profile;
pub mod review;
pub mod secret;
pub mod settings;
pub mod uid;
pub mod un;
pub mod values;

/// `HMAC-SHA256(key, domain || data)`: every value derived from a project secret goes through
/// this, with a domain string per use so that derived values are independent.
pub(crate) fn keyed_hash(key: &[u8; 32], domain: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = match <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(domain);
    mac.update(data);
    mac.finalize().into_bytes().into()
}
