#!/usr/bin/env bash
# Control API at project scale (issue 12 item 6): a project of N one-instance studies (10,000
# by default) forwarded to Orthanc and verified, then `fiona verify --project`,
# `fiona resend --project --dry-run` (when the option exists), `fiona transfers --export`
# and `fiona status` timed with the daemon's RSS, and one `fiona verify` while the PACS is
# stopped (must fail with a reason, not hang). A campaign script, too long for CI.
# See docs/BENCHMARKS.md. Usage: bash bench/verify_scale.sh
#
# Knobs (environment, defaults in brackets):
#   N          studies, one 16x16 CT instance each [10000]
#   FIONA_BIN  fiona binary [target/release/fiona, built with `cargo build --release` if absent]
#   BENCH_OUT  scratch directory (removed at exit) and report [bench/out]
#   KEEP=1     keep the scratch directory (corpus, data directory, logs)
#   TIMEOUT    seconds the N transfers may take to become `verified` [5400]
#   CMD_TIMEOUT seconds any one timed command may take before it counts as hung [1800]
#
# The research PACS is Orthanc (Debian package) configured as tests/src/orthanc.rs does: no
# HTTP server, no plugins, storage and index in the scratch directory. dcmqrscp is not used:
# it keeps its index in one flat file it scans per query and holds at most the configured
# number of studies per AE, which is not a PACS at 10,000 studies.
# The studies are assigned by a coupling list imported before they arrive (one CLI call),
# sent by one storescu association, and fiona's pipeline de-identifies, sends and verifies
# them (quiet_period_secs = 1, verify_after_secs = 0). Everything runs on 127.0.0.1.
# RSS: VmRSS of the daemon before and after each command, and its peak during the command
# (VmHWM after resetting it through /proc/PID/clear_refs; when that is not allowed, the
# peak since the daemon started, marked *).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${N:-10000} KEEP=${KEEP:-0} TIMEOUT=${TIMEOUT:-5400} CMD_TIMEOUT=${CMD_TIMEOUT:-1800}
BENCH_OUT=${BENCH_OUT:-$ROOT/bench/out}
PROJECT=SCALE1 EVENT=baseline QUIET_SECS=1
export TCP_NODELAY=1 # read by DCMTK; without it Nagle dominates on loopback

die() { echo "verify_scale.sh: FAILED: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*"; }
now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b - a) / 1e9}'; }
[[ $N =~ ^[1-9][0-9]*$ && $N -le 99999 ]] || die "N must be 1..99999"

# --- cleanup: every process this script started is in its own process group -------------
PGIDS=() WORK=""
stop_pid() { # PID: TERM its group, wait, then KILL
  local p=$1
  kill -TERM -- "-$p" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  kill -KILL -- "-$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() { # the scratch directory is kept with KEEP=1 or after a failed check
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PGIDS[@]}"; do stop_pid "$p"; done
  if [[ -n $WORK && ($KEEP == 1 || $rc == 1) ]]; then echo "kept: $WORK" >&2; elif [[ -n $WORK ]]; then rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM

# --- tools and build -----------------------------------------------------------------
for t in storescu echoscu jq setsid ss timeout; do
  command -v "$t" >/dev/null || die "$t is needed (dcmtk, jq, util-linux, iproute2, coreutils)"
done
ORTHANC=/usr/sbin/Orthanc
[[ -x $ORTHANC ]] || die "Orthanc is needed (apt-get install orthanc; tests/run.sh installs it)"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -z ${FIONA_BIN:-} ]]; then
  FIONA_BIN=$TARGET_DIR/release/fiona
  if [[ ! -x $FIONA_BIN ]]; then
    log "building fiona (cargo build --release -p fiona --bin fiona)"
    cargo build --release -q -p fiona --bin fiona
  fi
fi
[[ -x $FIONA_BIN ]] || die "fiona binary $FIONA_BIN not found"
MAKE_STUDIES=$TARGET_DIR/release/examples/make_studies
if [[ ! -x $MAKE_STUDIES ]]; then
  log "building the corpus generator (cargo build --release -p fiona-tests --example make_studies)"
  cargo build --release -q -p fiona-tests --example make_studies
