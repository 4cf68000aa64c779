#!/usr/bin/env bash
# Burned-in text on real images (issue 13): builds the evaluation set (tests/real/text_eval.py:
# real frames from the pydicom, pydicom-data and deid-data packages with text drawn in real
# fonts at known boxes, Presidio's samples with their ground truth, a text-free set), runs
# `fiona deid` on it with the learned detector (default) and with Tesseract alone
# (`detector = false`, the method before issue 13), every image read (`all_images`), and
# scores both in one run: boxes fully blanked, images where an independent reader (the
# tesseract program, several thresholds, both polarities) still finds a planted token,
# pixels blanked on text-free images, seconds. See docs/BENCHMARKS.md.
#
#   bash bench/text_eval.sh                 # 120 text images
#   TEXTS=300 SEED=7 bash bench/text_eval.sh
#
# Needs the venv tests/run.sh makes (FIONA_TEST_PYTHON) and the packages it installs.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${FIONA_TEST_PYTHON:-$HOME/.cache/fiona-real-venv/bin/python}"
cargo build --release -p fiona >/dev/null
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
