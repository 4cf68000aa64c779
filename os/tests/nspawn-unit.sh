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
#      copied to FIONA_NSPAWN_OCR_OUTPUT for the caller to check (daemon/tests/systemd_nspawn.rs);
#   6. a signed bundle (provisioning/README.md) made on the host as an admin makes it (a
#      minisign key without password, whose public half goes into /etc/fiona/bundle-keys/;
#      a secret encrypted with age to the box's recipient; `fiona bundle manifest|pack`)
#      applies with `fiona bundle apply` as root: the daemon restarts in place on it (same
#      MainPID, NRestarts unchanged, systemd saw RELOADING=1 and READY=1, no watchdog
#      timeout), its trial selftest passes, `fiona bundle status`, `fiona status`, `fiona
#      projects` and the audit trail show serial 1, and it answers C-ECHO; then the next
#      bundle unsigned (through the inbox) and tampered after signing (`fiona bundle apply`,
#      exit status 1, file_tampered) are refused and serial 1 still runs in the same process.
#
# A drop-in adds FIONA_TEST_FAULTS=1, a 4-second WatchdogSec and a test configuration (random
# ports on 127.0.0.1, stall limit 3 s); everything else is the unit as shipped.
#
# Needs root, systemd-nspawn (systemd-container), mmdebstrap, nsenter, DCMTK, minisign, age
# and jq on the host (installed when missing) and the release binary (cargo build --release).
# The container shares the host's network.
# The Debian rootfs (systemd and fiona's runtime libraries) is made once from the Debian
# archive and kept in ~/.cache/fiona-nspawn (FIONA_NSPAWN_CACHE); each run boots a copy of it.
#
# Usage: os/tests/nspawn-unit.sh [path/to/fiona]     (default target/release/fiona)
set -euo pipefail
cd "$(dirname "$0")/../.."

tag=nspawn-unit
. os/tests/lib.sh

[ "$(id -u)" = 0 ] || fail "needs root (systemd-nspawn)"
bin=$(readlink -f "${1:-target/release/fiona}")
[ -x "$bin" ] || fail "no fiona binary at $bin: build it with cargo build --release"
# The admin's tools for the bundle (on the host only) and jq to read the CLI's JSON.
install_missing systemd-nspawn:systemd-container mmdebstrap:mmdebstrap echoscu:dcmtk \
  nsenter:util-linux minisign:minisign age:age jq:jq

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
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -n "$leader" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    echo "--- journal of fiona.service in the container ---" >&2
    in_ct journalctl -u fiona.service -u fiona-selftest.service --no-pager -o short-monotonic 2>&1 | tail -60 >&2 || true
  fi
  stop_container
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

say "booting the container"
start_container "fiona-test-$$" "$root" "$run/console.log"
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
write_ct_instance "$run" 7711 "Nspawn^Test" NSPAWN1
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

# 6. A signed bundle applied under the unit: the daemon restarts in place on it.
# The admin's side, on the host (provisioning/README.md): a signing key, the box's recipient,
# the bundle made with the host's fiona, minisign and age. The box trusts the public key.
keys="$run/keys"
mkdir -p "$keys"
minisign -G -W -f -p "$keys/admin.pub" -s "$keys/admin.key" </dev/null >/dev/null ||
  fail "minisign -G"
# The key ID as fiona prints it: 16 hex digits (minisign's comment drops leading zeros).
key_id=$(sed -n '1s/.* //p' "$keys/admin.pub")
key_id=$(printf '%16s' "$key_id" | tr ' ' 0)
install -d -m 0755 "$root/etc/fiona/bundle-keys"
install -m 0644 "$keys/admin.pub" "$root/etc/fiona/bundle-keys/admin.pub"
recipient=$(in_ct runuser -u fiona -- fiona bundle box-key --data-dir /var/lib/fiona 2>/dev/null) ||
  fail "fiona bundle box-key as fiona"
[[ "$recipient" == age1* ]] && [ "$recipient" = "$(in_ct cat /var/lib/fiona/box/recipient)" ] ||
  fail "the box's recipient: '$recipient' from fiona bundle box-key"
