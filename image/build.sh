#!/usr/bin/env bash
# Make the fiona appliance's bootable disk image (UEFI, GPT) from os/build.sh's output.
#
#   bash image/build.sh ROOTFS_OUT_DIR IMAGE [--root-size MIB]
#
# ROOTFS_OUT_DIR is what `bash os/build.sh OUT ...` wrote (rootfs.tar, build-info.txt).
# IMAGE receives the raw disk image (sparse), IMAGE.sha256 its SHA-256 (sha256sum format)
# and IMAGE.layout what is where. --root-size (MiB, default 3072) changes the layout: an image
# with another root size cannot update a box made with this one (image/update.sh refuses).
#
# The disk:
#   1  ESP   256 MiB  vfat: systemd-boot as EFI/BOOT/BOOTX64.EFI (the removable-media path,
#                     so no firmware boot entry is needed), loader/entries/fiona.conf, the
#                     kernel and initrd from the rootfs under fiona/
#   2  root  3 GiB    ext4, the rootfs; type "Linux root (x86-64)", found by the kernel
#                     through root=PARTUUID=
# and free space only behind them: the data partition (/var/lib/fiona) is not in the image.
# systemd-repart makes it at first boot in whatever room the disk has
# (os/rootfs/usr/lib/repart.d/50-fiona-data.conf), so write the image to a disk of at least
# its size plus 1 GiB (more is better: that is where the quarantine lives).
#
# Root is mounted read-write: the journal is kept on it (os/rootfs/etc/systemd/journald.conf.d)
# as are the machine ID, timesyncd's clock file and the random seed, and Debian's units expect
# a writable /var and /tmp. Nothing on it outlives an image update (image/update.sh rewrites
# the partition), and fiona's units see it read-only anyway (ProtectSystem=strict). The ESP
# is never mounted on the box.
#
# Partition sizes and partition UUIDs are the same for every build: image/update.sh writes a
# new image's partitions over a box's and needs them to fit, and the kernel command line
# names root by its PARTUUID. File system UUIDs, the ext4 hash seed and the FAT volume ID are
# derived from the rootfs's SHA-256, all times from SOURCE_DATE_EPOCH (build-info.txt): the
# same rootfs.tar gives the same image, byte for byte (image/check-reproducible.sh).
#
# Needs root (the rootfs is unpacked with its owners), e2fsprogs, dosfstools, mtools, fdisk;
# no loop device and no mount.
set -euo pipefail

die() {
  echo "image/build.sh: $*" >&2
  exit 1
}
say() { echo "image/build.sh: $*"; }

[ $# -ge 2 ] || die "usage: bash image/build.sh ROOTFS_OUT_DIR IMAGE [--root-size MIB]"
in=$1 image=$2
shift 2
root_mib=3072
while [ $# -gt 0 ]; do
  case "$1" in
  --root-size) root_mib=$2; shift 2 ;;
  *) die "unknown option $1" ;;
  esac
done
[[ "$root_mib" =~ ^[0-9]+$ ]] && [ "$root_mib" -ge 512 ] || die "--root-size: MiB, at least 512"
[ "$(id -u)" = 0 ] || die "needs root (the rootfs is unpacked with its owners and modes)"
[ -f "$in/rootfs.tar" ] || die "no $in/rootfs.tar: run bash os/build.sh $in first"
[ -f "$in/build-info.txt" ] || die "no $in/build-info.txt"
if [ -f "$in/SHA256SUMS" ]; then
  (cd "$in" && sha256sum --quiet -c SHA256SUMS) || die "$in does not match its SHA256SUMS (a damaged or changed rootfs)"
fi
epoch=$(sed -n 's/^source_date_epoch: *\([0-9]\+\)$/\1/p' "$in/build-info.txt")
[ -n "$epoch" ] || die "$in/build-info.txt names no source_date_epoch"

