//! De-identify one Part-10 file: the header through the [`Engine`], the pixel data copied
//! through byte for byte without being loaded into memory.
//!
//! 1. The file meta group is read by hand (bounded) for the transfer syntax and the data set
//!    offset.
//! 2. The whole data set is checked by the bounded `header::Checker` first, which also finds
//!    the byte range of the top-level Pixel Data. Only then is the header (everything before
//!    Pixel Data) parsed by dicom-object, so its allocation from declared lengths is safe.
//! 3. The engine runs on the header; the output is written to an unnamed file in the
//!    destination's directory (Linux O_TMPFILE; a named temp file where that is not offered):
//!    preamble and a new file meta group (the mapped SOP Instance UID), the header in the
//!    input's transfer syntax, then the Pixel Data element copied from the input, and only
//!    then linked (or renamed) into place.
//!
//! A deflated data set, or one with elements after Pixel Data, is read whole instead (its
//! pixel data in memory; such files are small in practice) and a deflated one is written as
//! Explicit VR Little Endian: nothing is ever passed through unprocessed. So is an image the
//! pixel stage scrubs ([`deidentify_file_with`]): read whole, scrubbed before the header is
//! de-identified (the signatures match on the original header), written as Explicit VR Little
//! Endian.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::engine::{Engine, Report};
use crate::header::Encoding;
use crate::model::ReviewBatch;
use crate::part10::read_meta_info;

