//! Self-tests for the synthetic corpus generator (`fiona_tests::corpus`).
//!
//! These need DCMTK (`dcmdump`, `dcmconv`, `dcmcjpeg`, `dcmcjpls`, `dcmcrle`,
//! `dcmdjpeg`, `dcmdjpls`, `dcmdrle`, `storescp`, `storescu`) in PATH and fail
//! with a clear message otherwise.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dicom_dictionary_std::tags;
use dicom_object::{open_file, DefaultDicomObject};
use fiona_tests::corpus::*;

fn require_dcmtk() {
    match Command::new("dcmdump").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "DCMTK `dcmdump --version` failed ({}): install dcmtk (e.g. `apt-get install dcmtk`)",
            o.status
        ),
        Err(e) => panic!(
            "DCMTK not found in PATH ({e}): these tests need dcmtk \
             (e.g. `apt-get install dcmtk`)"
        ),
    }
}

fn dcmdump_ok(path: &Path) {
    let out = Command::new("dcmdump")
        .arg(path)
        .output()
        .expect("running dcmdump (is dcmtk installed?)");
    assert!(
        out.status.success(),
        "dcmdump failed on {}: {}\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // dcmdump prints "E:" lines for parse problems even with exit code 0.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("E:"),
        "dcmdump reported errors for {}: {stderr}",
        path.display()
    );
}

fn open(path: &Path) -> DefaultDicomObject {
    open_file(path).unwrap_or_else(|e| panic!("dicom-object cannot open {}: {e}", path.display()))
}

fn str_of(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .unwrap_or_else(|e| panic!("missing {tag}: {e}"))
        .to_str()
        .unwrap()
        .trim_end_matches(['\0', ' '])
        .to_string()
}

