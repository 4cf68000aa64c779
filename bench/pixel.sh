#!/usr/bin/env bash
# Pixel-stage benchmark (issue 5): OCR recall on generated images with burned-in words, region
# masking in images/s, and OCR seconds per image with one Tesseract engine per worker against
# Tesseract started for every image, in one run. See docs/BENCHMARKS.md.
#
#   bash bench/pixel.sh            # 240 images for recall, 200 for OCR speed
#   RECALL_IMAGES=400 SPEED_IMAGES=300 bash bench/pixel.sh
#
# Everything runs in memory (no image is written but the generator's own temporary phantom
# files); the example's source, daemon/examples/pixel_bench.rs, says what is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p fiona --example pixel_bench >/dev/null
echo "== fiona $(git rev-parse --short HEAD)$(git diff --quiet || echo '+edits'), $(nproc) cores, $(date -u +%FT%TZ)"
echo "== recall"
target/release/examples/pixel_bench recall "${RECALL_IMAGES:-240}"
echo "== speed"
target/release/examples/pixel_bench speed "${SPEED_IMAGES:-200}"
