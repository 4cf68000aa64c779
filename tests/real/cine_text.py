"""A synthetic cine for the detector's once-per-cine path (issue 13), and its check.

    cine_text.py make DIR    # DIR/cine.dcm and DIR/ink.npy (per frame, where text ink is)
    cine_text.py check DIR OUT.dcm   # prints "ink left: N of M" (N over all frames); exit 1 if N > 0

8 frames, 480 x 640, 8-bit grey ultrasound (US): a speckle background that moves from frame
to frame, and text in a real font (DejaVu Sans) of three kinds:
  * static, light grey (180) on a flat grey band at the top (a patient band);
  * static, light grey (170) over the moving speckle (30-140: a label over anatomy);
  * changing: a white frame counter and clock in the bottom-left corner, different in every
    frame (the union of its glyphs is what a combined picture shows).
Ink masks are the text's own pixels before anti-aliasing (alpha >= 128).
"""
import os, sys
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
H, W, N = 480, 640, 8


def text_alpha(text, size, xy):
    img = Image.new("L", (W, H), 0)
    ImageDraw.Draw(img).text(xy, text, fill=255, font=ImageFont.truetype(FONT, size))
    return np.asarray(img, dtype=np.float32) / 255.0


def make(out):
    rng = np.random.default_rng(5)
    base = rng.random((H // 4 + N, W // 4 + N))
    frames, inks = [], []
    band = text_alpha("NORDMANN^KARI  ID 01017012345", 18, (120, 8))
    label = text_alpha("Haukeland 12.03.1971", 16, (220, 240))
    for k in range(N):
        # Speckle moving a pixel (4 after upscaling) per frame, smoothed to look like tissue,
        # from 30 to 140 (the label over it is lighter, the way labels are).
        sp = base[k: k + H // 4, k: k + W // 4]
        sp = np.kron(sp, np.ones((4, 4)))
        sp = (sp + np.roll(sp, 2, 0) + np.roll(sp, 2, 1) + np.roll(sp, (2, 2), (0, 1))) / 4
        f = (30 + 110 * sp).astype(np.float32)
        f[:40, :] = 90  # the flat band
        f[440:, :200] = 0  # the flat corner
        counter = text_alpha(f"Fr {k + 1}/{N}  10:4{k}:1{k}", 16, (10, 450))
        for alpha, level in [(band, 180), (label, 170), (counter, 255)]:
            f = f * (1 - alpha) + level * alpha
        frames.append(np.clip(np.round(f), 0, 255).astype(np.uint8))
        inks.append((band >= 0.5) | (label >= 0.5) | (counter >= 0.5))
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "US"
    ds.PatientName, ds.PatientID = "NORDMANN^KARI", "01017012345"
    ds.StudyDate, ds.InstanceNumber = "20260101", 1
    ds.Rows, ds.Columns, ds.NumberOfFrames = H, W, N
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.stack(frames).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(os.path.join(out, "cine.dcm"), enforce_file_format=True)
    np.save(os.path.join(out, "ink.npy"), np.stack(inks))


def check(out, path):
    inks = np.load(os.path.join(out, "ink.npy"))
    px = pydicom.dcmread(path).pixel_array
    left = [int((px[k][inks[k]] != 0).sum()) for k in range(N)]
    print(f"ink left: {sum(left)} of {int(inks.sum())} (per frame {left})")
    sys.exit(1 if sum(left) else 0)


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        check(sys.argv[2], sys.argv[3])
