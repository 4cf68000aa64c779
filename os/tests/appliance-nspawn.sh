#!/usr/bin/env bash
# The appliance's root file system, built by its recipe and booted: what a box runs.
#   1. os/check-reproducible.sh builds the root file system twice (os/build.sh, with this
#      test's bundle key as the site's trusted key) and the two rootfs.tar have one SHA-256;
#      image/build.sh makes the disk image from it twice: one SHA-256, the expected layout;
#   2. what must (not) be in it: fiona and its units enabled, the trusted key, Tesseract's
#      English and Norwegian models, timesyncd, the journal's cap, the firewall; no SSH server,
#      no compiler, root locked, an empty machine ID, no first-boot prompt;
#   3. it boots under systemd-nspawn --boot with its own network (a veth pair on a test
#      network, 198.51.100.0/24, that routes nowhere): the firewall is loaded, fiona.service is
#      active, the boot's selftest says "not provisioned yet" (exit 2), no unit failed;
#   4. a signed bundle dropped into the inbox (what the USB import does on a box) is applied:
#      the daemon restarts in place on it, and the selftest is then green (exit 0);
#   5. storescu on the host stores an instance through the veth (C-STORE acknowledged, the
#      study is listed), the web port answers, and a port the firewall does not open (a
#      listener made for the test inside the container) cannot be reached from the host,
#      while it answers inside;
#   6. the journal is persistent (/var/log/journal) and the machine has its own machine ID.
#
# Needs root, mmdebstrap, systemd-nspawn, DCMTK, minisign, age, jq, iproute2, python3 (installed
# when missing) and the release binary. Keeps downloaded packages in
# ~/.cache/fiona-appliance/debs (FIONA_APPLIANCE_CACHE); the builds go to a temporary
# directory under it, removed at the end.
#
# Usage: os/tests/appliance-nspawn.sh [path/to/fiona]     (default target/release/fiona)
set -euo pipefail
cd "$(dirname "$0")/../.."

tag=appliance-nspawn
. os/tests/lib.sh

[ "$(id -u)" = 0 ] || fail "needs root (mmdebstrap, systemd-nspawn)"
bin=$(readlink -f "${1:-target/release/fiona}")
[ -x "$bin" ] || fail "no fiona binary at $bin: build it with cargo build --release"
install_missing systemd-nspawn:systemd-container mmdebstrap:mmdebstrap storescu:dcmtk \
  nsenter:util-linux minisign:minisign age:age jq:jq ip:iproute2 objcopy:binutils curl:curl \
  sfdisk:fdisk mkfs.fat:dosfstools mcopy:mtools mkfs.ext4:e2fsprogs

