#!/usr/bin/env python3
"""Check what the research PACS holds against what was sent to fiona, file by file.

Usage: check.py --input DIR --fiona FACTS.json --outbound DIR --orthanc DIR --profile JSON
                [--report OUT.json] [--only NAME,...] [--known LIST.json] [--update-known]
       check.py --self-test --profile JSON

  --input     the folder collect.py wrote (the files as sent, and manifest.json)
  --fiona     what the test asked fiona: instances per study (`fiona study KEY --instances
              --json`), transfers, parked and refused instances, and which sender sent each file
  --outbound  fiona's outbound area (outbound/<transfer>/<instance key>.dcm): it ties an
              input (by instance key) to its output's new SOP Instance UID
  --orthanc   Orthanc's storage folder (one file per instance it holds)
  --profile   PS3.15 Table E.1-1 as fiona vendors it (which attributes the profile names)
  --known     the expected failures (default tests/real/known-failures.json), see below
  --update-known  rewrite --known from this run (also FIONA_REAL_UPDATE_KNOWN=1)

An input is matched to what Orthanc holds through fiona itself: input SOP Instance UID ->
fiona's instance key -> outbound/<transfer>/<key>.dcm -> its SOP Instance UID -> the Orthanc
file with that UID. Per delivered file:

  leak      every value of the input (any depth; UN decoded; private elements) that must not
            survive (UIDs other than 1.2.840.10008.*, names and their components, dates, IDs
            and free text the profile does not keep; private and unknown elements) searched in
            every value of the output and in its raw bytes before the pixel data. Left out:
            strings under 4 characters, numbers, coded strings (CS), values of elements fiona
            keeps on purpose (docs/DEIDENTIFICATION.md: Manufacturer, model name, the Code
            Sequence Macro, unlisted text of groups 0018/0020/0028/0054, rows with K) and
            values fiona writes itself (pseudonym, clinical-trial group, dummies). An output
            date that is its own place's input date shifted by the file's offset is not
            searched: it may equal another input date by chance (see "shifted dates").
  refs      a UID in the input that names another delivered input instance is, where the
            output keeps that element, that instance's new UID; inputs of one study (series,
            frame of reference) have one output study (series, frame of reference).
  syntax    the transfer syntax Orthanc holds is the input's, unless the pixel stage rewrote
            the image (then Explicit VR Little Endian, BurnedInAnnotation NO, pixels blanked).
  pixels    pydicom (with pylibjpeg) decodes input and output: equal for lossless inputs
            (except pixels blanked to black by the pixel stage), per-channel means within a
            tolerance for lossy inputs that were rewritten.
  dciodvfy  error kinds (values, indices and numbers taken out of the message) of the output
            that the input did not have.

Not delivered: a parked instance's reason is checked against the file (12-bit JPEG, decoding
failure that pydicom with pylibjpeg shares, text left after OCR on an image in OCR's scope);
an instance refused at receive must have a reason visible in the file (an invalid UID).

The ratchet: --known lists every failure expected today, one line each, as (the input as
shipped, `package/path`; category; a normalised detail: the dciodvfy kind, `IN -> OUT by
forwarding|de-identification`, the parked reason without frame numbers...; why). Every
parked instance (category `parked`) and refused one (`refused`) is listed too. The check fails
on a failure, parked or refused instance not listed; on a listed one that no longer occurs
(the lines to remove are printed); on a line without a why (or "TODO ..."); and always on a
leak or a broken reference, which cannot be listed. Lines for files this run did not check
(--only, a package not collected such as Presidio's samples) are left alone. With
--update-known the file is rewritten from the run, existing whys kept and new lines marked
"TODO why"; that run fails when the file changed, for the developer to review the diff.

Prints a table, a JSON summary, the ratchet's outcome and a summary line (`known failures:
... <category> K known + N new ...`); exits 1 when the check failed.
"""

import argparse
import collections
import concurrent.futures
import datetime
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.datadict import keyword_for_tag, dictionary_VR
from pydicom.tag import Tag

warnings.filterwarnings("ignore")
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE

EVRLE = "1.2.840.10008.1.2.1"
LOSSY_TS = {
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000 (may be lossy)
    "1.2.840.10008.1.2.4.100",
    "1.2.840.10008.1.2.4.101",
    "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.103",
}
# Elements fiona keeps on purpose whatever the profile (docs/DEIDENTIFICATION.md).
KEPT_KEYWORDS = {
    "Manufacturer",
    "ManufacturerModelName",
    # a species, not a person (deid/engine.rs SAFE_UNLISTED_TEXT; Type 1C for animals)
    "PatientSpeciesDescription",
    # Code Sequence Macro
    "CodeValue",
    "CodingSchemeDesignator",
    "CodingSchemeVersion",
    "CodeMeaning",
    "LongCodeValue",
    "URNCodeValue",
    "ContextIdentifier",
    "ContextUID",
    "MappingResource",
    "MappingResourceUID",
    "MappingResourceName",
    "ContextGroupVersion",
    "ContextGroupExtensionFlag",
    "ContextGroupLocalVersion",
    "ContextGroupExtensionCreatorUID",
    "CodingSchemeUID",
    # Coding Scheme Identification Sequence: which coding schemes the instance uses
    "CodingSchemeRegistry",
    "CodingSchemeExternalID",
    "CodingSchemeName",
    "CodingSchemeResponsibleOrganization",
    # technical, not a date: the offset only (dates are shifted, times kept)
    "TimezoneOffsetFromUTC",
}
KEPT_GROUPS = {0x0018, 0x0020, 0x0028, 0x0054}
TEXT_VRS = {"LO", "SH", "LT", "ST", "UT", "UC", "AE", "UR"}
# Dummy values fiona writes (deid/values.rs).
FIONA_DUMMIES = {"ANONYMIZED", "19000101", "19000101000000", "000000", "000Y", "http://example.invalid/"}


# ---------------------------------------------------------------- the profile table


def load_profile(path):
    """tag (group, element) or masked pattern -> basic profile action."""
    exact, masked = {}, []
    for row in json.load(open(path)):
        t = row["tag"].split(")")[0].strip("()").split(",")
        g, e = t[0].lower(), t[1].lower()
        if not re.fullmatch(r"[0-9a-fx]{4}", g) or not re.fullmatch(r"[0-9a-fx]{4}", e):
            continue  # (GGGG,EEEE) private attributes: handled apart
        # fiona's defaults: no option but Retain Longitudinal Modified Dates (dates shifted)
        action = row.get("rtnLongModifDatesOpt") or row["basicProfile"]
        if "x" in g or "x" in e:
            masked.append((re.compile(g.replace("x", "[0-9a-f]") + "," + e.replace("x", "[0-9a-f]")), action))
        else:
            exact[(int(g, 16), int(e, 16))] = action
    return exact, masked


