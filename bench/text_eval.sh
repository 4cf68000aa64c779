#!/usr/bin/env bash
# Burned-in text on real images (issue 13): builds the evaluation set (tests/real/text_eval.py:
# real frames from the pydicom, pydicom-data and deid-data packages with text drawn in real
# fonts at known boxes, Presidio's samples with their ground truth, a text-free set), runs
# `fiona deid` on it with the learned detector (default) and with Tesseract alone
# (`detector = false`, the method before issue 13), every image read (`all_images`), then
# Microsoft Presidio's DICOM image redactor on the same input as a third anchor
# (bench/presidio_redact.py: its header names from the metadata as a deny-list, a blank spaCy
# pipeline, so no NER; its boxes painted black; multi-frame files fail there and count as not
# passed on), and scores all three in one run: boxes fully blanked, images where an
# independent reader (the tesseract program, several thresholds, both polarities) still finds
# a planted token, pixels blanked on text-free images, seconds. See docs/BENCHMARKS.md.
#
#   bash bench/text_eval.sh                 # 120 text images
#   TEXTS=300 SEED=7 bash bench/text_eval.sh
#
# Needs the venv tests/run.sh makes (FIONA_TEST_PYTHON) and the packages it installs; makes
# Presidio's own venv (FIONA_PRESIDIO_VENV, bench/presidio_requirements.txt) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${FIONA_TEST_PYTHON:-$HOME/.cache/fiona-real-venv/bin/python}"
cargo build --release -p fiona >/dev/null
pvenv="${FIONA_PRESIDIO_VENV:-$HOME/.cache/fiona-presidio-venv}"
[ -x "$pvenv/bin/python" ] || python3 -m venv "$pvenv"
pins=$(sha256sum bench/presidio_requirements.txt | cut -d' ' -f1)
if [ "$(cat "$pvenv/.fiona-pins" 2>/dev/null)" != "$pins" ]; then
  echo "installing Presidio's packages into $pvenv"
  "$pvenv/bin/python" -m pip install -q --disable-pip-version-check -r bench/presidio_requirements.txt
  echo "$pins" >"$pvenv/.fiona-pins"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== fiona $(git rev-parse --short HEAD)$(git diff --quiet || echo '+edits'), $(nproc) cores, $(date -u +%FT%TZ)"
"$py" tests/real/text_eval.py make "$work" --texts "${TEXTS:-120}" --seed "${SEED:-13}"
for method in detector tesseract; do
  cat >"$work/$method.toml" <<TOML
data_dir = "$work/data"
[projects.TEXTEVAL]
participant_pattern = "^P[0-9]+\$"
events = ["e"]
approval_start = "2026-01-01"
approval_end = "2030-12-31"
[projects.TEXTEVAL.pixel.ocr]
all_images = true
detector = $([ "$method" = detector ] && echo true || echo false)
TOML
  echo "== $method"
  start=$(date +%s.%N)
  target/release/fiona deid --project TEXTEVAL --participant P1 --event e \
    --config "$work/$method.toml" --report "$work/$method.json" "$work/input" "$work/out-$method" ||
    true # a parked file fails the run; the report says which, and the scorer counts it
  end=$(date +%s.%N)
  n=$(ls "$work/input" | wc -l)
  echo "$n images in $(echo "$end - $start" | bc) s"
  "$py" tests/real/text_eval.py score "$work/truth.json" "$work/$method.json" --input "$work/input" \
    --json "$work/score-$method.json"
done
echo "== presidio"
start=$(date +%s.%N)
"$pvenv/bin/python" bench/presidio_redact.py "$work/input" "$work/out-presidio" "$work/presidio.json"
end=$(date +%s.%N)
echo "$(ls "$work/input" | wc -l) images in $(echo "$end - $start" | bc) s"
"$py" tests/real/text_eval.py score "$work/truth.json" "$work/presidio.json" --input "$work/input" \
  --json "$work/score-presidio.json"
