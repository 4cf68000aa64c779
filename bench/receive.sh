#!/usr/bin/env bash
# Receive benchmark (issue 2): how fast fiona takes in C-STOREs over loopback, next to
# DCMTK storescp as the anchor. See docs/BENCHMARKS.md for what it measures and how to
# read the output.
#
#   bash bench/receive.sh
#
# Knobs (environment variables, defaults in brackets):
#   COUNT            instances in the corpus [1000]; 512x512 16-bit CT, ~0.5 MB each
#   REPEAT           runs per configuration; the median is reported [3]
#   ASSOCS           parallel association counts to measure, space separated ["1 4"]
#   RECEIVERS        receivers to measure ["storescp fiona"]
#   STORESCP_PDU     storescp's max receive PDU [131072, the same as fiona's default max_pdu]
#   BENCH_OUT        corpus and reports [bench/out]
#   BENCH_DATA_ROOT  where the receivers' per-run data directories go [$BENCH_OUT/runs]
#   FIONA_BIN        fiona binary; if unset, `cargo build --release -p fiona` is run and
#                    target/release/fiona used
#   KEEP_RUNS=1      keep each run's data directory and logs (default: delete after checking)
#   FIONA_WEB        fiona's web page: `on` [default; HTTPS on a free 127.0.0.1 port, so runs
#                    never clash with another daemon on the embedded 8443] or `off`
#
# Everything runs on 127.0.0.1. Every DCMTK tool gets TCP_NODELAY=1 in its environment
# (without it Nagle's algorithm dominates on loopback). The corpus is generated once with
# `cargo run --release -p fiona-tests --example make_corpus` and reused from $BENCH_OUT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

COUNT=${COUNT:-1000}
REPEAT=${REPEAT:-3}
ASSOCS=${ASSOCS:-"1 4"}
RECEIVERS=${RECEIVERS:-"storescp fiona"}
STORESCP_PDU=${STORESCP_PDU:-131072}
BENCH_OUT=${BENCH_OUT:-$ROOT/bench/out}
BENCH_DATA_ROOT=${BENCH_DATA_ROOT:-$BENCH_OUT/runs}
KEEP_RUNS=${KEEP_RUNS:-0}
FIONA_WEB=${FIONA_WEB:-on}
AE=FIONA

die() { echo "receive.sh: FAILED: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*"; }
loadavg1() { cut -d' ' -f1 /proc/loadavg; }
now_ns() { date +%s%N; }

[[ $COUNT =~ ^[1-9][0-9]*$ ]] || die "COUNT must be a positive integer (got '$COUNT')"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer (got '$REPEAT')"
for j in $ASSOCS; do
  [[ $j =~ ^[1-9][0-9]*$ ]] && ((j <= COUNT)) || die "ASSOCS entries must be in 1..COUNT (got '$j')"
done
for r in $RECEIVERS; do
  [[ $r == storescp || $r == fiona ]] || die "unknown receiver '$r' (storescp or fiona)"
done
case $FIONA_WEB in
  on) WEB_LISTEN=127.0.0.1:0 ;;
  off) WEB_LISTEN=off ;;
  *) die "FIONA_WEB must be on or off (got '$FIONA_WEB')" ;;
esac