def profile_action(profile, tag):
    exact, masked = profile
    key = (tag.group, tag.element)
    if key in exact:
        return exact[key]
    s = f"{tag.group:04x},{tag.element:04x}"
    for pat, action in masked:
        if pat.fullmatch(s):
            return action
    return None


# ---------------------------------------------------------------- values


def text_of(v):
    if v is None:
        return []
    if isinstance(v, (list, tuple, pydicom.multival.MultiValue)):
        out = []
        for x in v:
            out.extend(text_of(x))
        return out
    if isinstance(v, bytes):
        return [v.decode("latin-1")]
    return [str(v)]


def decode_un(raw):
    """Text parts of an unknown value, when it looks like text."""
    if not raw:
        return []
    s = raw.rstrip(b"\x00 ")
    if not s or any(b < 0x20 and b not in (0x0A, 0x0D, 0x09, 0x1B) for b in s):
        return []
    t = s.decode("latin-1")
    return [p.strip() for p in t.split("\\") if p.strip()]


def walk(ds, path=()):
    """(path, element) for every element at any depth; path is ((tag, item index), ...)."""
    for elem in ds:
        yield path, elem
        if elem.VR == "SQ" and elem.value is not None:
            for i, item in enumerate(elem.value):
                yield from walk(item, path + ((elem.tag, i),))


def walk_where(ds):
    """(where, element) for every element at any depth; where names the place the same way
    in an input and its output (`ContentSequence[3]/ContentSequence[0]/Date`)."""
    for path, elem in walk(ds):
        where = "/".join(f"{keyword_for_tag(t) or str(t)}[{i}]" for t, i in path)
        yield (where + "/" if where else "") + (keyword_for_tag(elem.tag) or str(elem.tag)), elem


def elem_strings(elem):
    """The element's values as strings, UN decoded."""
    vr = elem.VR
    if vr == "SQ":
        return []
    if vr == "UN" or (vr in ("OB", "OW", "OB or OW") and elem.tag.is_private):
        return decode_un(elem.value if isinstance(elem.value, bytes) else b"")
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "US or SS", "US or OW", "US or SS or OW"):
        return []
    if vr == "PN":
        out = []
        for v in text_of(elem.value):
            out.append(v)
        return out
    return [s.strip(" \x00") for s in text_of(elem.value) if s.strip(" \x00")]


def pn_components(value):
    parts = set()
    for group in str(value).split("="):
        for comp in group.split("^"):
            comp = comp.strip()
            if comp:
                parts.add(comp)
                for w in comp.split():
                    parts.add(w)
    return parts


def classify(elem, profile, in_code_item):
    """None when the element's values may survive, else the kind of secret they are."""
    tag = elem.tag
    if tag.group == 0x0002:
        return None
    vr = elem.VR
    if tag.is_private:
        if tag.is_private_creator:
            return "private creator"
        if vr in ("UN", "OB", "OW") or vr in TEXT_VRS or vr in ("PN", "DA", "DT", "UI"):
            return f"private {vr}"
        return None
    kw = keyword_for_tag(tag)
    if vr == "UN" and not kw:
        return "unknown UN"
    if vr == "UN":
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return "unknown UN"
    if vr == "UI":
        return "uid"
    if vr == "PN":
        return "name"
    if vr in ("DA", "DT"):
        return "date"
    if vr not in TEXT_VRS:
        return None
    if kw in KEPT_KEYWORDS or in_code_item and kw in KEPT_KEYWORDS:
        return None
    action = profile_action(profile, tag)
    if action in ("K", "C"):
        # Kept, or cleaned (the instance's identifying strings removed: they are searched
        # for on their own).
        return None
    if action is None and tag.group in KEPT_GROUPS:
        return None
    if kw.endswith("ID") or kw.endswith("IDs") or kw.endswith("Number") or kw.endswith("Numbers"):
        return "id"
    return "text"


def collect_input_values(ds, profile):
    """(secrets: value -> (kind, where), allowed: values that may survive)."""
    secrets, allowed = {}, set()
    for where, elem in walk_where(ds):
        kind = classify(elem, profile, False)
        vals = elem_strings(elem)
        if kind is None:
            allowed.update(vals)
            continue
        if kind == "uid":
            vals = [v for v in vals if not v.startswith("1.2.840.10008.")]
        if kind == "name":
            more = []
            for v in vals:
                more.append(v)
                more.extend(pn_components(v))
            vals = more
        for v in vals:
            v = v.strip(" \x00")
            if len(v) < 4 or v in FIONA_DUMMIES:
                continue
            if kind in ("text", "id") or kind.startswith("private") or kind == "unknown UN":
                # Free text: also each line and each value of several.
                for part in re.split(r"[\r\n]+", v):
                    part = part.strip()
                    if len(part) >= 4:
                        secrets.setdefault(part, (kind, where))
            else:
                secrets.setdefault(v, (kind, where))
    return secrets, allowed


def output_values(ds):
    """[(where, value)] of every value of the output (file meta included). What fiona writes
    itself (pseudonym, project, event, methods) is searched too: an input value equal to it
    would be a leak all the same, and none of the inputs holds such a value."""
    out = []
    meta = getattr(ds, "file_meta", None)
    sources = ([meta] if meta is not None else []) + [ds]
    for src in sources:
        for where, elem in walk_where(src):
            vals = elem_strings(elem)
            if elem.VR == "PN":
                vals = vals + [c for v in vals for c in pn_components(v)]
            for v in vals:
                out.append((where, v))
    return out


def header_bytes(path):
    """The file's bytes up to its top-level Pixel Data element."""
    data = open(path, "rb").read()
    for marker in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"):
        at = data.rfind(marker)
        if at > 0:
            return data[:at]
    return data


def is_numeric(s):
    return re.fullmatch(r"[-+0-9.eE ]+", s) is not None


# ---------------------------------------------------------------- shifted dates
#
# fiona shifts every date of a participant by one offset (-365 to -30 days by default, drawn
# per participant from the project secret, so a new one in every run). An output date is then
# sometimes, by chance, equal to another date of the same input: test-SR.dcm's Instance
# Creation Date shifted by -69 days is the date of one of its content items, so a run whose
# participant drew -69 reported that item's date "found in" InstanceCreationDate, although
# every date had been shifted. Among the shipped files three participants can meet such an
# offset (-36, -49, -69 days, one of 336 each): about one run in 112 failed. Such a value is
# no leak: it is where it is because it is the shift of the date that was there. So an output DA/DT value that is exactly its own place's input value
# shifted by the file's offset is not searched (nor counted in the raw bytes). Anything else
# still is: an input date left unshifted (it differs from its own shift), copied to another
# place, or written into text.