cache="${FIONA_APPLIANCE_CACHE:-${HOME:-/root}/.cache/fiona-appliance}"
mkdir -p "$cache"
run=$(mktemp -d "$cache/run.XXXXXX")
ct="fa$$"
host_if="vh$ct"
listener=""
cleanup() {
  local rc=$?
  [ -z "$listener" ] || kill "$listener" 2>/dev/null || true
  if [ "$rc" != 0 ] && [ -n "$leader" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    echo "--- journal of the container (fiona, selftest, failed units) ---" >&2
    in_ct systemctl --failed --no-legend --no-pager >&2 || true
    for u in $(in_ct systemctl --failed --no-legend --plain --no-pager | awk '{print $1}'); do
      in_ct journalctl -u "$u" --no-pager -o cat | tail -10 >&2 || true
    done
    in_ct journalctl -u fiona.service -u fiona-selftest.service --no-pager -o short-monotonic 2>&1 | tail -60 >&2 || true
  fi
  stop_container
  if [ "$rc" != 0 ] && [ -f "$run/console.log" ]; then
    echo "--- container console (last lines) ---" >&2
    tail -25 "$run/console.log" >&2
  fi
  ip link del "$host_if" 2>/dev/null || true
  rm -rf "$run"
  exit "$rc"
}
trap cleanup EXIT

# The site admin's signing key; its public half is the image's trusted bundle key.
keys="$run/keys"
mkdir -p "$keys/trusted"
minisign -G -W -f -p "$keys/trusted/admin.pub" -s "$keys/admin.key" </dev/null >/dev/null ||
  fail "minisign -G"

# 1. Two builds, one hash. The epoch is fixed so that the test does not depend on git.
say "building the root file system twice (os/check-reproducible.sh)"
started=$SECONDS
mkdir -p "$cache/debs"
ln -s "$cache/debs" "$run/debs"
out=$(bash os/check-reproducible.sh "$run" --fiona "$bin" --bundle-keys "$keys/trusted" \
  --epoch 1796600000 2>&1) || {
  echo "$out" | tail -60 >&2
  fail "the two builds differ or a build failed"
}
echo "$out" | grep -E '^(check-reproducible|reproducible|os/build.sh: /)' | sed 's/^/    /'
hash=$(sed -n 's/^reproducible: //p' <<<"$out")
[ -n "$hash" ] || fail "check-reproducible printed no hash"
say "two builds, one SHA-256 $hash ($((SECONDS - started)) s)"
rm -rf "$run/build2"
build="$run/build1"
(cd "$build" && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS does not match the build"
for p in systemd systemd-timesyncd nftables libtesseract5 tesseract-ocr-eng tesseract-ocr-nor linux-image-amd64; do
  grep -q "^$p " "$build/packages.txt" || fail "packages.txt does not list $p"
done

# 1b. The disk image from it (image/build.sh), twice: one SHA-256; GPT with the ESP (systemd-boot
# at the removable-media path, the loader entry naming root by PARTUUID, kernel and initrd)
# and the root partition, nothing behind them (the data partition is made at first boot).
# Booting it needs QEMU and takes minutes: image/qemu-boot.sh, recorded in docs/APPLIANCE.md.
started=$SECONDS
bash image/build.sh "$build" "$run/a.img" >"$run/image-a.log" 2>&1 || { tail -20 "$run/image-a.log" >&2; fail "image/build.sh failed"; }
bash image/build.sh "$build" "$run/b.img" >"$run/image-b.log" 2>&1 || { tail -20 "$run/image-b.log" >&2; fail "image/build.sh failed (second build)"; }
ia=$(cut -d' ' -f1 "$run/a.img.sha256")
ib=$(cut -d' ' -f1 "$run/b.img.sha256")
[ "$ia" = "$ib" ] || fail "two disk images from one rootfs differ: $ia vs $ib"
table=$(sfdisk -d "$run/a.img")
parts=$(grep -c '^[^:]* : start=' <<<"$table")
esp_start=$(grep -i 'type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B' <<<"$table" | sed 's/.*start= *\([0-9]*\),.*/\1/')
root_line=$(grep -i 'type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709' <<<"$table" || true)
[ "$parts" = 2 ] && [ -n "$esp_start" ] && [ -n "$root_line" ] ||
  fail "the image's partition table is not ESP + x86-64 root only: $table"
root_uuid=$(sed 's/.*uuid= *\([0-9A-Fa-f-]*\).*/\1/' <<<"$root_line")
esp="$run/a.img@@$((esp_start * 512))"
mdir -i "$esp" ::/EFI/BOOT/BOOTX64.EFI >/dev/null 2>&1 || fail "no EFI/BOOT/BOOTX64.EFI on the ESP"
entry=$(mtype -i "$esp" ::/loader/entries/fiona.conf 2>/dev/null) || fail "no loader/entries/fiona.conf on the ESP"
grep -qi "root=PARTUUID=$root_uuid" <<<"$entry" || fail "the loader entry does not name the root partition ($root_uuid): $entry"
for f in $(sed -n 's/^\(linux\|initrd\) *//p' <<<"$entry"); do
  mdir -i "$esp" "::$f" >/dev/null 2>&1 || fail "the loader entry names $f, which is not on the ESP"
done
say "disk image: two builds, one SHA-256 $ia ($(du -h --apparent-size "$run/a.img" | cut -f1), $((SECONDS - started)) s); ESP with systemd-boot and the entry, root by PARTUUID"
rm -f "$run"/a.img* "$run"/b.img*

# 2. What is in the root file system, and what is not.
root="$run/root"
mkdir -p "$root"
tar -xf "$build/rootfs.tar" -C "$root"
chroot "$root" /usr/bin/fiona --version >/dev/null || fail "fiona does not run in the root file system"
cmp -s "$keys/trusted/admin.pub" "$root/etc/fiona/bundle-keys/admin.pub" || fail "the trusted key is not in /etc/fiona/bundle-keys"
for u in fiona.service fiona-selftest.service nftables.service systemd-timesyncd.service systemd-networkd.service; do
  [ "$(systemctl --root="$root" is-enabled "$u" 2>/dev/null)" = enabled ] || fail "$u is not enabled"
done
[ "$(systemctl --root="$root" is-enabled systemd-firstboot.service 2>/dev/null)" = masked ] ||
  fail "systemd-firstboot.service is not masked: the first boot could ask questions"
for t in eng nor; do
  [ -s "$root/usr/share/tesseract-ocr/5/tessdata/$t.traineddata" ] || fail "no Tesseract model $t"
done
grep -q '^SystemMaxUse=' "$root/etc/systemd/journald.conf.d/fiona.conf" || fail "the journal has no size cap"
grep -q '^Storage=persistent' "$root/etc/systemd/journald.conf.d/fiona.conf" || fail "the journal is not persistent"
[ -z "$(find "$root/usr/sbin" "$root/usr/bin" -name 'sshd' -o -name 'dropbear' -o -name 'gcc*' -o -name 'cc' -o -name 'rustc' | head -1)" ] ||
  fail "an SSH server or a compiler is in the image"
grep -qE '^root:[!*]' "$root/etc/shadow" || fail "root is not locked: $(grep '^root:' "$root/etc/shadow" | cut -d: -f2 | cut -c1-3)..."
[ ! -s "$root/etc/machine-id" ] || fail "the image carries a machine ID ($(cat "$root/etc/machine-id"))"
[ "$(readlink "$root/etc/localtime")" = /usr/share/zoneinfo/Etc/UTC ] || fail "no time zone set"
[ -s "$root/etc/locale.conf" ] || fail "no locale set"
say "contents: fiona, its units, the trusted key, eng+nor models, journal cap, firewall; no SSH, no compiler, root locked, no machine ID"

# 3. Boot, with its own network namespace: a veth pair on 198.51.100.0/24 (TEST-NET-2).
if ip -o addr | grep -q ' 198\.51\.100\.'; then
  fail "this machine already has an address in 198.51.100.0/24, the test's network"
fi
say "booting the container"
booted=$SECONDS
start_container "$ct" "$root" "$run/console.log" --network-veth-extra="$host_if:ft0"
in_net() { nsenter --target "$leader" --net -- "$@"; }
ip addr add 198.51.100.1/24 dev "$host_if"
ip link set "$host_if" up
in_net ip addr add 198.51.100.2/24 dev ft0
in_net ip link set ft0 up
box=198.51.100.2

# The boot is over when systemd says running (or degraded: then the failed units are named).
state=""
for _ in $(seq 1 240); do
  state=$(in_ct systemctl is-system-running 2>/dev/null || true)
  case "$state" in running | degraded) break ;; esac
  sleep 0.5
done
case "$state" in running | degraded) ;; *) fail "the boot did not finish in 120 s (system state '$state')" ;; esac
failed=$(in_ct systemctl --failed --no-legend --plain --no-pager | awk '{print $1}' | paste -sd' ' -)
[ -z "$failed" ] || fail "units failed at boot: $failed"
[ "$(in_ct systemctl is-active fiona.service)" = active ] || fail "fiona.service is not active"
# The selftest unit ran at boot, after fiona: not provisioned yet, so warnings only (exit 2).
for _ in $(seq 1 120); do
  [ "$(in_ct systemctl show -p ActiveState --value fiona-selftest.service)" != activating ] && break
  sleep 0.5
