//! Pixel-stage figures (issue 5), on generated 512x512 images with synthetic burned-in words.
//!
//!   cargo run --release -p fiona --example pixel_bench -- recall [IMAGES]
//!   cargo run --release -p fiona --example pixel_bench -- speed [IMAGES]
//!
//! `recall`: IMAGES (default 240) images, a third each ultrasound (RGB), secondary capture
//! (8-bit) and CT (16-bit, 12 stored), from fiona-tests' phantoms. Each gets 4 to 6 words
//! (Norwegian-style names, 11-digit national ID numbers, dates in three formats, times,
//! hospital words), glyphs 14 or 21 pixels tall, at random places (a third over the anatomy),
//! drawn at full brightness or, in a quarter of the images, at 90 %. The stage runs with OCR
//! alone (no known regions) on every image. A word counts as blanked when every pixel of its
//! box is black afterwards. Also printed: images parked (text still read after the masking
//! rounds), and the share of pixels blanked away from any word (false positives).
//!
//! `speed`: region masking (a GE LOGIQ9 signature on ultrasound images, OCR off) in images/s,
//! and OCR (one engine per rayon worker) in seconds per image, both cores, against OCR with
//! Tesseract started afresh for every image, in the same run.

use std::time::Instant;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_object::{open_file, FileDicomObject, InMemDicomObject};
use fiona::pixel::ocr;
use fiona::pixel::scrub::{scrub, OcrSelect, OcrStage, Stage};
use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::glyphs::{draw_text, text_size};
use rayon::prelude::*;

const SIZE: u32 = 512;
const SLACK: u32 = 8;

use fiona_tests::corpus::Rng;

const FAMILY: &[&str] = &[
    "NORDMANN",
    "HANSEN",
    "JOHANSEN",
    "OLSEN",
    "LARSEN",
    "ANDERSEN",
    "PEDERSEN",
    "NILSEN",
    "KRISTIANSEN",
    "JENSEN",
    "KARLSEN",
    "JOHNSEN",
    "PETTERSEN",
    "ERIKSEN",
    "BERG",
    "HAUGEN",
];
const GIVEN: &[&str] = &[
    "KARI", "OLA", "INGRID", "LARS", "SIGRID", "KNUT", "ASTRID", "BJORN", "LIV", "TORE",
];
const PLACES: &[&str] = &[
    "HAUKELAND",
    "ST.OLAVS",
    "RIKSHOSPITALET",
    "ULLEVAL",
    "BERGEN",
];

fn word(r: &mut Rng) -> String {
    let d = |r: &mut Rng, n: u64| r.below(n) + 1;
    match r.below(7) {
        0 => format!(
            "{}^{}",
            FAMILY[r.below(FAMILY.len() as u64) as usize],
            GIVEN[r.below(GIVEN.len() as u64) as usize]
        ),
        1 => (0..11)
            .map(|_| char::from(b'0' + r.below(10) as u8))
            .collect(),
        2 => format!("{}-{:02}-{:02}", 1930 + r.below(95), d(r, 12), d(r, 28)),
        3 => format!("{:02}.{:02}.{}", d(r, 28), d(r, 12), 1930 + r.below(95)),
        4 => format!("{:02}:{:02}:{:02}", r.below(24), r.below(60), r.below(60)),
        5 => PLACES[r.below(PLACES.len() as u64) as usize].to_string(),
        _ => format!("DOB:{:02}/{:02}/{}", d(r, 28), d(r, 12), 1930 + r.below(95)),
    }
}

/// A word drawn: its box, and whether it lies over the anatomy.
struct Drawn {
    text: String,
    rect: (u32, u32, u32, u32),
    over_anatomy: bool,
    scale: u32,
}

fn overlaps(a: (u32, u32, u32, u32), b: (u32, u32, u32, u32)) -> bool {
    let g = 6;
    a.0 < b.0 + b.2 + g && b.0 < a.0 + a.2 + g && a.1 < b.1 + b.3 + g && b.1 < a.1 + a.3 + g
}

