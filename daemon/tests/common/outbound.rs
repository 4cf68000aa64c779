//! Files handed to forwarding the only way it takes them: as outputs in a transfer's
//! directory of the outbound area, read back by `deid::outbound::released_from`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fiona::deid::outbound::{released_from, transfer_dir, Released};

/// Copy `files` (in order) into the outbound directory of transfer `t` under `data_dir`,
/// and read them back as [`Released`], in the same order.
pub fn release(data_dir: &Path, files: &[PathBuf]) -> Vec<Released> {
    let dir = transfer_dir(data_dir, "t");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, f) in files.iter().enumerate() {
        std::fs::copy(f, dir.join(format!("{i:06}.dcm"))).unwrap();
    }
    released_from(data_dir, "t", files.len() as u64)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}