done
code=$(in_ct systemctl show -p ExecMainStatus --value fiona-selftest.service)
result=$(in_ct systemctl show -p Result --value fiona-selftest.service)
[ "$result" = success ] && [ "$code" = 2 ] ||
  fail "the boot's selftest: result $result, exit status $code (expected success with warnings, 2)"
say "booted in $((SECONDS - booted)) s (system $state); fiona.service active; the boot's selftest: warnings (exit 2), not provisioned"
rules=$(in_net nft list ruleset)
grep -q 'table inet fiona' <<<"$rules" && grep -q 'policy drop' <<<"$rules" || fail "the firewall is not loaded: $rules"

# 4. The first bundle, signed by the site's key, through the inbox.
recipient=$(in_ct runuser -u fiona -- fiona bundle box-key --data-dir /var/lib/fiona 2>/dev/null) ||
  fail "fiona bundle box-key"
[[ "$recipient" == age1* ]] || fail "the box's recipient: '$recipient'"
b="$run/bundle"
mkdir -p "$b"
# The web page on the network, with the first administrator's account (no login on the box
# to read a set-up link from: on an appliance, accounts come with the bundle).
hash=$(echo appliance-test-password | "$bin" user hash) || fail "fiona user hash"
cat >"$b/fiona.toml" <<EOF
ae_title = "FIONA"
[web]
listen = "0.0.0.0:8443"
[[web.accounts]]
name = "siteadmin"
password_hash = "$hash"
admin = true
[projects.APPLIANCE]
participant_pattern = "APPL-[0-9]{4}"
events = ["baseline"]
approval_start = "2025-01-01"
approval_end = "2099-12-31"
EOF
printf '[projects.APPLIANCE.deid]\nsecret = "%s"\n' "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" |
  age -r "$recipient" -o "$b/secrets.toml.age" || fail "age -r"
