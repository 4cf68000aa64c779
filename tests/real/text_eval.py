"""The burned-in text evaluation set (issue 13): generator and scorer.

`make OUT [--seed N] [--texts N] [--max-frames N]` builds the set from public real images
(the PyPI packages `pydicom`, `pydicom-data`, `deid-data`; nothing is committed):

* **text images**: real CT, MR, CR, DX, US and RGB frames (MG: the mammography-like CR
  frames relabelled, as no public MG ships in these packages) with patient-like text drawn
  in real fonts (Debian `fonts-dejavu`, `fonts-liberation`) at known boxes: names, 11-digit
  IDs, dates, institutions, accession numbers; 8 to 40 pixels tall; in corners, on edges and
  over the anatomy; at grey levels relative to what lies under it (the brightest level,
  brighter, darker, nearly the same), in colour on RGB; single and multi-frame (a static
  overlay on every frame). Every file is written uncompressed or RLE (lossless), so each ink
  pixel drawn is known: `truth.json` keeps, per box, its rectangle and its ink mask (the
  pixels the drawing changed).
* **Presidio's samples** (`../shared/presidio-samples/`) with their ground-truth word boxes.
* **text-free images**: real slices and radiographs without text (and crops of them) and the
  photographs of `deid-data`'s `dicom-cookies`.

`score TRUTH REPORT` reads the `--report` that `fiona deid` (or an anchor) wrote and scores
each output against the truth:

* a box is **fully blanked** when every ink pixel of it is black in the output (Presidio's
  boxes, whose ink is not known: every pixel of the box);
* the **independent reader**: Tesseract (the `tesseract` program, not fiona's library call)
  on a crop around every box of the output, upscaled, as a grey picture, its inverse, and
  thresholded at three levels in both polarities (and, on colour images, as the distance
  from the crop's median colour): an image **leaks** when any reading holds a planted token
  (a run of at least 70 % of its characters). The same reader on the input shows it can
  read the planted text at all (its recall is printed; a reader that reads nothing proves
  nothing);
* on text-free images, the share of pixels that became black, and whether any was parked.

It prints a table and writes the figures as JSON (`--json FILE`) for the test and the
benchmark to check.
"""

import argparse
import base64
import glob
import json
import math
import os
import random
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

FONT_DIRS = ["/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation"]
FONTS = [
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansCondensed.ttf",
    "LiberationSans-Regular.ttf",
    "LiberationSans-Bold.ttf",
    "LiberationMono-Regular.ttf",
    "LiberationSerif-Regular.ttf",
    "LiberationSansNarrow-Regular.ttf",
]

GIVEN = ["Kari", "Ola", "Ingrid", "Lars", "Sigrid", "Magnus", "Astrid", "Henrik", "Solveig",
         "Eirik", "Ragnhild", "Torbjorn", "Marit", "Knut", "Hilde", "Anders", "Liv", "Bjarne"]
FAMILY = ["Nordmann", "Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen",
          "Nilsen", "Kristiansen", "Jensen", "Karlsen", "Haugen", "Bakken", "Solberg",
          "Lunde", "Berntsen", "Halvorsen", "Fjeldstad"]
INSTITUTIONS = ["Haukeland Universitetssjukehus", "St. Olavs Hospital", "Rikshospitalet",
                "Stavanger Universitetssjukehus", "Haraldsplass Diakonale",
                "Ullevaal Radiologi", "Nordlandssykehuset Bodo", "Sykehuset Innlandet"]