fn int_of(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> i64 {
    obj.element(tag)
        .unwrap_or_else(|e| panic!("missing {tag}: {e}"))
        .to_int::<i64>()
        .unwrap()
}

fn pixel_bytes(obj: &DefaultDicomObject) -> Vec<u8> {
    obj.element(tags::PIXEL_DATA)
        .expect("pixel data")
        .to_bytes()
        .expect("native pixel data")
        .into_owned()
}

#[test]
fn study_files_parse_and_carry_expected_attributes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut all_sops = HashSet::new();
    for m in Modality::ALL {
        let spec = StudySpec::new(3, m);
        assert!(is_valid_uid(&spec.study_uid), "{}", spec.study_uid);
        let paths = write_study(&spec, &tmp.path().join(format!("{m:?}"))).unwrap();
        assert_eq!(paths.len() as u32, spec.series * spec.instances_per_series);
        assert_eq!(paths.len(), 6, "default is 2 series x 3 instances");

        let mut series_uids = HashSet::new();
        let mut pixel_sets = HashSet::new();
        for (k, p) in paths.iter().enumerate() {
            let s = k as u32 / spec.instances_per_series + 1;
            let i = k as u32 % spec.instances_per_series + 1;
            let obj = open(p);
            assert_eq!(obj.meta().transfer_syntax(), TS_EXPLICIT_VR_LE);
            assert_eq!(transfer_syntax_uid(p).unwrap(), TS_EXPLICIT_VR_LE);
            let sop = str_of(&obj, tags::SOP_INSTANCE_UID);
            assert!(is_valid_uid(&sop), "{sop}");
            assert_eq!(sop, spec.sop_instance_uid(s, i));
            assert_eq!(sop_instance_uid(p).unwrap(), sop, "meta vs data set");
            assert!(all_sops.insert(sop.clone()), "duplicate SOP UID {sop}");
            assert_eq!(str_of(&obj, tags::SOP_CLASS_UID), m.sop_class_uid());
            assert_eq!(str_of(&obj, tags::MODALITY), m.code());
            assert_eq!(str_of(&obj, tags::STUDY_INSTANCE_UID), spec.study_uid);
            let series = str_of(&obj, tags::SERIES_INSTANCE_UID);
            assert_eq!(series, spec.series_uid(s));
            assert!(is_valid_uid(&series));
            series_uids.insert(series);
            assert_eq!(int_of(&obj, tags::SERIES_NUMBER), s as i64);
            assert_eq!(int_of(&obj, tags::INSTANCE_NUMBER), i as i64);
            assert_eq!(str_of(&obj, tags::PATIENT_NAME), spec.patient_name);
            assert_eq!(str_of(&obj, tags::PATIENT_ID), spec.patient_id);
            assert_eq!(str_of(&obj, tags::ACCESSION_NUMBER), spec.accession);
            assert_eq!(str_of(&obj, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 100");
            assert_eq!(str_of(&obj, tags::STUDY_DATE).len(), 8);
            assert_eq!(str_of(&obj, tags::STUDY_TIME).len(), 6);
            assert_eq!(str_of(&obj, tags::PATIENT_BIRTH_DATE).len(), 8);
            assert!(!str_of(&obj, tags::STUDY_DESCRIPTION).is_empty());
            assert!(!str_of(&obj, tags::SERIES_DESCRIPTION).is_empty());
            assert_eq!(int_of(&obj, tags::ROWS), spec.rows as i64);
            assert_eq!(int_of(&obj, tags::COLUMNS), spec.cols as i64);
            assert_eq!(
                int_of(&obj, tags::BITS_ALLOCATED),
                m.bits_allocated() as i64
            );
            assert_eq!(int_of(&obj, tags::BITS_STORED), m.bits_stored() as i64);
            assert_eq!(int_of(&obj, tags::HIGH_BIT), m.bits_stored() as i64 - 1);
            assert_eq!(int_of(&obj, tags::PIXEL_REPRESENTATION), 0);
            assert_eq!(
                int_of(&obj, tags::SAMPLES_PER_PIXEL),
                m.samples_per_pixel() as i64
            );
            assert_eq!(
                str_of(&obj, tags::PHOTOMETRIC_INTERPRETATION),
                m.photometric()
            );

            let px = pixel_bytes(&obj);
            assert_eq!(px.len(), m.frame_bytes(spec.rows, spec.cols));
            // Non-trivial content: many distinct sample values, stored bits only.
            let samples: Vec<u32> = if m.bits_allocated() == 16 {
                px.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
                    .collect()
            } else {
                px.iter().map(|&b| b as u32).collect()
            };
            let distinct: HashSet<u32> = samples.iter().copied().collect();
            assert!(distinct.len() > 50, "{m:?}: only {} values", distinct.len());
            let max = 1u32 << m.bits_stored();
            assert!(samples.iter().all(|&v| v < max), "{m:?}: value >= {max}");
            assert!(pixel_sets.insert(px), "{m:?}: identical pixel data");
        }
        assert_eq!(series_uids.len() as u32, spec.series);
    }
}

#[test]
fn generation_is_deterministic_and_studies_differ() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = StudySpec::new(11, Modality::Mr);
    let a = write_study(&spec, &tmp.path().join("a")).unwrap();
    let b = write_study(&spec, &tmp.path().join("b")).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap());
    }
    assert_eq!(StudySpec::new(11, Modality::Mr), spec);

    let mut study_uids = HashSet::new();
    let mut patient_ids = HashSet::new();
    for n in 0..50 {
        for m in Modality::ALL {
            let s = StudySpec::new(n, m);
            assert!(is_valid_uid(&s.study_uid), "{}", s.study_uid);
            assert!(s.study_uid.len() <= 42, "{}", s.study_uid);
            assert!(study_uids.insert(s.study_uid.clone()));
            assert!(s.patient_name.contains('^'));
            patient_ids.insert(s.patient_id);
        }
    }
    assert_eq!(patient_ids.len(), 50);
    assert!(is_valid_uid(
        &StudySpec::new(u32::MAX, Modality::Ct).sop_instance_uid(u32::MAX, u32::MAX)
    ));
    assert!(!is_valid_uid("1.02.3"));
    assert!(!is_valid_uid("1..2"));
    assert!(!is_valid_uid(&format!("1.{}", "2".repeat(64))));
}

