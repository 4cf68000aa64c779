#!/usr/bin/env bash
# Boot the fiona disk image in QEMU (UEFI, TCG: no KVM needed) the way a box lives:
#
#   1. build: a minisign key pair (the admin's), the rootfs trusting its public key
#      (os/build.sh --bundle-keys), the disk image (image/build.sh); the disk grown to 8 GiB
#      so systemd-repart has room for the data partition;
#   2. first boot: firmware -> kernel -> fiona ready -> the boot selftest on the console;
#   3. a stick labelled FIONA (vfat, made with mtools, no mounting) plugged in, empty: the box
#      writes fiona-box.txt on it (its age recipient); with that recipient, the admin's
#      bundle (as os/tests/nspawn-unit.sh makes it: fiona.toml with the web on 0.0.0.0:8443
#      and a project, its secret encrypted with age, `fiona bundle manifest`, minisign,
#      `fiona bundle pack`) goes on the stick, which is plugged in again: the box imports
#      it, applies it and runs the selftest again: green on the console;
#   4. DICOM from the host: C-ECHO and a C-STORE through QEMU's port forward to 11112;
#   5. power off; image/update.sh writes the image's ESP and root over the disk's; second
#      boot, the stick plugged in from power-on: the data partition kept the box's key, its bundle (the stick's bundle comes
#      again and is refused as not newer; the selftest says the configuration is bundle
#      serial 1) and the stored instance (the data partition, read offline with debugfs,
#      holds the same object files before and after).
# Times are taken when the console shows each event (no fixed sleeps); a summary block at
# the end (times, image size, console tail) is for docs/APPLIANCE.md.
#
# The clock: the selftest warns while systemd-timesyncd has not synchronised, and QEMU's
# user network has no NTP server. Without changing the image: QEMU passes a systemd
# credential in an SMBIOS type 11 string (systemd 252 imports those), `tmpfiles.extra`, whose
# lines make /run/systemd/timesyncd.conf.d/ name 10.0.2.2 (the host as QEMU's user network
# shows it) as NTP server, and a small SNTP responder here answers on 127.0.0.1:123 with the
# host's clock.
#
#   bash image/qemu-boot.sh [--work DIR] [--fiona BIN] [--debs DIR] [--reuse]
#                           [--update-image IMG]
#
# --work DIR          where everything goes (default /var/tmp/fiona-qemu; about 5 GB)
# --fiona BIN         the binary for the image and the admin's side (default target/release/fiona)
# --debs DIR          passed to os/build.sh (a .deb cache)
# --reuse             keep WORK's key, rootfs and image from an earlier run when present
# --update-image IMG  the image written by the update (default: the image itself, built
#                     anew or not: the proof is that ESP and root are rewritten and data stays)
#
# Needs root (os/build.sh), qemu-system-x86, ovmf, mtools, dosfstools, dcmtk, minisign, age,
# python3 (installed when missing); nothing else may listen on the host's UDP port 123.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)

# fail, say, install_missing and write_ct_instance, shared with the container boot tests.
tag=qemu-boot
. "$src/os/tests/lib.sh"

work=/var/tmp/fiona-qemu bin="$src/target/release/fiona" debs="" reuse=no update_image=""
while [ $# -gt 0 ]; do
  case "$1" in
  --work) work=$2; shift 2 ;;
  --fiona) bin=$2; shift 2 ;;
  --debs) debs=$2; shift 2 ;;
  --reuse) reuse=yes; shift ;;
  --update-image) update_image=$2; shift 2 ;;
  *) fail "unknown option $1 (see the header of $0)" ;;
  esac
done
[ "$(id -u)" = 0 ] || fail "needs root (os/build.sh runs mmdebstrap as root)"
bin=$(readlink -f "$bin")
[ -x "$bin" ] || fail "no fiona binary at $bin (cargo build --release, or --fiona BIN)"