# (file name, label): the frames text is drawn on (up to --max-frames of each).
TEXT_SOURCES = [
    ("693_UNCI.dcm", "CT"),
    ("CT_small.dcm", "CT"),
    ("eCT_Supplemental.dcm", "CT"),
    ("MR2_UNCI.dcm", "MR"),
    ("MR-SIEMENS-DICOM-WithOverlays.dcm", "MR"),
    ("examples_overlay.dcm", "MR"),
    ("RG3_UNCI.dcm", "CR"),
    ("RG1_UNCI.dcm", "CR"),
    ("RG1_UNCI.dcm", "MG"),
    ("cat.dcm", "DX"),
    ("US1_UNCI.dcm", "US"),
    ("GREYSCALE_IMAGE.dcm", "US"),
    ("ultrasound-multiframe.dcm", "US"),
    ("examples_palette.dcm", "US"),
    ("OBXXXX1A.dcm", "US"),
    ("SC_rgb_jpeg_dcmd.dcm", "SC"),
    ("vlut_04.dcm", "OT"),
    ("image1.dcm", "XC"),
    ("image5.dcm", "XC"),
]
CLEAN_SOURCES = [
    ("693_UNCI.dcm", "CT", 1),
    ("CT_small.dcm", "CT", 1),
    ("eCT_Supplemental.dcm", "CT", 1),
    ("MR2_UNCI.dcm", "MR", 3),
    ("MR-SIEMENS-DICOM-WithOverlays.dcm", "MR", 1),
    ("RG3_UNCI.dcm", "CR", 3),
    ("RG1_UNCI.dcm", "CR", 3),
    ("cat.dcm", "DX", 3),
]
# Not text-free, so not in that set: mlut_18.dcm is the SMPTE test pattern, with its
# percentages and "SMPTE TEST PATTERN ... Copyright 1983" burned in.

# Levels of the ink relative to what lies under the text (grey images).
GREY_LEVELS = ["brightest", "brighter", "darker", "near-brighter", "near-darker"]
RGB_LEVELS = ["white", "colour-bright", "colour-dark", "grey-near", "colour-near"]
POSITIONS = ["corner", "edge", "anatomy", "anywhere"]