# --- cleanup: stop whatever receiver or sender is still running --------------------------
RECV_PID=""     # receiver process (own process group, see start_*)
SENDER_PIDS=()  # storescu processes of the current run
CUR_RUN=""      # data directory of the current run: removed when interrupted, kept on failure
INTERRUPTED=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${SENDER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [[ -n $RECV_PID ]]; then
    kill -TERM -- "-$RECV_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$RECV_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$RECV_PID" 2>/dev/null || true
    wait "$RECV_PID" 2>/dev/null || true
  fi
  if ((INTERRUPTED)) && [[ -n $CUR_RUN ]]; then rm -rf "$CUR_RUN" "$CUR_RUN".log*; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'INTERRUPTED=1; exit 130' INT
trap 'INTERRUPTED=1; exit 143' TERM

# --- tools -----------------------------------------------------------------------------
if ! command -v storescu >/dev/null 2>&1 || ! command -v storescp >/dev/null 2>&1 \
  || ! command -v echoscu >/dev/null 2>&1; then
  log "DCMTK (storescu/storescp/echoscu) missing: installing dcmtk"
  SUDO=""
  [[ $(id -u) == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dcmtk >/dev/null
  command -v storescu >/dev/null 2>&1 && command -v storescp >/dev/null 2>&1 \
    || die "storescu/storescp still not found after installing dcmtk"
fi
command -v jq >/dev/null 2>&1 || die "jq is needed to read 'fiona status --json' (apt-get install jq)"
command -v setsid >/dev/null 2>&1 || die "setsid (util-linux) is needed"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -z ${FIONA_BIN:-} ]]; then
  log "building fiona (cargo build --release -p fiona)"
  cargo build --release -q -p fiona
  FIONA_BIN=$TARGET_DIR/release/fiona
fi
[[ -x $FIONA_BIN ]] || die "fiona binary $FIONA_BIN not found or not executable"

# --- corpus ----------------------------------------------------------------------------
CORPUS=$BENCH_OUT/corpus-ct512-$COUNT
ALL=$CORPUS/all
count_files() { find "$1" -maxdepth 1 -type f | wc -l; }
if [[ -d $ALL ]]; then
  n=$(count_files "$ALL")
  ((n == COUNT)) || die "$ALL holds $n files, expected $COUNT: delete $CORPUS and re-run"
  log "reusing corpus $ALL"
else
  log "generating corpus: $COUNT instances into $ALL"
  mkdir -p "$CORPUS"
  cargo run --release -q -p fiona-tests --example make_corpus -- "$ALL" "$COUNT"
  n=$(count_files "$ALL")
  ((n == COUNT)) || die "make_corpus wrote $n files, expected $COUNT"
fi
CORPUS_BYTES=$(find "$ALL" -maxdepth 1 -type f -printf '%s\n' | awk '{s += $1} END {printf "%d", s}')
mapfile -t FILES < <(find "$ALL" -maxdepth 1 -type f -name '*.dcm' | sort)
((${#FILES[@]} == COUNT)) || die "$ALL: expected $COUNT *.dcm files, found ${#FILES[@]}"

# For J parallel associations: J directories of hard links, file k in part (k mod J), so
# every association sends about COUNT/J instances.
split_dir() { # J -> directory holding part1..partJ (created once)
  local j=$1 d=$CORPUS/split$1 k
  if [[ ! -f $d/.complete ]]; then
    rm -rf "$d"
    for ((k = 1; k <= j; k++)); do mkdir -p "$d/part$k"; done
    for ((k = 0; k < COUNT; k++)); do
      ln "${FILES[k]}" "$d/part$((k % j + 1))/"
    done
    touch "$d/.complete"
  fi
  echo "$d"
}
declare -A PARTS
for j in $ASSOCS; do
  if ((j == 1)); then
    PARTS[$j]=$ALL
  else
    d=$(split_dir "$j")
    PARTS[$j]=$(for ((k = 1; k <= j; k++)); do printf '%s ' "$d/part$k"; done)
  fi
done

# --- machine ---------------------------------------------------------------------------
mkdir -p "$BENCH_DATA_ROOT"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
REPORT=$BENCH_OUT/receive-$STAMP.md
DCMTK_VERSION=$(storescu --version 2>&1 | sed -n 's/.*storescu v\([^ ]*\).*/\1/p' | head -n1)
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null | head -n1) ]]; then GIT_REV="$GIT_REV (dirty tree)"; fi
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
MEM=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
FS=$(df -T "$BENCH_DATA_ROOT" | awk 'NR == 2 {print $2 " (" $1 ", mounted on " $7 ")"}')
FIONA_SHA=$(sha256sum "$FIONA_BIN" | cut -c1-12)

# fiona's single-association rate is bounded by fsync latency (file, directory, index
# commit per instance), which varies a lot on shared virtual disks: measure it next to the
# results. Needs python3; skipped without it.
fsync_probe() {
  command -v python3 >/dev/null 2>&1 || { echo "n/a (no python3)"; return 0; }
  python3 - "$BENCH_DATA_ROOT/fsync-probe-$$" <<'PY'
import os, sys, time
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
buf = b"\x5a" * 525_000
f_t, d_t = [], []
try:
    for i in range(50):
        fd = os.open(f"{d}/f{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, buf)
        t = time.perf_counter(); os.fsync(fd); f_t.append(time.perf_counter() - t)
        os.close(fd)
        dfd = os.open(d, os.O_RDONLY)
        t = time.perf_counter(); os.fsync(dfd); d_t.append(time.perf_counter() - t)
        os.close(dfd)
finally:
    for n in os.listdir(d):
        os.unlink(f"{d}/{n}")
    os.rmdir(d)
f_t.sort(); d_t.sort()
print(f"fsync of a new 0.5 MB file median {f_t[25]*1e3:.1f} ms, of its directory median {d_t[25]*1e3:.1f} ms")
PY
}

LOAD_START=$(loadavg1)
FSYNC_START=$(fsync_probe)
T0=$(now_ns)

echo "== receive benchmark $STAMP"
echo "machine:   nproc $(nproc), ${CPU:-unknown cpu}, memory $MEM, kernel $(uname -r)"
echo "data dir:  $BENCH_DATA_ROOT on $FS"
echo "versions:  fiona $("$FIONA_BIN" --version 2>/dev/null | awk '{print $2}') (git $GIT_REV, binary sha256 $FIONA_SHA), DCMTK $DCMTK_VERSION"
echo "corpus:    $COUNT instances, $CORPUS_BYTES bytes ($CORPUS)"
echo "runs:      receivers [$RECEIVERS] x associations [$ASSOCS] x $REPEAT repetitions, interleaved; fiona's web page $FIONA_WEB"
echo "load:      nproc $(nproc), 1-min load average at start $LOAD_START"
echo "disk:      $FSYNC_START"

# --- receivers -------------------------------------------------------------------------
RECV_PORT=""
port_in_use() { ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }

start_storescp() { # DATADIR LOG
  local dir=$1 logf=$2 try port
  mkdir -p "$dir"
  for try in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    port_in_use "$port" && continue
    # --fork: one child process per association, so parallel associations are served in
    # parallel. -dhl: no reverse DNS lookup of the peer.
    TCP_NODELAY=1 setsid storescp --fork -aet "$AE" -pdu "$STORESCP_PDU" -dhl \
      -od "$dir" "$port" >>"$logf" 2>&1 &
    RECV_PID=$!
    for _ in $(seq 100); do
      kill -0 "$RECV_PID" 2>/dev/null || break
      if TCP_NODELAY=1 echoscu -aec "$AE" 127.0.0.1 "$port" >/dev/null 2>&1; then
        RECV_PORT=$port
        return 0
      fi
      sleep 0.05
    done
    stop_receiver
  done
  die "storescp did not start (see $logf)"
}

start_fiona() { # DATADIR LOG
  local dir=$1 logf=$2 addr=""
  mkdir -p "$dir"
  setsid "$FIONA_BIN" serve --listen 127.0.0.1:0 --web-listen "$WEB_LISTEN" --data-dir "$dir" >>"$logf" 2>&1 &
  RECV_PID=$!
  for _ in $(seq 600); do
    kill -0 "$RECV_PID" 2>/dev/null || die "fiona exited during start-up; log $logf:
$(tail -n 20 "$logf")"
    if [[ -S $dir/run/control.sock && -s $dir/run/dicom.addr ]]; then
      addr=$(tr -d '[:space:]' <"$dir/run/dicom.addr")
      if [[ $addr == *:* ]] && "$FIONA_BIN" status --data-dir "$dir" --json >/dev/null 2>&1; then
        RECV_PORT=${addr##*:}
        return 0
      fi
    fi
    sleep 0.05
  done
  die "fiona did not become ready within 30 s (see $logf)"
}

stop_receiver() {
  [[ -n $RECV_PID ]] || return 0
  kill -TERM -- "-$RECV_PID" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$RECV_PID" 2>/dev/null || break; sleep 0.05; done
  kill -KILL -- "-$RECV_PID" 2>/dev/null || true
  wait "$RECV_PID" 2>/dev/null || true
  RECV_PID=""
}

received_count() { # RECEIVER DATADIR
  case $1 in
    storescp) count_files "$2" ;;
    fiona) "$FIONA_BIN" status --data-dir "$2" --json | jq -er '.totals.instances' ;;
  esac
}

# --- one measured run ------------------------------------------------------------------
RESULTS=$BENCH_OUT/receive-$STAMP.tsv # receiver, assocs, rep, seconds
: >"$RESULTS"

run_once() { # RECEIVER J REP
  local recv=$1 j=$2 rep=$3 name dir logf t_start t_end secs got p failed=0 k
  name="$recv-a$j-r$rep"
  dir=$BENCH_DATA_ROOT/$STAMP-$name
  logf=$BENCH_DATA_ROOT/$STAMP-$name.log
  rm -rf "$dir"
  CUR_RUN=$dir
  : >"$logf"
  "start_$recv" "$dir" "$logf"

  # shellcheck disable=SC2206 # split on spaces on purpose: one directory per association
  local parts=(${PARTS[$j]})
  SENDER_PIDS=()
  t_start=$(now_ns)
  k=0
  for p in "${parts[@]}"; do
    k=$((k + 1))
    # The subshell records when this association's storescu exited (per-association spread).
    (
      rc=0
      TCP_NODELAY=1 storescu -aec "$AE" -R -xe +sd 127.0.0.1 "$RECV_PORT" "$p" \
        >"$logf.storescu$k" 2>&1 || rc=$?
      now_ns >"$logf.end$k"
      exit "$rc"
    ) &
    SENDER_PIDS+=($!)
  done
  for p in "${SENDER_PIDS[@]}"; do wait "$p" || failed=$((failed + 1)); done
  t_end=$(now_ns)
  SENDER_PIDS=()
  local ends=""
  if ((${#parts[@]} > 1)); then
    ends=$(cat "$logf".end* | sort -n | awk -v a="$t_start" \
      '{printf "%s%.2f", (NR > 1 ? "/" : "  associations done at "), ($1 - a) / 1e9} END {print " s"}')
  fi

  got=$(received_count "$recv" "$dir") || got="?"
  stop_receiver
  secs=$(awk -v a="$t_start" -v b="$t_end" 'BEGIN {printf "%.3f", (b - a) / 1e9}')
  if ((failed)) || [[ $got != "$COUNT" ]]; then
    echo "--- $recv log ($logf):" >&2; tail -n 20 "$logf" >&2 || true
    for ((k = 1; k <= ${#parts[@]}; k++)); do
      echo "--- storescu $k:" >&2; grep -E 'E:|F:|W:' "$logf.storescu$k" | tail -n 10 >&2 || true
    done
    die "$name: $failed storescu process(es) failed; receiver has $got of $COUNT instances (kept $dir)"
  fi
  printf '%s\t%s\t%s\t%s\n' "$recv" "$j" "$rep" "$secs" >>"$RESULTS"
  awk -v r="$recv" -v j="$j" -v rep="$rep" -v s="$secs" -v n="$COUNT" -v b="$CORPUS_BYTES" -v l="$(loadavg1)" \
    'BEGIN {printf "  %-8s assocs %-2d rep %d: %7.3f s  %7.1f inst/s  %7.1f MB/s  (%d received, load %s)",
            r, j, rep, s, n / s, b / s / 1e6, n, l}'
  echo "$ends"
  if [[ $KEEP_RUNS != 1 ]]; then
    rm -rf "$dir" "$logf" "$logf".storescu* "$logf".end*
  fi
  CUR_RUN=""
  # storescp leaves its files dirty in the page cache; write everything back now so that
  # the next run (possibly another receiver) does not pay for this run's writeback.
  sync
}

for ((rep = 1; rep <= REPEAT; rep++)); do
  for j in $ASSOCS; do
    for recv in $RECEIVERS; do
      run_once "$recv" "$j" "$rep"
    done
  done
done

LOAD_END=$(loadavg1)
T1=$(now_ns)
FSYNC_END=$(fsync_probe)
ELAPSED=$(awk -v a="$T0" -v b="$T1" 'BEGIN {printf "%.0f", (b - a) / 1e9}')

# --- summary ---------------------------------------------------------------------------
median() { # RECEIVER J -> median seconds
  awk -F'\t' -v r="$1" -v j="$2" '$1 == r && $2 == j {print $4}' "$RESULTS" | sort -g \
    | awk '{v[NR] = $1} END {if (NR == 0) exit 1; if (NR % 2) printf "%.3f", v[(NR + 1) / 2];
                              else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
all_runs() { # RECEIVER J -> "a / b / c"
  awk -F'\t' -v r="$1" -v j="$2" '$1 == r && $2 == j {printf "%s%.2f", (n++ ? " / " : ""), $4}' "$RESULTS"
}

{
  echo
  echo "Receive benchmark $STAMP: $COUNT instances ($CORPUS_BYTES bytes), median of $REPEAT runs; MB = 10^6 bytes."
  echo "nproc $(nproc); 1-min load average: $LOAD_START at start, $LOAD_END at end; measurements took ${ELAPSED} s."
  echo "Data dir: at start $FSYNC_START; at end $FSYNC_END."
  echo
  echo "| receiver | associations | median s | instances/s | MB/s | fiona/storescp | runs (s) |"
  echo "|---|---:|---:|---:|---:|---:|---|"
  for j in $ASSOCS; do
    anchor=""
    if [[ " $RECEIVERS " == *" storescp "* ]]; then anchor=$(median storescp "$j"); fi
    for recv in $RECEIVERS; do
      m=$(median "$recv" "$j")
      ratio="-"
      if [[ $recv != storescp && -n $anchor ]]; then
        # throughput ratio: > 1 means fiona takes in the corpus faster than storescp
        ratio=$(awk -v a="$anchor" -v m="$m" 'BEGIN {printf "%.2f", a / m}')
      fi
      awk -v r="$recv" -v j="$j" -v m="$m" -v n="$COUNT" -v b="$CORPUS_BYTES" -v q="$ratio" -v runs="$(all_runs "$recv" "$j")" \
        'BEGIN {printf "| %s | %d | %.3f | %.1f | %.1f | %s | %s |\n", r, j, m, n / m, b / m / 1e6, q, runs}'
    done
  done
} | tee "$REPORT"

{
  echo
  echo "Command: \`COUNT=$COUNT REPEAT=$REPEAT ASSOCS=\"$ASSOCS\" STORESCP_PDU=$STORESCP_PDU FIONA_WEB=$FIONA_WEB bash bench/receive.sh\`"
  echo "Machine: nproc $(nproc), ${CPU:-unknown cpu}, $MEM, data dir on $FS, kernel $(uname -r)"
  echo "Versions: fiona git $GIT_REV (binary sha256 $FIONA_SHA), DCMTK $DCMTK_VERSION"
} >>"$REPORT"
echo
echo "report written to $REPORT (raw times: $RESULTS)"