#[test]
fn non_latin1_name_switches_to_utf8() {
    require_dcmtk();
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = StudySpec::new(5, Modality::Sc);
    spec.patient_name = "Testperson^Σοφία".into();
    spec.series = 1;
    spec.instances_per_series = 1;
    assert_eq!(spec.specific_character_set(), "ISO_IR 192");
    let paths = write_study(&spec, tmp.path()).unwrap();
    let obj = open(&paths[0]);
    assert_eq!(str_of(&obj, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 192");
    assert_eq!(str_of(&obj, tags::PATIENT_NAME), "Testperson^Σοφία");
    dcmdump_ok(&paths[0]);

    // Latin-1 names are stored as single bytes under ISO_IR 100.
    let latin = StudySpec::new(7, Modality::Sc);
    assert_eq!(latin.patient_name, "Testperson^Jürgen");
    assert_eq!(latin.specific_character_set(), "ISO_IR 100");
    let p = write_study(&latin, &tmp.path().join("l")).unwrap();
    let (_, ds) = dataset_bytes(&p[0]).unwrap();
    let needle = b"Testperson^J\xFCrgen";
    assert!(
        ds.windows(needle.len()).any(|w| w == needle),
        "name not Latin-1 encoded"
    );
}

#[test]
fn dcmdump_accepts_every_generated_file() {
    require_dcmtk();
    let tmp = tempfile::tempdir().unwrap();
    for m in Modality::ALL {
        let mut spec = StudySpec::new(21, m);
        spec.instances_per_series = 2;
        for p in write_study(&spec, tmp.path()).unwrap() {
            dcmdump_ok(&p);
        }
    }
}

#[test]
fn dataset_bytes_matches_dicom_object_encoding() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = StudySpec::new(2, Modality::Ct);
    spec.series = 1;
    spec.instances_per_series = 1;
    let p = &write_study(&spec, tmp.path()).unwrap()[0];
    let (ts, ds) = dataset_bytes(p).unwrap();
    assert_eq!(ts, TS_EXPLICIT_VR_LE);
    // First data set element is (0008,0005) CS.
    assert_eq!(&ds[..6], &[0x08, 0x00, 0x05, 0x00, b'C', b'S']);
    let obj = open(p);
    let mut expected = Vec::new();
    obj.write_dataset(&mut expected).unwrap();
    assert_eq!(ds, expected);
    let file_len = std::fs::metadata(p).unwrap().len() as usize;
    let meta_len = 132 + 12 + obj.meta().information_group_length as usize;
    assert_eq!(ds.len(), file_len - meta_len);

    // Garbage is rejected.
    let bad = tmp.path().join("bad.dcm");
    std::fs::write(&bad, vec![0u8; 300]).unwrap();
    assert!(dataset_bytes(&bad).is_err());
    assert!(sop_instance_uid(&bad).is_err());
}

/// Decompresses / converts a transcoded file back to Explicit VR LE.
fn back_to_explicit_le(input: &Path, output: &Path, v: Variant) {
    let tool = match v {
        Variant::ImplicitLe | Variant::ExplicitBe | Variant::Deflate => "dcmconv",
        Variant::JpegLossless | Variant::JpegBaseline => "dcmdjpeg",
        Variant::JpegLs => "dcmdjpls",
        Variant::Rle => "dcmdrle",
    };
    let mut args = vec![input.as_os_str(), output.as_os_str()];
    if tool == "dcmconv" {
        args.insert(0, "+te".as_ref());
    }
    run_dcmtk(tool, &args).unwrap();
}

#[test]
fn variants_transcode_to_expected_transfer_syntax() {
    require_dcmtk();
    let tmp = tempfile::tempdir().unwrap();
    for m in Modality::ALL {
        let mut spec = StudySpec::new(31, m);
        spec.series = 1;
        spec.instances_per_series = 1;
        let src = &write_study(&spec, &tmp.path().join(format!("{m:?}"))).unwrap()[0];
        let src_obj = open(src);
        let src_sop = sop_instance_uid(src).unwrap();
        let src_pixels = pixel_bytes(&src_obj);

        for v in Variant::ALL {
            let out = tmp.path().join(format!("{m:?}_{v:?}.dcm"));
            if !v.supports_bits_allocated(m.bits_allocated()) {
                let err = transcode(src, &out, v).unwrap_err();
                assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
                continue;
            }
            transcode(src, &out, v).unwrap_or_else(|e| panic!("{m:?} {v:?}: {e}"));
            dcmdump_ok(&out);
            assert_eq!(transfer_syntax_uid(&out).unwrap(), v.transfer_syntax_uid());
            let (ts, ds) = dataset_bytes(&out).unwrap();
            assert_eq!(ts, v.transfer_syntax_uid());
            assert!(!ds.is_empty());

            let sop = sop_instance_uid(&out).unwrap();
            assert!(is_valid_uid(&sop), "{sop}");
            if v.is_lossy() {
                assert_ne!(sop, src_sop, "{m:?} {v:?}: lossy output keeps the UID");
            } else {
                assert_eq!(sop, src_sop, "{m:?} {v:?}");
            }

            if v == Variant::Deflate {
                // dicom-object is built without its `deflate` feature; the
                // stream is checked via DCMTK (dcmdump above, dcmconv below).
                let (_, plain) = dataset_bytes(src).unwrap();
                assert_ne!(&ds[..6], &plain[..6], "data set is not deflated");
                assert!(ds.len() < plain.len(), "deflate did not shrink");
            } else {
                let obj = open(&out);
                assert_eq!(obj.meta().transfer_syntax(), v.transfer_syntax_uid());
                assert_eq!(str_of(&obj, tags::SOP_INSTANCE_UID), sop);
                assert_eq!(str_of(&obj, tags::PATIENT_ID), spec.patient_id);
                if v.is_encapsulated() {
                    let px = obj.element(tags::PIXEL_DATA).unwrap();
                    let frags = px.value().fragments().expect("encapsulated pixel data");
                    assert!(!frags.is_empty());
                    let compressed: usize = frags.iter().map(|f| f.len()).sum();
                    assert!(compressed > 0);
                    if !v.is_lossy() {
                        assert!(
                            compressed < src_pixels.len(),
                            "{m:?} {v:?}: {compressed} >= {}",
                            src_pixels.len()
                        );
                    }
                }
            }

            // Lossless variants must decode to the very same pixels.
            let back = tmp.path().join(format!("{m:?}_{v:?}_back.dcm"));
            back_to_explicit_le(&out, &back, v);
            let back_obj = open(&back);
            assert_eq!(back_obj.meta().transfer_syntax(), TS_EXPLICIT_VR_LE);
            if v.is_lossy() {
                assert_eq!(int_of(&back_obj, tags::BITS_ALLOCATED), 8);
                assert_eq!(
                    pixel_bytes(&back_obj).len(),
                    src_pixels.len(),
                    "{m:?} {v:?}"
                );
            } else {
                assert!(
                    pixel_bytes(&back_obj) == src_pixels,
                    "{m:?} {v:?}: pixel data changed by a lossless round trip"
                );
            }
        }
    }
}

#[test]
fn transcode_reports_tool_failures() {
    require_dcmtk();
    let tmp = tempfile::tempdir().unwrap();
    let bogus = tmp.path().join("not-dicom.dcm");
    std::fs::write(&bogus, b"hello").unwrap();
    let err = transcode(&bogus, &tmp.path().join("out.dcm"), Variant::Rle).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("dcmcrle"), "{msg}");
    assert!(msg.contains("stderr"), "{msg}");

    let err = run_dcmtk("dcmtk-tool-that-does-not-exist", &[]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("install dcmtk"), "{err}");
}

