//! The image types the pixel modules share: how a decoded frame's samples are laid out
//! ([`Layout`], [`Photometric`]), a PALETTE COLOR image's lookup tables ([`Palette`]), and
//! reading one sample and a colour's luma. `mask`, `ocr` and `detect` use them; this module
//! uses none of those.

/// The photometric interpretations the pixel stage handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Photometric {
    Monochrome1,
    Monochrome2,
    Rgb,
    YbrFull,
    YbrFull422,
    PaletteColor,
}

impl Photometric {
    pub fn parse(s: &str) -> Option<Photometric> {
        Some(match s.trim_end_matches([' ', '\0']) {
            "MONOCHROME1" => Photometric::Monochrome1,
            "MONOCHROME2" => Photometric::Monochrome2,
            "RGB" => Photometric::Rgb,
            "YBR_FULL" => Photometric::YbrFull,
            "YBR_FULL_422" => Photometric::YbrFull422,
            "PALETTE COLOR" => Photometric::PaletteColor,
            _ => return None,
        })
    }

    pub fn samples(&self) -> u16 {
        match self {
            Photometric::Monochrome1 | Photometric::Monochrome2 | Photometric::PaletteColor => 1,
            _ => 3,
        }
    }
}

/// How one frame's samples are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub rows: u32,
    pub columns: u32,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    /// PixelRepresentation 1.
    pub signed: bool,
    pub photometric: Photometric,
    /// PlanarConfiguration (0: R G B R G B ..., 1: R R ... G G ... B B ...).
    pub planar: u16,
}

/// Why a frame could not be masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error("unsupported layout: {0}")]
    Unsupported(String),
    #[error("frame is {got} bytes, the layout needs {want}")]
    Size { got: usize, want: usize },
}

impl Layout {
    /// Check the layout is one this module masks correctly.
    pub fn check(&self) -> Result<(), MaskError> {
        let bad = |m: String| Err(MaskError::Unsupported(m));
        if self.rows == 0 || self.columns == 0 {
            return bad("zero rows or columns".into());
        }
        if !matches!(self.bits_allocated, 8 | 16) {
            return bad(format!("BitsAllocated {}", self.bits_allocated));
        }
        if self.bits_stored == 0 || self.bits_stored > self.bits_allocated {
            return bad(format!(
                "BitsStored {} with BitsAllocated {}",
                self.bits_stored, self.bits_allocated
            ));
        }
        if self.samples_per_pixel != self.photometric.samples() {
            return bad(format!(
                "{} samples per pixel for {:?}",
                self.samples_per_pixel, self.photometric
            ));
        }
        if self.planar > 1 {
            return bad(format!("PlanarConfiguration {}", self.planar));
        }
        if self.photometric == Photometric::YbrFull422
            && (self.planar != 0 || self.columns % 2 == 1)
        {
            return bad("YBR_FULL_422 needs an even width and planar configuration 0".into());
        }
        Ok(())
    }

    pub fn bytes_per_sample(&self) -> usize {
        usize::from(self.bits_allocated / 8)
    }

    /// Bytes of one frame.
    pub fn frame_bytes(&self) -> usize {
        let pixels = self.rows as usize * self.columns as usize;
        match self.photometric {
            // Two pixels share one Cb and one Cr: 2 samples per pixel on average.
            Photometric::YbrFull422 => pixels * 2 * self.bytes_per_sample(),
            _ => pixels * usize::from(self.samples_per_pixel) * self.bytes_per_sample(),
        }
    }

    /// The sample values (one per sample of a pixel) that render black, as raw stored bits.
    /// For PALETTE COLOR pass the darkest index.
    pub fn black(&self, palette_index: Option<u16>) -> Vec<u32> {
        let bs = u32::from(self.bits_stored);
        let max_unsigned = if bs >= 32 { u32::MAX } else { (1u32 << bs) - 1 };
        let half = 1u32 << (bs - 1);
        let signed = |v: i64| -> u32 {
            // Two's complement over the allocated bits.
            let mask = if self.bits_allocated >= 32 {
                u32::MAX as i64
            } else {
                (1i64 << self.bits_allocated) - 1
            };
            (v & mask) as u32
        };
        match self.photometric {
            Photometric::Monochrome2 if self.signed => vec![signed(-i64::from(half))],
            Photometric::Monochrome2 => vec![0],
            Photometric::Monochrome1 if self.signed => vec![signed(i64::from(half) - 1)],
            Photometric::Monochrome1 => vec![max_unsigned],
            Photometric::Rgb => vec![0, 0, 0],
            Photometric::YbrFull | Photometric::YbrFull422 => vec![0, half, half],
            Photometric::PaletteColor => vec![u32::from(palette_index.unwrap_or(0))],
        }
    }
}

/// One sample's value (little endian, masked to BitsStored, sign-extended when signed).
pub fn sample(frame: &[u8], bytes: usize, at: usize, layout: &Layout) -> i32 {
    let raw = if bytes == 1 {
        u32::from(frame[at])
    } else {
        u32::from(u16::from_le_bytes([frame[at], frame[at + 1]]))
    };
    let bs = u32::from(layout.bits_stored);
    let v = raw & ((1u32 << bs) - 1);
    if layout.signed && v & (1 << (bs - 1)) != 0 {
        v as i32 - (1i32 << bs)
    } else {
        v as i32
    }
}

/// Rec. 601 luma of an RGB sample triple (integer).
pub fn luma(r: i32, g: i32, b: i32) -> i32 {
    ((299 * i64::from(r) + 587 * i64::from(g) + 114 * i64::from(b)) / 1000) as i32
}

/// The palette index whose RGB entry is darkest (smallest luminance), from the three LUTs
/// (entries as stored, any bit depth). `first_mapped` is the descriptor's first input value.
pub fn darkest_palette_index(red: &[u16], green: &[u16], blue: &[u16], first_mapped: u16) -> u16 {
    let n = red.len().min(green.len()).min(blue.len());
    let mut best = (u64::MAX, 0usize);
    for i in 0..n {
        // Rec. 601 weights, integer.
        let l = 299 * u64::from(red[i]) + 587 * u64::from(green[i]) + 114 * u64::from(blue[i]);
        if l < best.0 {
            best = (l, i);
        }
    }
    first_mapped.wrapping_add(best.1 as u16)
}

/// A PALETTE COLOR image's lookup tables (entries as stored, any bit depth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Palette {
    /// The descriptor's first input value (mapped to the first entry).
    pub first: u16,
    pub red: Vec<u16>,
    pub green: Vec<u16>,
    pub blue: Vec<u16>,
}

impl Palette {
    /// The index that renders darkest.
    pub fn darkest(&self) -> u16 {
        darkest_palette_index(&self.red, &self.green, &self.blue, self.first)
    }

    /// Brightness of an index: the luma of its entry (indexes outside the table take the
    /// first or last entry, as the standard says).
    pub fn brightness(&self, index: i32) -> i32 {
        let n = self.red.len().min(self.green.len()).min(self.blue.len());
        if n == 0 {
            return index;
        }
        let i = (i64::from(index) - i64::from(self.first)).clamp(0, n as i64 - 1) as usize;
        luma(
            i32::from(self.red[i]),
            i32::from(self.green[i]),
            i32::from(self.blue[i]),
        )
    }
}