# The files of bundle SERIAL in DIR: the test's configuration (the same listeners and
# watchdog settings the daemon runs now) plus a project, whose de-identification secret
# travels encrypted to the box; then the manifest, signed.
prepare_bundle() {
  local serial=$1 dir=$2
  mkdir -p "$dir"
  {
    echo 'ae_title = "FIONA"'
    cat "$root/etc/fiona/nspawn-test.toml"
    cat <<'EOF'
[projects.NSPAWN]
participant_pattern = "NSPAWN-[0-9]{4}"
events = ["baseline"]
approval_start = "2025-01-01"
approval_end = "2099-12-31"
EOF
  } >"$dir/fiona.toml"
  printf '[projects.NSPAWN.deid]\nsecret = "%s"\n' "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" |
    age -r "$recipient" -o "$dir/secrets.toml.age" || fail "age -r"
  "$bin" bundle manifest "$dir" --id "nspawn-$serial" --serial "$serial" --target any >/dev/null ||
    fail "fiona bundle manifest"
  minisign -S -s "$keys/admin.key" -m "$dir/manifest.json" </dev/null >/dev/null || fail "minisign -S"
}
prepare_bundle 1 "$run/b1"
"$bin" bundle pack "$run/b1" -o "$run/nspawn-1.tar" >/dev/null || fail "fiona bundle pack"
install -m 0600 "$run/nspawn-1.tar" "$root/root/nspawn-1.tar"
bjson() { in_ct fiona --data-dir /var/lib/fiona --json "$@"; }
pid=$(prop MainPID)
restarts=$(prop NRestarts)
changed=$(prop StateChangeTimestampMonotonic)
# The journal from here on (journalctl writes the last entry's cursor to the file).
cursor=/run/nspawn-bundle.cursor
in_ct journalctl -u fiona.service -n 1 --cursor-file="$cursor" >/dev/null || fail "journalctl --cursor-file"
journal_since() { in_ct journalctl -u fiona.service --cursor-file="$cursor" --no-pager -o cat; }
say "applying bundle nspawn-1 (serial 1, signed by key $key_id) to MainPID $pid, NRestarts $restarts"
started=$SECONDS
rc=0
out=$(in_ct fiona bundle apply /root/nspawn-1.tar --data-dir /var/lib/fiona 2>&1) || rc=$?
sed 's/^/    /' <<<"$out"
[ "$rc" = 0 ] || fail "fiona bundle apply exited $rc"
grep -q '^applied: bundle nspawn-1 serial 1 ' <<<"$out" || fail "fiona bundle apply did not say applied"
say "fiona bundle apply: applied in $((SECONDS - started)) s"
s=$(bjson bundle status) || fail "fiona bundle status: $s"
jq -e --arg key "$key_id" '.current.serial == 1 and .current.signer == $key and
  .last_attempt.serial == 1 and .last_attempt.result == "applied" and .pending == null' \
  <<<"$s" >/dev/null || fail "fiona bundle status after the apply: $s"
st=$(bjson status) || fail "fiona status: $st"
jq -e '.config_source.kind == "bundle" and .config_source.serial == 1 and
  .selftest.verdict != null and .selftest.verdict != "failure"' <<<"$st" >/dev/null ||
  fail "the daemon does not run bundle serial 1 with a passed selftest: $(jq -c '{config_source, selftest}' <<<"$st")"
projects=$(bjson projects | jq -c 'map(.name)') || fail "fiona projects"
[ "$projects" = '["NSPAWN"]' ] || fail "fiona projects after the apply: $projects"
audit=$(bjson audit) || fail "fiona audit"
jq -e --arg key "$key_id" 'any(.[]; .action == "bundle_applied" and
  (.detail | contains("serial 1")) and (.detail | contains($key)))' <<<"$audit" >/dev/null ||
  fail "no bundle_applied record in the audit trail: $(jq -c '.[-3:]' <<<"$audit")"
say "bundle status: serial 1 current, applied (selftest $(jq -r .selftest.verdict <<<"$st")); projects $projects; audited"
# Restarted in place: the same process, no restart by systemd, and systemd saw the reload
# (RELOADING=1 moved the unit out of active, READY=1 back: its state-change time moved).
[ "$(prop MainPID)" = "$pid" ] || fail "MainPID changed from $pid to $(prop MainPID): not a restart in place"
[ "$(prop NRestarts)" = "$restarts" ] || fail "systemd restarted the daemon (NRestarts $restarts -> $(prop NRestarts))"
[ "$(in_ct systemctl is-active fiona.service)" = active ] || fail "fiona.service not active after the apply"
[ "$(prop StateChangeTimestampMonotonic)" -gt "$changed" ] ||
  fail "fiona.service did not change state during the apply: systemd saw no RELOADING=1/READY=1"
bundle_journal=$(journal_since) || fail "journalctl after the apply"
{ grep -E 'restarting on the configuration now current|--config .*ignored' <<<"$bundle_journal" || true; } |
  sed 's/^/    /'
grep -q 'restarting on the configuration now current' <<<"$bundle_journal" ||
  fail "the journal does not show the restart in place"
port=$(dicom_port)
echoscu -aec FIONA 127.0.0.1 "$port" || fail "no C-ECHO answer after the apply (127.0.0.1:$port)"
say "restarted in place on serial 1: MainPID $pid, NRestarts $restarts, active, C-ECHO answered on $port"