fi

mkdir -p "$BENCH_OUT"
WORK=$(mktemp -d "$BENCH_OUT/verify_scale.XXXXXX")
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git status --porcelain -- daemon tests Cargo.lock 2>/dev/null | head -n1) ]] || GIT_REV="$GIT_REV (dirty tree)"
echo "== verify_scale benchmark $STAMP"
echo "machine:  nproc $(nproc), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "disk:     $(df -T "$WORK" | awk 'NR == 2 {print $2 " on " $1}')"
echo "versions: fiona git $GIT_REV (sha256 $(sha256sum "$FIONA_BIN" | cut -c1-12)), $($ORTHANC --version 2>&1 | head -n1 | sed 's#.*/##'), DCMTK $(storescu --version 2>&1 | sed -n 's/.*storescu v\([^ ]*\).*/\1/p' | head -n1)"

t=$(now_ns)
"$MAKE_STUDIES" "$WORK/corpus" "$N" "$PROJECT" "$EVENT" >/dev/null
T_GEN=$(secs "$t" "$(now_ns)")
log "generated $N studies in $T_GEN s ($(du -sh "$WORK/corpus/dicom" | cut -f1))"

# --- research PACS: Orthanc ------------------------------------------------------------
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return 0; }
  done
  die "no free port found"
}
PACS=$WORK/pacs PACS_PORT=$(free_port)
mkdir -p "$PACS"
jq -n --arg dir "$PACS" --argjson port "$PACS_PORT" '{
  Name: "fiona-bench-pacs", StorageDirectory: ($dir + "/storage"), IndexDirectory: ($dir + "/index"),
  Plugins: [], HttpServerEnabled: false, RemoteAccessAllowed: false, DicomServerEnabled: true,
  DicomAet: "RESEARCH", DicomPort: $port, DicomCheckCalledAet: true, DicomAlwaysAllowEcho: true,
  DicomAlwaysAllowStore: true, DicomAlwaysAllowFind: true, SaveJobs: false}' >"$PACS/orthanc.json"
start_pacs() {
  setsid "$ORTHANC" --no-jobs "$PACS/orthanc.json" >/dev/null 2>>"$PACS/orthanc.log" &
  PACS_PID=$!
  PGIDS+=("$PACS_PID")
  for _ in $(seq 200); do
    echoscu -aec RESEARCH 127.0.0.1 "$PACS_PORT" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "Orthanc did not start (see $PACS/orthanc.log)"
}
start_pacs

# --- fiona -----------------------------------------------------------------------------
DATA=$WORK/data
mkdir -p "$DATA"
cat >"$WORK/fiona.toml" <<EOF
ae_title = "FIONA"
listen = "127.0.0.1:0"
data_dir = "$DATA"
quiet_period_secs = $QUIET_SECS
min_free_bytes = 0
[projects.$PROJECT]
participant_pattern = "$PROJECT-[0-9]{5}"
events = ["$EVENT"]
approval_start = "2025-01-01"
approval_end = "2099-12-31"
destinations = ["research"]
[destinations.research]
host = "127.0.0.1"
port = $PACS_PORT
ae_title = "RESEARCH"
verify_after_secs = 0
retry_base_secs = 1
EOF
FIONA_LOG=info NO_COLOR=1 setsid "$FIONA_BIN" serve --config "$WORK/fiona.toml" >"$WORK/fiona.log" 2>&1 &
FIONA_PID=$!
PGIDS+=("$FIONA_PID")
F() { "$FIONA_BIN" "$@" --data-dir "$DATA"; }
for _ in $(seq 600); do
  [[ -S $DATA/run/control.sock && -s $DATA/run/dicom.addr ]] && F status --json >/dev/null 2>&1 && break
  sleep 0.05
done
F status --json >/dev/null 2>&1 || die "fiona did not start (see $WORK/fiona.log)"
[[ $(cat /proc/$FIONA_PID/comm) == fiona ]] || die "PID $FIONA_PID is not fiona"
FIONA_PORT=$(sed 's/.*://' "$DATA/run/dicom.addr")
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$FIONA_PID/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}'; }