def parse_ymd(y, m, d):
    try:
        return datetime.date(int(y), int(m), int(d))
    except ValueError:
        return None


def shift_one_da(v, days):
    """One DA value (no backslash, no range) shifted as fiona shifts it (deid/dates.rs):
    YYYYMMDD, the legacy YYYY.MM.DD, and YYYYMM / YYYY from their first day; None when fiona
    would not shift it."""
    v = v.strip()
    if not v:
        return ""

    def moved(d):
        try:
            r = d + datetime.timedelta(days=days)
        except OverflowError:
            return None
        return f"{r.year:04}{r.month:02}{r.day:02}"

    if len(v) == 10 and v[4] == "." and v[7] == ".":
        d = parse_ymd(v[0:4], v[5:7], v[8:10])
        s = d and moved(d)
        return s and f"{s[0:4]}.{s[4:6]}.{s[6:8]}"
    if not v.isascii() or not v.isdigit():
        return None
    parts = {8: (v[0:4], v[4:6], v[6:8]), 6: (v[0:4], v[4:6], "01"), 4: (v, "01", "01")}.get(len(v))
    d = parts and parse_ymd(*parts)
    s = d and moved(d)
    return s and s[: len(v)]


def shift_value(v, vr, days):
    """One value of a DA (a range too) or DT element shifted as fiona shifts it, or None."""
    if vr == "DA":
        if "-" in v:
            a, b = v.split("-", 1)
            a, b = shift_one_da(a, days), shift_one_da(b, days)
            return None if a is None or b is None else f"{a}-{b}"
        return shift_one_da(v, days)
    m = re.fullmatch(r"(\d{4})([^+-]*)([+-].*)?", v.strip())
    if not m:
        return None
    main, tz = m.group(1) + m.group(2), m.group(3) or ""
    digits_end = main.find(".") if "." in main else len(main)
    if not main[:digits_end].isdigit():
        return None
    n = min(digits_end, 8)
    d = shift_one_da(main[:n], days)
    return None if d is None else d + main[n:] + tz


def dates_by_place(ds):
    """{where: (vr, [values])} of the data set's DA and DT elements."""
    out = {}
    for where, elem in walk_where(ds):
        if elem.VR in ("DA", "DT"):
            out[where] = (elem.VR, elem_strings(elem))
    return out


def file_offset(inp, out):
    """The offset in days the output's full dates (YYYYMMDD) were shifted by: the most common
    non-zero difference between an input date and the output date at the same place; None
    when there is none (dates kept, removed or not shifted)."""
    before = {w: vals for w, (_, vals) in dates_by_place(inp).items()}
    diffs = collections.Counter()
    for where, (_, vals) in dates_by_place(out).items():
        old = before.get(where) or []
        if len(vals) != 1 or len(old) != 1:
            continue
        a, b = old[0][:8], vals[0][:8]
        if re.fullmatch(r"\d{8}", a) and re.fullmatch(r"\d{8}", b):
            da, db = parse_ymd(a[:4], a[4:6], a[6:]), parse_ymd(b[:4], b[4:6], b[6:])
            if da and db and da != db:
                diffs[(db - da).days] += 1
    return diffs.most_common(1)[0][0] if diffs else None


def shifted_in_place(inp, out):
    """{(where, value)} of the output's dates that are their own place's input value shifted
    by the file's offset (see above): values there because they were shifted."""
    days = file_offset(inp, out)
    if not days:
        return set()
    before = {w: vals for w, (_, vals) in dates_by_place(inp).items()}
    # The input may hold a standard date as UN: its decoded value at the same place.
    for where, elem in walk_where(inp):
        if elem.VR == "UN" and where not in before:
            before[where] = elem_strings(elem)
    explained = set()
    for where, (vr, vals) in dates_by_place(out).items():
        old = before.get(where) or []
        if len(vals) != len(old):
            continue
        for o, i in zip(vals, old):
            if o != i and shift_value(i, vr, days) == o:
                explained.add((where, o))
    return explained


# ---------------------------------------------------------------- leaks


def check_leaks(inp, out, out_path, profile):
    secrets, allowed = collect_input_values(inp, profile)
    values = output_values(out)
    allowed = allowed | FIONA_DUMMIES
    # Dates that are the shift of their own place's input date: not searched (see above).
    shifted = shifted_in_place(inp, out)
    # Output values that are there legitimately (the same value in a kept input element, a
    # dummy, or a shifted date) are not searched.
    searched = [(w, v) for w, v in values if v not in allowed and (w, v) not in shifted]
    raw = header_bytes(out_path)
    leaks = []
    for secret, (kind, where) in secrets.items():
        if secret in allowed:
            continue
        hit = None
        for w, v in searched:
            if is_numeric(secret):
                if secret in [p.strip() for p in v.split("\\")]:
                    hit = w
                    break
            elif secret in v:
                hit = w
                break
        if hit is None:
            for enc in ("utf-8", "latin-1"):
                try:
                    b = secret.encode(enc)
                except UnicodeEncodeError:
                    continue
                pat = re.escape(b)
                if is_numeric(secret):
                    pat = rb"(?<![0-9.])" + pat + rb"(?![0-9.])"
                # The shifted dates' own bytes are in the header too: only more occurrences
                # than they account for are a leak.
                own = sum(len(re.findall(pat, v.encode(enc, "replace"))) for _, v in shifted)
                if len(re.findall(pat, raw)) > own:
                    # Not a leak if it is part of a value that may be there.
                    if not any(secret in a for a in allowed if len(a) >= len(secret)):
                        hit = "raw bytes"
                    break
        if hit:
            leaks.append({"kind": kind, "input": where, "output": hit, "value_len": len(secret)})
    return leaks


# ---------------------------------------------------------------- references


def get_at(ds, path, tag):
    cur = ds
    for t, i in path:
        if t not in cur or cur[t].VR != "SQ" or cur[t].value is None or len(cur[t].value) <= i:
            return None
        cur = cur[t].value[i]
    if tag not in cur:
        return None
    return cur[tag].value


