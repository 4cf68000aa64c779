#!/usr/bin/env python3
"""List every storage instance the public DICOM packages ship and copy them into a folder.

Usage: collect.py OUT_DIR [--presidio DIR]

Sources: the PyPI packages `pydicom` (its test files), `pydicom-data` (module `data_store`)
and `deid-data` (including the DICOM files inside its zip archives), and Presidio's samples
when a directory is given. A file is taken when pydicom reads it as a Part-10 file with a
storage SOP class, a SOP Instance UID and a Study Instance UID, and the whole data set reads.
Everything else is listed as skipped with the reason.

Each taken file is copied to OUT_DIR as `NNNN.dcm` (a name the test chooses: original names
never reach fiona). Several shipped files are variants of one image with the same SOP
Instance UID (one per transfer syntax); fiona keeps one copy per SOP Instance UID, so every
copy after the first gets a new SOP Instance UID of the same length, written over the old
bytes (file meta and data set), which leaves the rest of the file byte for byte as shipped.

Writes OUT_DIR/manifest.json: {"files": [...], "skipped": [...]}, and prints a summary.
"""

import argparse
import hashlib
import io
import json
import os
import re
import struct
import sys
import zipfile
import warnings

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

warnings.filterwarnings("ignore")
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


def package_roots():
    """(package, root directory) for each PyPI package, in a fixed order."""
    import pydicom as _p

    roots = [("pydicom", os.path.join(os.path.dirname(_p.__file__), "data", "test_files"))]
    try:
        import data_store  # pydicom-data

        roots.append(("pydicom-data", os.path.join(os.path.dirname(data_store.__file__), "data")))
    except ImportError:
        sys.exit("collect.py: pydicom-data is not installed (module data_store)")
    try:
        import deid_data

        roots.append(("deid-data", os.path.join(os.path.dirname(deid_data.__file__), "data")))
    except ImportError:
        sys.exit("collect.py: deid-data is not installed")
    return roots


def is_storage_class(uid):
    """A storage SOP class: the UID dictionary names it '... Storage' (not commitment)."""
    if not uid:
        return False
    u = UID(uid)
    if u == DICOMDIR_CLASS:
        return False
    name = u.name
    if u.type != "SOP Class":
        return False
    return "Storage" in name and "Commitment" not in name and "Directory" not in name


def native_pixel_length_ok(ds):
    """For native (uncompressed) pixel data: at least as many bytes as the attributes say."""
    if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
        return True
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        spp = int(ds.get("SamplesPerPixel", 1))
        bits = int(ds.BitsAllocated)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:
        return True
    need = rows * cols * spp * frames * bits // 8
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        need = need * 2 // 3  # two chroma samples per two pixels
    return len(ds.PixelData) >= need


def examine(data):
    """(dataset, None) if the bytes are a storage instance to take, else (None, reason)."""
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(io.BytesIO(data), force=False)
        if any("but found" in str(w.message) and "VR" in str(w.message) for w in seen):
            return None, "broken on purpose: data set VR encoding differs from its transfer syntax"
    except InvalidDicomError:
        return None, "not a Part-10 file (no DICM prefix / file meta)"
    except Exception as e:  # a file pydicom cannot read at all
        return None, f"pydicom cannot read it: {type(e).__name__}: {str(e)[:80]}"
    fm = getattr(ds, "file_meta", None)
    ts = fm.get("TransferSyntaxUID") if fm is not None else None
    sop_class = ds.get("SOPClassUID") or (fm.get("MediaStorageSOPClassUID") if fm else None)
    if sop_class == DICOMDIR_CLASS or (fm is not None and fm.get("MediaStorageSOPClassUID") == DICOMDIR_CLASS):
        return None, "DICOMDIR (media directory, not a storage instance)"
    if not ts:
        return None, "file meta has no Transfer Syntax UID"
    if not is_storage_class(sop_class):
        return None, f"no storage SOP class ({sop_class or 'none'})"
    if not ds.get("SOPInstanceUID"):
        return None, "no SOP Instance UID in the data set"
    if not ds.get("StudyInstanceUID"):
        return None, "no Study Instance UID in the data set"
    try:
        # Read every element (the file is parsed lazily): a truncated or broken file fails here.
        for elem in ds.iterall():
            _ = elem.value
    except Exception as e:
        return None, f"broken on purpose: data set does not read to its end ({type(e).__name__})"
    if not native_pixel_length_ok(ds):
        return None, "broken on purpose: native pixel data shorter than its attributes"
    return ds, None