# --- assign, receive, forward, verify ----------------------------------------------------
t=$(now_ns)
F coupling import "$WORK/corpus/coupling.csv" >"$WORK/coupling.out" 2>&1 || die "coupling import: $(cat "$WORK/coupling.out")"
T_IMPORT=$(secs "$t" "$(now_ns)")
log "coupling list of $N rows imported in $T_IMPORT s"

t=$(now_ns) T_RECV0=$t
storescu -aec FIONA -R -xe +sd +r 127.0.0.1 "$FIONA_PORT" "$WORK/corpus/dicom" >"$WORK/storescu.log" 2>&1 \
  || die "storescu to fiona failed (see $WORK/storescu.log)"
T_SEND=$(secs "$t" "$(now_ns)")
got=$(F status --json | jq -r '.totals.instances')
[[ $got == "$N" ]] || die "fiona holds $got of $N instances after receiving"
log "received $N instances (one storescu association) in $T_SEND s"

states() { F projects --json | jq -c --arg p "$PROJECT" '.[] | select(.name == $p) | .transfers'; }
t=$(now_ns) last=""
while :; do
  s=$(states)
  [[ $s != "$last" ]] && log "transfers: $s" && last=$s
  [[ $(jq -r '.verified // 0' <<<"$s") == "$N" ]] && break
  for bad in failed parked cancelled; do
    [[ $(jq -r --arg b "$bad" '.[$b] // 0' <<<"$s") == 0 ]] || die "transfers $bad: $s (see $WORK/fiona.log)"
  done
  (($(now_ns) - t < TIMEOUT * 1000000000)) || die "not all verified after $TIMEOUT s: $s"
  sleep 10
done
T_PIPE=$(secs "$t" "$(now_ns)") T_ALL=$(secs "$T_RECV0" "$(now_ns)")
RSS_PIPE=$(rss_kb) HWM_START=$(awk '/^VmHWM/ {print $2}' "/proc/$FIONA_PID/status")
held=$(find "$PACS/storage" -type f | wc -l)
[[ $held == "$N" ]] || die "Orthanc stored $held files, expected $N"
log "all $N transfers verified $T_PIPE s after the last instance arrived; Orthanc stored $held files; daemon RSS $(mib "$RSS_PIPE") MiB (peak so far $(mib "$HWM_START") MiB)"

# --- the timed commands ----------------------------------------------------------------
RESULTS=$WORK/results.tsv
: >"$RESULTS"
# timed NAME FIONA-ARGS...: `fiona ARGS --data-dir DATA`, wall clock, exit status, RSS before/after/peak.
# Output in $WORK/NAME.out and .err; sets RC and WALL.
timed() {
  local name=$1 t0 t1 before after peak mark=""
  shift
  before=$(rss_kb)
  echo 5 >"/proc/$FIONA_PID/clear_refs" 2>/dev/null || mark="*"
  t0=$(now_ns)
  set +e
  timeout "$CMD_TIMEOUT" "$FIONA_BIN" "$@" --data-dir "$DATA" >"$WORK/$name.out" 2>"$WORK/$name.err"
  RC=$?
  set -e
  t1=$(now_ns)
  WALL=$(secs "$t0" "$t1")
  after=$(rss_kb)
  peak=$(awk '/^VmHWM/ {print $2}' "/proc/$FIONA_PID/status")
  printf '%s\t%s\t%s\t%s\t%s\t%s%s\n' "$name" "$WALL" "$RC" "$(mib "$before")" "$(mib "$after")" "$(mib "$peak")" "$mark" >>"$RESULTS"
  log "$name: ${WALL} s, exit $RC, daemon RSS $(mib "$before") -> $(mib "$after") MiB (peak $(mib "$peak")$mark MiB)"
  [[ $RC != 124 ]] || die "$name did not finish within $CMD_TIMEOUT s"
}
CHECKS=()