install_missing qemu-system-x86_64:qemu-system-x86 /usr/share/OVMF/OVMF_CODE_4M.fd:ovmf \
  mcopy:mtools mkfs.fat:dosfstools \
  storescu:dcmtk minisign:minisign age:age python3:python3

mkdir -p "$work"
work=$(readlink -f "$work")
run=$work/run
rm -rf "$run"
mkdir -p "$run"
qemu_pid="" sntp_pid=""
cleanup() {
  local rc=$?
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  if [ -n "$sntp_pid" ]; then
    kill "$sntp_pid" 2>/dev/null || true
    wait "$sntp_pid" 2>/dev/null || true
  fi
  if [ "$rc" != 0 ] && [ -n "${console:-}" ] && [ -f "$console" ]; then
    echo "--- console (last lines of $console) ---" >&2
    tail -40 "$console" | sed 's/\x1b\[[0-9;]*[a-zA-Z]//g' >&2
  fi
  # The big files go when all went well; on a failure the disk stays for a look at the
  # journal on it (debugfs, journalctl --file).
  [ "$rc" != 0 ] || rm -f "$run/disk.img" "$run/stick.img" "$run/vars.fd"
  exit "$rc"
}
trap cleanup EXIT

# 1. The admin's key, the rootfs that trusts it, the image.
keys=$work/keys
if [ "$reuse" = no ] || [ ! -f "$keys/admin.key" ]; then
  rm -rf "$keys" "$work/rootfs" "$work/fiona.img"
  mkdir -p "$keys/trusted"
  minisign -G -W -f -p "$keys/trusted/admin.pub" -s "$keys/admin.key" </dev/null >/dev/null || fail "minisign -G"
