#!/usr/bin/env bash
# What the default burned-in text settings cost on a CT study (issue 13): N instances (1000 by
# default) made from one real 512 x 512 CT slice (pydicom-data's 693_UNCI.dcm, new UIDs, one
# study), de-identified by `fiona deid` three ways in one run:
#
#   original   ImageType ORIGINAL\PRIMARY\AXIAL, default settings: a plain CT series is not
#              read (the defaults read CT only when DERIVED or SECONDARY), so the pixel stage
#              should cost nothing;
#   no-ocr     the same files with OCR switched off (`enabled = false`): the anchor;
#   derived    ImageType DERIVED\SECONDARY\REFORMATTED (an MPR or a screen save), default
#              settings: every instance goes through the detector and the Tesseract check.
#
#   bash bench/ct_study.sh            # 1000 instances
#   N=200 bash bench/ct_study.sh
#
# Needs the venv tests/run.sh makes (FIONA_TEST_PYTHON). See docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${FIONA_TEST_PYTHON:-$HOME/.cache/fiona-real-venv/bin/python}"
n="${N:-1000}"
cargo build --release -p fiona >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== fiona $(git rev-parse --short HEAD)$(git diff --quiet || echo '+edits'), $(nproc) cores, $(date -u +%FT%TZ), $n instances"
"$py" - "$work" "$n" <<'PY'
import os, sys
import pydicom
from pydicom.uid import generate_uid
sys.path.insert(0, "tests/real")
from text_eval import find  # the test packages' files (pydicom-data)
out, n = sys.argv[1], int(sys.argv[2])
src = find("693_UNCI.dcm")
base = pydicom.dcmread(src)
for kind, image_type in [("original", ["ORIGINAL", "PRIMARY", "AXIAL"]),
                         ("derived", ["DERIVED", "SECONDARY", "REFORMATTED"])]:
    os.makedirs(os.path.join(out, kind))
    study, series = generate_uid(), generate_uid()
    for i in range(n):
        ds = base.copy()
        ds.ImageType = image_type
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.save_as(os.path.join(out, kind, f"{i:05}.dcm"), enforce_file_format=True)
print(f"made {n} ORIGINAL and {n} DERIVED instances of {os.path.basename(src)} "
      f"({base.Rows} x {base.Columns}, {base.Modality})")
PY
run() { # name input ocr-section
  rm -rf "$work/data" "$work/out"
  cat >"$work/$1.toml" <<TOML
data_dir = "$work/data"
[projects.CTCOST]
participant_pattern = "^P[0-9]+\$"
events = ["e"]
approval_start = "2026-01-01"
approval_end = "2030-12-31"
$3
TOML
  local start end
  start=$(date +%s.%N)
  target/release/fiona deid --project CTCOST --participant P1 --event e \
    --config "$work/$1.toml" --report "$work/$1.json" "$work/$2" "$work/out" >/dev/null
  end=$(date +%s.%N)
  "$py" - "$work/$1.json" "$1" "$(echo "$end - $start" | bc)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["files"]
ok = sum(1 for f in r if f["result"] == "ok")
masked = sum(f.get("pixels_masked") or 0 for f in r)
t = float(sys.argv[3])
print(f"{sys.argv[2]:9} {len(r)} instances, {ok} passed on, {masked} pixels blanked: "
      f"{t:.1f} s ({1000 * t / max(len(r), 1):.1f} ms per instance)")
PY
  echo "$end - $start" | bc >"$work/$1.seconds"
}
run original original ""
run no-ocr original $'[projects.CTCOST.pixel.ocr]\nenabled = false'
run derived derived ""
echo "original / no-ocr: $(echo "scale=2; $(cat "$work/original.seconds") / $(cat "$work/no-ocr.seconds")" | bc)," \
  "derived / no-ocr: $(echo "scale=1; $(cat "$work/derived.seconds") / $(cat "$work/no-ocr.seconds")" | bc)"