def check_refs(inp, out, new_uid_of):
    """(problems, how many references to other delivered inputs were checked)."""
    problems, checked = [], 0
    own = str(inp.get("SOPInstanceUID", ""))
    for path, elem in walk(inp):
        if elem.VR != "UI" or elem.value is None:
            continue
        if not path and elem.tag == Tag(0x0008, 0x0018):
            continue
        for v in text_of(elem.value):
            v = v.strip("\x00 ")
            if v == own and not path:
                continue
            if v in new_uid_of:
                got = get_at(out, path, elem.tag)
                if got is None:
                    continue  # the reference was removed: nothing dangles
                checked += 1
                got = [g.strip("\x00 ") for g in text_of(got)]
                if new_uid_of[v] not in got:
                    problems.append(
                        {
                            "element": "/".join(f"{keyword_for_tag(t)}[{i}]" for t, i in path)
                            + ("/" if path else "")
                            + (keyword_for_tag(elem.tag) or str(elem.tag)),
                            "problem": "does not name the referenced instance's new UID",
                        }
                    )
    return problems, checked


# ---------------------------------------------------------------- pixels


def decoded(ds):
    arr = ds.pixel_array
    return np.asarray(arr)


def check_pixels(inp, out, in_ts, out_ts):
    """(status, detail): status ok / scrubbed / fail / unchecked."""
    if "PixelData" not in inp:
        return "ok", "no pixel data"
    if "PixelData" not in out:
        return "fail", "pixel data missing in the output"
    if in_ts == out_ts and inp.PixelData == out.PixelData:
        return "ok", "untouched (same bytes)"
    try:
        a = decoded(inp)
    except Exception as e:
        return "unchecked", f"pydicom cannot decode the input: {type(e).__name__}: {str(e)[:80]}"
    try:
        b = decoded(out)
    except Exception as e:
        return "fail", f"pydicom cannot decode the output: {type(e).__name__}: {str(e)[:80]}"
    if a.shape != b.shape:
        return "fail", f"shape {a.shape} became {b.shape}"
    if np.array_equal(a, b):
        return "ok", "equal after decoding"
    spp = int(inp.get("SamplesPerPixel", 1))
    # Pixels blanked by the pixel stage: the output holds one constant there (black).
    diff = a != b
    if spp > 1:
        diff = diff.any(axis=-1)
        outv = b[diff]
        consts = {tuple(x) for x in np.unique(outv.reshape(-1, spp), axis=0)} if outv.size else set()
    else:
        consts = set(np.unique(b[diff]).tolist())
    frac = diff.mean()
    lossy = in_ts in LOSSY_TS
    if not lossy:
        if len(consts) == 1:
            return "scrubbed", f"{frac:.2%} of pixels blanked to {consts.pop()}, the rest equal"
        return "fail", f"{frac:.2%} of pixels differ (lossless input), {len(consts)} distinct output values there"
    # Lossy: decoders may differ; compare per-channel means outside blanked (all-zero) pixels.
    keep = ~((b == b.min()).all(axis=-1) if spp > 1 else (b == b.min()))
    if keep.sum() == 0:
        return "scrubbed", "everything blanked"
    af = a[keep].astype(np.float64).reshape(-1, spp) if spp > 1 else a[keep].astype(np.float64)
    bf = b[keep].astype(np.float64).reshape(-1, spp) if spp > 1 else b[keep].astype(np.float64)
    ma, mb = af.mean(axis=0), bf.mean(axis=0)
    rng = float(2 ** int(inp.get("BitsStored", 8)))
    tol = max(1.5, 0.01 * rng)
    d = np.abs(np.atleast_1d(ma) - np.atleast_1d(mb))
    if (d > tol).any():
        return "fail", f"lossy input: channel means {np.round(np.atleast_1d(ma), 1).tolist()} became {np.round(np.atleast_1d(mb), 1).tolist()}"
    # Blanked by the pixel stage: black in the output where the input was well above black
    # (decoders differ by a few levels, never by an eighth of the range).
    bright = (a.max(axis=-1) if spp > 1 else a).astype(np.float64) - float(a.min()) > rng / 8
    blanked = (~keep & bright).mean()
    if blanked > 0:
        return "scrubbed", f"{blanked:.2%} of pixels blanked; lossy input, channel means of the rest within {tol:g}"
    return "ok", f"lossy input: channel means within {tol:g} ({np.round(d, 2).tolist()})"


# ---------------------------------------------------------------- dciodvfy


def dciodvfy_kinds(path):
    try:
        p = subprocess.run(["dciodvfy", path], capture_output=True, timeout=300)
        text = (p.stdout + p.stderr).decode("latin-1")
        if "Dicom dataset read failed" in text:
            # dciodvfy reads no deflated data set: verify an inflated copy (DCMTK's dcmconv).
            with tempfile.TemporaryDirectory() as d:
                copy = os.path.join(d, "inflated.dcm")
                if subprocess.run(["dcmconv", "+te", path, copy], capture_output=True).returncode == 0:
                    p = subprocess.run(["dciodvfy", copy], capture_output=True, timeout=300)
                    text = (p.stdout + p.stderr).decode("latin-1")
    except subprocess.TimeoutExpired:
        return {"dciodvfy timed out"}
    kinds = set()
    for line in text.splitlines():
        if not line.startswith("Error"):
            continue
        k = line[len("Error - "):] if line.startswith("Error - ") else line
        k = re.sub(r" = <[^>]*>", " = <value>", k)  # values (names stay: Element=<Name>)
        k = re.sub(r"values are .*$", "values are ...", k)
        k = re.sub(r"\[\d+\]", "[]", k)  # item indices
        k = re.sub(r"\b\d+(\.\d+){2,}\b", "<uid>", k)  # UIDs
        k = re.sub(r"value \d+ of", "value N of", k)  # which value of several
        k = re.sub(r"(UID) \S+$", r"\1 <uid>", k)  # a trailing UID value, valid or not
        k = re.sub(r"\s+", " ", k).strip()
        kinds.add(k)
    return kinds


# ---------------------------------------------------------------- parked and refused