def sources(presidio):
    """(package, source name, bytes) of every file, zip members expanded."""
    roots = package_roots()
    if presidio:
        roots.append(("presidio", presidio))
    for pkg, root in roots:
        paths = []
        for d, dirs, files in os.walk(root):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            for f in sorted(files):
                paths.append(os.path.join(d, f))
        for p in sorted(paths):
            rel = os.path.relpath(p, root)
            if p.endswith(".zip"):
                with zipfile.ZipFile(p) as z:
                    for m in sorted(z.namelist()):
                        if not m.endswith("/"):
                            yield pkg, f"{rel}:{m}", z.read(m)
                continue
            with open(p, "rb") as fh:
                yield pkg, rel, fh.read()


def new_uid_like(old, used):
    """A UID of the same length as `old` that is not in `used`: its last component replaced."""
    head, _, last = old.rpartition(".")
    n = len(last)
    seed = int(hashlib.sha256(old.encode()).hexdigest(), 16)
    for i in range(1, 10**6):
        if n == 1:
            cand = str((seed + i) % 9 + 1)
        else:
            cand = str(10 ** (n - 1) + (seed + i) % (9 * 10 ** (n - 1)))
        uid = f"{head}.{cand}" if head else cand
        if uid != old and uid not in used:
            return uid
    raise RuntimeError("no new UID")


def replace_uid_bytes(data, old, new):
    """Every element value that is UID `old` replaced by `new`: a match must follow its
    value length (16-bit, either byte order: explicit VR, or the low half of implicit VR's
    32-bit length) and not go on as a longer UID."""
    assert len(old) == len(new)
    n = len(old) + len(old) % 2
    lengths = {struct.pack("<H", n), struct.pack(">H", n)}
    out, count, at = bytearray(data), 0, 0
    pat = re.compile(re.escape(old.encode()) + rb"(?![0-9.])")
    for m in pat.finditer(data):
        s = m.start()
        before = {data[s - 2 : s], data[s - 4 : s - 2]} if s >= 4 else set()
        if before & lengths:
            out[s : m.end()] = new.encode()
            count += 1
    return bytes(out), count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--presidio")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    files, skipped, used = [], [], set()
    # Every SOP Instance UID shipped, so that a new one never collides with a shipped one.
    entries = []
    for pkg, src, data in sources(a.presidio):
        ds, why = examine(data)
        if ds is None:
            skipped.append({"package": pkg, "source": src, "reason": why})
            continue
        entries.append((pkg, src, data, ds))
        used.add(str(ds.SOPInstanceUID))
    seen = set()
    for pkg, src, data, ds in entries:
        uid = str(ds.SOPInstanceUID)
        orig = uid
        if uid in seen:
            new = new_uid_like(uid, used)
            used.add(new)
            deflated = ds.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
            if deflated or ds.file_meta.get("MediaStorageSOPInstanceUID") != uid:
                # Rewritten by pydicom: deflated (no bytes to overwrite), or the file meta
                # names another instance.
                ds.SOPInstanceUID = new
                ds.file_meta.MediaStorageSOPInstanceUID = new
                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=True)
                data = buf.getvalue()
            else:
                data, n = replace_uid_bytes(data, uid, new)
                if n == 0:
                    sys.exit(f"collect.py: {pkg} {src}: SOP Instance UID not found in its bytes")
            check = pydicom.dcmread(io.BytesIO(data))
            if check.SOPInstanceUID != new:
                sys.exit(f"collect.py: {pkg} {src}: new SOP Instance UID did not take")
            uid = new
        seen.add(uid)
        name = f"{len(files):04d}.dcm"
        with open(os.path.join(a.out, name), "wb") as fh:
            fh.write(data)
        fm = ds.file_meta
        files.append(
            {
                "name": name,
                "package": pkg,
                "source": src,
                "sop_class": str(ds.SOPClassUID),
                "sop_instance_uid": uid,
                "shipped_sop_instance_uid": orig,
                "study_instance_uid": str(ds.StudyInstanceUID),
                "transfer_syntax": str(fm.TransferSyntaxUID),
                "bytes": len(data),
            }
        )
    with open(os.path.join(a.out, "manifest.json"), "w") as fh:
        json.dump({"files": files, "skipped": skipped}, fh, indent=1)
    per = {}
    for f in files:
        per[f["package"]] = per.get(f["package"], 0) + 1
    print(f"collected {len(files)} storage instances: " + ", ".join(f"{k} {v}" for k, v in per.items()))
    renamed = sum(1 for f in files if f["sop_instance_uid"] != f["shipped_sop_instance_uid"])
    print(f"{renamed} copies given a new SOP Instance UID (same UID as an earlier shipped file)")
    print(f"skipped {len(skipped)}:")
    for s in skipped:
        print(f"  {s['package']:<13} {s['source']:<55} {s['reason']}")


if __name__ == "__main__":
    main()