"$bin" bundle manifest "$b" --id appliance-1 --serial 1 --target any >/dev/null || fail "fiona bundle manifest"
minisign -S -s "$keys/admin.key" -m "$b/manifest.json" </dev/null >/dev/null || fail "minisign -S"
"$bin" bundle pack "$b" -o "$run/appliance-1.tar" >/dev/null || fail "fiona bundle pack"
pid=$(in_ct systemctl show -p MainPID --value fiona.service)
inbox="$root/var/lib/fiona/inbox"
uid=$(in_ct id -u fiona)
# As the USB import does: written beside, then renamed into the inbox, owned by fiona.
install -m 0600 -o "$uid" -g "$uid" "$run/appliance-1.tar" "$inbox/.appliance-1.tar.part"
mv "$inbox/.appliance-1.tar.part" "$inbox/appliance-1.tar"
applied=$SECONDS
result_file="$inbox/appliance-1.tar.result"
for _ in $(seq 1 120); do
  [ -s "$result_file" ] && break
  sleep 0.5
done
[ -s "$result_file" ] || fail "no result for the bundle in the inbox after 60 s"
sed 's/^/    /' "$result_file"
grep -q '^accepted: bundle appliance-1 serial 1 ' "$result_file" || fail "the bundle was not accepted: $(cat "$result_file")"
# Accepted means verified and switched to; the daemon restarts on it, runs its trial selftest
# and keeps it (applied) or rolls back.
status=""
for _ in $(seq 1 240); do
  status=$(in_ct fiona --data-dir /var/lib/fiona --json bundle status 2>/dev/null || true)
  r=$(jq -r '.last_attempt.result // empty' <<<"$status" 2>/dev/null || true)
  [ "$r" = applied ] || [ "$r" = rolled_back ] && break
  sleep 0.5