/// Why a file was not de-identified. Never quotes a value from the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("not a DICOM Part-10 file: {0}")]
    NotPart10(&'static str),
    #[error("data set does not parse: {0}")]
    Structure(#[from] crate::header::HeaderError),
    #[error("pixel data cannot be scrubbed: {0}")]
    Pixel(String),
    /// Not an error of the file: the project's settings drop it (no output).
    #[error("dropped: {0}")]
    Dropped(&'static str),
    #[error("transfer syntax {0} is not supported here yet")]
    Unsupported(String),
    #[error("header cannot be read: {0}")]
    Header(String),
    #[error("output cannot be written: {0}")]
    Write(String),
}

/// Transfer syntax and data set offset from the file meta group.
fn read_meta(f: &mut File) -> Result<(String, u64), FileError> {
    let m = read_meta_info(f).map_err(|e| FileError::NotPart10(e.0))?;
    Ok((m.transfer_syntax, m.data_set_offset))
}

/// Where the de-identified file goes.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// Exactly this path.
    File(&'a Path),
    /// This directory, named by the new SOP Instance UID (never by anything from the input).
    Dir(&'a Path),
}

/// De-identify `input` into `output` (header only, pixel data copied); returns what was done
/// and the path written.
pub fn deidentify_file(
    input: &Path,
    output: Output<'_>,
    engine: &Engine,
) -> Result<(Report, std::path::PathBuf), FileError> {
    deidentify_file_with(input, output, engine, None)
}

/// [`deidentify_file`] with the pixel stage: an image whose header matches a known-region
/// signature is read whole, its regions blanked in every frame ([`crate::pixel::scrub`]),
/// and written as Explicit VR Little Endian. An image that cannot be scrubbed fails with the
/// reason; it never gets an output with its pixels unscrubbed.
pub fn deidentify_file_with(
    input: &Path,
    output: Output<'_>,
    engine: &Engine,
    pixels: Option<&crate::pixel::scrub::Stage>,
) -> Result<(Report, std::path::PathBuf), FileError> {
    run(input, output, engine, pixels, false).map(|(r, p, _)| (r, p))
}

/// [`deidentify_file_with`], and what the output holds for the project's review inventory
/// ([`super::review`]): collected from the output data set in memory after the engine ran,
/// the pixel data copied through listed by its size.
pub fn deidentify_file_reviewed(
    input: &Path,
    output: Output<'_>,
    engine: &Engine,
    pixels: Option<&crate::pixel::scrub::Stage>,
) -> Result<(Report, std::path::PathBuf, ReviewBatch), FileError> {
    run(input, output, engine, pixels, true).map(|(r, p, b)| (r, p, b.unwrap_or_default()))
}

fn run(
    input: &Path,
    output: Output<'_>,
    engine: &Engine,
    pixels: Option<&crate::pixel::scrub::Stage>,
    review: bool,
) -> Result<(Report, std::path::PathBuf, Option<ReviewBatch>), FileError> {
    let mut f = File::open(input)?;
    let (ts_uid, ds_offset) = read_meta(&mut f)?;
    let (encoding, deflated) = Encoding::of_transfer_syntax(&ts_uid)
        .ok_or_else(|| FileError::Unsupported(ts_uid.clone()))?;

    // 1. Check the whole data set (bounded), find Pixel Data.
    let fields =
        crate::part10::check_data_set(&mut f, &ts_uid, ds_offset).map_err(|e| match e {
            crate::part10::CheckError::Io(e) => FileError::Io(e),
            crate::part10::CheckError::Unsupported(ts) => FileError::Unsupported(ts),
            crate::part10::CheckError::Structure(e) => FileError::Structure(e),
        })?;
    let trailing = fields
        .pixel_data
        .is_some_and(|(_, end)| end < fields.data_set_length);

    // 2. The header, now known to be well-formed. A deflated data set, or one with elements
    //    after Pixel Data, is read whole instead (pixel data in memory) and, when deflated,
    //    written as Explicit VR Little Endian.
    let mut whole = deflated || trailing;
    let open = |whole: bool| {
        let options = dicom_object::OpenFileOptions::new();
        let options = if whole {
            options.read_all()
        } else {
            options.read_until(tags::PIXEL_DATA)
        };
        options
            .open_file(input)
            .map_err(|e| FileError::Header(e.to_string()))
    };
    let mut obj = open(whole)?;
    // Standard attributes encoded as UN are read with their dictionary VR before anything
    // looks at the header (the pixel stage's signatures, the engine).
    let un = super::un::resolve(&mut obj);
    // The pixel stage looks at the original header (before de-identification removes what
    // the signatures match on), and needs the pixel data in memory.
    let mut scrubbed = None;
    if let Some(stage) = pixels.filter(|_| fields.pixel_data.is_some()) {
        use crate::pixel::scrub::Decision;
        match stage.decide(&obj) {
            Decision::Keep => {}
            Decision::Drop(why) => return Err(FileError::Dropped(why)),
            Decision::Scrub => {
                if !whole {
                    obj = open(true)?;
                    whole = true;
                }
                scrubbed = crate::pixel::scrub::scrub(&mut obj, stage)
                    .map_err(|e| FileError::Pixel(e.to_string()))?;
            }
        }
    }
    let out_ts_uid = if deflated || scrubbed.as_ref().is_some_and(|s| s.pixels_masked > 0) {
        "1.2.840.10008.1.2.1".to_string()
    } else {
        ts_uid.clone()
    };
    let ts = TransferSyntaxRegistry
        .get(&out_ts_uid)
        .ok_or_else(|| FileError::Unsupported(out_ts_uid.clone()))?;
    let copy_pixels = if whole { None } else { fields.pixel_data };
    let mut report = engine.apply(&mut obj);
    report.un_reinterpreted += un.reinterpreted;
    report.removed += un.removed;
    // The file meta says what the data set says: its SOP Class UID (the input's meta only
    // where the data set has none).
    let sop_class = obj
        .element(tags::SOP_CLASS_UID)
        .ok()
        .and_then(|e| {
            e.to_str()
                .ok()
                .map(|s| crate::deid::uid::trim_uid(&s).to_string())
        })
        .filter(|s| crate::deid::uid::is_valid_uid(s))
        .unwrap_or_else(|| {
            crate::deid::uid::trim_uid(obj.meta().media_storage_sop_class_uid()).to_string()
        });
    if !crate::deid::uid::is_valid_uid(&sop_class) {
        return Err(FileError::Header("no valid SOP Class UID".into()));
    }
    if let Some(s) = &scrubbed {
        report.pixel_regions = s.regions.len() as u64;
        report.pixels_masked = s.pixels_masked;
        report.ocr_words = s.ocr_words;
    }
    let new_sop = obj
        .element(tags::SOP_INSTANCE_UID)
        .ok()
        .and_then(|e| {
            e.to_str()
                .ok()
                .map(|s| crate::deid::uid::trim_uid(&s).to_string())
        })
        .unwrap_or_default();
    // Never a value that is not a UID in the file meta (nor a name built from it).
    if !crate::deid::uid::is_valid_uid(&new_sop) {
        return Err(FileError::Header("no valid SOP Instance UID".into()));
    }

    let batch = if review {
        let mut b = super::review::collect(&obj);
        if let Some((start, end)) = copy_pixels {
            let (vr, bytes) = copied_pixel_data(&mut f, ds_offset + start, end - start, encoding)?;
            super::review::add_copied_pixel_data(&mut b, vr, bytes);
        }
        Some(b)
    } else {
        None
    };

    // 3. Write: temp file, then rename into place.
    let output = match output {
        Output::File(p) => p.to_path_buf(),
        Output::Dir(d) => d.join(format!("{new_sop}.dcm")),
    };
    let output = output.as_path();
    let dir = output.parent().unwrap_or(Path::new("."));
    // Usually there already (one directory for a whole tree): checked first, as a mkdir
    // that fails locks the parent directory on the way.
    if !dir.is_dir() {
        fs::create_dir_all(dir)?;
    }
    let meta = crate::part10::file_meta(&sop_class, &new_sop, &out_ts_uid, "");
    let write = |out: &File, f: &mut File| -> Result<(), FileError> {
        let mut w = BufWriter::with_capacity(256 * 1024, out);
        w.write_all(&meta)?;
        obj.write_dataset_with_ts(&mut w, ts)
            .map_err(|e| FileError::Write(e.to_string()))?;
        if let Some((start, end)) = copy_pixels {
            f.seek(SeekFrom::Start(ds_offset + start))?;
            // The element's header, its length made even: a native Pixel Data value of odd
            // length (a deviation receiving tolerates, PS3.5 7.1.1) gets its pad byte here.
            let (mut header, len_at) = match encoding {
                Encoding::ImplicitLittle => (vec![0u8; 8], 4),
                Encoding::ExplicitLittle | Encoding::ExplicitBig => (vec![0u8; 12], 8),
            };
            f.read_exact(&mut header)?;
            let big = encoding == Encoding::ExplicitBig;
            let mut len_bytes = [0u8; 4];
            len_bytes.copy_from_slice(&header[len_at..len_at + 4]);
            let len = if big {
                u32::from_be_bytes(len_bytes)
            } else {
                u32::from_le_bytes(len_bytes)
            };
            let pad = len != u32::MAX && len % 2 == 1;
            if pad {
                let even = len + 1;
                let b = if big {
                    even.to_be_bytes()
                } else {
                    even.to_le_bytes()
                };
                header[len_at..len_at + 4].copy_from_slice(&b);
            }
            w.write_all(&header)?;
            let rest = (end - start).saturating_sub(header.len() as u64);
            let copied = io::copy(&mut f.take(rest), &mut w)?;
            if copied != rest {
                return Err(FileError::Write("input shrank while copying".into()));
            }
            if pad {
                w.write_all(&[0])?;
            }
        }
        w.flush()?;
        Ok(())
    };

    // 3. Write: complete before it gets its name, so a reader never sees half a file. Not
    //    fsynced: durability of outputs is the caller's (the pipeline's) business.
    //    First choice: an unnamed file (O_TMPFILE) linked into place when complete. It
    //    touches the directory once (the link) instead of twice (create, rename), and the
    //    file system allocates its inode without holding the directory's lock, so parallel
    //    workers writing into one directory do not queue behind each other.
    if let Some(out) = unnamed_file(dir) {
        write(&out, &mut f)?;
        match link_unnamed(&out, output) {
            Ok(()) => return Ok((report, output.to_path_buf(), batch)),
            // The name is taken: linked under a temporary name, then renamed over it (as
            // below), so an existing output is replaced atomically.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let tmp = temp_name(dir);
                link_unnamed(&out, &tmp)?;
                if let Err(e) = fs::rename(&tmp, output) {
                    let _ = fs::remove_file(&tmp);
                    return Err(e.into());
                }
                return Ok((report, output.to_path_buf(), batch));
            }
            // It cannot be linked here (no /proc): written again the portable way.
            Err(_) => {}
        }
    }
    // Portable: a named temp file next to the destination, renamed into place.
    let tmp = temp_name(dir);
    let result = (|| -> Result<(), FileError> {
        let out = File::create(&tmp)?;
        write(&out, &mut f)?;
        drop(out);
        fs::rename(&tmp, output)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| (report, output.to_path_buf(), batch))
}

/// The VR and value length (padded to even, as written) of the Pixel Data element that
/// starts at `at` and spans `len` bytes with its header, read from its header.
fn copied_pixel_data(
    f: &mut File,
    at: u64,
    len: u64,
    encoding: Encoding,
) -> Result<(dicom_core::VR, u64), FileError> {
    let header_len = match encoding {
        Encoding::ImplicitLittle => 8,
        Encoding::ExplicitLittle | Encoding::ExplicitBig => 12,
    };
    let vr = match encoding {
        // Implicit VR: native Pixel Data is OW (PS3.5 A.1).
        Encoding::ImplicitLittle => dicom_core::VR::OW,
        Encoding::ExplicitLittle | Encoding::ExplicitBig => {
            let mut h = [0u8; 6];
            f.seek(SeekFrom::Start(at))?;
            f.read_exact(&mut h)?;
            dicom_core::VR::from_binary([h[4], h[5]]).unwrap_or(dicom_core::VR::OB)
        }
    };
    let bytes = len.saturating_sub(header_len);
    Ok((vr, bytes + bytes % 2))
}

/// A fresh name for a temporary file in `dir` (never derived from the input).
fn temp_name(dir: &Path) -> std::path::PathBuf {
    dir.join(format!(".fiona-deid-{}.tmp", ulid::Ulid::generate()))
}

/// An unnamed regular file in `dir` (Linux O_TMPFILE), mode 0666 less the umask like
/// `File::create`; `None` where the kernel or file system does not offer it. Nothing is
/// left behind if the process dies before the file is linked.
fn unnamed_file(dir: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    fs::OpenOptions::new()
        .write(true)
        .mode(0o666)
        .custom_flags(nix::libc::O_TMPFILE)
        .open(dir)
        .ok()
}

/// Give the unnamed file `file` the name `path` (fails if `path` exists).
fn link_unnamed(file: &File, path: &Path) -> io::Result<()> {
    use nix::fcntl::{AtFlags, AT_FDCWD};
    use std::os::fd::AsRawFd;
    let fd_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    nix::unistd::linkat(
        AT_FDCWD,
        fd_path.as_str(),
        AT_FDCWD,
        path,
        AtFlags::AT_SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deid::engine::{Assignment, DatePolicy, Settings};
    use crate::deid::profile::ProfileOptions;
    use crate::deid::uid::UidMapper;
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, Tag, VR};
    use dicom_object::meta::FileMetaTableBuilder;
    use dicom_object::InMemDicomObject;

    fn write(path: &Path, charset: &str, name: &str, description: &str) {
        let s = |g, e, vr, v: &str| DataElement::new(Tag(g, e), vr, PrimitiveValue::from(v));
        let obj = InMemDicomObject::from_element_iter([
            s(0x0008, 0x0005, VR::CS, charset),
            s(0x0008, 0x0016, VR::UI, "1.2.840.10008.5.1.4.1.1.7"),
            s(0x0008, 0x0018, VR::UI, "1.2.826.0.1.3680043.8.498.42.1"),
            s(0x0008, 0x103E, VR::LO, description),
            s(0x0010, 0x0010, VR::PN, name),
            s(0x0020, 0x000D, VR::UI, "1.2.826.0.1.3680043.8.498.42"),
            s(0x0020, 0x000E, VR::UI, "1.2.826.0.1.3680043.8.498.42.0"),
            DataElement::new(
                Tag(0x7FE0, 0x0010),
                VR::OB,
                PrimitiveValue::from(vec![1u8, 2, 3, 4]),
            ),
        ]);
        obj.with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax("1.2.840.10008.1.2.1")
                .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                .media_storage_sop_instance_uid("1.2.826.0.1.3680043.8.498.42.1"),
        )
        .unwrap()
        .write_to_file(path)
        .unwrap();
    }

    fn engine() -> Engine {
        Engine::new(
            Settings {
                rules: Vec::new(),
                options: ProfileOptions {
                    clean_descriptors: true,
                    ..Default::default()
                },
                dates: DatePolicy::Keep,
                safe_private: vec![],
                sponsor: String::new(),
                site_id: String::new(),
                site_name: String::new(),
            },
            UidMapper::Conformant { key: [5; 32] },
            Assignment {
                project: "PROJ".into(),
                participant: "PROJ001".into(),
                event: "baseline".into(),
            },
        )
        .unwrap()
    }

    /// An existing output is replaced whole, and no temporary file is left behind.
    #[test]
    fn existing_output_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in.dcm");
        write(&input, "ISO_IR 100", "Nordmann^Kari", "Hjerne");
        let out_dir = d.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let output = out_dir.join("x.dcm");
        std::fs::write(&output, b"stale").unwrap();
        deidentify_file(&input, Output::File(&output), &engine()).unwrap();
        let first = std::fs::read(&output).unwrap();
        assert_ne!(first, b"stale");
        deidentify_file(&input, Output::File(&output), &engine()).unwrap();
        assert_eq!(std::fs::read(&output).unwrap(), first);
        let names: Vec<_> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.dcm")]);
    }

    /// Text is decoded and re-encoded in the instance's character set: a Latin-1 and a UTF-8
    /// description keep every character; the patient's name is cleaned out of them.
    #[test]
    fn character_sets_survive_cleaning() {
        let d = tempfile::tempdir().unwrap();
        for (charset, name, description, expected, marker) in [
            (
                "ISO_IR 100",
                "Ørjansen^Åse",
                "Hjerne Ærø Ørjansen",
                "Hjerne Ærø",
                vec![0xC6u8, b'r', 0xF8],
            ),
            (
                "ISO_IR 192",
                "Иванов^Иван",
                "МРТ головы Иванов",
                "МРТ головы",
                "МРТ".as_bytes().to_vec(),
            ),
        ] {
            let input = d.path().join(format!("{charset}.dcm"));
            let output = d.path().join(format!("{charset}-out.dcm"));
            write(&input, charset, name, description);
            deidentify_file(&input, Output::File(&output), &engine()).unwrap();
            let bytes = std::fs::read(&output).unwrap();
            assert!(
                bytes.windows(marker.len()).any(|w| w == marker.as_slice()),
                "{charset} bytes"
            );
            let back = dicom_object::open_file(&output).unwrap();
            let desc = back
                .element(Tag(0x0008, 0x103E))
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            assert_eq!(desc, expected, "{charset}");
            let pn = back
                .element(Tag(0x0010, 0x0010))
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            assert_eq!(pn, "PROJ001");
            // pixel data copied through
            assert_eq!(
                back.element(Tag(0x7FE0, 0x0010))
                    .unwrap()
                    .to_bytes()
                    .unwrap()
                    .as_ref(),
                &[1, 2, 3, 4]
            );
        }
    }

    /// Standard attributes encoded as UN (explicit VR) are de-identified like any other: no
    /// original UID or name in the output, also inside a UN sequence; the file meta names the
    /// data set's new SOP Instance UID; a UN "UID" that is not one is removed.
    #[test]
    fn un_encoded_standard_attributes_are_deidentified() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("un.dcm");
        let un =
            |g, e, v: &[u8]| DataElement::new(Tag(g, e), VR::UN, PrimitiveValue::from(v.to_vec()));
        let implicit = |g: u16, e: u16, v: &[u8]| {
            let mut out = Vec::new();
            out.extend_from_slice(&g.to_le_bytes());
            out.extend_from_slice(&e.to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
            out
        };
        let mut item = implicit(0x0008, 0x1150, b"1.2.840.10008.5.1.4.1.1.481.5\0");
        item.extend(implicit(0x0008, 0x1155, b"1.2.826.0.1.3680043.8.498.77.5"));
        let mut seq = vec![0xFE, 0xFF, 0x00, 0xE0];
        seq.extend_from_slice(&(item.len() as u32).to_le_bytes());
        seq.extend(item);
        let obj = InMemDicomObject::from_element_iter([
            un(0x0008, 0x0016, b"1.2.840.10008.5.1.4.1.1.7\0"),
            un(0x0008, 0x0018, b"1.2.826.0.1.3680043.8.498.77.1\0"),
            un(0x0008, 0x1155, b"Nordmann^Kari"),
            un(0x0010, 0x0010, b"Nordmann^Kari "),
            un(0x0010, 0x0020, b"NO12345678"),
            un(0x0020, 0x000D, b"1.2.826.0.1.3680043.8.498.77.2\0"),
            un(0x0020, 0x000E, b"1.2.826.0.1.3680043.8.498.77.3\0"),
            un(0x0020, 0x0052, b"1.2.826.0.1.3680043.8.498.77.4\0"),
            un(0x300C, 0x0002, &seq),
            DataElement::new(
                Tag(0x7FE0, 0x0010),
                VR::OB,
                PrimitiveValue::from(vec![1u8, 2, 3, 4]),
            ),
        ]);
        // Written by hand: dicom-object's own meta builder would take the UIDs from the
        // UN bytes (as decimals), the very damage this test is about.
        let mut file = crate::part10::file_meta(
            "1.2.840.10008.5.1.4.1.1.7",
            "1.2.826.0.1.3680043.8.498.77.1",
            "1.2.840.10008.1.2.1",
            "",
        );
        let ts = TransferSyntaxRegistry.get("1.2.840.10008.1.2.1").unwrap();
        obj.write_dataset_with_ts(&mut file, ts).unwrap();
        std::fs::write(&input, file).unwrap();
        let out_dir = d.path().join("out");
        let (report, path) = deidentify_file(&input, Output::Dir(&out_dir), &engine()).unwrap();
        assert_eq!(report.un_reinterpreted, 8, "{report:?}");
        let bytes = std::fs::read(&path).unwrap();
        for leak in [
            &b"1.2.826.0.1.3680043.8.498.77"[..],
            b"Nordmann",
            b"NO12345678",
        ] {
            assert!(!bytes.windows(leak.len()).any(|w| w == leak), "leak");
        }
        let back = dicom_object::open_file(&path).unwrap();
        let sop = back.element(Tag(0x0008, 0x0018)).unwrap();
        assert_eq!(sop.vr(), VR::UI);
        let sop = sop.to_str().unwrap().to_string();
        assert!(crate::deid::uid::is_valid_uid(&sop));
        assert_eq!(
            back.meta()
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0'),
            sop
        );
        assert_eq!(
            back.element(Tag(0x0010, 0x0010)).unwrap().to_str().unwrap(),
            "PROJ001"
        );
        assert!(
            back.element(Tag(0x0008, 0x1155)).is_err(),
            "a UN that is no UID is removed"
        );
        let refd = back.element(Tag(0x300C, 0x0002)).unwrap().items().unwrap()[0]
            .element(Tag(0x0008, 0x1155))
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(refd.starts_with("2.25."), "referenced UID mapped");
    }
}
