#!/usr/bin/env bash
# Update a fiona box's disk to a new image and keep its data.
#
#   bash image/update.sh DISK NEW_IMAGE
#
# DISK is the box's disk (a block device such as /dev/sdb, taken out of the box or with the
# box booted from something else; or a disk image file). NEW_IMAGE is what image/build.sh
# made (NEW_IMAGE.sha256 beside it is checked when present).
#
# It writes the new image's ESP and root partitions over the disk's and nothing else: the
# partition table stays (so the data partition that systemd-repart added at first boot, with
# /var/lib/fiona, stays where it is, untouched). It refuses when the two partitions differ in
# place, size, type or PARTUUID between the disk and the new image (image/build.sh keeps them
# the same for every build), when a partition of DISK is mounted, and when the written bytes
# do not read back equal.
#
# Root is written before the ESP, so the firmware only loads the new kernel once the root
# with its modules is complete. There is one copy of each: if this is interrupted, run it
# again before booting the box (the data partition is not at risk either way).
# What the box wrote on its root partition (journal, machine ID) is replaced: the box gets a
# new machine ID; its fiona identity, key, configuration and data live on the data partition.
set -euo pipefail

die() {
  echo "image/update.sh: $*" >&2
  exit 1
}
say() { echo "image/update.sh: $*"; }

[ $# -eq 2 ] || die "usage: bash image/update.sh DISK NEW_IMAGE"
disk=$1 new=$2
[ -f "$new" ] || die "no image $new"
[ -e "$disk" ] || die "no disk $disk"
[ -b "$disk" ] || [ -f "$disk" ] || die "$disk is neither a block device nor a file"
[ -w "$disk" ] || die "$disk is not writable (root?)"
command -v sfdisk >/dev/null 2>&1 || die "needs sfdisk (Debian package fdisk)"

if [ -f "$new.sha256" ]; then
  want=$(cut -d' ' -f1 "$new.sha256")
  have=$(sha256sum "$new" | cut -d' ' -f1)
  [ "$want" = "$have" ] || die "$new does not match $new.sha256 (a damaged copy?)"
  say "$new matches $new.sha256"
fi

if [ -b "$disk" ]; then
  disk=$(readlink -f "$disk")
  mounted=$(lsblk -nro MOUNTPOINTS "$disk" 2>/dev/null | grep -v '^$' || true)
  [ -z "$mounted" ] || die "$disk has mounted partitions ($mounted): unmount them (or boot the box from something else)"
fi

# Partition N of a disk or image as "start size type uuid" (sectors of 512 bytes).
part() {
  sfdisk -d "$1" 2>/dev/null | awk -v n="$2" '
    /^[^:]+ : start=/ {
      i++; if (i != n) next
      s = $0; start = size = type = uuid = ""
      if (match(s, /start= *[0-9]+/)) start = substr(s, RSTART, RLENGTH)
      if (match(s, /size= *[0-9]+/)) size = substr(s, RSTART, RLENGTH)
      if (match(s, /type=[0-9A-Fa-f-]+/)) type = substr(s, RSTART, RLENGTH)
      if (match(s, /uuid=[0-9A-Fa-f-]+/)) uuid = substr(s, RSTART, RLENGTH)
      gsub(/[a-z]+= */, "", start); gsub(/[a-z]+= */, "", size)
      gsub(/[a-z]+=/, "", type); gsub(/[a-z]+=/, "", uuid)
      print start, size, toupper(type), toupper(uuid)
    }'
}
[ "$(sfdisk -d "$new" 2>/dev/null | sed -n 's/^label: *//p')" = gpt ] || die "$new has no GPT: not a fiona image"
[ "$(sfdisk -d "$disk" 2>/dev/null | sed -n 's/^label: *//p')" = gpt ] || die "$disk has no GPT: not a fiona disk"
declare -A name=([1]=ESP [2]=root)
for n in 1 2; do
  a=$(part "$disk" $n) b=$(part "$new" $n)
  [ -n "$b" ] || die "$new has no partition $n"
  [ -n "$a" ] || die "$disk has no partition $n"
  [ "$a" = "$b" ] || die "the ${name[$n]} partitions differ (disk: $a; new image: $b; start size type PARTUUID): not the same layout, refusing"
done
[ "$(part "$new" 3)" = "" ] || die "$new has a third partition: not an image from image/build.sh"
data=$(part "$disk" 3)
if [ -n "$data" ]; then
  say "data partition (3) at sector ${data%% *}: left as it is"
else
  say "no data partition on $disk yet (the box has not booted): nothing to keep"
fi

# Each partition byte for byte (no sparse writing: a hole in the image must become zeros on
# the disk, over whatever the old file system had there), flushed, then read back.
sum_of() { # FILE START SIZE (sectors) -> sha256 of that range
  dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip=$(($2 * 512)) count=$(($3 * 512)) status=none | sha256sum | cut -d' ' -f1
}
for n in 2 1; do
  read -r start size _ <<<"$(part "$new" $n)"
  say "writing the ${name[$n]} partition ($((size / 2048)) MiB)"
  dd if="$new" of="$disk" bs=1M iflag=skip_bytes,count_bytes oflag=seek_bytes \
    skip=$((start * 512)) seek=$((start * 512)) count=$((size * 512)) conv=notrunc,fsync status=none ||
    die "writing the ${name[$n]} partition failed: run this again before booting the box"
done
sync
[ -b "$disk" ] && blockdev --flushbufs "$disk" 2>/dev/null || true
for n in 2 1; do
  read -r start size _ <<<"$(part "$new" $n)"
  [ "$(sum_of "$disk" "$start" "$size")" = "$(sum_of "$new" "$start" "$size")" ] ||
    die "the ${name[$n]} partition does not read back as written: run this again before booting the box"
done
say "$disk: ESP and root now from $(basename "$new"); data partition untouched"