need=()
command -v mkfs.ext4 >/dev/null 2>&1 && command -v debugfs >/dev/null 2>&1 || need+=(e2fsprogs)
command -v mkfs.fat >/dev/null 2>&1 || need+=(dosfstools)
command -v mcopy >/dev/null 2>&1 || need+=(mtools)
command -v sfdisk >/dev/null 2>&1 || need+=(fdisk)
if ((${#need[@]})); then
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The layout. The GUIDs are constants, chosen once for fiona: every image has the same ones
# (an update keeps the disk's partition table, and the kernel command line names root by
# PARTUUID). Partition types: the EFI system partition and "Linux root (x86-64)" of the
# Discoverable Partitions Specification (so systemd-repart never takes root for the data
# partition, which is "Linux filesystem").
disk_guid=6f1a3d52-0c4e-4b8e-9a51-7e3f2c1b0d19
esp_uuid=6f1a3d52-0c4e-4b8e-9a51-7e3f2c1b0e51
root_uuid=6f1a3d52-0c4e-4b8e-9a51-7e3f2c1b0f72
esp_type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
root_type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709
mib=$((1024 * 1024))
esp_start_mib=1 esp_mib=256
root_start_mib=$((esp_start_mib + esp_mib))
# One MiB at the end for the backup GPT (33 sectors; the rest keeps the end aligned).
disk_mib=$((root_start_mib + root_mib + 1))

mkdir -p "$(dirname "$image")"
image=$(readlink -f "$image")
work=$(mktemp -d "$(dirname "$image")/.image-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=$epoch E2FSPROGS_FAKE_TIME=$epoch TZ=UTC LC_ALL=C
started=$SECONDS

# Identifiers derived from the rootfs: the same input, the same image; another rootfs,
# other file systems (nothing on the box names them: root is found by PARTUUID).
rootfs_sum=$(sha256sum "$in/rootfs.tar" | cut -d' ' -f1)
derive() { # derive LABEL -> a UUID (version 4 and variant bits set) from the rootfs and LABEL
  local h
  h=$(printf '%s %s' "$rootfs_sum" "$1" | sha256sum | cut -c1-32)
  printf '%s-%s-4%s-%x%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" $(((0x${h:16:1} & 3) | 8)) "${h:17:3}" "${h:20:12}"
}
fs_uuid=$(derive root-fs)
hash_seed=$(derive root-hash-seed)
fat_id=$(derive esp-volume | tr -d - | cut -c1-8)

# The rootfs, unpacked with owners, modes, extended attributes (file capabilities).
say "unpacking $in/rootfs.tar"
root=$work/root
mkdir "$root"
tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$in/rootfs.tar" -C "$root"
kver=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sed 's/^vmlinuz-//' | sort -V | tail -1)
[ -n "$kver" ] || die "no kernel (/boot/vmlinuz-*) in the rootfs: is linux-image-amd64 in os/packages?"
[ -f "$root/boot/initrd.img-$kver" ] || die "no /boot/initrd.img-$kver in the rootfs (initramfs-tools)"
sdboot=$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi
[ -f "$sdboot" ] || die "no $sdboot in the rootfs (systemd-boot-efi)"

# The ESP, made from files alone (mkfs.fat on an image file, mtools to fill it). Every
# file's time is the epoch (mcopy -m keeps the source's; mtools dates the directories it
# makes from SOURCE_DATE_EPOCH).
say "ESP: systemd-boot, kernel $kver"
esp=$work/esp
mkdir -p "$esp/EFI/BOOT" "$esp/EFI/systemd" "$esp/loader/entries" "$esp/fiona"
cp "$sdboot" "$esp/EFI/BOOT/BOOTX64.EFI"
cp "$sdboot" "$esp/EFI/systemd/systemd-bootx64.efi"
cp "$root/boot/vmlinuz-$kver" "$esp/fiona/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$esp/fiona/initrd.img"
# No menu (timeout 0: a key held at power-on shows it) and no editor: the command line
# cannot be changed at the console (init=/bin/sh would be a root shell on a box with none).
cat >"$esp/loader/loader.conf" <<EOF
default fiona.conf
timeout 0
editor no
console-mode keep
EOF
# rw: see the header. The serial console last, so it is /dev/console: systemd's boot status
# and the selftest's verdict go there; the kernel's messages go to the screen too.
cat >"$esp/loader/entries/fiona.conf" <<EOF
title fiona appliance
version $kver
linux /fiona/vmlinuz
initrd /fiona/initrd.img
options root=PARTUUID=$root_uuid rw rootwait console=tty0 console=ttyS0,115200 panic=30
EOF
find "$esp" -exec touch -h -d "@$epoch" {} +
mkfs.fat -F 32 -S 512 -s 1 --invariant -i "$fat_id" -n FIONA-ESP -C "$work/esp.img" $((esp_mib * 1024)) >/dev/null
# Sorted, one level at a time, so the directory entries are in the same order every time.
(cd "$esp" && find . -mindepth 1 -type d | sort) | while read -r d; do
  mmd -i "$work/esp.img" "::${d#./}"
done
(cd "$esp" && find . -type f | sort) | while read -r f; do
  mcopy -m -i "$work/esp.img" "$esp/${f#./}" "::${f#./}"
done
used=$(du -sm "$esp" | cut -f1)
[ "$used" -lt $((esp_mib - 16)) ] || die "the ESP's files take $used MiB of $esp_mib"

# The root file system: ext4 made from the unpacked tree (mkfs.ext4 -d), of the partition's
# whole size. mkfs takes each inode's times from the tree, and unpacking set their change
# times to now: debugfs sets access and change times to the epoch afterwards (modification
# times are the tar's, already clamped to the epoch by os/build.sh).
say "root: ext4, $root_mib MiB"
mkfs.ext4 -q -F -L fiona-root -U "$fs_uuid" -b 4096 -I 256 -m 1 \
  -E "hash_seed=$hash_seed,nodiscard,lazy_itable_init=0,lazy_journal_init=0" \
  -d "$root" "$work/root.img" $((root_mib * 1024))k
(cd "$root" && find . -mindepth 1 | sort) >"$work/paths"
if grep -q '["[:cntrl:]]' "$work/paths"; then
  die "a path in the rootfs has a double quote or a control character (debugfs cannot name it): $(grep '["[:cntrl:]]' "$work/paths" | head -1)"
fi
{
  echo "sif / atime @$epoch"
  echo "sif / ctime @$epoch"
  sed 's#^\.\(.*\)$#sif "\1" atime @'"$epoch"'\nsif "\1" ctime @'"$epoch"'#' "$work/paths"
} >"$work/debugfs.cmds"
debugfs -w -f "$work/debugfs.cmds" "$work/root.img" >"$work/debugfs.log" 2>&1 ||
  die "debugfs failed: $(tail -3 "$work/debugfs.log")"
if grep -v '^debugfs' "$work/debugfs.log" | grep -q .; then
  die "debugfs: $(grep -v '^debugfs' "$work/debugfs.log" | head -3)"
fi
e2fsck -fn "$work/root.img" >"$work/fsck.log" 2>&1 || die "e2fsck: $(tail -5 "$work/fsck.log")"

# The disk: GPT by sfdisk, then each file system written at its offset (sparse: the holes
# stay holes, the image takes on disk what its files hold).
say "disk: $disk_mib MiB, GPT"
rm -f "$work/disk.img"
truncate -s $((disk_mib * mib)) "$work/disk.img"
sfdisk --quiet --no-reread --no-tell-kernel "$work/disk.img" <<EOF
label: gpt
label-id: $disk_guid
unit: sectors
first-lba: 2048
sector-size: 512

start=$((esp_start_mib * 2048)), size=$((esp_mib * 2048)), type=$esp_type, uuid=$esp_uuid, name="esp"
start=$((root_start_mib * 2048)), size=$((root_mib * 2048)), type=$root_type, uuid=$root_uuid, name="fiona-root"
EOF
dd if="$work/esp.img" of="$work/disk.img" bs=1M seek=$esp_start_mib conv=notrunc,sparse status=none
dd if="$work/root.img" of="$work/disk.img" bs=1M seek=$root_start_mib conv=notrunc,sparse status=none

cat >"$work/layout" <<EOF
fiona disk image (image/build.sh)
rootfs: sha256 $rootfs_sum, source_date_epoch $epoch
kernel: $kver
disk: $disk_mib MiB, GPT, disk GUID $disk_guid
1 esp: start $esp_start_mib MiB, $esp_mib MiB, PARTUUID $esp_uuid, vfat ID $fat_id
2 fiona-root: start $root_start_mib MiB, $root_mib MiB, PARTUUID $root_uuid, ext4 UUID $fs_uuid
data: none in the image; systemd-repart adds fiona-data behind root at first boot
kernel command line: $(sed -n 's/^options //p' "$esp/loader/entries/fiona.conf")
EOF
mv "$work/disk.img" "$image"
mv "$work/layout" "$image.layout"
sum=$(sha256sum "$image" | cut -d' ' -f1)
echo "$sum  $(basename "$image")" >"$image.sha256"
say "$image: $(du -h --apparent-size "$image" | cut -f1) ($(du -h "$image" | cut -f1) allocated), sha256 $sum, in $((SECONDS - started)) s"
