#!/usr/bin/env bash
# Build the fiona appliance's root file system: Debian bookworm (mmdebstrap, minbase variant),
# the packages in os/packages, the fiona release binary, its hardened units, the trusted
# bundle keys and os/rootfs/ (firewall, journal, network), then os/customize.sh.
#
#   bash os/build.sh OUT [--fiona BIN] [--bundle-keys DIR] [--epoch SECONDS] [--debs DIR]
#
# OUT receives:
#   rootfs.tar      the root file system (normalised tar: sorted names, mtimes clamped to the
#                   epoch, numeric owners; image/build.sh makes the disk image from it)
#   packages.txt    every installed package: name, version, architecture, SHA-256 of its .deb
#   build-info.txt  the inputs: epoch, commit, fiona's SHA-256, keys, mmdebstrap, mirrors
#   fiona.debug     the binary's debug information (the image carries it stripped)
#   SHA256SUMS      of the four files above
#
# --fiona BIN        the binary to ship (default: `cargo build --release --locked` here)
# --bundle-keys DIR  the site's trusted minisign public keys (DIR/*.pub, at most 2); without
#                    it the box trusts no key and refuses every bundle (fail closed)
# --epoch SECONDS    SOURCE_DATE_EPOCH (default: the commit time of HEAD)
# --debs DIR         a package cache: .debs found there are not downloaded again, and the
#                    ones downloaded are added (a rebuild on another day uses the cache of the
#                    first build to install the very same files: docs/APPLIANCE.md)
#
# Same inputs, same bytes: os/check-reproducible.sh builds twice and compares the SHA-256.
# Needs root (mmdebstrap's root mode: dpkg and the kernel's postinst run in a chroot).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)

die() {
  echo "os/build.sh: $*" >&2
  exit 1
}
[ $# -ge 1 ] || die "usage: bash os/build.sh OUT [--fiona BIN] [--bundle-keys DIR] [--epoch SECONDS] [--debs DIR]"
out=$1
shift
bin="" keys="" epoch="" debs=""
while [ $# -gt 0 ]; do
  case "$1" in
  --fiona) bin=$2; shift 2 ;;
  --bundle-keys) keys=$2; shift 2 ;;
  --epoch) epoch=$2; shift 2 ;;
  --debs) debs=$2; shift 2 ;;
  *) die "unknown option $1" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap runs dpkg in a chroot)"

