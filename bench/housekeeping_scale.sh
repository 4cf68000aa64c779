#!/usr/bin/env bash
# Housekeeping at scale (issue 16): an index of STUDIES x PER instances (50,000 x 20 = one
# million by default) made directly in the index by `daemon/examples/scale_index.rs` (half
# verified, the rest failed, parked and unassigned; one rejected file per ten studies), then,
# against a running `fiona serve`:
#   1. no disk pressure: `fiona status`, `fiona studies --all --json`, `fiona evict --dry-run`,
#      each run REPEAT times (median and max wall clock; peak RSS of the command);
#   2. the daemon restarted with a high-water mark 5 points above the free space and a target
#      10 points above: its start-up pass surveys the whole index and evicts, oldest first,
#      until the target would be reached (on a 252 GB disk about 2,500 studies, 50,000 instance
#      records, in one transaction); the pass times itself (`ms=` in its log line); then
#      `fiona status` and `fiona studies --all --json` again.
# The daemon's peak RSS (VmHWM) is read after each phase. The index names files that do not
# exist (unlinking them costs nothing): the figures are of the index work. A campaign script,
# too long for CI. Usage: bash bench/housekeeping_scale.sh   (see docs/BENCHMARKS.md)
#
# Knobs: STUDIES [50000], PER [20], REPEAT [5], BENCH_OUT [bench/out], KEEP=1 keeps the scratch.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STUDIES=${STUDIES:-50000} PER=${PER:-20} REPEAT=${REPEAT:-5} KEEP=${KEEP:-0}
BENCH_OUT=${BENCH_OUT:-$ROOT/bench/out}