fi
trusted_sum=$(cat "$keys/trusted"/*.pub | sha256sum | cut -d' ' -f1)
if [ "$reuse" = no ] || ! grep -q "^bundle_keys: $trusted_sum$" "$work/rootfs/build-info.txt" 2>/dev/null; then
  say "building the rootfs (os/build.sh)"
  t=$SECONDS
  bash "$src/os/build.sh" "$work/rootfs" --fiona "$bin" --bundle-keys "$keys/trusted" ${debs:+--debs "$debs"} ||
    fail "os/build.sh"
  rootfs_secs=$((SECONDS - t))
  rm -f "$work/fiona.img"
fi
image=$work/fiona.img
if [ ! -f "$image" ]; then
  t=$SECONDS
  bash "$here/build.sh" "$work/rootfs" "$image" || fail "image/build.sh"
  image_secs=$((SECONDS - t))
fi
sha256sum -c --status <(sed "s#  .*#  $image#" "$image.sha256") || fail "$image does not match $image.sha256"
[ -n "$update_image" ] || update_image=$image

# The box's disk: the image on a larger disk (sparse). The firmware's variables: a copy.
cp --sparse=always "$image" "$run/disk.img"
truncate -s 8G "$run/disk.img"
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$run/vars.fd"

# The stick: one FAT32 partition labelled FIONA on an MBR, as sticks come.
stick=$run/stick.img
truncate -s 64M "$stick"
echo 'start=2048, type=c' | sfdisk --quiet --no-reread --no-tell-kernel --label dos "$stick"
mkfs.fat -F 32 -n FIONA --offset 2048 "$stick" $(((64 * 1024 - 1024))) >/dev/null
stick_fs="$stick@@1M"

# The host's clock for the guest: SNTP on 127.0.0.1:123 (10.0.2.2:123 in the guest).
cat >"$run/sntp.py" <<'EOF'
import socket, struct, sys, time
NTP_EPOCH = 2208988800
def ts(t):
    t += NTP_EPOCH
    return struct.pack("!II", int(t), int((t % 1) * 2**32))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 123))
print("sntp: listening", flush=True)
while True:
    data, peer = s.recvfrom(512)
    received = time.time()
    if len(data) < 48 or (data[0] & 7) != 3:
        continue
    # Leap 0, version 4, mode 4 (server), stratum 1, the client's poll, precision 2^-20.
    head = struct.pack("!BBbb", (0 << 6) | (4 << 3) | 4, 1, data[2], -20)
    reply = head + struct.pack("!II", 0, 0) + b"QEMU" + ts(received) + data[40:48] + ts(received) + ts(time.time())
    s.sendto(reply, peer)
    print("sntp: answered a request", flush=True)
EOF
/usr/bin/python3 "$run/sntp.py" >"$run/sntp.log" 2>&1 &
sntp_pid=$!
for _ in $(seq 1 50); do
  grep -q listening "$run/sntp.log" 2>/dev/null && break
  kill -0 "$sntp_pid" 2>/dev/null || fail "the SNTP responder did not start: $(cat "$run/sntp.log") (is UDP port 123 taken?)"
  sleep 0.1
done
printf '%s\n' 'd /run/systemd/timesyncd.conf.d 0755 root root -' \
  'f /run/systemd/timesyncd.conf.d/50-qemu-host.conf 0644 root root - [Time]\nNTP=10.0.2.2\n' >"$run/tmpfiles.extra"
credential="io.systemd.credential.binary:tmpfiles.extra=$(base64 -w0 "$run/tmpfiles.extra")"

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 30000))
    ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
}
dicom_port=$(free_port) web_port=$(free_port) monitor_port=$(free_port)

boot() { # boot N [stick]: start QEMU on the disk, console to $run/consoleN.log; with
  # "stick", the stick is plugged in from power-on (as stickdev0)
  local cold=()
  if [ "${2:-}" = stick ]; then
    cold=(-drive "if=none,id=stick0,format=raw,file=$stick" -device usb-storage,bus=xhci.0,drive=stick0,id=stickdev0,removable=on)
    plug=0
  fi
  console=$run/console$1.log
  : >"$console"
  boot_t0=$EPOCHREALTIME
  qemu-system-x86_64 -accel tcg -machine q35 -cpu max -m 2048 -smp 2 -display none -no-reboot \
    -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,file="$run/vars.fd" \
    -drive if=none,id=disk,file="$run/disk.img",format=raw \
    -device virtio-blk-pci,drive=disk,bootindex=0 \
    -netdev "user,id=n,hostfwd=tcp:127.0.0.1:$dicom_port-:11112,hostfwd=tcp:127.0.0.1:$web_port-:8443" \
    -device virtio-net-pci,netdev=n \
    -device qemu-xhci,id=xhci "${cold[@]}" \
    -smbios "type=11,value=$credential" \
    -serial "file:$console" \
    -monitor "tcp:127.0.0.1:$monitor_port,server=on,wait=off" >"$run/qemu$1.log" 2>&1 &
  qemu_pid=$!
  mark=0
}
elapsed() { # seconds since QEMU started, one decimal
  awk -v a="$boot_t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}
clean() { sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\r//g' "$@"; }
# wait_for REGEX SECONDS WHAT: the first console line after the mark matching REGEX (the
# mark, a line count, moves past it); fails when QEMU exits or the time is up.
wait_for() {
  local deadline=$((SECONDS + $2)) hit
  while :; do
    hit=$(clean "$console" | tail -n +$((mark + 1)) | grep -a -n -m1 -E "$1" || true)
    if [ -n "$hit" ]; then
      mark=$((mark + ${hit%%:*}))
      echo "${hit#*:}"
      return 0
    fi
    kill -0 "$qemu_pid" 2>/dev/null || fail "QEMU exited while waiting for: $3"
    [ "$SECONDS" -lt "$deadline" ] || fail "no '$3' on the console within $2 s"
    sleep 1
  done
}
# wait_echo SECONDS: until fiona answers C-ECHO from the host (through the port forward):
# "ready" as the network sees it. (systemd's "Started fiona.service" is not a reliable
# console event: in the second boot its status lines stopped before the daemon was up.)
wait_echo() {
  local deadline=$((SECONDS + $1))
  while ! echoscu -to 3 -ta 3 -td 3 -aec FIONA 127.0.0.1 "$dicom_port" >/dev/null 2>&1; do
    kill -0 "$qemu_pid" 2>/dev/null || fail "QEMU exited while waiting for fiona to answer C-ECHO"
    [ "$SECONDS" -lt "$deadline" ] || fail "fiona did not answer C-ECHO within $1 s of the boot"
    sleep 1
  done
}
monitor() { # one HMP command to QEMU's monitor
  exec 7<>"/dev/tcp/127.0.0.1/$monitor_port" || fail "QEMU monitor on port $monitor_port"
  printf '%s\n' "$1" >&7
  sleep 1
  timeout 2 cat <&7 >>"$run/monitor.log" 2>&1 || true
  exec 7>&-
}
plug=0
plug_stick() { # hot-plug (QEMU's monitor), as stickdevN
  plug=$((plug + 1))
  monitor "drive_add 0 if=none,id=stick$plug,format=raw,file=$stick"
  monitor "device_add usb-storage,bus=xhci.0,drive=stick$plug,id=stickdev$plug,removable=on"
}
unplug_stick() {
  monitor "device_del stickdev$plug"
  sleep 2
}
poweroff() { # ACPI power button (logind powers off), then wait for QEMU to exit
  monitor system_powerdown
  for _ in $(seq 1 300); do
    kill -0 "$qemu_pid" 2>/dev/null || break
    sleep 1
  done
  if kill -0 "$qemu_pid" 2>/dev/null; then
    fail "the box did not power off within 5 minutes of the power button"
  fi
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=""
}
# The data partition, read offline (debugfs at its offset: no loop device, no mount).
data_offset() {
  local start
  start=$(sfdisk -d "$run/disk.img" | awk '/^[^:]+ : start=/ { i++; if (i == 3) { sub(/.*start= */, ""); sub(/,.*/, ""); print } }')
  [ -n "$start" ] || fail "no third (data) partition on the disk"
  echo $((start * 512))
}
data_listing() { # names and sizes of the stored instances (objects/**/*.dcm; not the pool of
  # empty *.dcm.tmp files the daemon keeps ready), sorted; no contents
  local d=$run/objects-$1
  rm -rf "$d"
  mkdir -p "$d"
  debugfs -R "rdump /objects $d" "$run/disk.img?offset=$(data_offset)" >/dev/null 2>&1 || fail "debugfs rdump /objects"
  (cd "$d" && find . -type f -name '*.dcm' -printf '%P %s\n' | sort)
  rm -rf "$d"
}
data_file() { debugfs -R "cat $1" "$run/disk.img?offset=$(data_offset)" 2>/dev/null; }
root_head() { # the first 64 KiB of the root partition (ext4's superblock: the boot changes its
  # mount count and times), on the disk or in the image; cheap enough to compare
  local start
  start=$(sfdisk -d "$1" | awk '/^[^:]+ : start=/ { i++; if (i == 2) { sub(/.*start= */, ""); sub(/,.*/, ""); print } }')
  dd if="$1" bs=64K iflag=skip_bytes skip=$((start * 512)) count=1 status=none | sha256sum | cut -d' ' -f1
}
# A unit that failed during the boot, as systemd's status lines show it. They stop at the
# serial login prompt, so this sees the boot up to there (the firewall, the network, the data
# partition, fiona itself), not later units.
no_failed_units() {
  local failed
  failed=$(clean "$console" | grep -a -E '^\[FAILED\]' || true)
  [ -z "$failed" ] || fail "a unit failed during the boot: $failed"
}
# The selftest's report reaches the console through the journal: "[ 272.8] fiona[540]: ...".
selftest_lines() { clean "$console" | sed -n 's/^.*\[ *[0-9.]*\] fiona\[[0-9]*\]: //p'; }
selftest_block() { # the last report on the console, from data_dir to the verdict
  selftest_lines | awk '/^data_dir / { n = 0; delete b } { b[n++] = $0 } /^selftest: / { out = ""; for (i = 0; i < n; i++) out = out b[i] "\n" } END { printf "%s", out }'
}
verdict='fiona\[[0-9]+\]: selftest: '