#[test]
fn large_multiframe_has_expected_size_and_frames() {
    require_dcmtk();
    let tmp = tempfile::tempdir().unwrap();
    let frames = 8u32;
    let frame_len = 512u64 * 512 * 2;
    let (path, size) = write_large_multiframe(tmp.path(), frames).unwrap();
    assert_eq!(size, std::fs::metadata(&path).unwrap().len());

    let (ts, ds) = dataset_bytes(&path).unwrap();
    assert_eq!(ts, TS_EXPLICIT_VR_LE);
    // Data set ends with the pixel data element: header (12 bytes) + frames.
    let px_start = ds.len() - (frames as u64 * frame_len) as usize - 12;
    assert_eq!(
        &ds[px_start..px_start + 8],
        &[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]
    );
    assert_eq!(
        u32::from_le_bytes(ds[px_start + 8..px_start + 12].try_into().unwrap()) as u64,
        frames as u64 * frame_len
    );
    assert!(size > frames as u64 * frame_len && size < frames as u64 * frame_len + 4096);

    let obj = open(&path);
    assert_eq!(
        str_of(&obj, tags::SOP_CLASS_UID),
        SOP_CLASS_MF_GRAYSCALE_WORD_SC
    );
    assert_eq!(int_of(&obj, tags::NUMBER_OF_FRAMES), frames as i64);
    assert_eq!(int_of(&obj, tags::ROWS), 512);
    assert_eq!(int_of(&obj, tags::COLUMNS), 512);
    assert_eq!(int_of(&obj, tags::BITS_ALLOCATED), 16);
    assert_eq!(
        sop_instance_uid(&path).unwrap(),
        str_of(&obj, tags::SOP_INSTANCE_UID)
    );
    let px = pixel_bytes(&obj);
    assert_eq!(px.len() as u64, frames as u64 * frame_len);
    let distinct_frames: HashSet<&[u8]> = px.chunks_exact(frame_len as usize).collect();
    assert_eq!(distinct_frames.len(), frames as usize, "frames must differ");
    dcmdump_ok(&path);

    // A different frame count is a different instance.
    let (p2, s2) = write_large_multiframe(tmp.path(), 2).unwrap();
    assert_ne!(p2, path);
    assert_eq!(s2, size - 6 * frame_len);
    assert_ne!(
        sop_instance_uid(&p2).unwrap(),
        sop_instance_uid(&path).unwrap()
    );
}

