//! fiona: a research-imaging gateway. See `docs/ARCHITECTURE.md` for the map.
// Two exceptions, with their reasons at the site: pixel::ocr switches off Tesseract's OpenMP
// threads through libgomp's C API; selftest reads the kernel's clock state (adjtimex).
#![deny(unsafe_code)]
// No `unwrap`/`expect` outside tests (clippy.toml allows them in tests): a stated invariant
// gets `#[allow(clippy::expect_used)]` with its comment at the site.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod admission;
pub mod assign;
pub mod bundle;
pub mod cli;
pub mod clock;
pub mod committer;
pub mod config;
pub mod control;
pub mod deid;
pub mod dimse;
pub mod evict;
pub mod forward;
pub mod header;
pub mod health;
pub mod index;
pub mod jobs;
pub mod ldap;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod node;
pub mod notify;
pub mod part10;
pub mod password;
pub mod pipeline;
pub mod pixel;
pub mod project;
pub mod provision;
pub mod quarantine;
pub mod scp;
pub mod selftest;
pub mod serve;
pub mod storage_classes;
pub mod tls;
pub mod ul_error;
pub mod watchdog;
pub mod web;