def uid_valid(u):
    return bool(re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*", u)) and len(u) <= 64


def independent_decode(ds):
    """None when pydicom with pylibjpeg decodes the pixels, else the error."""
    try:
        ds.pixel_array
        return None
    except Exception as e:
        return f"{type(e).__name__}: {str(e)[:60]}"


def judge_parked(reason, ds, ts):
    """(verdict, why): `confirmed` (the file is as the reason says and the independent
    decoder agrees), `limitation` (the file is as the reason says, but pydicom with pylibjpeg
    handles it: a limit of fiona's), or `false` (the file does not bear the reason out)."""
    r = reason.lower()
    bits = int(ds.get("BitsStored", 8) or 8)
    pi = str(ds.get("PhotometricInterpretation", ""))
    err = independent_decode(ds)
    decodes = "pydicom+pylibjpeg decodes it" if err is None else f"pydicom+pylibjpeg fails too ({err})"
    if "12-bit" in r or "12 bit" in r:
        if ts == "1.2.840.10008.1.2.4.51" and bits > 8:
            return ("confirmed" if err else "limitation"), f"12-bit JPEG Extended input; {decodes}"
        return "false", f"says 12-bit JPEG, input is {ts} with {bits} bits stored"
    m = re.search(r"bitsallocated (\d+)", r)
    if m:
        if int(ds.get("BitsAllocated", 0)) == int(m.group(1)):
            return ("confirmed" if err else "limitation"), f"BitsAllocated {m.group(1)}; {decodes}"
        return "false", f"input has BitsAllocated {ds.get('BitsAllocated')}"
    if "photometric interpretation" in r:
        if pi in ("MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422"):
            return "false", f"{pi} is one the pixel stage says it scrubs"
        return ("confirmed" if err else "limitation"), f"{pi}; {decodes}"
    if "palette" in r:
        if pi != "PALETTE COLOR":
            return "false", f"input is {pi}"
        try:
            from pydicom.pixels import apply_color_lut

            apply_color_lut(ds.pixel_array, ds)
            seg = "segmented " if "SegmentedRedPaletteColorLookupTableData" in ds else ""
            return "limitation", f"pydicom applies its {seg}palette lookup tables"
        except Exception as e:
            return "confirmed", f"pydicom cannot apply its lookup tables either ({type(e).__name__})"
    if "text" in r or "ocr" in r:
        modality = str(ds.get("Modality", ""))
        cls = str(ds.get("SOPClassUID", ""))
        scope = (
            modality in ("US", "SC", "OT")
            or cls.startswith(("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.6", "1.2.840.10008.5.1.4.1.1.3"))
            or str(ds.get("BurnedInAnnotation", "")).upper() == "YES"
        )
        if scope:
            return "confirmed", f"image in OCR's scope (modality {modality}); text left after masking"
        return "false", f"OCR on an image outside its scope (modality {modality})"
    if "decod" in r:
        return ("confirmed" if err else "false"), decodes
    if "transfer syntax" in r or "unsupported" in r:
        named = ts in reason or pydicom.uid.UID(ts).name.lower() in r
        return ("confirmed" if named else "false"), ("names the input's transfer syntax" if named else "does not name the input's transfer syntax")
    return "false", "reason not recognised by the checker"


# ---------------------------------------------------------------- the ratchet (known failures)

KNOWN_DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "known-failures.json")
# Never listable: a leak or a broken reference always fails the check.
NEVER_LISTED = ("leak", "references")
KNOWN_ABOUT = (
    "The real-file check's ratchet (tests/real/check.py): every failure the check expects today, "
    "one line each: the input as shipped (package/path), the category, a normalised detail, and "
    "why it is expected. A failure not listed fails the check; a listed one that no longer occurs "
    "fails it too (remove its line). Leaks and broken references cannot be listed. Parked and "
    "refused instances are listed as well (category 'parked' / 'refused', the reason as detail). "
    "FIONA_REAL_UPDATE_KNOWN=1 rewrites this file from a run (new lines get 'TODO why')."
)
ULID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")


def norm_text(s):
    """A reason without what changes from run to run: paths, fiona's ids."""
    s = re.sub(r"(?<![\w.])/\S*", "<path>", str(s))
    s = ULID.sub("<id>", s)
    return re.sub(r"\s+", " ", s).strip()


def parked_detail(reason):
    """A parked reason as listed: the common prefix, frame and round numbers and library
    versions taken out."""
    r = re.sub(r"^pixel data cannot be scrubbed: ", "", norm_text(reason))
    r = re.sub(r"\bframe \d+", "frame N", r)
    r = re.sub(r"\b\d+ masking rounds?\b", "N masking rounds", r)
    r = re.sub(r"\s*\([\w-]+ \d+(\.\d+)*\)", "", r)
    return r


def delivery_detail(t, key):
    """Why an instance did not reach the PACS: its transfer's state and the part of the
    reason about this instance (the error after its file's path), else the whole reason."""
    if not t:
        return "no transfer"
    segs = [s.strip() for s in re.split(r";\s+", t.get("reason") or "") if s.strip()]
    mine = [s for s in segs if key in s] or segs
    parts = []
    for s in mine:
        s = s.split(".dcm: ", 1)[1] if ".dcm: " in s else norm_text(s)
        if s not in parts:
            parts.append(s)
    return f"transfer {t['state']}" + (": " + "; ".join(parts) if parts else "")


def pixels_detail(detail, outbound_status):
    d = re.sub(r"\d+(\.\d+)?", "N", detail)
    return f"{d}; fiona's own output {outbound_status}"


def entry_line(it):
    return json.dumps({k: it[k] for k in ("file", "category", "detail", "why")}, ensure_ascii=False)


def read_known(path):
    """(entries, text of the file, problems with the file)."""
    if not os.path.exists(path):
        return [], "", []
    text = open(path, encoding="utf-8").read()
    try:
        doc = json.loads(text)
    except ValueError as e:
        return [], text, [f"{path} is not JSON: {e}"]
    entries, problems, seen = [], [], set()
    for it in doc.get("known", []) if isinstance(doc, dict) else []:
        if not isinstance(it, dict) or not all(isinstance(it.get(k), str) for k in ("file", "category", "detail", "why")):
            problems.append(f"entry without file, category, detail and why (all strings): {json.dumps(it)}")
            continue
        key = (it["file"], it["category"], it["detail"])
        if key in seen:
            problems.append(f"listed twice: {entry_line(it)}")
            continue
        seen.add(key)
        entries.append(it)
    return entries, text, problems


def write_known(path, entries):
    entries = sorted(entries, key=lambda it: (it["category"], it["file"], it["detail"]))
    body = ",\n".join("  " + entry_line(it) for it in entries)
    text = "{\n" + f' "about": {json.dumps(KNOWN_ABOUT)},\n' + ' "known": [\n' + body + ("\n" if body else "") + " ]\n}\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def line_of(text, it):
    """The line number of a listed entry in the file as written, or None."""
    want = entry_line(it)
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip().rstrip(",") == want:
            return i
    return None


