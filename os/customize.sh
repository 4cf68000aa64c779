#!/usr/bin/env bash
# The fiona-specific part of the appliance's root file system, run by os/build.sh as
# mmdebstrap's customize hook: "$1" is the new root, the packages are installed, nothing runs
# inside it yet. Everything here must give the same bytes for the same inputs (os/build.sh
# sets SOURCE_DATE_EPOCH), so nothing reads the clock, the host name or random numbers.
#
# Inputs (environment, set by os/build.sh): FIONA_BIN (the release binary), FIONA_KEYS (a
# directory of trusted minisign public keys, *.pub, or empty), FIONA_SRC (the repository).
set -euo pipefail
root=$1
src=$FIONA_SRC

# fiona, its units and its system user (the user is made here, so that its ID is fixed in the
# image rather than picked at first boot).
install -m 0755 "$FIONA_BIN" "$root/usr/bin/fiona"
install -m 0644 "$src/os/systemd/fiona.service" "$src/os/systemd/fiona-selftest.service" \
  "$root/usr/lib/systemd/system/"
install -D -m 0644 "$src/os/systemd/sysusers.d/fiona.conf" "$root/usr/lib/sysusers.d/fiona.conf"
chroot "$root" systemd-sysusers
missing=$(chroot "$root" ldd /usr/bin/fiona | grep 'not found' || true)
if [ -n "$missing" ]; then
  echo "customize: the root file system lacks libraries of fiona: $missing" >&2
  exit 1
fi

# The appliance's own configuration files (firewall, journal, network, issue, locale).
cp -a --no-preserve=ownership "$src/os/rootfs/." "$root/"
# The files under os/rootfs/ come from a git checkout: their modes follow the umask of
# whoever checked out. Fix them: directories and executables 0755, other files 0644, owned by
# root; symbolic links as they are.
(cd "$src/os/rootfs" && find . -mindepth 1 ! -type l) | sort | while read -r p; do
  if [ -d "$root/$p" ] || [ -x "$src/os/rootfs/$p" ]; then chmod 0755 "$root/$p"; else chmod 0644 "$root/$p"; fi
  chown -h root:root "$root/$p"
done

# Trusted bundle keys: readable by fiona, writable by root only.
install -d -m 0755 "$root/etc/fiona/bundle-keys"
if [ -n "${FIONA_KEYS:-}" ]; then
  for k in "$FIONA_KEYS"/*.pub; do
    [ -e "$k" ] || continue
    install -m 0644 "$k" "$root/etc/fiona/bundle-keys/"
  done
fi

# Units: fiona and its selftest, the firewall, the network; no interactive first boot.
systemctl --root="$root" --quiet enable fiona.service fiona-selftest.service nftables.service \
  systemd-networkd.service systemd-resolved.service systemd-timesyncd.service
# ... and every unit os/rootfs/ ships that says where it belongs ([Install]).
for u in "$src"/os/rootfs/usr/lib/systemd/system/*; do
  [ -f "$u" ] && grep -q '^\[Install\]' "$u" || continue
  systemctl --root="$root" --quiet enable "$(basename "$u")"
done
systemctl --root="$root" --quiet mask systemd-firstboot.service
# The selftest's verdict on the console too, for whoever plugs in a screen.
install -d -m 0755 "$root/etc/systemd/system/fiona-selftest.service.d"
cat >"$root/etc/systemd/system/fiona-selftest.service.d/console.conf" <<'CONF'
# fiona appliance: the selftest's report also on the console (no patient data in it).
[Service]
StandardOutput=journal+console
CONF

# No login at all: root locked (no password, no key); there is no SSH server.
chroot "$root" usermod --lock root
# Locale, time zone, machine ID: nothing left for a first-boot prompt.
ln -sfn /usr/share/zoneinfo/Etc/UTC "$root/etc/localtime"
echo "Etc/UTC" >"$root/etc/timezone"
# "uninitialized": systemd makes the machine ID at first boot and commits it once the root
# file system is writable; every box gets its own, no two images differ.
echo uninitialized >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
# systemd-resolved's stub resolver for every program (the package links it only when it
# is installed on a running system).
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
hostname=fiona
echo "$hostname" >"$root/etc/hostname"

# What must not be there: an SSH server, compilers.
for p in openssh-server dropbear gcc cpp g++ clang rustc make; do
  if chroot "$root" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    echo "customize: package $p must not be in the appliance" >&2
    exit 1
  fi
done

# Left-overs of the build that differ from run to run.
rm -f "$root"/var/log/dpkg.log "$root"/var/log/alternatives.log "$root"/var/log/apt/*.log \
  "$root"/var/log/apt/eipp.log.xz "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
  "$root"/etc/*- "$root"/var/cache/ldconfig/aux-cache