/// Generated image `i` with words drawn into its pixels (in memory).
fn image(
    dir: &std::path::Path,
    i: u32,
    r: &mut Rng,
) -> (FileDicomObject<InMemDicomObject>, Vec<Drawn>, Modality) {
    let m = [Modality::Us, Modality::Sc, Modality::Ct][(i % 3) as usize];
    let mut spec = StudySpec::new(1000 + i, m);
    spec.series = 1;
    spec.instances_per_series = 1;
    spec.rows = SIZE as u16;
    spec.cols = SIZE as u16;
    let d = dir.join(format!("i{i}"));
    std::fs::create_dir_all(&d).unwrap();
    let f = corpus::write_study(&spec, &d).unwrap().remove(0);
    let mut obj = open_file(&f).unwrap();
    std::fs::remove_dir_all(&d).unwrap();
    let mut px = obj
        .element(Tag(0x7FE0, 0x0010))
        .unwrap()
        .to_bytes()
        .unwrap()
        .to_vec();
    let (spp, bytes, max) = match m {
        Modality::Us => (3usize, 1usize, 255u32),
        Modality::Sc => (1, 1, 255),
        _ => (1, 2, 4095),
    };
    let ink = if i % 4 == 3 { max * 9 / 10 } else { max };
    let mut drawn: Vec<Drawn> = Vec::new();
    let words = 4 + r.below(3);
    let mut tries = 0;
    while (drawn.len() as u64) < words && tries < 200 {
        tries += 1;
        let text = word(r);
        let scale = 2 + r.below(2) as u32;
        let (w, h) = text_size(&text, scale);
        if w + 8 >= SIZE {
            continue;
        }
        let over_anatomy = r.below(3) == 0;
        let (x, y) = if over_anatomy {
            (
                SIZE / 4 + r.below(u64::from((SIZE / 2).saturating_sub(w / 2).max(1))) as u32,
                SIZE / 4 + r.below(u64::from(SIZE / 2)) as u32,
            )
        } else {
            (
                4 + r.below(u64::from(SIZE - w - 8)) as u32,
                if r.below(2) == 0 {
                    4 + r.below(60) as u32
                } else {
                    SIZE - h - 4 - r.below(60) as u32
                },
            )
        };
        let rect = (x, y, w, h);
        if x + w >= SIZE || y + h >= SIZE || drawn.iter().any(|d| overlaps(d.rect, rect)) {
            continue;
        }
        draw_text(&text, x, y, scale, |gx, gy| {
            let p = (gy * SIZE + gx) as usize;
            for s in 0..spp {
                let at = (p * spp + s) * bytes;
                if bytes == 1 {
                    // Colour images: yellow text in every other one (no blue).
                    px[at] = if spp == 3 && s == 2 && i % 2 == 1 {
                        0
                    } else {
                        ink as u8
                    };
                } else {
                    px[at..at + 2].copy_from_slice(&(ink as u16).to_le_bytes());
                }
            }
        });
        drawn.push(Drawn {
            text: text.clone(),
            rect,
            over_anatomy,
            scale,
        });
    }
    let vr = if bytes == 1 { VR::OB } else { VR::OW };
    obj.put(DataElement::new(
        Tag(0x7FE0, 0x0010),
        vr,
        PrimitiveValue::from(px),
    ));
    (obj, drawn, m)
}

fn ocr_stage() -> Stage {
    Stage {
        known_regions: false,
        ocr: Some(OcrStage {
            settings: ocr::OcrSettings::default(),
            select: OcrSelect {
                all_images: true,
                ..OcrSelect::usual()
            },
        }),
        ..Stage::default_stage()
    }
}

fn pixels(obj: &FileDicomObject<InMemDicomObject>) -> Vec<u8> {
    obj.element(Tag(0x7FE0, 0x0010))
        .unwrap()
        .to_bytes()
        .unwrap()
        .to_vec()
}

fn generate(n: u32) -> Vec<(FileDicomObject<InMemDicomObject>, Vec<Drawn>, Modality)> {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Rng::new(5);
    (0..n).map(|i| image(tmp.path(), i, &mut r)).collect()
}