die() { echo "housekeeping_scale.sh: FAILED: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*"; }
now_ns() { date +%s%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f", (b - a) / 1e6}'; }

FIONA_PID="" WORK=""
stop_fiona() {
  [[ -n $FIONA_PID ]] || return 0
  kill -TERM "$FIONA_PID" 2>/dev/null || true
  for _ in $(seq 600); do kill -0 "$FIONA_PID" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$FIONA_PID" 2>/dev/null || true
  wait "$FIONA_PID" 2>/dev/null || true
  FIONA_PID=""
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_fiona
  if [[ -n $WORK && ($KEEP == 1 || $rc != 0) ]]; then echo "kept: $WORK" >&2; elif [[ -n $WORK ]]; then rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM

for t in jq setsid; do command -v "$t" >/dev/null || die "$t is needed"; done
[[ -x /usr/bin/time ]] || die "/usr/bin/time is needed (Debian package time)"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
log "building (cargo build --release -p fiona --bin fiona --example scale_index)"
cargo build --release -q -p fiona --bin fiona --example scale_index
FIONA_BIN=$TARGET_DIR/release/fiona

mkdir -p "$BENCH_OUT"
WORK=$(mktemp -d "$BENCH_OUT/housekeeping_scale.XXXXXX")
DATA=$WORK/data
echo "== housekeeping_scale benchmark $(date -u +%Y%m%dT%H%M%SZ)"
echo "machine:  nproc $(nproc), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "disk:     $(df -T "$WORK" | awk 'NR == 2 {print $2 " on " $1}'), $(df --output=pcent "$WORK" | tail -n1 | tr -d " ") used"
echo "fiona:    git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([[ -z $(git status --porcelain -- daemon 2>/dev/null | head -n1) ]] || echo ' (dirty tree)')"

t=$(now_ns)
"$TARGET_DIR/release/examples/scale_index" "$DATA" "$STUDIES" "$PER" 2>/dev/null | sed 's/^/          /'
log "index built in $(ms "$t" "$(now_ns)") ms; index file $(du -h "$DATA/index.redb" | cut -f1)"

# Free space as fiona sees it (available to us / size), for the marks of phase 2.
free_pct=$(df --output=avail,size "$WORK" | awk 'NR == 2 {printf "%d", 100 * $1 / $2}')
config() { # HIGH TARGET
  cat >"$WORK/fiona.toml" <<EOF
ae_title = "FIONA"
listen = "127.0.0.1:0"
data_dir = "$DATA"
min_free_bytes = 0
[eviction]
high_water_free_percent = $1
target_free_percent = $2
grace_hours = 24
[projects.PROJ1]
participant_pattern = "PROJ1-[0-9]{6}"
events = ["baseline"]
approval_start = "2025-01-01"
approval_end = "2099-12-31"
destinations = ["research"]
[destinations.research]
host = "127.0.0.1"
port = 9
ae_title = "RESEARCH"
EOF
}
F() { "$FIONA_BIN" "$@" --data-dir "$DATA"; }
start_fiona() {
  FIONA_LOG=info NO_COLOR=1 setsid "$FIONA_BIN" serve --config "$WORK/fiona.toml" >>"$WORK/fiona.log" 2>&1 &
  FIONA_PID=$!
  for _ in $(seq 6000); do
    [[ -S $DATA/run/control.sock ]] && F status --json >/dev/null 2>&1 && return 0
    kill -0 "$FIONA_PID" 2>/dev/null || die "fiona exited (see $WORK/fiona.log)"
    sleep 0.05
  done
  die "fiona did not start (see $WORK/fiona.log)"
}
hwm() { awk '/^VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$FIONA_PID/status"; }

# timed NAME ARGS...: REPEAT runs of `fiona ARGS`; prints median and max ms and the command's
# peak RSS; the output of the last run in $WORK/NAME.out.
timed() {
  local name=$1 i t0 t1 walls=() rss=0 r
  shift
  for i in $(seq "$REPEAT"); do
    t0=$(now_ns)
    /usr/bin/time -f %M -o "$WORK/$name.time" "$FIONA_BIN" "$@" --data-dir "$DATA" >"$WORK/$name.out" 2>"$WORK/$name.err" \
      || die "fiona $* failed: $(head -c 500 "$WORK/$name.err")"
    t1=$(now_ns)
    walls+=("$(ms "$t0" "$t1")")
    r=$(tail -n1 "$WORK/$name.time")
    ((r > rss)) && rss=$r
  done
  printf '%s\n' "${walls[@]}" | sort -n | awk -v name="$name $*" -v n="$REPEAT" -v rss="$rss" -v bytes="$(stat -c %s "$WORK/$name.out")" '
    {v[NR] = $1} END {printf "  %-34s median %6d ms  max %6d ms  (%d runs; command peak RSS %.0f MiB; output %.1f MB)\n",
      name, v[int((n + 1) / 2)], v[n], n, rss / 1024, bytes / 1e6}'
}

log "phase 1: no pressure (high-water 1 %, free ${free_pct} %)"
config 1 2
start_fiona
log "daemon up; start-up pass: $(grep -c 'evicted: ' "$WORK/fiona.log" || true) evicting passes; peak RSS $(hwm)"
timed status status --json
jq -e --argjson n $((STUDIES * PER)) '.totals.instances == $n' "$WORK/status.out" >/dev/null || die "status does not show $((STUDIES * PER)) instances"
timed studies studies --all --json
jq -e --argjson n "$STUDIES" 'length == $n' "$WORK/studies.out" >/dev/null || die "studies --all --json does not list $STUDIES studies"
timed evict-dry-run evict --dry-run --json
echo "  daemon peak RSS after phase 1: $(hwm)"
stop_fiona

high=$((free_pct + 5)) target=$((free_pct + 10))
((target < 100)) || die "the disk is too empty for a high-water mark above the free space"
log "phase 2: pressure (high-water $high %, target $target %, free $free_pct %): the start-up pass evicts all it may"
config "$high" "$target"
t=$(now_ns)
start_fiona
log "daemon answered $(ms "$t" "$(now_ns)") ms after start"
for _ in $(seq 12000); do grep -q 'evicted: ' "$WORK/fiona.log" && break; sleep 0.05; done
line=$(grep 'evicted: ' "$WORK/fiona.log" | tail -n1) || die "no eviction pass in the log within 600 s"
echo "  pass: $(sed -n 's/.*\(evicted: [^=]*\) studies=.*/\1/p' <<<"$line")"
echo "  pass: ms=$(sed -n 's/.* ms=\([0-9]*\).*/\1/p' <<<"$line") (the pass's own clock: survey, plan, one index transaction, unlink)"
echo "  daemon peak RSS after the pass: $(hwm)"
timed status-after status --json
timed studies-after studies --all --json
timed evict-again evict --json
echo "  daemon peak RSS at the end: $(hwm)"
