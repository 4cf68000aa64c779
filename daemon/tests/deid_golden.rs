//! Golden test: `fiona deid` with a fixed project secret on deterministic synthetic inputs
//! gives exactly the expected output, compared as a readable `dcmdump` of each output file
//! (`daemon/tests/golden/*.txt`). After an intended change, regenerate with
//! `FIONA_BLESS=1 cargo test -p fiona --test deid_golden` and review the diff.

use fiona_tests::fiona_bin;
use std::path::{Path, PathBuf};
use std::process::Command;

use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::harness::{fiona_deid, require_tool};

const SECRET: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// A data directory whose PROJ1 secret is the fixed [`SECRET`].
fn data_with_secret(root: &Path) -> PathBuf {
    let data = root.join("data");
    std::fs::create_dir_all(data.join("secrets")).unwrap();
    std::fs::write(data.join("secrets/PROJ1.key"), format!("{SECRET}\n")).unwrap();
    data
}

/// Write a data set as an explicit VR little endian Part-10 file.
fn write_part10(
    obj: dicom_object::InMemDicomObject,
    path: &Path,
    sop_class: &str,
    sop_instance: &str,
) {
    obj.with_meta(
        dicom_object::meta::FileMetaTableBuilder::new()
            .transfer_syntax("1.2.840.10008.1.2.1")
            .media_storage_sop_class_uid(sop_class)
            .media_storage_sop_instance_uid(sop_instance),
    )
    .unwrap()
    .write_to_file(path)
    .unwrap();
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check(name: &str, input: &Path, data: &Path, out: &Path) {
    check_with(name, input, data, out, "");
}

/// Run `fiona deid` with a config holding `deid_toml` as `[projects.PROJ1.deid]`.
fn check_with(name: &str, input: &Path, data: &Path, out: &Path, deid_toml: &str) {
    let cfg = data.with_extension(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[projects.PROJ1]\nparticipant_pattern = \"PROJ[0-9]{{3}}\"\nevents = [\"baseline\"]\napproval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n[projects.PROJ1.deid]\n{deid_toml}\n",
            data.display()
        ),
    )
    .unwrap();
    let status = fiona_deid(&fiona_bin!(), ("--config", &cfg), input, out);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let dump = Command::new("dcmdump").arg(out).output().unwrap();
    assert!(dump.status.success());
    let text = String::from_utf8_lossy(&dump.stdout).to_string();
    let golden = golden_dir().join(format!("{name}.txt"));
    if std::env::var_os("FIONA_BLESS").is_some() {
        std::fs::write(&golden, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
        panic!(
            "no golden file {}; run with FIONA_BLESS=1",
            golden.display()
        )
    });
    assert!(
        text == expected,
        "{name}: output differs from {}\n--- got ---\n{text}",
        golden.display()
    );
}

#[test]
fn default_profile_golden_dumps() {
    require_tool("dcmdump");
    let tmp = tempfile::tempdir().unwrap();
    let data = data_with_secret(tmp.path());
    for (name, m) in [
        ("ct_default", Modality::Ct),
        ("sc_default", Modality::Sc),
        ("us_default", Modality::Us),
    ] {
        let mut spec = StudySpec::new(7, m);
        spec.series = 1;
        spec.instances_per_series = 1;
        spec.rows = 8;
        spec.cols = 8;
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let f = corpus::write_study(&spec, &d).unwrap().remove(0);
        check(name, &f, &data, &tmp.path().join(format!("{name}.dcm")));
    }
}

#[test]
fn options_golden_dump() {
    require_tool("dcmdump");
    let tmp = tempfile::tempdir().unwrap();
    let data = data_with_secret(tmp.path());
    let mut spec = StudySpec::new(8, Modality::Mr);
    spec.series = 1;
    spec.instances_per_series = 1;
    spec.rows = 8;
    spec.cols = 8;
    let d = tmp.path().join("mr");
    std::fs::create_dir_all(&d).unwrap();
    let f = corpus::write_study(&spec, &d).unwrap().remove(0);
    check_with(
        "mr_keep_dates_clean_descriptors_patient_device",
        &f,
        &data,
        &tmp.path().join("mr.dcm"),
        "dates = { policy = \"keep\" }\nsite_id = \"HUS\"\nsite_name = \"Haukeland\"\n\
         [projects.PROJ1.deid.options]\nclean_descriptors = true\n\
         retain_patient_characteristics = true\nretain_device_identity = true\n",
    );
}