fn recall(n: u32) {
    let set = generate(n);
    let stage = ocr_stage();
    let t = Instant::now();
    let results: Vec<_> = set
        .into_par_iter()
        .map(|(mut obj, drawn, m)| {
            let before = pixels(&obj);
            let r = scrub(&mut obj, &stage);
            (r.is_ok(), before, pixels(&obj), drawn, m)
        })
        .collect();
    let secs = t.elapsed().as_secs_f64();
    let mut total = [0u64; 2];
    let mut blanked = [0u64; 2];
    let mut by_scale = [[0u64; 2]; 2];
    let mut by_kind = [[0u64; 2]; 3];
    let (mut parked, mut fp_pixels, mut pixels_all) = (0, 0u64, 0u64);
    let (mut missed, mut partial, mut dim) = (0u64, 0u64, [0u64; 2]);
    for (i, (ok, before, after, drawn, m)) in results.iter().enumerate() {
        let px = before.len() / (SIZE * SIZE) as usize;
        let kind = match m {
            Modality::Us => 0,
            Modality::Sc => 1,
            _ => 2,
        };
        if !ok {
            parked += 1;
        }
        for d in drawn {
            let (x0, y0, w, h) = d.rect;
            let black = *ok
                && (y0..y0 + h).all(|y| {
                    (x0..x0 + w).all(|x| {
                        let at = (y * SIZE + x) as usize * px;
                        after[at..at + px].iter().all(|&b| b == 0)
                    })
                });
            if *ok && !black {
                let mut z = 0;
                for y in y0..y0 + h {
                    for x in x0..x0 + w {
                        let at = (y * SIZE + x) as usize * px;
                        z += usize::from(after[at..at + px] != before[at..at + px]);
                    }
                }
                if z == 0 {
                    missed += 1;
                } else {
                    partial += 1;
                }
                if std::env::var_os("PIXEL_BENCH_DEBUG").is_some() {
                    let mut left = (u32::MAX, u32::MAX, 0, 0);
                    for y in y0..y0 + h {
                        for x in x0..x0 + w {
                            let at = (y * SIZE + x) as usize * px;
                            if after[at..at + px].iter().any(|&b| b != 0) {
                                left = (left.0.min(x), left.1.min(y), left.2.max(x), left.3.max(y));
                            }
                        }
                    }
                    eprintln!(
                        "image {i} {m:?}: {:?} at {:?} scale {}: not black within {left:?}",
                        d.text, d.rect, d.scale
                    );
                }
            }
            if i % 4 == 3 {
                dim[0] += 1;
                dim[1] += u64::from(black);
            }
            let a = usize::from(d.over_anatomy);
            total[a] += 1;
            blanked[a] += u64::from(black);
            let s = (d.scale - 2) as usize;
            by_scale[s][0] += 1;
            by_scale[s][1] += u64::from(black);
            by_kind[kind][0] += 1;
            by_kind[kind][1] += u64::from(black);
        }
        if *ok {
            for y in 0..SIZE {
                for x in 0..SIZE {
                    let near = drawn.iter().any(|d| {
                        let (bx, by, bw, bh) = d.rect;
                        x + SLACK >= bx
                            && x < bx + bw + SLACK
                            && y + SLACK >= by
                            && y < by + bh + SLACK
                    });
                    let at = (y * SIZE + x) as usize * px;
                    if !near {
                        pixels_all += 1;
                        if before[at..at + px] != after[at..at + px] {
                            fp_pixels += 1;
                        }
                    }
                }
            }
        }
    }
    let pct = |a: u64, b: u64| 100.0 * a as f64 / b.max(1) as f64;
    let words = total[0] + total[1];
    let got = blanked[0] + blanked[1];
    println!("images: {n} (512x512; US RGB, SC 8-bit, CT 16-bit in turn), {words} words");
    println!(
        "recall (word boxes fully blanked by OCR alone): {got}/{words} = {:.1} %",
        pct(got, words)
    );
    println!(
        "  in the border: {}/{} = {:.1} %; over the anatomy: {}/{} = {:.1} %",
        blanked[0],
        total[0],
        pct(blanked[0], total[0]),
        blanked[1],
        total[1],
        pct(blanked[1], total[1])
    );
    println!(
        "  glyphs 14 px: {:.1} % of {}; 21 px: {:.1} % of {}",
        pct(by_scale[0][1], by_scale[0][0]),
        by_scale[0][0],
        pct(by_scale[1][1], by_scale[1][0]),
        by_scale[1][0]
    );
    println!(
        "  US: {:.1} % of {}; SC: {:.1} % of {}; CT: {:.1} % of {}",
        pct(by_kind[0][1], by_kind[0][0]),
        by_kind[0][0],
        pct(by_kind[1][1], by_kind[1][0]),
        by_kind[1][0],
        pct(by_kind[2][1], by_kind[2][0]),
        by_kind[2][0]
    );
    println!(
        "  text at 90 % brightness: {:.1} % of {}",
        pct(dim[1], dim[0]),
        dim[0]
    );
    println!(
        "  not blanked in images not parked: {missed} words untouched, {partial} partly blanked"
    );
    println!("images parked (text still read after the masking rounds): {parked}");
    println!(
        "pixels blanked away from every word (false positives): {:.3} % of {}",
        pct(fp_pixels, pixels_all),
        pixels_all
    );
    println!(
        "wall {secs:.1} s, {:.3} s per image, engines started: {}",
        secs / f64::from(n),
        ocr::engines_started()
    );
}

