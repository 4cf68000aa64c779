#!/usr/bin/env bash
# Boot the hardened units (os/systemd/) in a systemd-nspawn container and show that
#   1. systemd starts `fiona serve` as the user fiona, sandboxed (no capabilities, no new
#      privileges, a seccomp filter), and it becomes active (READY=1);
#   2. it answers C-ECHO and takes a C-STORE (fsync, rename, index commit under the filter),
#      and the CLI reaches its control socket, as fiona and as root;
#   3. a daemon made to hang (the test fault file run/fault-stall-pipeline, honoured only
#      with FIONA_TEST_FAULTS=1) stops its watchdog pings, systemd kills it ("Watchdog
#      timeout") and restarts it; once the fault is gone it stays up and answers again;
#   4. fiona-selftest.service runs after it, when the binary has the `selftest` subcommand;
#   5. with FIONA_NSPAWN_OCR_INPUT=FILE (a DICOM file with burned-in text): `fiona deid` with
#      OCR (DBNet through tract, then Tesseract) scrubs it inside the daemon's sandbox (a
#      oneshot unit made from fiona.service by changing only what it runs); the output is
#      copied to FIONA_NSPAWN_OCR_OUTPUT for the caller to check (daemon/tests/systemd_nspawn.rs).
#
# A drop-in adds FIONA_TEST_FAULTS=1, a 4-second WatchdogSec and a test configuration (random
# ports on 127.0.0.1, stall limit 3 s); everything else is the unit as shipped.
#
# Needs root, systemd-nspawn (systemd-container), mmdebstrap, nsenter, DCMTK on the host and
# the release binary (cargo build --release). The container shares the host's network.
# The Debian rootfs (systemd and fiona's runtime libraries) is made once from the Debian
# archive and kept in ~/.cache/fiona-nspawn (FIONA_NSPAWN_CACHE); each run boots a copy of it.
#
# Usage: os/tests/nspawn-unit.sh [path/to/fiona]     (default target/release/fiona)
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() {
  echo "nspawn-unit: FAIL: $*" >&2
  exit 1
}
say() { echo "nspawn-unit: $*"; }

[ "$(id -u)" = 0 ] || fail "needs root (systemd-nspawn)"
bin=$(readlink -f "${1:-target/release/fiona}")
[ -x "$bin" ] || fail "no fiona binary at $bin: build it with cargo build --release"