done
jq -e '.current.serial == 1 and .last_attempt.result == "applied"' <<<"$status" >/dev/null ||
  fail "bundle serial 1 is not applied: $status"
say "bundle serial 1 applied from the inbox in $((SECONDS - applied)) s; the daemon restarted in place"

# ... and the selftest is green.
in_ct systemctl start fiona-selftest.service || true
code=$(in_ct systemctl show -p ExecMainStatus --value fiona-selftest.service)
in_ct journalctl -u fiona-selftest.service --no-pager -o cat | tail -20 | sed 's/^/    /'
[ "$code" = 0 ] || fail "the selftest after the bundle exited $code, not 0 (green)"
say "selftest green (exit 0)"

# 5. DICOM from the host through the veth; the web port; a port the firewall closes.
write_ct_instance "$run" 7719 "Appliance^Test" APPLIANCE1
storescu -aet APPLSCU -aec FIONA "$box" 11112 "$run/ct.dcm" || fail "C-STORE from the host to $box:11112 refused"
studies=$(in_ct fiona --data-dir /var/lib/fiona --json studies) || fail "fiona studies"
jq -e 'any(.[]; .calling_ae == "APPLSCU" and .instances == 1)' <<<"$studies" >/dev/null ||
  fail "the stored study is not listed: $studies"
say "C-STORE from the host to $box:11112 acknowledged and listed"
# The web page from the host: the start page sends to the login page, which is served.
code=$(curl -sk --max-time 10 -o /dev/null -w '%{http_code} %{redirect_url}' "https://$box:8443/" || true)
[[ "$code" == 30[23]*/login ]] || fail "https://$box:8443/ answers '$code', not a redirect to the login page"
code=$(curl -sk --max-time 10 -o "$run/login.html" -w '%{http_code}' "https://$box:8443/login" || true)
[ "$code" = 200 ] && grep -qi '<form' "$run/login.html" || fail "https://$box:8443/login answers $code without a form"
say "the web page answers on $box:8443 (/ sends to the login page, HTTP 200)"
# A listener the firewall does not open: it answers inside the box, not from the host.
# nsenter itself (not the in_net function, whose background subshell would be what $!
# names) so that it can be killed; it ends by itself after a minute anyway, and holds none of
# this script's output (a caller waiting for the end of that output would wait for it).
nsenter --target "$leader" --net -- python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9999)); s.listen(5); s.settimeout(60)
while True:
    c, _ = s.accept(); c.sendall(b"open\n"); c.close()
' </dev/null >/dev/null 2>&1 &
listener=$!
for _ in $(seq 1 50); do
  in_net bash -c 'exec 3<>/dev/tcp/127.0.0.1/9999' 2>/dev/null && break
  sleep 0.1
done
inside=$(in_net timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/9999; cat <&3' 2>/dev/null || true)
outside=$(timeout 5 bash -c "exec 3<>/dev/tcp/$box/9999; cat <&3" 2>/dev/null || true)
kill "$listener" 2>/dev/null || true
[ "$inside" = open ] || fail "the test listener on port 9999 does not answer inside the box"
[ -z "$outside" ] || fail "port 9999 is reachable from the host: the firewall does not close it"
say "port 9999: answers inside the box, closed to the host (firewall)"

# 6. A persistent journal under the machine's own ID.
id=$(in_ct cat /etc/machine-id)
[[ "$id" =~ ^[0-9a-f]{32}$ ]] || fail "no machine ID after boot: '$id'"
[ -d "$root/var/log/journal/$id" ] || fail "no persistent journal in /var/log/journal/$id"
say "machine ID made at first boot; journal persistent in /var/log/journal"

say "PASS"