fn speed(n: u32) {
    // Region masking: GE LOGIQ9 ultrasound, the library's rectangle, OCR off.
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = StudySpec::new(7, Modality::Us);
    spec.series = 1;
    spec.instances_per_series = 1;
    spec.rows = SIZE as u16;
    spec.cols = SIZE as u16;
    let f = corpus::write_study(&spec, tmp.path()).unwrap().remove(0);
    let mut us = open_file(&f).unwrap();
    us.put(DataElement::new(
        Tag(0x0008, 0x0070),
        VR::LO,
        PrimitiveValue::from("GE Healthcare"),
    ));
    us.put(DataElement::new(
        Tag(0x0008, 0x1090),
        VR::LO,
        PrimitiveValue::from("LOGIQ9"),
    ));
    let regions = Stage {
        ocr: None,
        ..Stage::default_stage()
    };
    let m = n.max(400);
    let batch: Vec<_> = (0..m).map(|_| us.clone()).collect();
    let t = Instant::now();
    let masked: u64 = batch
        .into_par_iter()
        .map(|mut o| scrub(&mut o, &regions).unwrap().unwrap().pixels_masked)
        .sum();
    let s = t.elapsed().as_secs_f64();
    assert!(masked > 0);
    println!(
        "region masking: {m} images 512x512 RGB in {s:.3} s = {:.0} images/s (both cores; decode, mask, write back)",
        f64::from(m) / s
    );

    // OCR: engines kept per worker, against a fresh engine per image.
    let stage = ocr_stage();
    let run = |fresh: bool| {
        let set = generate(n);
        let before = ocr::engines_started();
        let t = Instant::now();
        let parked = set
            .into_par_iter()
            .map(|(mut obj, _, _)| {
                if fresh {
                    ocr::drop_engine();
                }
                usize::from(scrub(&mut obj, &stage).is_err())
            })
            .sum::<usize>();
        (
            t.elapsed().as_secs_f64(),
            ocr::engines_started() - before,
            parked,
        )
    };
    let (kept, kept_engines, p1) = run(false);
    let (fresh, fresh_engines, p2) = run(true);
    println!(
        "OCR, engine kept per worker: {n} images in {kept:.2} s = {:.3} s per image ({kept_engines} engines started, {p1} parked)",
        kept / f64::from(n)
    );
    println!(
        "OCR, Tesseract started for every image: {n} images in {fresh:.2} s = {:.3} s per image ({fresh_engines} engines started, {p2} parked)",
        fresh / f64::from(n)
    );
    println!("ratio (fresh / kept): {:.2}x", fresh / kept);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(240);
    match args.get(1).map(String::as_str) {
        Some("recall") => recall(n),
        Some("speed") => speed(n),
        _ => {
            eprintln!("usage: pixel_bench recall|speed [IMAGES]");
            std::process::exit(2);
        }
    }
}