def ratchet(observed, labels, never, known_path, update, in_scope_of):
    """Compare this run's failures with the list. `observed`: {(file, category, detail)};
    `never`: failures that cannot be listed, [(category, text)]; `in_scope_of(file)`: whether
    this run looked at that shipped name (lines for other files, e.g. of a package not
    collected, are left alone). Prints the outcome and a summary line; True when the check
    passes."""
    entries, text, problems = read_known(known_path)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rel = os.path.relpath(known_path, root) if os.path.abspath(known_path).startswith(root + os.sep) else known_path
    known = {(it["file"], it["category"], it["detail"]): it for it in entries}
    for k, it in known.items():
        if k[1] in NEVER_LISTED:
            problems.append(f"a {k[1]} cannot be listed (always a failure): line {line_of(text, it)}: {entry_line(it)}")
    in_scope = {k: it for k, it in known.items() if in_scope_of(k[0]) and k[1] not in NEVER_LISTED}
    new = sorted(observed - set(known))
    gone = sorted(set(in_scope) - observed)
    todo = [it for k, it in sorted(in_scope.items()) if k in observed and (not it["why"].strip() or it["why"].startswith("TODO"))]

    cats = sorted({k[1] for k in observed} | {k[1] for k in in_scope} | {c for c, _ in never})
    parts = []
    for c in cats:
        if c in NEVER_LISTED:
            parts.append(f"{c} {sum(1 for x, _ in never if x == c)} (never listable)")
        else:
            kn = sum(1 for k in observed if k[1] == c and k in known)
            nw = sum(1 for k in observed if k[1] == c and k not in known)
            gn = sum(1 for k in gone if k[1] == c)
            parts.append(f"{c} {kn} known + {nw} new" + (f" ({gn} listed no longer occur)" if gn else ""))

    changed = False
    if update:
        keep = [it for k, it in known.items() if k not in in_scope and k[1] not in NEVER_LISTED]
        fresh = []
        for k in sorted(observed):
            it = known.get(k) or {"file": k[0], "category": k[1], "detail": k[2], "why": "TODO why"}
            fresh.append(it)
        before = {k for k in known}
        after = {(it["file"], it["category"], it["detail"]) for it in keep + fresh}
        if before != after or problems:
            write_known(known_path, keep + fresh)
            changed = True
            print(f"\nFIONA_REAL_UPDATE_KNOWN: {rel} rewritten from this run: {len(after - before)} lines added "
                  f"(why: TODO), {len(before - after)} removed. Review the diff, write each TODO why, and run "
                  f"again without FIONA_REAL_UPDATE_KNOWN.")
            for k in sorted(after - before):
                print(f"  + {entry_line({'file': k[0], 'category': k[1], 'detail': k[2], 'why': 'TODO why'})}")
            for k in sorted(before - after):
                print(f"  - {entry_line(known[k])}")
        else:
            print(f"\nFIONA_REAL_UPDATE_KNOWN: {rel} already matches this run")
    else:
        if problems:
            print(f"\n{rel} has problems:")
            for p in problems:
                print(f"  {p}")
        if new:
            print(f"\nNEW failures, not in {rel} (fix them; if one is truly expected, add its line with a why, "
                  f"or run with FIONA_REAL_UPDATE_KNOWN=1):")
            for k in new:
                print(f"  {entry_line({'file': k[0], 'category': k[1], 'detail': k[2], 'why': 'TODO why'})}"
                      f"    # {labels.get(k, '')}")
        if gone:
            print(f"\nlisted in {rel} but NO LONGER OCCUR (fixed?): remove these lines:")
            for n, it in sorted(((line_of(text, known[k]) or 0, known[k]) for k in gone), key=lambda x: x[0]):
                print(f"  {rel}:{n if n else '?'}: {entry_line(it)}")
    if todo and not changed:
        print(f"\nlisted without a why (write one) in {rel}:")
        for it in todo:
            print(f"  {rel}:{line_of(text, it) or '?'}: {entry_line(it)}")
    if never:
        print("\nnever listable, always a failure:")
        for c, t in never:
            print(f"  {c}: {t}")
    skipped = len(known) - len(in_scope)
    ok = not (problems or never or new or gone or todo or changed)
    if changed:
        outcome = f"FAILED (rewritten: {rel} to review)"
    else:
        outcome = "passed" if ok else "FAILED"
    print(
        f"\nknown failures: {outcome}: "
        + ", ".join(parts)
        + f"; {len(new)} new, {len(gone)} to remove from {rel}"
        + (f", {len(todo)} without a why" if todo else "")
        + (f", {len(problems)} bad lines" if problems else "")
        + (f" ({skipped} lines for files not checked in this run left alone)" if skipped else "")
    )
    return ok


# ---------------------------------------------------------------- self-test