/// A `storescp +B +xa` on a free loopback port, killed on drop.
struct StoreScp {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl StoreScp {
    fn start(dir: &Path) -> StoreScp {
        for _attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new("storescp")
                .args(["+B", "+xa", "-od"])
                .arg(dir)
                .arg(port.to_string())
                .env("TCP_NODELAY", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawning storescp (is dcmtk installed?)");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break; // port probably taken; retry with another one
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return StoreScp {
                        child,
                        port,
                        dir: dir.to_path_buf(),
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start storescp");
    }

    /// Sends `file` with storescu and returns the single stored file.
    fn send(&self, file: &Path, args: &[&str]) -> PathBuf {
        for e in std::fs::read_dir(&self.dir).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        let out = Command::new("storescu")
            .args(args)
            .arg("127.0.0.1")
            .arg(self.port.to_string())
            .arg(file)
            .env("TCP_NODELAY", "1")
            .output()
            .expect("running storescu (is dcmtk installed?)");
        assert!(
            out.status.success(),
            "storescu {args:?} {} failed: {}\n{}",
            file.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stored: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(stored.len(), 1, "expected one stored file: {stored:?}");
        stored.into_iter().next().unwrap()
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn storescu_roundtrip_is_bit_exact() {
    require_dcmtk();
    let tmp = tempfile::tempdir().unwrap();
    let recv = tmp.path().join("recv");
    std::fs::create_dir_all(&recv).unwrap();
    let scp = StoreScp::start(&recv);

    let mut cases: Vec<(Option<Variant>, PathBuf)> = Vec::new();
    for m in Modality::ALL {
        let mut spec = StudySpec::new(41, m);
        spec.series = 1;
        spec.instances_per_series = 1;
        let src = write_study(&spec, &tmp.path().join(format!("{m:?}")))
            .unwrap()
            .remove(0);
        for v in Variant::ALL {
            if v.supports_bits_allocated(m.bits_allocated()) {
                let out = tmp.path().join(format!("{m:?}_{v:?}.dcm"));
                transcode(&src, &out, v).unwrap();
                cases.push((Some(v), out));
            }
        }
        cases.push((None, src));
    }
    let (large, _) = write_large_multiframe(tmp.path(), 3).unwrap();
    cases.push((None, large));

    for (v, file) in &cases {
        let args = storescu_args_for(*v);
        let (ts, sent) = dataset_bytes(file).unwrap();
        assert_eq!(storescu_args_for_ts(&ts), Some(args.clone()));
        let stored = scp.send(file, &args);
        let (stored_ts, got) = dataset_bytes(&stored).unwrap();
        assert_eq!(
            stored_ts,
            ts,
            "{v:?} {}: sent with {args:?}, stored in another transfer syntax",
            file.display()
        );
        assert!(
            same_dataset(&ts, &sent, &got),
            "{v:?} {}: stored data set differs ({} vs {} bytes)",
            file.display(),
            got.len(),
            sent.len()
        );
        if v.is_none() || v.is_some_and(|v| v != Variant::Deflate) {
            assert_eq!(got, sent, "{v:?}: only deflate may differ by padding");
        }
        assert_eq!(
            sop_instance_uid(&stored).unwrap(),
            sop_instance_uid(file).unwrap()
        );
    }
}

#[test]
fn same_dataset_allows_only_deflate_padding() {
    let odd = [1u8, 2, 3];
    let padded = [1u8, 2, 3, 0];
    assert!(same_dataset(TS_EXPLICIT_VR_LE, &odd, &odd));
    assert!(same_dataset(TS_DEFLATED_EXPLICIT_VR_LE, &odd, &padded));
    assert!(!same_dataset(TS_EXPLICIT_VR_LE, &odd, &padded));
    assert!(!same_dataset(
        TS_DEFLATED_EXPLICIT_VR_LE,
        &odd,
        &[1, 2, 3, 1]
    ));
    assert!(!same_dataset(
        TS_DEFLATED_EXPLICIT_VR_LE,
        &[1, 2],
        &[1, 2, 0]
    ));
    assert!(!same_dataset(TS_DEFLATED_EXPLICIT_VR_LE, &odd, &[1, 2, 4]));
}
