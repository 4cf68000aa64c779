//! The outbound area: where the de-identification stage puts its outputs, and the only
//! place sending takes instances from.
//!
//! `outbound/<transfer>/<instance key>.dcm` inside the data directory. [`Released`] is the
//! one type forwarding sends (`forward::store_into`, `forward::holdings` results compared
//! with it); its fields are private and this module is the only one that constructs it, by
//! reading a transfer's directory in the outbound area ([`released`]). So no code path can
//! hand the sender an arbitrary file, such as an instance from the quarantine that was never
//! de-identified: what is not in the outbound area cannot be sent.

use std::path::{Path, PathBuf};

use crate::model::TransferRecord;
use crate::part10::read_meta_info;

/// The outbound directory of a transfer.
pub fn transfer_dir(data_dir: &Path, transfer: &str) -> PathBuf {
    data_dir.join("outbound").join(transfer)
}

/// The output path of one instance of a transfer (written by the de-identification stage).
pub fn output_path(dir: &Path, instance_key: &str) -> PathBuf {
    dir.join(format!("{instance_key}.dcm"))
}

/// A de-identified instance in the outbound area, as its meta group describes it: what
/// forwarding sends.
#[derive(Clone, PartialEq, Eq)]
pub struct Released {
    path: PathBuf,
    sop_class_uid: String,
    sop_instance_uid: String,
    transfer_syntax: String,
    data_set_offset: u64,
}

impl std::fmt::Debug for Released {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The path is fiona's own key; UIDs are left out of logs by rule.
        f.debug_struct("Released")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Released {
    /// Read an output's meta group. Private: outside this module a `Released` comes only
    /// from [`released`].
    fn open(path: &Path) -> Result<Released, String> {
        let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let m = read_meta_info(&mut f).map_err(|e| format!("{}: {e}", path.display()))?;
        if m.sop_class_uid.is_empty() || m.sop_instance_uid.is_empty() {
            return Err(format!(
                "{}: no SOP class or instance in the meta group",
                path.display()
            ));
        }
        Ok(Released {
            path: path.to_path_buf(),
            sop_class_uid: m.sop_class_uid,
            sop_instance_uid: m.sop_instance_uid,
            transfer_syntax: m.transfer_syntax,
            data_set_offset: m.data_set_offset,
        })
    }

    /// For the crate's unit tests of forwarding (transcoding a crafted file).
    #[cfg(test)]
    pub(crate) fn open_for_test(path: &Path) -> Result<Released, String> {
        Released::open(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn sop_class_uid(&self) -> &str {
        &self.sop_class_uid
    }
    pub fn sop_instance_uid(&self) -> &str {
        &self.sop_instance_uid
    }
    pub fn transfer_syntax(&self) -> &str {
        &self.transfer_syntax
    }
    /// Where the data set starts in the file (after the meta group).
    pub fn data_set_offset(&self) -> u64 {
        self.data_set_offset
    }
}

/// Why a transfer's outbound files cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// They could not be read (perhaps passing).
    Io(String),
    /// They are not what was recorded: missing, extra or unreadable as DICOM.
    Mismatch(String),
}

impl std::fmt::Display for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outbound::Io(m) | Outbound::Mismatch(m) => f.write_str(m),
        }
    }
}

/// The de-identified outputs of a transfer in `data_dir`'s outbound area, by instance key;
/// an error unless there are as many as were recorded de-identified.
pub fn released(data_dir: &Path, t: &TransferRecord) -> Result<Vec<(String, Released)>, Outbound> {
    released_from(data_dir, &t.id, t.deidentified)
}

/// The outputs in the outbound directory of transfer `id`, by instance key; an error unless
/// there are `expected` of them, each with a readable meta group.
pub fn released_from(
    data_dir: &Path,
    id: &str,
    expected: u64,
) -> Result<Vec<(String, Released)>, Outbound> {
    let dir = transfer_dir(data_dir, id);
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Outbound::Mismatch(format!("{}: the outbound files are gone", dir.display()))
        }
        _ => Outbound::Io(format!("{}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(io)? {
        let path = e.map_err(io)?.path();
        let Some(key) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".dcm"))
            .map(str::to_string)
        else {
            continue;
        };
        out.push((key, Released::open(&path).map_err(Outbound::Mismatch)?));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if out.len() as u64 != expected {
        return Err(Outbound::Mismatch(format!(
            "the outbound area holds {} files of the {expected} de-identified (changed outside fiona)",
            out.len(),
        )));
    }
    Ok(out)
}
