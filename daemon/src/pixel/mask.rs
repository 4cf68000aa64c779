//! Blanking rectangles in native (decoded) pixel data, with the value that renders as black
//! for the image's photometric interpretation and bit depth.
//!
//! Frames are native little-endian sample bytes, as stored uncompressed or as a decoder
//! delivers them: 8 or 16 bits allocated, 1 or 3 samples per pixel, planar configuration 0
//! (pixel-interleaved) or 1 (colour-by-plane). What is black:
//!
//! | photometric      | black                                                           |
//! |------------------|-----------------------------------------------------------------|
//! | MONOCHROME2      | the smallest value: 0, or −2^(BitsStored−1) for signed data      |
//! | MONOCHROME1      | the largest value (the display inverts): 2^BitsStored−1, or 2^(BitsStored−1)−1 signed |
//! | RGB              | 0, 0, 0                                                          |
//! | YBR_FULL         | Y = 0, Cb = Cr = 2^(BitsStored−1) (no colour)                    |
//! | YBR_FULL_422     | as YBR_FULL; pixels come in horizontal pairs sharing Cb/Cr, so a rectangle is widened to whole pairs |
//! | PALETTE COLOR    | the index whose palette entry is darkest (the caller finds it from the LUTs: [`darkest_palette_index`]) |
//!
//! Signed values are written in two's complement over the allocated bits (sign-extended), as
//! DICOM stores them. Everything outside the rectangles is left byte for byte as it was.
//! Errors name the layout problem, never a pixel value.

pub use super::image::{darkest_palette_index, Layout, MaskError, Palette, Photometric};
use super::signatures::Rect;

fn put(frame: &mut [u8], at: usize, bytes: usize, v: u32) {
    if bytes == 1 {
        frame[at] = v as u8;
    } else {
        frame[at..at + 2].copy_from_slice(&(v as u16).to_le_bytes());
    }
}