def self_test(profile):
    """The leak check on made-up data sets (no real file): a date of the output that equals
    another input date only because every date was shifted is no leak; an input date left
    unshifted, copied into text or into bytes the values do not show still is. Returns the
    cases that went wrong."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence

    # Instance Creation Date minus 69 days is the content item's date (test-SR.dcm's case).
    created, item_date, days = "20010213", "20001206", -69

    def make(created_v, item_v, comments=None, blob=None, uid="2.25.2"):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.file_meta.TransferSyntaxUID = EVRLE
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
        ds.SOPInstanceUID = uid
        ds.InstanceCreationDate = created_v
        ds.ContentDate = created_v
        item = Dataset()
        item.ValueType = "DATE"
        item.Date = item_v
        outer = Dataset()
        outer.ValueType = "CONTAINER"
        outer.ContentSequence = Sequence([item])
        ds.ContentSequence = Sequence([outer])
        if comments is not None:
            ds.ImageComments = comments
        if blob is not None:
            ds.EncapsulatedDocument = blob
        return ds

    def shift(v):
        return shift_value(v, "DA", days)

    inp = make(created, item_date, uid="2.25.1")
    cases = [
        ("every date shifted (one lands on the input's other date)", make(shift(created), shift(item_date)), False),
        ("the item's date left unshifted", make(shift(created), item_date), True),
        ("the item's date copied into text", make(shift(created), shift(item_date), comments=f"on {item_date}"), True),
        ("the item's date in bytes the values do not show",
         make(shift(created), shift(item_date), blob=item_date.encode()), True),
        ("no date shifted", make(created, item_date), True),
    ]
    wrong = []
    with tempfile.TemporaryDirectory() as d:
        for name, out, leak in cases:
            path = os.path.join(d, "out.dcm")
            out.save_as(path, enforce_file_format=True)
            out = pydicom.dcmread(path)
            found = check_leaks(inp, out, path, profile)
            if bool(found) != leak:
                wrong.append(f"{name}: {'a leak' if leak else 'no leak'} expected, found {found}")
    assert shift(created) == item_date, "the made-up dates no longer coincide"
    return wrong


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input")
    ap.add_argument("--fiona")
    ap.add_argument("--outbound")
    ap.add_argument("--orthanc")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--report")
    ap.add_argument("--only", help="comma-separated input names to check")
    ap.add_argument("--known", default=KNOWN_DEFAULT, help="the list of expected failures (the ratchet)")
    ap.add_argument(
        "--update-known",
        action="store_true",
        default=os.environ.get("FIONA_REAL_UPDATE_KNOWN", "") not in ("", "0"),
        help="rewrite --known from this run (also: FIONA_REAL_UPDATE_KNOWN=1)",
    )
    ap.add_argument("--self-test", action="store_true", help="check the leak check on made-up data sets, then exit")
    a = ap.parse_args()
    if a.self_test:
        wrong = self_test(load_profile(a.profile))
        for w in wrong:
            print(f"self-test: {w}")
        print(f"self-test: {'FAILED' if wrong else 'passed'}")
        sys.exit(1 if wrong else 0)
    missing = [f"--{x}" for x in ("input", "fiona", "outbound", "orthanc") if getattr(a, x) is None]
    if missing:
        ap.error("the following arguments are required: " + ", ".join(missing))

    manifest = json.load(open(os.path.join(a.input, "manifest.json")))
    facts = json.load(open(a.fiona))
    profile = load_profile(a.profile)
    only = set(a.only.split(",")) if a.only else None

    by_uid = {i["sop_instance_uid"]: i for i in facts["instances"]}
    transfer_of_study = {}
    for t in facts["transfers"]:
        if t["state"] != "cancelled":
            transfer_of_study[t["study_key"]] = t
    parked = {}
    for t in facts["transfers"]:
        for p in t.get("parked") or []:
            parked[p["instance"]] = p["reason"]
    for p in facts.get("parked") or []:
        if isinstance(p, dict) and "instance" in p:
            parked.setdefault(p["instance"], p.get("reason", ""))

    # Orthanc's holdings by SOP Instance UID.
    held = {}
    for d, _, fs in os.walk(a.orthanc):
        for f in fs:
            p = os.path.join(d, f)
            try:
                h = pydicom.dcmread(p, stop_before_pixels=True)
                held[str(h.SOPInstanceUID)] = p
            except Exception:
                pass

    entries = manifest["files"]
    # Delivered outputs: input SOP Instance UID -> (outbound file, new UID, Orthanc file).
    new_uid_of, outputs = {}, {}
    for e in entries:
        inst = by_uid.get(e["sop_instance_uid"])
        if not inst:
            continue
        t = transfer_of_study.get(inst["study_key"])
        if not t:
            continue
        ob = os.path.join(a.outbound, t["id"], inst["key"] + ".dcm")
        if os.path.isfile(ob):
            nu = str(pydicom.dcmread(ob, stop_before_pixels=True).SOPInstanceUID)
            new_uid_of[e["sop_instance_uid"]] = nu
            outputs[e["name"]] = (ob, nu, held.get(nu))

    # dciodvfy on inputs and outputs, two at a time.
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for e in entries:
            if only and e["name"] not in only:
                continue
            o = outputs.get(e["name"])
            if o and o[2]:
                jobs[e["name"]] = (
                    pool.submit(dciodvfy_kinds, os.path.join(a.input, e["name"])),
                    pool.submit(dciodvfy_kinds, o[2]),
                )
        verify = {n: (i.result(), o.result()) for n, (i, o) in jobs.items()}

    rows, failures, parked_list, refs_checked = [], collections.defaultdict(list), [], 0
    # Every refused and parked instance, for the ratchet: (file, detail).
    refused_list, parked_known = [], []
    study_out, series_out, for_out = collections.defaultdict(set), collections.defaultdict(set), collections.defaultdict(set)
    new_errors = collections.Counter()
    for e in entries:
        name = e["name"]
        if only and name not in only:
            continue
        label = f"{e['package']}:{e['source']}"
        inp_path = os.path.join(a.input, name)
        inp = pydicom.dcmread(inp_path)
        row = {"file": name, "source": label, "transfer_syntax": e["transfer_syntax"]}
        inst = by_uid.get(e["sop_instance_uid"])
        sender = facts.get("senders", {}).get(name, "not acknowledged")
        row["sender"] = sender
        if not inst:
            rej = [r for r in facts.get("rejected") or [] if e["sop_instance_uid"] in json.dumps(r)]
            uid_ok = all(uid_valid(str(inp.get(k, "1"))) for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"))
            why = rej[0].get("reason", "") if rej else sender
            row["status"] = "refused"
            row["detail"] = why
            plausible = not uid_ok
            row["plausible"] = plausible
            refused_list.append((name, norm_text(re.sub(r"\b\d+(\.\d+){2,}\b", "<uid>", why))))
            if not plausible:
                failures["refused (no reason visible in the file)"].append(
                    {"file": name, "source": label, "reason": why, "known": refused_list[-1][1]})
            rows.append(row)
            continue
        if inst["key"] in parked:
            reason = parked[inst["key"]]
            verdict, why = judge_parked(reason, inp, e["transfer_syntax"])
            row.update(status="parked", detail=reason, verdict=verdict, judged=why)
            parked_list.append({"file": name, "source": label, "reason": reason, "verdict": verdict, "check": why,
                                "known": parked_detail(reason)})
            parked_known.append((name, parked_detail(reason)))
            if verdict == "false":
                failures["parked (reason not borne out by the file)"].append(parked_list[-1])
            rows.append(row)
            continue
        o = outputs.get(name)
        t = transfer_of_study.get(inst["study_key"])
        if not o:
            row.update(status="no output", detail=f"transfer {t['state'] if t else 'none'}")
            failures["not delivered"].append({"file": name, "source": label, "detail": row["detail"],
                                              "known": "no output: " + delivery_detail(t, inst["key"])})
            rows.append(row)
            continue
        ob, nu, orth = o
        if not orth:
            row.update(status="not at Orthanc", detail=f"transfer {t['state']}: {t.get('reason') or ''}")
            failures["not delivered"].append({"file": name, "source": label, "detail": row["detail"],
                                              "known": "not at the PACS: " + delivery_detail(t, inst["key"])})
            rows.append(row)
            continue
        out = pydicom.dcmread(orth)
        row["status"] = "delivered"
        res = {}
        # (a) leaks
        leaks = check_leaks(inp, out, orth, profile)
        res["leak"] = leaks
        for lk in leaks:
            failures["leak"].append({"file": name, "source": label, **lk})
        # (b) references
        refs, n = check_refs(inp, out, new_uid_of)
        refs_checked += n
        study_out[str(inp.StudyInstanceUID)].add(str(out.get("StudyInstanceUID")))
        if "SeriesInstanceUID" in inp:
            series_out[str(inp.SeriesInstanceUID)].add(str(out.get("SeriesInstanceUID")))
        if "FrameOfReferenceUID" in inp and "FrameOfReferenceUID" in out:
            for_out[str(inp.FrameOfReferenceUID)].add(str(out.FrameOfReferenceUID))
        res["refs"] = refs
        for r in refs:
            failures["references"].append({"file": name, "source": label, **r})
        # (d) pixels, then (c) syntax, which needs to know whether the stage rewrote the image
        out_ts = str(out.file_meta.TransferSyntaxUID)
        row["output_syntax"] = out_ts
        pst, pdetail = check_pixels(inp, out, e["transfer_syntax"], out_ts)
        res["pixels"] = [pst, pdetail]
        outbound = pydicom.dcmread(ob)
        ob_ts = str(outbound.file_meta.TransferSyntaxUID)
        if pst == "fail":
            # Where it went wrong: fiona's own output, or on the way to the PACS.
            ost, odetail = check_pixels(inp, outbound, e["transfer_syntax"], ob_ts)
            failures["pixels"].append({"file": name, "source": label, "transfer_syntax": e["transfer_syntax"],
                                       "photometric": str(inp.get("PhotometricInterpretation", "")),
                                       "bits_allocated": int(inp.get("BitsAllocated", 0)), "detail": pdetail,
                                       "outbound": f"{pydicom.uid.UID(ob_ts).name}: {ost}: {odetail}",
                                       "known": pixels_detail(pdetail, ost)})
        rewritten = pst == "scrubbed" and out_ts == EVRLE and str(out.get("BurnedInAnnotation", "")) == "NO"
        if out_ts != e["transfer_syntax"] and not rewritten:
            failures["transfer syntax"].append(
                {"file": name, "source": label, "input": e["transfer_syntax"], "output": out_ts,
                 "input_name": pydicom.uid.UID(e["transfer_syntax"]).name, "output_name": pydicom.uid.UID(out_ts).name,
                 "changed_by": "de-identification (outbound file)" if ob_ts != e["transfer_syntax"] else "forwarding",
                 "pixels": pst,
                 "known": f"{e['transfer_syntax']} -> {out_ts} by "
                          + ("de-identification" if ob_ts != e["transfer_syntax"] else "forwarding")}
            )
            res["syntax"] = f"{e['transfer_syntax']} -> {out_ts}"
        # (e) dciodvfy
        vi, vo = verify.get(name, (set(), set()))
        new = sorted(vo - vi)
        res["dciodvfy"] = new
        for k in new:
            new_errors[k] += 1
            failures["dciodvfy"].append({"file": name, "source": label, "kind": k, "known": k})
        row["checks"] = res
        rows.append(row)

    for what, m in (("study", study_out), ("series", series_out), ("frame of reference", for_out)):
        for uid, outs in m.items():
            if len(outs) > 1:
                failures["references"].append({"file": "*", "problem": f"one input {what} became {len(outs)} output {what} UIDs"})

    # The table.
    print(f"{'file':<9} {'source':<58} {'status':<10} {'leak':>4} {'refs':>4} {'ts':<3} {'pixels':<10} {'new dciodvfy':>3}")
    for r in rows:
        c = r.get("checks")
        if c:
            print(
                f"{r['file']:<9} {r['source'][:58]:<58} {r['status']:<10} {len(c['leak']):>4} {len(c['refs']):>4} "
                f"{'!' if 'syntax' in c else 'ok':<3} {c['pixels'][0]:<10} {len(c['dciodvfy']):>3}"
            )
        else:
            print(f"{r['file']:<9} {r['source'][:58]:<58} {r['status']:<10} {r.get('detail', '')[:110]}")
    counts = collections.Counter(r["status"] for r in rows)
    failing = dict(failures)
    summary = {
        "files": len(rows),
        "by_status": dict(counts),
        "by_package": dict(collections.Counter(r["source"].split(":")[0] for r in rows)),
        "failures": {k: len(v) for k, v in failing.items()},
        "files_failing": {k: sorted({f["file"] for f in v}) for k, v in failing.items()},
        "references_checked": refs_checked,
        "new_dciodvfy_error_kinds": dict(new_errors.most_common()),
        "leak_kinds": dict(collections.Counter(f"{l['kind']} {l['input']}" for l in failures.get("leak", []))),
        "parked": parked_list,
        "details": failing,
    }
    if a.report:
        with open(a.report, "w") as fh:
            json.dump({"summary": summary, "rows": rows}, fh, indent=1, default=str)
    print(json.dumps(summary, indent=1, default=str))
    # The same, grouped for a reader: each failing category with its files.
    print("\nfailures by category:")
    for k, v in failing.items():
        print(f"  {k} ({len(v)}):")
        groups = collections.defaultdict(list)
        for f in v:
            what = {x: y for x, y in f.items() if x not in ("file", "source")}
            if k == "transfer syntax":
                what = f"{f['input_name']} -> {f['output_name']}, changed by {f['changed_by']}"
            elif k == "dciodvfy":
                what = f["kind"]
            elif k == "leak":
                what = f"{f['kind']} from {f['input']} found in {f['output']}"
            groups[json.dumps(what, default=str) if not isinstance(what, str) else what].append(
                f"{f.get('file')} {f.get('source', '')}")
        for what, files in groups.items():
            print(f"    {what}: {len(files)}")
            for x in files:
                print(f"      {x}")
    print("\nparked:")
    for p in parked_list:
        print(f"  {p['file']} {p['source']}: {p['reason']} [{p['verdict']}: {p['check']}]")
    print(f"\nfailures: " + (", ".join(f"{k} {len(v)}" for k, v in failures.items()) or "none"))

    # The ratchet: this run's failures, parked and refused instances against the list.
    shipped = {e["name"]: f"{e['package']}/{e['source']}" for e in entries}
    observed, labels, never = set(), {}, []
    for cat, items in failing.items():
        for f in items:
            if cat in NEVER_LISTED:
                what = {x: y for x, y in f.items() if x not in ("file", "source")}
                never.append((cat, f"{shipped.get(f['file'], f['file'])}: {json.dumps(what, default=str)}"))
                continue
            k = (shipped[f["file"]], cat, f["known"])
            observed.add(k)
            labels[k] = f["file"]
    for cat, items in (("parked", parked_known), ("refused", refused_list)):
        for name, detail in items:
            k = (shipped[name], cat, detail)
            observed.add(k)
            labels[k] = name
    # A line is checked when its file was checked in this run, or (all files checked) when
    # its package was collected: a listed file no longer collected is then a line to remove.
    checked = {shipped[e["name"]] for e in entries if not only or e["name"] in only}
    packages = {e["package"] for e in entries}

    def in_scope_of(f):
        return f in checked or (not only and f.split("/")[0] in packages)

    ok = ratchet(observed, labels, never, a.known, a.update_known, in_scope_of)
    print(f"check: {'passed' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