need=()
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v systemctl >/dev/null 2>&1 || need+=(systemd)
command -v objcopy >/dev/null 2>&1 || need+=(binutils)
if ((${#need[@]})); then
  echo "os/build.sh: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ -z "$bin" ]; then
  (cd "$src" && cargo build --release --locked --bin fiona) || die "cargo build failed"
  bin="$src/target/release/fiona"
fi
bin=$(readlink -f "$bin")
[ -x "$bin" ] || die "no fiona binary at $bin"
if [ -n "$keys" ]; then
  keys=$(readlink -f "$keys")
  n=$(find "$keys" -maxdepth 1 -name '*.pub' | wc -l)
  [ "$n" -ge 1 ] && [ "$n" -le 2 ] || die "--bundle-keys $keys: $n *.pub files (1 or 2 are trusted)"
fi
if [ -z "$epoch" ]; then
  epoch=$(git -C "$src" log -1 --format=%ct 2>/dev/null) || die "no --epoch and no git commit to take it from"
fi
[[ "$epoch" =~ ^[0-9]+$ ]] || die "--epoch must be seconds since 1970: $epoch"

mkdir -p "$out"
out=$(readlink -f "$out")
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The package cache is only read during the build; what the build installed comes out into
# $work/debs and is added to the cache afterwards, one file at a time by rename, so that two
# builds can share a cache (os/check-reproducible.sh runs two at once).
cache="${debs:-$work/cache}"
mkdir -p "$cache" "$work/debs"
cache=$(readlink -f "$cache")

suite=bookworm
mirror=http://deb.debian.org/debian
security=http://deb.debian.org/debian-security
packages=$(grep -v '^[[:space:]]*\(#\|$\)' "$here/packages" | paste -sd, -)

mapfile -t exclude < <(sed -n 's#^/#--dpkgopt=path-exclude=/#p' "$here/exclude")

# The binary without its debug information (a quarter of its size), which stays next to the
# image as fiona.debug for reading a backtrace; the link between them is a checksum.
cp "$bin" "$work/fiona"
objcopy --only-keep-debug "$work/fiona" "$work/fiona.debug"
(cd "$work" && objcopy --strip-debug --add-gnu-debuglink=fiona.debug fiona)

echo "os/build.sh: building the $suite root file system (SOURCE_DATE_EPOCH=$epoch)"
export SOURCE_DATE_EPOCH=$epoch FIONA_BIN=$work/fiona FIONA_KEYS=$keys FIONA_SRC=$src
# The .debs go through the cache (sync-in before, sync-out after), and the list of what was
# installed is read before the package database leaves with the chroot.
# merged-usr: mmdebstrap's own hook makes /bin, /lib, ... links into /usr (otherwise apt
# would satisfy init-system-helpers with usrmerge, which brings perl).
mmdebstrap --mode=root --variant=minbase --include="$packages" \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --aptopt='Acquire::Languages "none"' \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  "${exclude[@]}" \
  --skip=essential/unlink \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in $cache /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives $work/debs" \
  --customize-hook="chroot \"\$1\" dpkg-query -W -f='\${Package} \${Version} \${Architecture}\n' > $work/installed.txt" \
  --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/archives/partial/*' \
  --customize-hook="bash $here/customize.sh \"\$1\"" \
  "$suite" "$work/rootfs.tar" \
  "deb $mirror $suite main" \
  "deb $mirror $suite-updates main" \
  "deb $security $suite-security main" \
  >"$work/mmdebstrap.log" 2>&1 || {
  tail -30 "$work/mmdebstrap.log" >&2
  die "mmdebstrap failed (log above)"
}

# The package manifest: each installed package with the SHA-256 of the .deb it came from.
sort "$work/installed.txt" | while read -r name version arch; do
  deb=$(find "$work/debs" -maxdepth 1 -name "${name}_$(echo "$version" | sed 's/^[0-9]*://; s/:/%3a/g')_${arch}.deb" | head -1)
  [ -n "$deb" ] || deb=$(find "$work/debs" -maxdepth 1 -name "${name}_*_${arch}.deb" | head -1)
  sum=$([ -n "$deb" ] && sha256sum "$deb" | cut -d' ' -f1 || echo "-")
  echo "$name $version $arch $sum"
done >"$work/packages.txt"
for deb in "$work"/debs/*.deb; do
  name=$(basename "$deb")
  [ -e "$cache/$name" ] && continue
  cp "$deb" "$cache/.$name.$$"
  mv "$cache/.$name.$$" "$cache/$name"
done

commit=$(git -C "$src" rev-parse HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$src" status --porcelain 2>/dev/null | head -1)
{
  echo "suite: $suite"
  echo "mirrors: $mirror $suite $suite-updates; $security $suite-security"
  echo "source_date_epoch: $epoch"
  echo "commit: $commit${dirty:+ (with uncommitted changes)}"
  echo "fiona: $(sha256sum "$bin" | cut -d' ' -f1)"
  echo "bundle_keys: $(if [ -n "$keys" ]; then cat "$keys"/*.pub | sha256sum | cut -d' ' -f1; else echo none; fi)"
  echo "packages: $(wc -l <"$work/packages.txt") (packages.txt)"
  echo "mmdebstrap: $(mmdebstrap --version | cut -d' ' -f2)"
} >"$work/build-info.txt"

mv "$work/rootfs.tar" "$work/packages.txt" "$work/build-info.txt" "$work/fiona.debug" "$out/"
(cd "$out" && sha256sum rootfs.tar packages.txt build-info.txt fiona.debug >SHA256SUMS)
echo "os/build.sh: $out/rootfs.tar ($(du -h "$out/rootfs.tar" | cut -f1)), sha256 $(cut -d' ' -f1 "$out/SHA256SUMS" | head -1)"