/// Blank `rects` (already clipped to the image, or clipped here) in one frame. Returns the
/// number of pixels blanked.
pub fn mask_frame(
    frame: &mut [u8],
    layout: &Layout,
    rects: &[Rect],
    black: &[u32],
) -> Result<u64, MaskError> {
    layout.check()?;
    let want = layout.frame_bytes();
    if frame.len() != want {
        return Err(MaskError::Size {
            got: frame.len(),
            want,
        });
    }
    let b = layout.bytes_per_sample();
    let (cols, rows) = (layout.columns as usize, layout.rows as usize);
    let spp = usize::from(layout.samples_per_pixel);
    let mut count = 0u64;
    for r in rects {
        let Some(r) = r.clip(Some(layout.columns), Some(layout.rows)) else {
            continue;
        };
        let (mut x0, y0) = (r.x as usize, r.y as usize);
        let mut x1 = (x0 + r.width as usize).min(cols);
        let y1 = (y0 + r.height as usize).min(rows);
        if layout.photometric == Photometric::YbrFull422 {
            // Whole pairs: Y1 Y2 Cb Cr per two pixels.
            x0 -= x0 % 2;
            x1 = (x1 + x1 % 2).min(cols);
            for y in y0..y1 {
                for pair in (x0 / 2)..x1.div_ceil(2) {
                    let at = (y * cols / 2 + pair) * 4 * b;
                    put(frame, at, b, black[0]);
                    put(frame, at + b, b, black[0]);
                    put(frame, at + 2 * b, b, black[1]);
                    put(frame, at + 3 * b, b, black[2]);
                    count += 2;
                }
            }
            continue;
        }
        for y in y0..y1 {
            for x in x0..x1 {
                for (s, v) in black.iter().enumerate().take(spp) {
                    let at = if layout.planar == 1 {
                        (s * rows * cols + y * cols + x) * b
                    } else {
                        ((y * cols + x) * spp + s) * b
                    };
                    put(frame, at, b, *v);
                }
                count += 1;
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(p: Photometric, bits: u16, stored: u16, signed: bool, planar: u16) -> Layout {
        Layout {
            rows: 6,
            columns: 8,
            samples_per_pixel: p.samples(),
            bits_allocated: bits,
            bits_stored: stored,
            signed,
            photometric: p,
            planar,
        }
    }

    fn rect(x: u32, y: u32, width: u32, height: u32) -> Rect {
        Rect {
            x,
            y,
            width,
            height,
        }
    }

    /// A frame of distinct non-black bytes, so any change shows.
    fn frame(l: &Layout) -> Vec<u8> {
        (0..l.frame_bytes()).map(|i| (i % 200 + 37) as u8).collect()
    }

    fn sample(f: &[u8], l: &Layout, x: usize, y: usize, s: usize) -> u32 {
        let b = l.bytes_per_sample();
        let (cols, rows, spp) = (
            l.columns as usize,
            l.rows as usize,
            usize::from(l.samples_per_pixel),
        );
        let at = if l.planar == 1 {
            (s * rows * cols + y * cols + x) * b
        } else {
            ((y * cols + x) * spp + s) * b
        };
        if b == 1 {
            u32::from(f[at])
        } else {
            u32::from(u16::from_le_bytes([f[at], f[at + 1]]))
        }
    }

    #[test]
    fn black_per_photometric_and_depth() {
        use Photometric::*;
        assert_eq!(layout(Monochrome2, 16, 12, false, 0).black(None), vec![0]);
        // Signed 12-bit in 16: -2048 sign-extended.
        assert_eq!(
            layout(Monochrome2, 16, 12, true, 0).black(None),
            vec![0xF800]
        );
        assert_eq!(layout(Monochrome2, 8, 8, true, 0).black(None), vec![0x80]);
        assert_eq!(
            layout(Monochrome1, 16, 12, false, 0).black(None),
            vec![4095]
        );
        assert_eq!(
            layout(Monochrome1, 16, 16, true, 0).black(None),
            vec![0x7FFF]
        );
        assert_eq!(layout(Monochrome1, 8, 8, false, 0).black(None), vec![255]);
        assert_eq!(layout(Rgb, 8, 8, false, 0).black(None), vec![0, 0, 0]);
        assert_eq!(
            layout(YbrFull, 8, 8, false, 0).black(None),
            vec![0, 128, 128]
        );
        assert_eq!(
            layout(PaletteColor, 8, 8, false, 0).black(Some(17)),
            vec![17]
        );
    }

    #[test]
    fn only_the_rectangle_changes_every_layout() {
        use Photometric::*;
        for l in [
            layout(Monochrome2, 8, 8, false, 0),
            layout(Monochrome2, 16, 12, true, 0),
            layout(Monochrome1, 16, 16, false, 0),
            layout(Rgb, 8, 8, false, 0),
            layout(Rgb, 8, 8, false, 1),
            layout(Rgb, 16, 16, false, 0),
            layout(YbrFull, 8, 8, false, 0),
            layout(PaletteColor, 16, 16, false, 0),
        ] {
            let orig = frame(&l);
            let mut f = orig.clone();
            let black = l.black(Some(3));
            let n = mask_frame(&mut f, &l, &[rect(2, 1, 3, 2)], &black).unwrap();
            assert_eq!(n, 6, "{l:?}");
            for y in 0..6 {
                for x in 0..8 {
                    let inside = (2..5).contains(&x) && (1..3).contains(&y);
                    for (s, want) in black
                        .iter()
                        .enumerate()
                        .take(usize::from(l.samples_per_pixel))
                    {
                        let got = sample(&f, &l, x, y, s);
                        if inside {
                            assert_eq!(got, *want, "{l:?} ({x},{y}) sample {s}");
                        } else {
                            assert_eq!(got, sample(&orig, &l, x, y, s), "{l:?} ({x},{y}) changed");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn ybr_422_is_masked_in_whole_pairs() {
        let l = layout(Photometric::YbrFull422, 8, 8, false, 0);
        let orig = frame(&l);
        let mut f = orig.clone();
        // x 3..6 touches pairs 1 (x 2,3), 2 (x 4,5): widened to x 2..6.
        let n = mask_frame(&mut f, &l, &[rect(3, 0, 3, 1)], &l.black(None)).unwrap();
        assert_eq!(n, 4);
        assert_eq!(&f[4..12], &[0, 0, 128, 128, 0, 0, 128, 128]);
        assert_eq!(&f[..4], &orig[..4]);
        assert_eq!(&f[12..], &orig[12..]);
    }

    #[test]
    fn rectangles_are_clipped_and_bad_layouts_refused() {
        let l = layout(Photometric::Monochrome2, 8, 8, false, 0);
        let mut f = frame(&l);
        let n = mask_frame(
            &mut f,
            &l,
            &[rect(6, 4, 100, 100), rect(50, 50, 2, 2)],
            &[0],
        )
        .unwrap();
        assert_eq!(n, 4);
        let mut short = vec![0u8; 10];
        assert!(matches!(
            mask_frame(&mut short, &l, &[], &[0]),
            Err(MaskError::Size { .. })
        ));
        let bad = Layout {
            bits_allocated: 12,
            ..l.clone()
        };
        assert!(bad.check().is_err());
        let bad = Layout {
            samples_per_pixel: 3,
            ..l
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn darkest_palette_entry() {
        let r = [65535, 0, 30000, 100];
        let g = [65535, 0, 30000, 0];
        let b = [65535, 5, 30000, 0];
        // Index 1 (0,0,5) is darker than index 3 (100,0,0) under Rec. 601 weights.
        assert_eq!(darkest_palette_index(&r, &g, &b, 0), 1);
        assert_eq!(darkest_palette_index(&r, &g, &b, 16), 17);
    }
}
