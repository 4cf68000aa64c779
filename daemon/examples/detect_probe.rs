//! Probe: run the pixel stage (all images read) on DICOM files and report, per Presidio
//! ground-truth word box, how much of it was blanked; and the share of each frame blanked.
//! `cargo run --release -p fiona --example detect_probe -- FILE... [--gt ground_truth.json]`
use std::time::Instant;

use fiona::pixel::decode::decode;
use fiona::pixel::scrub::{scrub, Stage};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let gt: Option<serde_json::Value> = args
        .iter()
        .position(|a| a == "--gt")
        .map(|i| serde_json::from_str(&std::fs::read_to_string(&args[i + 1]).unwrap()).unwrap());
    let mut stage = Stage::default_stage();
    if let Some(o) = stage.ocr.as_mut() {
        o.select.all_images = true;
        if std::env::var_os("TESS_ONLY").is_some() {
            o.settings.detector = None;
        }
    }
    for f in args.iter().filter(|a| a.ends_with(".dcm")) {
        let mut obj = dicom_object::open_file(f).unwrap();
        let before = decode(&obj, 1 << 32).unwrap();
        let t = Instant::now();
        let r = scrub(&mut obj, &stage);
        let el = t.elapsed();
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                println!("{f}: {e} ({el:?})");
                continue;
            }
        };
        let after = decode(&obj, 1 << 32).unwrap();
        let l = &before.layout;
        let fb = l.frame_bytes();
        let bpp = fb / (l.rows * l.columns) as usize;
        let changed = |x: usize, y: usize| {
            let at = (y * l.columns as usize + x) * bpp;
            before.data[at..at + bpp] != after.data[at..at + bpp]
        };
        let mut total = 0usize;
        for y in 0..l.rows as usize {
            for x in 0..l.columns as usize {
                if changed(x, y) {
                    total += 1;
                }
            }
        }
        println!(
            "{f}: {}x{} frames {} words {} rounds {} frame0 blanked {:.1}% in {el:?}",
            l.columns,
            l.rows,
            before.frames,
            r.as_ref().map_or(0, |r| r.ocr_words),
            r.as_ref().map_or(0, |r| r.ocr_rounds),
            100.0 * total as f64 / (l.rows * l.columns) as f64
        );
        if let Ok(dir) = std::env::var("DUMP") {
            let pic = fiona::pixel::detect::picture(&after.data[..fb], l, None).unwrap();
            let mut o = format!("P6 {} {} 255\n", pic.width, pic.height).into_bytes();
            o.extend_from_slice(&pic.rgb);
            let name = std::path::Path::new(f)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            std::fs::write(format!("{dir}/{name}.ppm"), o).unwrap();
        }
        if let Some(gt) = &gt {
            let name = std::path::Path::new(f)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            let key = format!("sample_data/{}", name.replace("_compressed", ""));
            for b in gt[&key].as_array().into_iter().flatten() {
                let (x0, y0, w, h) = (
                    // Presidio's boxes are in its padded picture (25 pixels on every side).
                    b["left"].as_u64().unwrap() as usize - 25,
                    b["top"].as_u64().unwrap() as usize - 25,
                    b["width"].as_u64().unwrap() as usize,
                    b["height"].as_u64().unwrap() as usize,
                );
                let mut n = 0;
                let mut c = 0;
                for y in y0..(y0 + h).min(l.rows as usize) {
                    for x in x0..(x0 + w).min(l.columns as usize) {
                        n += 1;
                        if changed(x, y) {
                            c += 1;
                        }
                    }
                }
                println!(
                    "   box {:>4},{:>4} {:>3}x{:<3}: {:.0}% blanked",
                    x0,
                    y0,
                    w,
                    h,
                    100.0 * c as f64 / n.max(1) as f64
                );
            }
        }
    }
}