# Refused, with serial 1 still served by the same process: the next bundle (serial 2)
# unsigned through the inbox, then signed but with fiona.toml changed after signing.
prepare_bundle 2 "$run/b2"
tar -cf "$root/root/nspawn-unsigned.tar" -C "$run/b2" manifest.json fiona.toml secrets.toml.age ||
  fail "tar of the unsigned bundle"
in_ct install -o fiona -g fiona -m 0600 /root/nspawn-unsigned.tar /var/lib/fiona/inbox/ ||
  fail "cannot drop the unsigned bundle into the inbox"
result=/var/lib/fiona/inbox/nspawn-unsigned.tar.result
for _ in $(seq 1 60); do
  in_ct test -s "$result" && break
  sleep 0.5
done
verdict=$(in_ct cat "$result" 2>/dev/null) || fail "no $result 30 s after dropping an unsigned bundle in the inbox"
echo "    inbox: $verdict"
grep -q '^refused: the manifest is not signed' <<<"$verdict" || fail "the unsigned bundle in the inbox: $verdict"
echo '[projects.TAMPERED]' >>"$run/b2/fiona.toml"
"$bin" bundle pack "$run/b2" -o "$root/root/nspawn-tampered.tar" >/dev/null || fail "fiona bundle pack"
rc=0
out=$(in_ct fiona bundle apply /root/nspawn-tampered.tar --data-dir /var/lib/fiona 2>&1) || rc=$?
sed 's/^/    /' <<<"$out"
[ "$rc" = 1 ] || fail "fiona bundle apply of a tampered bundle exited $rc, not 1"
grep -q 'refused (file_tampered)' <<<"$out" || fail "the tampered bundle was not refused as file_tampered"
s=$(bjson bundle status) || fail "fiona bundle status: $s"
jq -e '.current.serial == 1 and .highest_serial == 1 and .last_attempt.result == "refused" and
  .last_attempt.code == "file_tampered"' <<<"$s" >/dev/null ||
  fail "fiona bundle status after the refusals: $s"
projects=$(bjson projects | jq -c 'map(.name)') || fail "fiona projects"
[ "$projects" = '["NSPAWN"]' ] || fail "fiona projects after the refusals: $projects"
audit=$(bjson audit) || fail "fiona audit"
for code in unsigned file_tampered; do
  jq -e --arg code "code $code" 'any(.[]; .action == "bundle_refused" and (.detail | contains($code)))' \
    <<<"$audit" >/dev/null || fail "no bundle_refused record with $code in the audit trail"
done
# Watchdog periods since the apply: the daemon was never killed.
sleep 4
[ "$(prop MainPID)" = "$pid" ] || fail "MainPID changed from $pid to $(prop MainPID) after the refusals"
[ "$(prop NRestarts)" = "$restarts" ] || fail "systemd restarted the daemon after the apply (NRestarts $(prop NRestarts))"
[ "$(in_ct systemctl is-active fiona.service)" = active ] || fail "fiona.service not active after the refusals"
more=$(journal_since) || fail "journalctl after the refusals"
bundle_journal="$bundle_journal"$'\n'"$more"
if grep -i 'watchdog timeout' <<<"$bundle_journal"; then
  fail "the watchdog timed out after the apply (above)"
fi
say "unsigned (inbox) and tampered (fiona bundle apply) bundles refused; serial 1 still runs in MainPID $pid"
# The selftest unit, started again as after an apply, judges the bundle's configuration.
if [ "$has_selftest" = yes ]; then
  in_ct systemctl start fiona-selftest.service || true
  result=$(in_ct systemctl show -p Result --value fiona-selftest.service)
  invocation=$(in_ct systemctl show -p InvocationID --value fiona-selftest.service)
  selftest_log=$(in_ct journalctl "_SYSTEMD_INVOCATION_ID=$invocation" --no-pager -o cat)
  { grep -E '^(configuration|deidentification) ' <<<"$selftest_log" || true; } | sed 's/^/    /'
  [ "$result" = success ] || fail "fiona-selftest.service on the bundle: result $result"
  grep -qE '^configuration +ok +valid; from bundle nspawn-1 serial 1 ' <<<"$selftest_log" ||
    fail "fiona-selftest.service does not see bundle serial 1 as the configuration"
  say "fiona-selftest.service: success on bundle serial 1"
fi
journal="$journal"$'\n'"$bundle_journal"

# Nothing the sandbox refused may show in the daemon's log.
if grep -iE 'operation not permitted|permission denied|bad system call' <<<"$journal"; then
  fail "the daemon's log shows a refusal by the sandbox (above)"
fi
say "PASS"