def package_roots():
    roots = []
    import deid_data
    import data_store  # pydicom-data

    roots.append(os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files"))
    roots.append(os.path.join(os.path.dirname(data_store.__file__), "data"))
    roots.append(os.path.join(os.path.dirname(deid_data.__file__), "data"))
    return roots


def find(name):
    for r in package_roots():
        hits = sorted(glob.glob(os.path.join(r, "**", name), recursive=True))
        if hits:
            return hits[0]
    raise SystemExit(f"text_eval.py: {name} not found in the test packages")


def frames_of(ds, max_frames=None):
    """The frames as a list of arrays (H x W stored values, or H x W x 3 RGB uint8)."""
    arr = ds.pixel_array
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    pi = str(ds.PhotometricInterpretation)
    if pi == "PALETTE COLOR":
        arr = pydicom.pixels.apply_color_lut(arr, ds)
        if arr.dtype != np.uint8:
            arr = (arr >> 8).astype(np.uint8)
    elif pi.startswith("YBR") and ds.file_meta.TransferSyntaxUID in (
        pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian
    ):
        arr = pydicom.pixels.convert_color_space(arr, pi, "RGB")
    frames = list(arr) if n > 1 else [arr]
    return frames[:max_frames]


def is_rgb(frame):
    return frame.ndim == 3


def stored_range(ds):
    bits = int(ds.BitsStored)
    if int(getattr(ds, "PixelRepresentation", 0)) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def black_of(ds):
    """The stored value that renders black (what fiona blanks with)."""
    lo, hi = stored_range(ds)
    return hi if str(ds.PhotometricInterpretation) == "MONOCHROME1" else lo


class Grey:
    """A grey frame seen as displayed: MONOCHROME1 inverted, so 'brighter' means brighter on
    screen whatever the photometric interpretation."""

    def __init__(self, frame, ds):
        self.inverted = str(ds.PhotometricInterpretation) == "MONOCHROME1"
        self.lo, self.hi = stored_range(ds)
        self.black = black_of(ds)
        d = self.display(frame.astype(np.int64))
        self.p_lo, self.p_hi = np.percentile(d, [0.5, 99.5])
        self.top = d.max()

    def display(self, v):
        return -v if self.inverted else v

    def stored(self, d):
        return -d if self.inverted else d


def draw_mask(text, font, size):
    """The anti-aliased coverage (0..1) of `text`, tight to its ink."""
    f = ImageFont.truetype(font, size)
    l, t, r, b = f.getbbox(text)
    img = Image.new("L", (r - l + 4, b - t + 4), 0)
    ImageDraw.Draw(img).text((2 - l, 2 - t), text, font=f, fill=255)
    a = np.asarray(img, dtype=np.float64) / 255.0
    ys, xs = np.nonzero(a > 0)
    return a[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]


def line_text(rng, people):
    given, family = people
    kind = rng.choice(["name", "id", "date", "institution", "accession", "name2"])
    if kind == "name":
        return f"{family.upper()}^{given.upper()}"
    if kind == "name2":
        return f"{given} {family}"
    if kind == "id":
        d = "".join(str(rng.randrange(10)) for _ in range(11))
        return rng.choice([d, f"ID: {d}", f"PID {d}"])
    if kind == "date":
        y, m, dd = rng.randrange(1930, 2024), rng.randrange(1, 13), rng.randrange(1, 29)
        return rng.choice([f"DOB {dd:02}.{m:02}.{y}", f"{y}-{m:02}-{dd:02}", f"{dd:02}/{m:02}/{y}"])
    if kind == "institution":
        return rng.choice(INSTITUTIONS)
    return f"ACC {rng.randrange(10**9, 10**10)}"


def tokens_of(text):
    out = []
    for w in text.replace("^", " ").replace(":", " ").replace("/", " ").split():
        n = norm(w)
        if len(n) >= 4:
            out.append(n)
    return out


def norm(s):
    return "".join(c for c in s.upper() if c.isalnum())


def place(rng, h, w, th, tw, position, used):
    """A free spot for a th x tw text box, or None."""
    for _ in range(60):
        m = rng.randrange(2, 12)
        if position == "corner":
            x = m if rng.random() < 0.5 else w - tw - m
            y = m if rng.random() < 0.5 else h - th - m
            y += rng.choice([0, 1, 2]) * (th + 4) * (1 if y < h / 2 else -1)
        elif position == "edge":
            if rng.random() < 0.5:
                x = rng.randrange(0, max(1, w - tw))
                y = m if rng.random() < 0.5 else h - th - m
            else:
                x = m if rng.random() < 0.5 else w - tw - m
                y = rng.randrange(0, max(1, h - th))
        elif position == "anatomy":
            x = rng.randrange(w // 4 - tw // 2, max(w // 4 - tw // 2 + 1, 3 * w // 4 - tw // 2))
            y = rng.randrange(h // 4, max(h // 4 + 1, 3 * h // 4 - th))
        else:
            x = rng.randrange(0, max(1, w - tw))
            y = rng.randrange(0, max(1, h - th))
        if x < 0 or y < 0 or x + tw > w or y + th > h:
            continue
        box = (x - 6, y - 6, x + tw + 6, y + th + 6)
        if any(not (box[2] <= u[0] or u[2] <= box[0] or box[3] <= u[1] or u[3] <= box[1]) for u in used):
            continue
        return x, y
    return None


def grey_ink(rng, g, under, level):
    """The ink's stored value for a level relative to the displayed values under the box."""
    m = float(np.median(under))
    span = max(g.p_hi - g.p_lo, 1.0)
    if level == "brightest":
        d = g.top
    else:
        # 35 % of the display range above or below, 15 % for the nearly-the-same levels;
        # the other way when that would leave the displayed range.
        step = (0.35 if level in ("brighter", "darker") else 0.15) * span
        d = m + step if level.endswith("brighter") else m - step
        if d < g.p_lo:
            d = m + step
        if d > g.top:
            d = m - step
    v = int(round(g.stored(d)))
    v = min(max(v, g.lo), g.hi)
    if v == g.black:
        v += -1 if g.inverted else 1
    return v


def hsv(h, s, v):
    import colorsys

    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


def luma(rgb):
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def rgb_ink(rng, under, level):
    m = float(np.median(luma(under.astype(np.float64))))
    if level == "white":
        c = np.array([255.0, 255, 255]) if m < 200 else np.array([20.0, 20, 20])
    elif level == "colour-bright":
        c = hsv(rng.choice([0.16, 0.33, 0.5, 0.12, 0.83]), 0.9, 1.0)
    elif level == "colour-dark":
        c = hsv(rng.choice([0.0, 0.66, 0.75, 0.33]), 0.9, 0.45)
    elif level == "grey-near":
        d = 45 if m < 128 else -45
        c = np.array([m + d] * 3)
    else:  # a colour about as bright as what lies under it
        c = hsv(rng.random(), 0.8, 1.0)
        c = c * (max(m, 60) / max(float(luma(c[None, :])[0]), 1.0))
    c = np.clip(np.round(c), 0, 255)
    if not c.any():
        c[0] = 1
    return c


def write(ds_src, frames, path, label, rng, rle, people, institution):
    """A new instance: the source's header, these frames uncompressed (or RLE)."""
    ds = ds_src.copy()
    for kw in ["NumberOfFrames", "PlanarConfiguration", "RedPaletteColorLookupTableData",
               "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
               "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
               "BluePaletteColorLookupTableDescriptor", "SegmentedRedPaletteColorLookupTableData",
               "SegmentedGreenPaletteColorLookupTableData", "SegmentedBluePaletteColorLookupTableData",
               "PaletteColorLookupTableUID", "LossyImageCompression", "ModalityLUTSequence",
               "VOILUTSequence", "FrameIncrementPointer"]:
        if kw in ds:
            del ds[kw]
    for g in [0x6000 + 2 * i for i in range(16)]:
        for e in [t for t in ds.keys() if t.group == g]:
            del ds[e]
    rgb = is_rgb(frames[0])
    arr = np.stack(frames) if len(frames) > 1 else frames[0]
    if rgb:
        ds.PhotometricInterpretation = "RGB"
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        arr = arr.astype(np.uint8)
    else:
        ds.SamplesPerPixel = 1
        if int(ds.BitsAllocated) == 16:
            arr = arr.astype(np.int16 if int(ds.PixelRepresentation) == 1 else np.uint16)
        else:
            arr = arr.astype(np.uint8)
    h, w = frames[0].shape[:2]
    ds.Rows, ds.Columns = h, w
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.Modality = label
    if label in ("CT", "MR"):
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientName = f"{people[1]}^{people[0]}"
    ds.PatientID = "".join(str(rng.randrange(10)) for _ in range(11))
    ds.InstitutionName = institution
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.BurnedInAnnotation = "YES"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
    if rle:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    ds.save_as(path, enforce_file_format=True)


def crop_frames(frames, rng, side):
    h, w = frames[0].shape[:2]
    if h <= side and w <= side:
        return frames
    y = rng.randrange(0, max(1, h - side))
    x = rng.randrange(0, max(1, w - side))
    return [f[y: y + side, x: x + side] for f in frames]


def make(args):
    rng = random.Random(args.seed)
    out = os.path.abspath(args.out)
    inp = os.path.join(out, "input")
    os.makedirs(inp, exist_ok=True)
    fonts = []
    for f in FONTS:
        p = next((os.path.join(d, f) for d in FONT_DIRS if os.path.exists(os.path.join(d, f))), None)
        if p is None:
            raise SystemExit(f"text_eval.py: font {f} is missing (Debian fonts-dejavu, fonts-liberation)")
        fonts.append(p)
    cache = {}

    def base(name):
        if name not in cache:
            ds = pydicom.dcmread(find(name))
            cache[name] = (ds, frames_of(ds, args.max_frames))
        return cache[name]

    truth = {"images": []}
    counter = 0
    for i in range(args.texts):
        name, label = TEXT_SOURCES[i % len(TEXT_SOURCES)]
        ds, frames = base(name)
        # Large radiographs also as crops, so the set is not dominated by a few sources.
        if frames[0].shape[0] > 1200 and rng.random() < 0.5:
            frames = crop_frames(frames, rng, rng.choice([768, 1024]))
        frames = [f.copy() for f in frames]
        if len(frames) > 1 and rng.random() < 0.3:
            frames = frames[:1]
        h, w = frames[0].shape[:2]
        rgb = is_rgb(frames[0])
        g = None if rgb else Grey(frames[0], ds)
        people = (rng.choice(GIVEN), rng.choice(FAMILY))
        institution = rng.choice(INSTITUTIONS)
        boxes, used = [], []
        for _ in range(rng.randrange(1, 5)):
            text = line_text(rng, people)
            font = rng.choice(fonts)
            size = rng.choice([8, 9, 10, 11, 12, 14, 16, 18, 20, 24, 28, 32, 36, 40])
            a = draw_mask(text, font, size)
            while a.shape[1] > 0.92 * w and size > 8:
                size -= 2
                a = draw_mask(text, font, size)
            if a.shape[1] > 0.92 * w:
                continue
            # The ink at least 8 pixels tall (a size-8 font draws lower-case text 6 tall).
            while a.shape[0] < 8:
                size += 1
                a = draw_mask(text, font, size)
            th, tw = a.shape
            position = rng.choice(POSITIONS)
            at = place(rng, h, w, th, tw, position, used)
            if at is None:
                continue
            x, y = at
            used.append((x - 6, y - 6, x + tw + 6, y + th + 6))
            level = rng.choice(RGB_LEVELS if rgb else GREY_LEVELS)
            under = frames[0][y: y + th, x: x + tw]
            if rgb:
                ink = rgb_ink(rng, under, level)
            else:
                ink = grey_ink(rng, g, g.display(under.astype(np.int64)), level)
            changed = np.zeros((th, tw), dtype=bool)
            for f in frames:
                region = f[y: y + th, x: x + tw].astype(np.float64)
                if rgb:
                    new = region * (1 - a[..., None]) + ink[None, None, :] * a[..., None]
                    new = np.clip(np.round(new), 0, 255)
                    changed |= (new != region).any(axis=2)
                else:
                    new = np.round(region * (1 - a) + ink * a)
                    changed |= new != region
                f[y: y + th, x: x + tw] = new.astype(f.dtype)
            boxes.append({
                "frames": "all", "x0": x, "y0": y, "x1": x + tw, "y1": y + th,
                "text": text, "tokens": tokens_of(text), "font": os.path.basename(font),
                "height": th, "level": level, "position": position,
                "ink": base64.b64encode(np.packbits(changed).tobytes()).decode(),
            })
        if not boxes:
            continue
        counter += 1
        fname = f"text_{counter:04}_{label}.dcm"
        rle = rng.random() < 0.2
        write(ds, frames, os.path.join(inp, fname), label, rng, rle, people, institution)
        truth["images"].append({"file": fname, "kind": "text", "source": name, "modality": label,
                                "rows": h, "columns": w, "frames": len(frames),
                                "rgb": rgb, "rle": rle, "boxes": boxes})

    # Presidio's samples with their ground truth (its boxes are in a picture padded by 25).
    shared = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
                          "presidio-samples")
    gt_path = os.path.join(shared, "ground_truth.json")
    if os.path.exists(gt_path):
        gt = json.load(open(gt_path))
        for f, key in [("0_ORIGINAL_compressed.dcm", "sample_data/0_ORIGINAL.dcm"),
                       ("2_ORIGINAL.dcm", "sample_data/2_ORIGINAL.dcm")]:
            src = os.path.join(shared, f)
            dst = os.path.join(inp, "presidio_" + f)
            with open(src, "rb") as a, open(dst, "wb") as b:
                b.write(a.read())
            ds = pydicom.dcmread(src, stop_before_pixels=True)
            boxes = []
            for b in gt[key]:
                x0, y0 = max(b["left"] - 25, 0), max(b["top"] - 25, 0)
                x1 = min(b["left"] - 25 + b["width"], int(ds.Columns))
                y1 = min(b["top"] - 25 + b["height"], int(ds.Rows))
                boxes.append({"frames": "all", "x0": x0, "y0": y0, "x1": x1, "y1": y1,
                              "text": b["label"], "tokens": tokens_of(b["label"]),
                              "level": "presidio", "position": "presidio", "height": y1 - y0,
                              "font": "presidio", "ink": None})
            truth["images"].append({"file": "presidio_" + f, "kind": "text", "source": f,
                                    "modality": str(ds.Modality), "rows": int(ds.Rows),
                                    "columns": int(ds.Columns), "frames": 1, "rgb": False,
                                    "rle": False, "boxes": boxes})
    else:
        print(f"text_eval.py: {gt_path} not found: Presidio's samples left out", file=sys.stderr)

    # The text-free set: real frames (and crops) without text, and the cookie photographs.
    n = 0
    for name, label, copies in CLEAN_SOURCES:
        ds, frames = base(name)
        for c in range(copies):
            fr = frames if c == 0 else crop_frames(frames, rng, rng.choice([512, 768]))
            fr = [f.copy() for f in fr[:2]]
            n += 1
            fname = f"clean_{n:04}_{label}.dcm"
            write(ds, fr, os.path.join(inp, fname), label, rng, rng.random() < 0.2,
                  ("Kari", "Nordmann"), INSTITUTIONS[0])
            truth["images"].append({"file": fname, "kind": "clean", "source": name,
                                    "modality": label, "rows": fr[0].shape[0],
                                    "columns": fr[0].shape[1], "frames": len(fr),
                                    "rgb": is_rgb(fr[0]), "boxes": []})
    for k in range(1, 8):
        src = find(f"image{k}.dcm")
        fname = f"clean_cookie{k}.dcm"
        with open(src, "rb") as a, open(os.path.join(inp, fname), "wb") as b:
            b.write(a.read())
        ds = pydicom.dcmread(src, stop_before_pixels=True)
        truth["images"].append({"file": fname, "kind": "clean", "source": f"dicom-cookies/image{k}",
                                "modality": str(ds.get("Modality", "")), "rows": int(ds.Rows),
                                "columns": int(ds.Columns), "frames": 1, "rgb": True, "boxes": []})
    with open(os.path.join(out, "truth.json"), "w") as f:
        json.dump(truth, f)
    nb = sum(len(i["boxes"]) for i in truth["images"])
    nt = sum(1 for i in truth["images"] if i["kind"] == "text")
    print(f"text_eval.py: {nt} images with {nb} text boxes, "
          f"{len(truth['images']) - nt} text-free images in {inp}")


# ---------------------------------------------------------------------------------------
# Scoring


def load_frames(path):
    ds = pydicom.dcmread(path)
    return ds, frames_of(ds)


def black_mask(frame, ds):
    if frame.ndim == 3:
        if str(ds.PhotometricInterpretation) == "PALETTE COLOR":
            raise ValueError("palette output")
        return (frame <= 4).all(axis=2)
    return frame == black_of(ds)


def tesseract_words(img):
    """Words Tesseract reads in a PIL picture (psm 6: a block of text)."""
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    r = subprocess.run(["tesseract", "stdin", "stdout", "--psm", "6", "-l", "eng"],
                       input=buf.getvalue(), capture_output=True)
    return [w for w in r.stdout.decode("utf-8", "replace").split()]


def found_tokens(words, tokens):
    hits = set()
    for w in words:
        nw = norm(w)
        if len(nw) < 4:
            continue
        for t in tokens:
            need = max(4, math.ceil(0.7 * len(t)))
            if longest_common_run(nw, t) >= need:
                hits.add(t)
    return hits


def longest_common_run(a, b):
    best = 0
    prev = [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        cur = [0] * (len(b) + 1)
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def reader_pictures(crop):
    """The independent reader's pictures of a crop: grey and inverse, thresholded at three
    levels in both polarities; on colour also the distance from the median colour."""
    greys = []
    if crop.ndim == 3:
        c = crop.astype(np.float64)
        greys.append(luma(c))
        med = np.median(c.reshape(-1, 3), axis=0)
        greys.append(np.sqrt(((c - med) ** 2).sum(axis=2)))
    else:
        greys.append(crop.astype(np.float64))
    pics = []
    for g in greys:
        lo, hi = np.percentile(g, [1, 99.5])
        if hi <= lo:
            hi = lo + 1
        s = np.clip((g - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
        pics.append(s)
        pics.append(255 - s)
        for q in (0.3, 0.5, 0.7):
            b = np.where(s > q * 255, 255, 0).astype(np.uint8)
            pics.append(b)
            pics.append(255 - b)
    return pics


def read_box(frame, box):
    h, w = frame.shape[:2]
    bh = box["y1"] - box["y0"]
    pad = max(8, bh)
    x0, y0 = max(0, box["x0"] - pad), max(0, box["y0"] - pad)
    x1, y1 = min(w, box["x1"] + pad), min(h, box["y1"] + pad)
    crop = frame[y0:y1, x0:x1]
    scale = max(1.0, 36.0 / max(bh, 1))
    words = []
    for p in reader_pictures(crop):
        img = Image.fromarray(p)
        if scale > 1:
            img = img.resize((int(img.width * scale), int(img.height * scale)), Image.LANCZOS)
        words += tesseract_words(img)
    return found_tokens(words, box["tokens"])


def score_one(job):
    item, inp, out_path = job
    r = {"file": item["file"], "kind": item["kind"], "modality": item["modality"],
         "rgb": item["rgb"]}
    ds_in, fin = load_frames(os.path.join(inp, item["file"]))
    if item["kind"] == "clean":
        if out_path is None:
            r["blanked_share"] = None
            return r
        ds_out, fout = load_frames(out_path)
        total, black = 0, 0
        for a, b in zip(fin, fout):
            newly = black_mask(b, ds_out) & ~black_mask(a, ds_in)
            black += int(newly.sum())
            total += newly.size
        r["blanked_share"] = black / max(total, 1)
        return r
    boxes = []
    fout = None
    if out_path is not None:
        ds_out, fout = load_frames(out_path)
    for bi, box in enumerate(item["boxes"]):
        b = {"box": bi, "level": box["level"], "position": box["position"],
             "height": box["height"], "text": box["text"]}
        th, tw = box["y1"] - box["y0"], box["x1"] - box["x0"]
        if box["ink"] is not None:
            ink = np.unpackbits(np.frombuffer(base64.b64decode(box["ink"]), dtype=np.uint8))
            ink = ink[: th * tw].reshape(th, tw).astype(bool)
        else:
            ink = np.ones((th, tw), dtype=bool)
        # The reader on the input: can it read this text at all? (first frame)
        b["input_read"] = sorted(read_box(fin[0], box))
        if fout is None:
            b["blanked"] = False
            b["output_read"] = []
        else:
            left = 0
            for f in fout:
                bm = black_mask(f, ds_out)[box["y0"]: box["y1"], box["x0"]: box["x1"]]
                left += int((~bm[ink]).sum())
            b["blanked"] = left == 0
            b["unblanked_ink"] = left
            reads = set()
            for f in fout[:1] + fout[-1:] if len(fout) > 1 else fout:
                reads |= read_box(f, box)
            b["output_read"] = sorted(reads)
        boxes.append(b)
    r["boxes"] = boxes
    return r


def score(args):
    truth = json.load(open(args.truth))
    report = json.load(open(args.report))
    inp = args.input
    by_input = {}
    for e in report["files"]:
        by_input[os.path.basename(e["input"])] = e
    jobs = []
    parked = {}
    for item in truth["images"]:
        e = by_input.get(item["file"])
        if e is None:
            raise SystemExit(f"text_eval.py: {item['file']} is not in the report")
        if e["result"] != "ok":
            parked[item["file"]] = e.get("reason", e["result"])
        out_path = e.get("output") if e["result"] == "ok" else None
        jobs.append((item, inp, out_path))
    with ProcessPoolExecutor(max_workers=args.jobs) as ex:
        results = list(ex.map(score_one, jobs, chunksize=1))
    text = [r for r in results if r["kind"] == "text"]
    clean = [r for r in results if r["kind"] == "clean"]
    boxes = [b for r in text for b in r["boxes"]]
    blanked = sum(1 for b in boxes if b["blanked"])
    input_read = sum(1 for b in boxes if b["input_read"])
    leaks = [r["file"] for r in text if any(b["output_read"] for b in r["boxes"])]
    shares = [r["blanked_share"] for r in clean if r["blanked_share"] is not None]
    summary = {
        "text_images": len(text),
        "boxes": len(boxes),
        "boxes_blanked": blanked,
        "box_recall": blanked / max(len(boxes), 1),
        "boxes_read_on_input": input_read,
        "images_leaking": leaks,
        "text_images_parked": sorted(f for f in parked if f.startswith(("text_", "presidio_"))),
        "clean_images": len(clean),
        "clean_parked": sorted(f for f in parked if f.startswith("clean_")),
        "clean_blanked_mean": sum(shares) / max(len(shares), 1),
        "clean_blanked_max": max(shares) if shares else 0.0,
        "missed": [dict(file=r["file"], **b) for r in text for b in r["boxes"] if not b["blanked"]],
        "by_level": {},
    }
    for b in boxes:
        d = summary["by_level"].setdefault(b["level"], [0, 0])
        d[0] += 1
        d[1] += 1 if b["blanked"] else 0
    print(f"text images: {len(text)}, boxes: {len(boxes)}, fully blanked: {blanked} "
          f"({100 * summary['box_recall']:.2f} %); the reader read {input_read} of them on the input")
    for lv, (n, k) in sorted(summary["by_level"].items()):
        print(f"  {lv:14} {k}/{n}")
    print(f"images where the reader finds a planted token in the output: {len(leaks)} {leaks[:10]}")
    print(f"text images parked: {len(summary['text_images_parked'])}")
    print(f"text-free images: {len(clean)}, parked {len(summary['clean_parked'])}, "
          f"blanked {100 * summary['clean_blanked_mean']:.3f} % on average "
          f"(max {100 * summary['clean_blanked_max']:.3f} %)")
    for m in summary["missed"][:30]:
        print(f"  missed {m['file']} box {m['box']} {m['level']} {m['position']} h={m['height']} "
              f"{m.get('unblanked_ink')} ink px left: {m['text']!r}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "results": results}, f, indent=1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out")
    m.add_argument("--seed", type=int, default=13)
    m.add_argument("--texts", type=int, default=120)
    m.add_argument("--max-frames", type=int, default=6)
    s = sub.add_parser("score")
    s.add_argument("truth")
    s.add_argument("report")
    s.add_argument("--input", required=True)
    s.add_argument("--json")
    s.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    a = p.parse_args()
    if a.cmd == "make":
        make(a)
    else:
        score(a)


if __name__ == "__main__":
    main()