# 2. First boot.
say "first boot (TCG: minutes)"
boot 1
wait_for 'Linux version' 600 "the kernel" >/dev/null
t_kernel=$(elapsed)
say "kernel started at ${t_kernel} s"
wait_echo 1500
t_ready=$(elapsed)
say "fiona ready (C-ECHO answered from the host) at ${t_ready} s"
v=$(wait_for "$verdict" 900 "the boot selftest")
t_selftest1=$(elapsed)
verdict1=${v##*selftest: }
say "boot selftest at ${t_selftest1} s: $verdict1"
selftest_block | sed 's/^/    /'
no_failed_units

# 3. The stick: first empty (the box's key comes back on it), then with the bundle.
say "plugging in the empty FIONA stick"
plug_stick
wait_for 'fiona-usb: fiona-box.txt written' 600 "fiona-box.txt written to the stick" >/dev/null
unplug_stick
mtype -i "$stick_fs" ::fiona-box.txt >"$run/fiona-box-1.txt" || fail "no fiona-box.txt on the stick"
recipient=$(sed -n 's/^recipient: //p' "$run/fiona-box-1.txt")
box_id=$(sed -n 's/^box: //p' "$run/fiona-box-1.txt")
[[ "$recipient" == age1* ]] || fail "fiona-box.txt has no recipient: $(cat "$run/fiona-box-1.txt")"
say "the stick says: box $box_id, recipient $recipient"

# The admin's bundle, as os/tests/nspawn-unit.sh makes it.
b=$run/bundle
mkdir -p "$b"
cat >"$b/fiona.toml" <<'EOF'
ae_title = "FIONA"
listen = "0.0.0.0:11112"
[web]
listen = "0.0.0.0:8443"
[projects.QEMUBOX]
participant_pattern = "QEMU-[0-9]{4}"
events = ["baseline"]
approval_start = "2025-01-01"
approval_end = "2099-12-31"
EOF
# The web page's first admin comes in the bundle too: on a box without a login nobody could
# read the one-time set-up link the daemon logs otherwise. Its password stays in $run.
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$run/web-admin.password"
hash=$(printf '%s\n%s\n' "$(cat "$run/web-admin.password")" "$(cat "$run/web-admin.password")" |
  "$bin" user hash qemuadmin 2>/dev/null | tail -1)
[[ "$hash" == '$argon2id$'* ]] || fail "fiona user hash gave no Argon2id hash"
printf '[[web.accounts]]\nname = "qemuadmin"\npassword_hash = "%s"\nadmin = true\n' "$hash" >>"$b/fiona.toml"
printf '[projects.QEMUBOX.deid]\nsecret = "%s"\n' "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" |
  age -r "$recipient" -o "$b/secrets.toml.age" || fail "age -r"
"$bin" bundle manifest "$b" --id qemu-1 --serial 1 --target "$box_id" >/dev/null || fail "fiona bundle manifest"
minisign -S -s "$keys/admin.key" -m "$b/manifest.json" </dev/null >/dev/null || fail "minisign -S"
"$bin" bundle pack "$b" -o "$run/qemu-1.tar" >/dev/null || fail "fiona bundle pack"
mcopy -m -i "$stick_fs" "$run/qemu-1.tar" ::qemu-1.tar || fail "mcopy of the bundle onto the stick"
say "bundle qemu-1 (serial 1, for $box_id) on the stick; plugging it in again"
t_plug=$(elapsed)
plug_stick
r=$(wait_for 'fiona-usb: qemu-1.tar: (accepted|refused)' 600 "the bundle's result")
say "${r##*fiona-usb: }"
[[ "$r" == *accepted* ]] || fail "the bundle was not accepted: $r"
r=$(wait_for 'fiona-usb: qemu-1.tar: (applied|rolled_back|its trial)' 1200 "the end of the bundle's trial")
say "${r##*fiona-usb: }"
[[ "$r" == *applied* ]] || fail "the bundle was not applied: $r"
wait_for 'fiona-usb: fiona-box.txt written' 300 "fiona-box.txt written to the stick" >/dev/null
t_applied=$(elapsed)
v=$(wait_for "$verdict" 900 "the selftest after the bundle")
t_green=$(elapsed)
verdict2=${v##*selftest: }
say "selftest after the bundle at ${t_green} s: $verdict2"
selftest_block | sed 's/^/    /'
unplug_stick
mtype -i "$stick_fs" ::fiona-box.txt >"$run/fiona-box-2.txt" || fail "no fiona-box.txt on the stick"
sed 's/^/    stick: /' "$run/fiona-box-2.txt"

# 4. DICOM from the host.
write_ct_instance "$run" 7712 "Qemu^Test" QEMU-0001
echoscu -aec FIONA 127.0.0.1 "$dicom_port" || fail "no C-ECHO answer through 127.0.0.1:$dicom_port"
t=$EPOCHREALTIME
storescu -aet QEMUSCU -aec FIONA 127.0.0.1 "$dicom_port" "$run/ct.dcm" || fail "C-STORE refused"
store_secs=$(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
say "C-ECHO answered, C-STORE acknowledged (${store_secs} s) through 127.0.0.1:$dicom_port"
web=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 60 "https://127.0.0.1:$web_port/login" || true)
[ "$web" = 200 ] || fail "the web page's login on 8443 answers HTTP $web, not 200"
say "the web page on 8443 answers: login page HTTP $web (through 127.0.0.1:$web_port)"

say "powering off"
poweroff
objects_before=$(data_listing 1)
[ -n "$objects_before" ] || fail "no object file under objects/ on the data partition after the C-STORE"
recipient_before=$(data_file /box/recipient)
say "data partition: $(wc -l <<<"$objects_before") object file(s), box key ${recipient_before:0:12}…"

# 5. Update, second boot.
[ "$(root_head "$run/disk.img")" != "$(root_head "$update_image")" ] ||
  fail "the first boot left the root file system's superblock as built: was root mounted?"
t=$SECONDS
bash "$here/update.sh" "$run/disk.img" "$update_image" || fail "image/update.sh"
update_secs=$((SECONDS - t))
[ "$(root_head "$run/disk.img")" = "$(root_head "$update_image")" ] || fail "the root partition is not the new image's after the update"
say "updated in ${update_secs} s: root (changed by the first boot) and the ESP are the new image's again"

say "second boot, the stick (still with bundle serial 1) plugged in from power-on"
boot 2 stick
wait_for 'Linux version' 600 "the kernel" >/dev/null
t2_kernel=$(elapsed)
wait_echo 1500
t2_ready=$(elapsed)
v=$(wait_for "$verdict" 900 "the boot selftest")
t2_selftest=$(elapsed)
verdict3=${v##*selftest: }
say "second boot: kernel ${t2_kernel} s, fiona answers C-ECHO ${t2_ready} s, selftest ${t2_selftest} s: $verdict3"
selftest_block | sed 's/^/    /'
no_failed_units
selftest_block | grep -q '^configuration .*bundle qemu-1 serial 1' ||
  fail "the second boot's selftest does not run bundle serial 1: the data partition lost it?"
# The same stick, its bundle still on it, imported after the boot selftest: refused now, the
# serial is burnt on the data partition; the selftest runs again.
r=$(wait_for 'fiona-usb: qemu-1.tar: (accepted|refused)' 600 "the bundle's result")
say "the same bundle again: ${r##*fiona-usb: }"
[[ "$r" == *refused* ]] || fail "bundle serial 1 offered again was not refused: $r"
wait_for 'fiona-usb: fiona-box.txt written' 300 "fiona-box.txt written to the stick" >/dev/null
v=$(wait_for "$verdict" 900 "the selftest after the stick")
t2_green=$(elapsed)
verdict4=${v##*selftest: }
unplug_stick
mtype -i "$stick_fs" ::fiona-box.txt >"$run/fiona-box-3.txt" || fail "no fiona-box.txt on the stick"
[ "$(sed -n 's/^recipient: //p' "$run/fiona-box-3.txt")" = "$recipient" ] || fail "the box's key changed across the update"
again=$(sed -n 's/^ *qemu-1.tar: refused: //p' "$run/fiona-box-3.txt")
grep -q 'not higher' <<<"$again" || fail "fiona-box.txt does not say why bundle serial 1 was refused: $again"
say "the stick says: qemu-1.tar: refused: $again"
say "the box's key is the same after the update; selftest: $verdict4"
storescu -aet QEMUSCU -aec FIONA 127.0.0.1 "$dicom_port" "$run/ct.dcm" || fail "C-STORE refused after the update"
say "C-STORE of the same instance acknowledged after the update"
poweroff
objects_after=$(data_listing 2)
[ "$objects_after" = "$objects_before" ] || fail "the object files differ after the update: before: $objects_before; after: $objects_after"
say "data partition after the update: the same $(wc -l <<<"$objects_after") object file(s) (names and sizes)"

secs_or_reused() { if [ -n "$1" ]; then echo "$1 s"; else echo "reused (--reuse)"; fi; }
size_apparent=$(du -h --apparent-size "$image" | cut -f1)
size_alloc=$(du -h "$image" | cut -f1)
cat <<EOF

==================== fiona QEMU boot: summary ====================
date:                 $(date -u +%Y-%m-%dT%H:%M:%SZ), QEMU $(qemu-system-x86_64 --version | sed -n '1s/.*version \([^ ]*\).*/\1/p'), TCG, 2 vCPUs, 2 GiB, q35, OVMF
image:                $(basename "$image"), $size_apparent ($size_alloc allocated), sha256 $(cut -d' ' -f1 "$image.sha256")
build:                rootfs $(secs_or_reused "${rootfs_secs:-}"), image $(secs_or_reused "${image_secs:-}")
first boot:           firmware -> kernel ${t_kernel} s; fiona answers C-ECHO ${t_ready} s; boot selftest ${t_selftest1} s ($verdict1)
FIONA stick:          bundle plugged in at ${t_plug} s, applied by ${t_applied} s; selftest ${t_green} s: $verdict2
DICOM:                C-ECHO ok, C-STORE acknowledged in ${store_secs} s; web 8443: HTTP $web
update:               image/update.sh ${update_secs} s (ESP and root rewritten, data partition untouched)
second boot:          kernel ${t2_kernel} s; fiona answers C-ECHO ${t2_ready} s; boot selftest ${t2_selftest} s ($verdict3)
                      bundle serial 1 offered again: refused ($again);
                      selftest ${t2_green} s: $verdict4
data kept:            box key, bundle serial 1, $(wc -l <<<"$objects_after") object file(s) under objects/
--- selftest on the console (second boot, last run) ---
$(selftest_block)
--- console, second boot: the stick and the selftest (kernel's USB lines left out) ---
$(clean "$console" | grep -a -v -E '^\s*$|\] (usb|sd|scsi|usb-storage|usbcore) ' |
  awk '/fiona-usb: stick/ { p = 1; n = 0 } p { b[n++] = $0 } /fiona\[[0-9]+\]: selftest: / && p { for (i = 0; i < n; i++) print b[i]; n = 0; p = 0 }' | tail -20)
==================================================================
EOF
say "PASS"
