#!/usr/bin/env bash
# Build the disk image twice from the same rootfs and compare: same rootfs.tar, same bytes.
#
#   bash image/check-reproducible.sh ROOTFS_OUT_DIR [SCRATCH_DIR]
#
# (os/check-reproducible.sh does the same for the rootfs itself.) The two images are built
# at least a few seconds apart, so that anything taken from the clock would show. On a
# difference it names the first differing offsets and the partition they fall in. The
# images are removed afterwards (about 600 MB each on disk).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

die() {
  echo "image/check-reproducible.sh: $*" >&2
  exit 1
}
[ $# -ge 1 ] || die "usage: bash image/check-reproducible.sh ROOTFS_OUT_DIR [SCRATCH_DIR]"
in=$1
scratch=${2:-$(dirname "$(readlink -f "$in/rootfs.tar")")}
dir=$(mktemp -d "$scratch/.image-repro.XXXXXX")
trap 'rm -rf "$dir"' EXIT

bash "$here/build.sh" "$in" "$dir/a.img"
sleep 3
bash "$here/build.sh" "$in" "$dir/b.img"
a=$(cut -d' ' -f1 "$dir/a.img.sha256")
b=$(cut -d' ' -f1 "$dir/b.img.sha256")
if [ "$a" = "$b" ]; then
  echo "image/check-reproducible.sh: reproducible: both builds $a"
  exit 0
fi
echo "image/check-reproducible.sh: NOT reproducible: $a vs $b" >&2
cmp -l "$dir/a.img" "$dir/b.img" | head -20 | while read -r off _ _; do
  sector=$(((off - 1) / 512))
  where=$(sfdisk -d "$dir/a.img" | awk -v s="$sector" '/^[^:]+ : start=/ {
      st = $0; sub(/.*start= */, "", st); sub(/,.*/, "", st)
      sz = $0; sub(/.*size= */, "", sz); sub(/,.*/, "", sz)
      nm = $0; sub(/.*name="/, "", nm); sub(/".*/, "", nm)
      if (s >= st && s < st + sz) { print nm " +" (s - st) * 512; found = 1 } }
      END { if (!found) print "partition table" }')
  echo "  byte $off: $where" >&2
done
exit 1
