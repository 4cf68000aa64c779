#!/usr/bin/env bash
# Build the root file system twice from the same inputs and compare: the same SHA-256 for
# rootfs.tar and for the package manifest, or the files that differ are listed.
#
#   bash os/check-reproducible.sh OUT [os/build.sh options: --fiona, --bundle-keys, --epoch]
#
# Both builds share one package cache (OUT/debs), so they install the same .deb files even if
# the mirror moves on between them; a rebuild on another day is checked the same way, with
# the first build's cache (docs/APPLIANCE.md). Prints "reproducible: SHA256" and exits 0, or
# lists the differences and exits 1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: bash os/check-reproducible.sh OUT [build options]" >&2; exit 2; }
out=$1
shift
mkdir -p "$out/debs"
# The two builds run at once (each in its own directory; the cache is only added to by
# rename): on two cores that takes about the time of one and a half.
start=$SECONDS
pids=()
for n in 1 2; do
  rm -rf "$out/build$n"
  bash "$here/build.sh" "$out/build$n" --debs "$out/debs" "$@" >"$out/build$n.log" 2>&1 &
  pids+=($!)
done
failed=0
for n in 1 2; do
  if wait "${pids[$((n - 1))]}"; then
    tail -1 "$out/build$n.log"
  else
    echo "check-reproducible: build $n failed:" >&2
    tail -20 "$out/build$n.log" >&2
    failed=1
  fi
done
[ "$failed" = 0 ] || exit 1
echo "check-reproducible: both builds took $((SECONDS - start)) s"
a=$(sha256sum "$out/build1/rootfs.tar" | cut -d' ' -f1)
b=$(sha256sum "$out/build2/rootfs.tar" | cut -d' ' -f1)
if [ "$a" = "$b" ] && cmp -s "$out/build1/packages.txt" "$out/build2/packages.txt"; then
  echo "reproducible: $a"
  exit 0
fi
echo "check-reproducible: the two builds differ ($a vs $b)" >&2
diff "$out/build1/packages.txt" "$out/build2/packages.txt" >&2 || true
# Which members differ: their listing (mode, owner, size, time, name) and their contents.
list() { tar --list --verbose --full-time --numeric-owner -f "$1"; }
diff <(list "$out/build1/rootfs.tar") <(list "$out/build2/rootfs.tar") | head -40 >&2 || true
for n in 1 2; do
  mkdir -p "$out/x$n"
  tar -xf "$out/build$n/rootfs.tar" -C "$out/x$n"
done
diff -rq --no-dereference "$out/x1" "$out/x2" | head -40 >&2 || true
rm -rf "$out/x1" "$out/x2"
exit 1