timed verify verify --project "$PROJECT"
summary=$(tail -n1 "$WORK/verify.out")
[[ $RC == 0 && $summary == "$N transfers checked, 0 instances missing, 0 destinations not answering" ]] \
  || die "verify: exit $RC, '$summary' (see $WORK/verify.err)"
CHECKS+=("verify: $summary; $(grep -c 'transfers checked$' "$WORK/verify.err") progress lines on stderr")

if F resend --help 2>/dev/null | grep -q -- '--dry-run'; then
  timed resend_dry_run F resend --project "$PROJECT" --dry-run
  [[ $RC == 0 ]] || die "resend --dry-run: exit $RC (see $WORK/resend_dry_run.err)"
  CHECKS+=("resend --dry-run: $(tail -n1 "$WORK/resend_dry_run.out")")
else
  CHECKS+=("resend --project --dry-run: skipped (fiona resend has no --dry-run; a real resend would re-send all $N)")
fi

timed export_csv transfers --project "$PROJECT" --export csv -o "$WORK/export.csv"
rows=$(($(wc -l <"$WORK/export.csv") - 1))
[[ $RC == 0 && $rows == "$N" ]] || die "export csv: exit $RC, $rows rows (see $WORK/export_csv.err)"
CHECKS+=("export csv: $rows rows, $(stat -c %s "$WORK/export.csv") bytes")

timed export_json transfers --project "$PROJECT" --export json -o "$WORK/export.json"
rows=$(jq length "$WORK/export.json" 2>/dev/null || echo "?")
[[ $RC == 0 && $rows == "$N" ]] || die "export json: exit $RC, $rows rows (see $WORK/export_json.err)"
CHECKS+=("export json: $rows rows, $(stat -c %s "$WORK/export.json") bytes")

timed transfers_json transfers --project "$PROJECT" --json
CHECKS+=("transfers --json: $(jq length "$WORK/transfers_json.out") transfers, $(stat -c %s "$WORK/transfers_json.out") bytes")

timed status status
[[ $RC == 0 ]] || die "status: exit $RC (see $WORK/status.err)"
CHECKS+=("status: $(grep '^quarantine' "$WORK/status.out" | sed 's/  */ /g')")

log "stopping Orthanc"
stop_pid "$PACS_PID"
echoscu -aec RESEARCH 127.0.0.1 "$PACS_PORT" >/dev/null 2>&1 && die "Orthanc still answers"
timed verify_pacs_down verify --project "$PROJECT"
summary=$(tail -n1 "$WORK/verify_pacs_down.out")
first=$(awk 'NR == 2' "$WORK/verify_pacs_down.out" | sed 's/.*  //')
[[ $RC == 1 && $summary == "$N transfers checked, 0 instances missing, $N destinations not answering" ]] \
  || die "verify with the PACS stopped: exit $RC, '$summary' (see $WORK/verify_pacs_down.err)"
CHECKS+=("verify, PACS stopped: exit $RC, '$summary'; first row: '$first'; stderr: '$(tail -n1 "$WORK/verify_pacs_down.err")'")

# --- report ----------------------------------------------------------------------------
REPORT=$BENCH_OUT/verify_scale-$STAMP.md
{
  echo
  echo "verify_scale $STAMP: N=$N one-instance studies, project $PROJECT -> Orthanc; fiona git $GIT_REV"
  echo "setup: generate $T_GEN s, coupling import $T_IMPORT s, storescu -> fiona $T_SEND s, received -> all verified $T_PIPE s (storescu start -> all verified $T_ALL s; daemon RSS then $(mib "$RSS_PIPE") MiB, peak $(mib "$HWM_START") MiB)"
  echo
  echo "| command | wall s | exit | daemon RSS before MiB | after MiB | peak during MiB |"
  echo "|---|---:|---:|---:|---:|---:|"
  awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6}' "$RESULTS"
  echo
  for c in "${CHECKS[@]}"; do echo "- $c"; done
  echo
  echo "load at end $(cut -d' ' -f1-3 /proc/loadavg); command: \`N=$N bash bench/verify_scale.sh\`"
} | tee "$REPORT"
echo "report written to $REPORT"