/// Latin-1 text, a private block (one element kept as safe), and sequences three deep with
/// references.
#[test]
fn nested_private_latin1_golden_dump() {
    use dicom_core::value::{DataSetSequence, PrimitiveValue};
    use dicom_core::{DataElement, Length, Tag, VR};
    use dicom_object::InMemDicomObject;
    require_tool("dcmdump");
    let s = |g, e, vr, v: &str| DataElement::new(Tag(g, e), vr, PrimitiveValue::from(v));
    let sq = |g, e, items: Vec<InMemDicomObject>| {
        DataElement::new(
            Tag(g, e),
            VR::SQ,
            DataSetSequence::new(items, Length::UNDEFINED),
        )
    };
    let level3 = InMemDicomObject::from_element_iter([
        s(0x0008, 0x1150, VR::UI, "1.2.840.10008.5.1.4.1.1.2"),
        s(0x0008, 0x1155, VR::UI, "1.2.826.0.1.3680043.8.498.9.3"),
        s(0x0010, 0x0010, VR::PN, "Ørjansen^Åse"),
    ]);
    let level2 = InMemDicomObject::from_element_iter([
        sq(0x0008, 0x1199, vec![level3]),
        s(0x0040, 0xA160, VR::UT, "Funn hos Ørjansen: normal"),
    ]);
    let level1 = InMemDicomObject::from_element_iter([
        s(0x0008, 0x1150, VR::UI, "1.2.840.10008.5.1.4.1.1.2"),
        s(0x0008, 0x1155, VR::UI, "1.2.826.0.1.3680043.8.498.9.2"),
        sq(0x0040, 0xA730, vec![level2]),
    ]);
    let obj = InMemDicomObject::from_element_iter([
        s(0x0008, 0x0005, VR::CS, "ISO_IR 100"),
        s(0x0008, 0x0016, VR::UI, "1.2.840.10008.5.1.4.1.1.7"),
        s(0x0008, 0x0018, VR::UI, "1.2.826.0.1.3680043.8.498.9.1"),
        s(0x0008, 0x0020, VR::DA, "20240229"),
        s(0x0008, 0x0060, VR::CS, "OT"),
        s(0x0008, 0x1030, VR::LO, "Hjerne Ørjansen"),
        sq(0x0008, 0x1140, vec![level1]),
        s(0x0009, 0x0010, VR::LO, "ACME 1.0"),
        s(0x0009, 0x1001, VR::DS, "1000"),
        s(0x0009, 0x1002, VR::LO, "Ørjansen secret"),
        s(0x0010, 0x0010, VR::PN, "Ørjansen^Åse"),
        s(0x0010, 0x0020, VR::LO, "01017012345"),
        s(0x0020, 0x000D, VR::UI, "1.2.826.0.1.3680043.8.498.9"),
        s(0x0020, 0x000E, VR::UI, "1.2.826.0.1.3680043.8.498.9.0"),
        // A 4x4 8-bit image: a secondary capture is read by OCR by default, so its pixel
        // data must be a decodable image.
        DataElement::new(Tag(0x0028, 0x0002), VR::US, PrimitiveValue::from(1u16)),
        s(0x0028, 0x0004, VR::CS, "MONOCHROME2"),
        DataElement::new(Tag(0x0028, 0x0010), VR::US, PrimitiveValue::from(4u16)),
        DataElement::new(Tag(0x0028, 0x0011), VR::US, PrimitiveValue::from(4u16)),
        DataElement::new(Tag(0x0028, 0x0100), VR::US, PrimitiveValue::from(8u16)),
        DataElement::new(Tag(0x0028, 0x0101), VR::US, PrimitiveValue::from(8u16)),
        DataElement::new(Tag(0x0028, 0x0102), VR::US, PrimitiveValue::from(7u16)),
        DataElement::new(Tag(0x0028, 0x0103), VR::US, PrimitiveValue::from(0u16)),
        DataElement::new(
            Tag(0x7FE0, 0x0010),
            VR::OB,
            PrimitiveValue::from(vec![0u8; 16]),
        ),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.dcm");
    write_part10(
        obj,
        &input,
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.826.0.1.3680043.8.498.9.1",
    );
    let data = data_with_secret(tmp.path());
    check_with(
        "nested_private_latin1",
        &input,
        &data,
        &tmp.path().join("out.dcm"),
        "safe_private = [{ creator = \"ACME 1.0\", element = 0x01 }]\n\
         [projects.PROJ1.deid.options]\nretain_safe_private = true\nclean_descriptors = true\n",
    );
}

/// A Basic Text SR with references to images of another study (evidence sequence), a
/// verifying observer and text content naming the patient.
#[test]
fn structured_report_golden_dump() {
    use dicom_core::value::{DataSetSequence, PrimitiveValue};
    use dicom_core::{DataElement, Length, Tag, VR};
    use dicom_object::InMemDicomObject;
    require_tool("dcmdump");
    let s = |g, e, vr, v: &str| DataElement::new(Tag(g, e), vr, PrimitiveValue::from(v));
    let sq = |g, e, items: Vec<InMemDicomObject>| {
        DataElement::new(
            Tag(g, e),
            VR::SQ,
            DataSetSequence::new(items, Length::UNDEFINED),
        )
    };
    let item = |els: Vec<DataElement<InMemDicomObject>>| InMemDicomObject::from_element_iter(els);
    let concept = |code: &str, meaning: &str| {
        sq(
            0x0040,
            0xA043,
            vec![item(vec![
                s(0x0008, 0x0100, VR::SH, code),
                s(0x0008, 0x0102, VR::SH, "DCM"),
                s(0x0008, 0x0104, VR::LO, meaning),
            ])],
        )
    };
    let image_ref = item(vec![
        s(0x0008, 0x1150, VR::UI, "1.2.840.10008.5.1.4.1.1.2"),
        s(0x0008, 0x1155, VR::UI, "1.2.826.0.1.3680043.8.498.20.1.1"),
    ]);
    let content = vec![
        item(vec![
            s(0x0040, 0xA010, VR::CS, "CONTAINS"),
            s(0x0040, 0xA040, VR::CS, "TEXT"),
            concept("121071", "Finding"),
            s(0x0040, 0xA160, VR::UT, "Nordmann Kari has a normal scan"),
        ]),
        item(vec![
            s(0x0040, 0xA010, VR::CS, "CONTAINS"),
            s(0x0040, 0xA040, VR::CS, "IMAGE"),
            concept("121080", "Best illustration of finding"),
            sq(0x0008, 0x1199, vec![image_ref.clone()]),
        ]),
    ];
    let evidence = item(vec![
        s(0x0020, 0x000D, VR::UI, "1.2.826.0.1.3680043.8.498.20"),
        sq(
            0x0008,
            0x1115,
            vec![item(vec![
                s(0x0020, 0x000E, VR::UI, "1.2.826.0.1.3680043.8.498.20.1"),
                sq(0x0008, 0x1199, vec![image_ref]),
            ])],
        ),
    ]);
    let obj = InMemDicomObject::from_element_iter([
        s(0x0008, 0x0005, VR::CS, "ISO_IR 192"),
        s(0x0008, 0x0016, VR::UI, "1.2.840.10008.5.1.4.1.1.88.11"),
        s(0x0008, 0x0018, VR::UI, "1.2.826.0.1.3680043.8.498.21.1"),
        s(0x0008, 0x0020, VR::DA, "20240301"),
        s(0x0008, 0x0023, VR::DA, "20240301"),
        s(0x0008, 0x0060, VR::CS, "SR"),
        s(0x0008, 0x0090, VR::PN, "Lege^Lise"),
        s(0x0010, 0x0010, VR::PN, "Nordmann^Kari"),
        s(0x0010, 0x0020, VR::LO, "01017012345"),
        s(0x0020, 0x000D, VR::UI, "1.2.826.0.1.3680043.8.498.21"),
        s(0x0020, 0x000E, VR::UI, "1.2.826.0.1.3680043.8.498.21.9"),
        s(0x0040, 0xA040, VR::CS, "CONTAINER"),
        concept("18748-4", "Diagnostic Imaging Report"),
        s(0x0040, 0xA050, VR::CS, "SEPARATE"),
        s(0x0040, 0xA491, VR::CS, "COMPLETE"),
        s(0x0040, 0xA493, VR::CS, "VERIFIED"),
        sq(
            0x0040,
            0xA073,
            vec![item(vec![
                s(0x0040, 0xA027, VR::LO, "Haukeland Universitetssjukehus"),
                s(0x0040, 0xA030, VR::DT, "20240301120000"),
                s(0x0040, 0xA075, VR::PN, "Lege^Lise"),
            ])],
        ),
        sq(0x0040, 0xA375, vec![evidence]),
        sq(0x0040, 0xA730, content),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("sr.dcm");
    write_part10(
        obj,
        &input,
        "1.2.840.10008.5.1.4.1.1.88.11",
        "1.2.826.0.1.3680043.8.498.21.1",
    );
    let data = data_with_secret(tmp.path());
    check("sr_references", &input, &data, &tmp.path().join("out.dcm"));
}