need=()
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v echoscu >/dev/null 2>&1 || need+=(dcmtk)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
if ((${#need[@]})); then
  say "installing missing tools: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The rootfs: systemd as PID 1 and the libraries `ldd fiona` names (libtesseract5 brings
# Leptonica and the image libraries). Its name carries a hash of what it is made of.
suite=bookworm
packages="systemd,systemd-sysv,dbus,libtesseract5,tesseract-ocr-eng"
cache="${FIONA_NSPAWN_CACHE:-${HOME:-/root}/.cache/fiona-nspawn}"
key=$(echo "$suite minbase $packages" | sha256sum | cut -c1-12)
base="$cache/rootfs-$suite-$key"
mkdir -p "$cache"
# One maker at a time (two test runs may start together).
exec 9>"$cache/lock"
flock 9
if [ ! -d "$base" ]; then
  say "making the $suite rootfs in $base (once; about a minute)"
  rm -rf "$base.tmp"
  mmdebstrap --quiet --variant=minbase --include="$packages" "$suite" "$base.tmp" \
    http://deb.debian.org/debian >"$cache/mmdebstrap.log" 2>&1 ||
    fail "mmdebstrap failed, see $cache/mmdebstrap.log"
  mv "$base.tmp" "$base"
fi
flock -u 9

run=$(mktemp -d "$cache/run.XXXXXX")
root="$run/root"
nspawn_pid=""
cleanup() {
  local rc=$?
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    if [ "$rc" != 0 ] && [ -n "${leader:-}" ]; then
      echo "--- journal of fiona.service in the container ---" >&2
      in_ct journalctl -u fiona.service -u fiona-selftest.service --no-pager -o short-monotonic 2>&1 | tail -60 >&2 || true
    fi
    # One SIGTERM: nspawn asks the container's systemd to halt.
    kill "$nspawn_pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
      kill -0 "$nspawn_pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -9 "$nspawn_pid" 2>/dev/null || true
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  if [ "$rc" != 0 ] && [ -f "$run/console.log" ]; then
    echo "--- container console (last lines) ---" >&2
    tail -20 "$run/console.log" >&2
  fi
  rm -rf "$run"
  exit "$rc"
}
trap cleanup EXIT
cp -a "$base" "$root"

# What the box gets: the binary, the units as shipped, the system user.
install -m 0755 "$bin" "$root/usr/bin/fiona"
install -m 0644 os/systemd/fiona.service os/systemd/fiona-selftest.service "$root/usr/lib/systemd/system/"
install -D -m 0644 os/systemd/sysusers.d/fiona.conf "$root/usr/lib/sysusers.d/fiona.conf"
missing=$(chroot "$root" ldd /usr/bin/fiona | grep 'not found' || true)
[ -z "$missing" ] || fail "the rootfs lacks libraries of fiona: $missing"
has_selftest=no
if chroot "$root" /usr/bin/fiona selftest --help >/dev/null 2>&1; then
  has_selftest=yes
fi

# The test's own additions: fault switches, a short watchdog, random ports.
install -d -m 0755 "$root/etc/fiona"
cat >"$root/etc/fiona/nspawn-test.toml" <<'EOF'
listen = "127.0.0.1:0"
[watchdog]
stall_secs = 3
echo_interval_secs = 1
[web]
listen = "127.0.0.1:0"
EOF
install -d "$root/etc/systemd/system/fiona.service.d"
cat >"$root/etc/systemd/system/fiona.service.d/nspawn-test.conf" <<'EOF'
[Service]
Environment=FIONA_TEST_FAULTS=1
WatchdogSec=4s
RestartSec=1s
ExecStart=
ExecStart=/usr/bin/fiona serve --data-dir /var/lib/fiona --config /etc/fiona/nspawn-test.toml
EOF
systemctl --root="$root" --quiet enable fiona.service
if [ "$has_selftest" = yes ]; then
  systemctl --root="$root" --quiet enable fiona-selftest.service
fi
# No login prompt on the console: the container runs unattended.
systemctl --root="$root" --quiet mask console-getty.service

# PID 1 of this machine need not be systemd: no machined, so no registration and no scope.
say "booting the container"
systemd-nspawn --quiet --register=no --keep-unit --machine="fiona-test-$$" \
  --directory="$root" --boot </dev/null >"$run/console.log" 2>&1 &
nspawn_pid=$!

# The container's PID 1, seen from here: the process whose innermost PID is 1.
leader=""
for _ in $(seq 1 100); do
  for p in $(pgrep -P "$nspawn_pid" 2>/dev/null || true); do
    if grep -qE '^NSpid:.*[[:space:]]1$' "/proc/$p/status" 2>/dev/null; then
      leader=$p
    fi
  done
  [ -n "$leader" ] && break
  kill -0 "$nspawn_pid" 2>/dev/null || fail "systemd-nspawn exited: $(tail -5 "$run/console.log")"
  sleep 0.2
done
[ -n "$leader" ] || fail "no container PID 1 after 20 s"
in_ct() { nsenter --target "$leader" --mount --uts --ipc --net --pid -- "$@"; }
prop() { in_ct systemctl show -p "$1" --value fiona.service; }
# Wait up to $1 seconds for fiona.service to be active (READY=1 came), else fail with $2.
wait_active() {
  local state=""
  for _ in $(seq 1 $(($1 * 2))); do
    state=$(in_ct systemctl is-active fiona.service 2>/dev/null || true)
    [ "$state" = active ] && return 0
    sleep 0.5
  done
  fail "fiona.service is '$state', not active, $2"
}
# The DICOM port the running daemon bound (it publishes run/dicom.addr before READY=1).
addr_file="$root/var/lib/fiona/run/dicom.addr"
dicom_port() { sed 's/.*://' "$addr_file"; }

# The units as the container's systemd reads them: no unknown key, no bad value.
verify=$(in_ct systemd-analyze verify fiona.service fiona-selftest.service 2>&1) ||
  fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify complains: $verify"

# 1. Started and ready.
wait_active 60 "60 s after boot"
pid=$(prop MainPID)
say "fiona.service active, MainPID $pid (in the container)"
status=$(in_ct grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs|Seccomp):' "/proc/$pid/status")
echo "$status" | sed 's/^/    /'
uid=$(in_ct id -u fiona)
grep -qE "^Uid:[[:space:]]+$uid[[:space:]]" <<<"$status" || fail "the daemon does not run as fiona ($(printf %q "$uid"))"
grep -qE '^CapEff:[[:space:]]+0+$' <<<"$status" || fail "the daemon has effective capabilities"
grep -qE '^CapBnd:[[:space:]]+0+$' <<<"$status" || fail "the daemon's bounding set is not empty"
grep -qE '^NoNewPrivs:[[:space:]]+1$' <<<"$status" || fail "NoNewPrivs is not set"
grep -qE '^Seccomp:[[:space:]]+2$' <<<"$status" || fail "no seccomp filter"

# 2. DICOM and the control socket.
port=$(dicom_port)
echoscu -aec FIONA 127.0.0.1 "$port" || fail "no C-ECHO answer on 127.0.0.1:$port"
say "C-ECHO answered on 127.0.0.1:$port"
# One small CT instance: the store path (fsync, rename, directory fsync, index commit) runs
# under the sandbox and the system-call filter.
cat >"$run/ct.dump" <<'EOF'
(0008,0016) UI =CTImageStorage
(0008,0018) UI [1.2.826.0.1.3680043.8.498.7711.1.1]
(0008,0060) CS [CT]
(0010,0010) PN [Nspawn^Test]
(0010,0020) LO [NSPAWN1]
(0020,000d) UI [1.2.826.0.1.3680043.8.498.7711.1]
(0020,000e) UI [1.2.826.0.1.3680043.8.498.7711.1.0]
(0028,0002) US 1
(0028,0004) CS [MONOCHROME2]
(0028,0010) US 2
(0028,0011) US 2
(0028,0100) US 16
(0028,0101) US 16
(0028,0102) US 15
(0028,0103) US 0
(7fe0,0010) OW 0000\0001\0002\0003
EOF
dump2dcm --write-xfer-little "$run/ct.dump" "$run/ct.dcm"
storescu -aet NSPAWNSCU -aec FIONA 127.0.0.1 "$port" "$run/ct.dcm" || fail "C-STORE refused"
for who in fiona root; do
  out=$(in_ct runuser -u "$who" -- fiona --data-dir /var/lib/fiona --json studies 2>&1) ||
    fail "fiona studies as $who: $out"
  grep -q '"calling_ae": "NSPAWNSCU"' <<<"$out" && grep -q '"instances": 1,' <<<"$out" ||
    fail "the stored study is not listed (as $who): $out"
done
say "C-STORE stored; the CLI lists the study through the control socket as fiona and as root"
# The audit trail still names the login user behind sudo (why fiona.service has neither
# PrivateUsers= nor ProtectProc=invisible): root with alice's login UID adds a web account.
in_ct useradd --uid 1500 --no-create-home alice
if in_ct sh -c 'echo 1500 >/proc/self/loginuid' 2>/dev/null; then
  in_ct sh -c 'echo 1500 >/proc/self/loginuid &&
    echo nspawn-test-password | fiona --data-dir /var/lib/fiona user add nspawnadmin --admin' >/dev/null ||
    fail "fiona user add through the control socket"
  actor=$(in_ct fiona --data-dir /var/lib/fiona audit | grep nspawnadmin || true)
  echo "    $actor"
  grep -q 'user:alice (as root)' <<<"$actor" || fail "the audit trail lost the login user: $actor"
  say "the audit trail names the login user behind root"
else
  say "audit attribution not checked: this kernel does not let us set a login UID"
fi

# 3. Hang, watchdog kill, restart.
restarts=$(prop NRestarts)
old_pid=$(prop MainPID)
in_ct runuser -u fiona -- touch /var/lib/fiona/run/fault-stall-pipeline
say "fault file in place; waiting for the watchdog"
for _ in $(seq 1 120); do
  [ "$(prop NRestarts)" -gt "$restarts" ] && break
  sleep 0.5
done
[ "$(prop NRestarts)" -gt "$restarts" ] || fail "systemd did not restart the hung daemon within 60 s"
in_ct rm -f /var/lib/fiona/run/fault-stall-pipeline
journal=$(in_ct journalctl -u fiona.service --no-pager -o cat)
echo "$journal" | grep -i 'watchdog timeout' | sed 's/^/    /'
grep -qi 'watchdog timeout' <<<"$journal" || fail "the journal does not say the watchdog timed out"
say "systemd killed the hung daemon (MainPID $old_pid) and restarted it"
wait_active 30 "30 s after the restart"
new_pid=$(prop MainPID)
[ "$new_pid" != "$old_pid" ] || fail "MainPID did not change ($new_pid)"
# Healthy again: three watchdog periods without another restart.
settled=$(prop NRestarts)
sleep 12
[ "$(prop NRestarts)" = "$settled" ] || fail "the restarted daemon was killed again with no fault in place"
[ "$(in_ct systemctl is-active fiona.service)" = active ] || fail "fiona.service not active after 12 s"
port=$(dicom_port)
echoscu -aec FIONA 127.0.0.1 "$port" || fail "the restarted daemon does not answer C-ECHO"
say "restarted daemon (MainPID $new_pid, NRestarts $settled) stays active and answers C-ECHO on $port"

# 5. OCR inside the sandbox (before the selftest; its log is checked at the end too).
ocr_input="${FIONA_NSPAWN_OCR_INPUT:-}"
if [ -n "$ocr_input" ]; then
  install -m 0644 "$ocr_input" "$root/etc/fiona/ocr-input.dcm"
  cat >"$root/etc/fiona/nspawn-ocr.toml" <<'EOF'
data_dir = "/var/lib/fiona/ocr-test"
[projects.PROJ1]
participant_pattern = "PROJ[0-9]{3}"
events = ["baseline"]
approval_start = "2025-01-01"
approval_end = "2099-12-31"
[projects.PROJ1.pixel.ocr]
all_images = true
EOF
  # The shipped sandbox, word for word; only the type, the command and what belongs to a
  # daemon (notify, watchdog, restart, install) differ.
  sed -e 's/^Type=notify$/Type=oneshot/' \
    -e '/^\(NotifyAccess\|WatchdogSec\|Restart\|RestartSec\|WantedBy\)=/d' \
    -e 's#^ExecStart=.*#ExecStart=/usr/bin/fiona deid --config /etc/fiona/nspawn-ocr.toml --project PROJ1 --participant PROJ001 --event baseline /etc/fiona/ocr-input.dcm /var/lib/fiona/ocr-output.dcm#' \
    os/systemd/fiona.service >"$root/etc/systemd/system/fiona-ocr-test.service"
  in_ct systemctl daemon-reload
  in_ct systemctl start fiona-ocr-test.service || true
  result=$(in_ct systemctl show -p Result --value fiona-ocr-test.service)
  ocr_log=$(in_ct journalctl -u fiona-ocr-test.service --no-pager -o cat)
  sed 's/^/    /' <<<"$ocr_log"
  [ "$result" = success ] || fail "fiona deid with OCR in the sandbox: result $result"
  [ -s "$root/var/lib/fiona/ocr-output.dcm" ] || fail "fiona deid wrote no output"
  if [ -n "${FIONA_NSPAWN_OCR_OUTPUT:-}" ]; then
    cp "$root/var/lib/fiona/ocr-output.dcm" "$FIONA_NSPAWN_OCR_OUTPUT"
  fi
  journal="$journal"$'\n'"$ocr_log"
  say "fiona deid with OCR ran in the sandbox"
fi

# 4. The selftest unit.
if [ "$has_selftest" = yes ]; then
  in_ct systemctl start fiona-selftest.service || true
  result=$(in_ct systemctl show -p Result --value fiona-selftest.service)
  code=$(in_ct systemctl show -p ExecMainStatus --value fiona-selftest.service)
  in_ct journalctl -u fiona-selftest.service --no-pager -o cat | tail -30 | sed 's/^/    /'
  [ "$result" = success ] || fail "fiona-selftest.service: result $result, exit status $code"
  say "fiona-selftest.service: success (exit status $code)"
else
  say "fiona-selftest.service not run: this fiona has no selftest subcommand"
fi

# Nothing the sandbox refused may show in the daemon's log.
if grep -iE 'operation not permitted|permission denied|bad system call' <<<"$journal"; then
  fail "the daemon's log shows a refusal by the sandbox (above)"
fi
say "PASS"
