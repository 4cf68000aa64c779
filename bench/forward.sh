#!/usr/bin/env bash
# Forwarding benchmark (issue 6): the time from assigning a received study until fiona has sent
# it to a research PACS (DCMTK dcmqrscp) and verified it there by C-FIND, next to DCMTK storescu
# sending the same de-identified files straight to a fresh dcmqrscp (the anchor), in one run.
# See docs/BENCHMARKS.md. Usage: bash bench/forward.sh
#
# Knobs (environment, defaults in brackets):
#   COUNT      instances in the synthetic CT study (512x512, 16 bit, 4 series) [1000]
#   REPEAT     runs, each fiona then the anchor; medians are reported [2]
#   FIONA_BIN  fiona binary; unset: `cargo build --release -p fiona --bin fiona`
#   BENCH_OUT  scratch directory (removed at exit) and report [bench/out]
#   KEEP=1     keep the scratch directory (corpus, data directories, logs)
#   TIMEOUT    seconds the transfer may take to become `verified` [600]
#
# fiona's clock starts just before `fiona assign` (the study was received before and its quiet
# period is over) and stops when `fiona transfers --json` first shows it `verified` (polled
# every 50 ms). quiet_period_secs = verify_after_secs = 0, the smallest values allowed.
# Everything runs on 127.0.0.1; DCMTK gets TCP_NODELAY=1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
COUNT=${COUNT:-1000} REPEAT=${REPEAT:-2} KEEP=${KEEP:-0} TIMEOUT=${TIMEOUT:-600}
BENCH_OUT=${BENCH_OUT:-$ROOT/bench/out}
QUIET_SECS=0 VERIFY_AFTER_SECS=0
PROJECT=BENCH1 PARTICIPANT=BENCH1-0001 EVENT=baseline
ACCESSION=ACCCT0000512 # make_corpus's CT study (StudySpec::new(512, Ct))
export TCP_NODELAY=1   # read by DCMTK; without it Nagle dominates on loopback

die() { echo "forward.sh: FAILED: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*"; }
now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", (b - a) / 1e9}'; }
[[ $COUNT =~ ^[1-9][0-9]*$ && $((COUNT % 4)) == 0 ]] || die "COUNT must be a positive multiple of 4"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer"

# --- cleanup: every process this script started is in its own process group -------------
PGIDS=() WORK=""
stop_all() {
  local p
  for p in "${PGIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  for p in "${PGIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL -- "-$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  PGIDS=()
}
cleanup() { # the scratch directory is kept with KEEP=1 or after a failed check
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  if [[ -n $WORK && ($KEEP == 1 || $rc == 1) ]]; then echo "kept: $WORK" >&2; elif [[ -n $WORK ]]; then rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM

# --- tools and build -----------------------------------------------------------------
if ! command -v dcmqrscp >/dev/null || ! command -v findscu >/dev/null; then
  log "DCMTK missing: installing dcmtk"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dcmtk >/dev/null
fi
for t in storescu dcmqrscp findscu echoscu dcmdump jq setsid ss; do
  command -v "$t" >/dev/null || die "$t is needed (dcmtk, jq, util-linux, iproute2)"
done
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -z ${FIONA_BIN:-} ]]; then
  log "building fiona (cargo build --release -p fiona --bin fiona)"
  cargo build --release -q -p fiona --bin fiona
  FIONA_BIN=$TARGET_DIR/release/fiona
fi
[[ -x $FIONA_BIN ]] || die "fiona binary $FIONA_BIN not found"
log "building the corpus generator (cargo build --release -p fiona-tests --example make_corpus)"
cargo build --release -q -p fiona-tests --example make_corpus
MAKE_CORPUS=$TARGET_DIR/release/examples/make_corpus

mkdir -p "$BENCH_OUT"
WORK=$(mktemp -d "$BENCH_OUT/forward.XXXXXX") CORPUS=$WORK/corpus
log "generating $COUNT synthetic CT instances into $CORPUS"
"$MAKE_CORPUS" "$CORPUS" "$COUNT" 4 ct >/dev/null
BYTES=$(find "$CORPUS" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d", s}')

# --- research PACS: dcmqrscp, configured as daemon/tests/common/pipeline.rs does -------------
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return 0; }
  done
  die "no free port found"
}
start_pacs() { # DIR -> sets PACS_PORT
  local dir=$1 quota=$((COUNT > 1024 ? COUNT : 1024))
  mkdir -p "$dir/db"
  PACS_PORT=$(free_port)
  printf '%s\n' "NetworkTCPPort = $PACS_PORT" "MaxPDUSize = 16384" "MaxAssociations = 16" \
    "HostTable BEGIN" "HostTable END" "VendorTable BEGIN" "VendorTable END" "AETable BEGIN" \
    "RESEARCH $dir/db RW (200, ${quota}mb) ANY" "AETable END" >"$dir/qr.cfg"
  setsid dcmqrscp -c "$dir/qr.cfg" >"$dir.log" 2>&1 &
  PGIDS+=($!)
  for _ in $(seq 100); do
    echoscu -aec RESEARCH 127.0.0.1 "$PACS_PORT" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  die "dcmqrscp did not start (see $dir.log)"
}
# Instances the PACS lists for STUDY_UID by C-FIND (series level, then image level per series).
pacs_count() { # PORT STUDY_UID SCRATCH
  local port=$1 uid=$2 q=$3 s
  rm -rf "$q"; mkdir -p "$q/series"
  findscu -S -X -od "$q/series" -aec RESEARCH 127.0.0.1 "$port" -k 0008,0052=SERIES \
    -k 0020,000D="$uid" -k 0020,000E >/dev/null 2>&1 || { echo "?"; return 0; }
  for s in $(find "$q/series" -name '*.dcm' -exec dcmdump -q +P 0020,000e {} + | sed -n 's/.*\[\(.*\)\].*/\1/p'); do
    mkdir -p "$q/img/$s"
    findscu -S -X -od "$q/img/$s" -aec RESEARCH 127.0.0.1 "$port" -k 0008,0052=IMAGE \
      -k 0020,000D="$uid" -k 0020,000E="$s" -k 0008,0018 >/dev/null 2>&1 || { echo "?"; return 0; }
  done
  find "$q/img" -name '*.dcm' -exec dcmdump -q +P 0008,0018 {} + 2>/dev/null \
    | sed -n 's/.*\[\(.*\)\].*/\1/p' | sort -u | wc -l
}
stored_files() { find "$1/db" -type f ! -name index.dat | wc -l; }

# --- fiona -----------------------------------------------------------------------------
start_fiona() { # RUNDIR PACS_PORT -> sets FIONA_PORT
  local run=$1 data=$1/data
  mkdir -p "$data"
  cat >"$run/fiona.toml" <<EOF
ae_title = "FIONA"
listen = "127.0.0.1:0"
data_dir = "$data"
quiet_period_secs = $QUIET_SECS
min_free_bytes = 0
[projects.$PROJECT]
participant_pattern = "$PROJECT-[0-9]{4}"
events = ["$EVENT"]
approval_start = "2025-01-01"
approval_end = "2099-12-31"
destinations = ["research"]
[destinations.research]
host = "127.0.0.1"
port = $2
ae_title = "RESEARCH"
verify_after_secs = $VERIFY_AFTER_SECS
retry_base_secs = 1
EOF
  FIONA_LOG=info NO_COLOR=1 setsid "$FIONA_BIN" serve --config "$run/fiona.toml" >"$run/fiona.log" 2>&1 &
  PGIDS+=($!)
  for _ in $(seq 600); do
    if [[ -S $data/run/control.sock && -s $data/run/dicom.addr ]] \
      && "$FIONA_BIN" status --data-dir "$data" --json >/dev/null 2>&1; then
      FIONA_PORT=$(sed 's/.*://' "$data/run/dicom.addr"); return 0
    fi
    sleep 0.05
  done
  die "fiona did not start (see $run/fiona.log)"
}
F() { "$FIONA_BIN" "$@" --data-dir "$RUN/data"; }
audit_ms() { F audit --json | jq -r --arg t "$1" --arg a "$2" '[.[] | select(.transfer == $t and .action == $a)][-1].time_ms'; }

# --- runs ------------------------------------------------------------------------------
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
REPORT=$BENCH_OUT/forward-$STAMP.md RESULTS=$WORK/results.tsv
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git status --porcelain -- daemon tests Cargo.lock 2>/dev/null | head -n1) ]] || GIT_REV="$GIT_REV (dirty tree)"
DCMTK=$(storescu --version 2>&1 | sed -n 's/.*storescu v\([^ ]*\).*/\1/p' | head -n1)
echo "== forward benchmark $STAMP"
echo "machine:  nproc $(nproc), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "disk:     $(df -T "$WORK" | awk 'NR == 2 {print $2 " on " $1}')"
echo "versions: fiona git $GIT_REV (sha256 $(sha256sum "$FIONA_BIN" | cut -c1-12)), DCMTK $DCMTK"
echo "corpus:   $COUNT CT instances 512x512x16 bit, 4 series, $BYTES bytes"
echo "settings: quiet_period_secs=$QUIET_SECS verify_after_secs=$VERIFY_AFTER_SECS; dcmqrscp MaxPDUSize 16384"

for ((rep = 1; rep <= REPEAT; rep++)); do
  RUN=$WORK/run$rep && mkdir -p "$RUN"
  start_pacs "$RUN/pacs" && PORT1=$PACS_PORT
  start_fiona "$RUN" "$PORT1"
  t=$(now_ns)
  storescu -aec FIONA -R -xe +sd 127.0.0.1 "$FIONA_PORT" "$CORPUS" >"$RUN/storescu-in.log" 2>&1 \
    || die "storescu to fiona failed (see $RUN/storescu-in.log)"
  t_in=$(secs "$t" "$(now_ns)")
  got=$(F status --json | jq -r '.totals.instances')
  [[ $got == "$COUNT" ]] || die "fiona holds $got of $COUNT instances after receiving"
  sleep $((QUIET_SECS + 1)) # the quiet period is over before the clock starts
  sync

  # fiona: assign, then poll until verified
  t0=$(now_ns)
  TRANSFER=$(F assign "$ACCESSION" --project "$PROJECT" --participant "$PARTICIPANT" --event "$EVENT" --json | jq -er .transfer)
  while :; do
    tr=$(F transfers --json | jq -c --arg t "$TRANSFER" '.[] | select(.id == $t)')
    state=$(jq -r .state <<<"$tr")
    [[ $state == verified || $state == failed ]] && break
    (($(now_ns) - t0 < TIMEOUT * 1000000000)) || die "transfer still $state after $TIMEOUT s (see $RUN/fiona.log)"
    sleep 0.05
  done
  t1=$(now_ns)
  [[ $state == verified ]] || die "transfer failed: $(jq -r .reason <<<"$tr") (see $RUN/fiona.log)"
  read -r n_deid n_sent n_parked uid < <(jq -r '"\(.deidentified) \(.sent) \(.parked | length) \(.research_study_uid)"' <<<"$tr")
  [[ $n_deid == "$COUNT" && $n_sent == "$COUNT" && $n_parked == 0 ]] \
    || die "transfer counts: $n_deid de-identified, $n_sent sent, $n_parked parked (expected $COUNT)"
  # Stage times, from the audit trail (ms) and the de-identification log line.
  c_ms=$(jq -r .created_ms <<<"$tr")
  d_ms=$(audit_ms "$TRANSFER" deidentified) s_ms=$(audit_ms "$TRANSFER" sent) v_ms=$(audit_ms "$TRANSFER" verified)
  deid_ms=$(sed 's/\x1b\[[0-9;]*m//g' "$RUN/fiona.log" | sed -n 's/.*transfer de-identified.* ms=\([0-9]*\).*/\1/p' | tail -n1)
  n_out=$(find "$RUN/data/outbound/$TRANSFER" -name '*.dcm' | wc -l)
  held1=$(pacs_count "$PORT1" "$uid" "$RUN/q1")
  files1=$(stored_files "$RUN/pacs")
  [[ $n_out == "$COUNT" && $held1 == "$COUNT" && $files1 == "$COUNT" ]] \
    || die "fiona path: $n_out outputs, PACS lists $held1 by C-FIND and stored $files1 files (expected $COUNT)"
  stop_all
  sync

  # anchor: storescu sends fiona's de-identified outputs straight to a fresh dcmqrscp
  start_pacs "$RUN/pacs-direct"
  t2=$(now_ns)
  storescu -aec RESEARCH -R -xe +sd 127.0.0.1 "$PACS_PORT" "$RUN/data/outbound/$TRANSFER" \
    >"$RUN/storescu-direct.log" 2>&1 || die "direct storescu failed (see $RUN/storescu-direct.log)"
  t3=$(now_ns) held2=$(pacs_count "$PACS_PORT" "$uid" "$RUN/q2")
  files2=$(stored_files "$RUN/pacs-direct")
  [[ $held2 == "$COUNT" && $files2 == "$COUNT" ]] \
    || die "direct path: PACS lists $held2 by C-FIND and stored $files2 files (expected $COUNT)"
  stop_all
  [[ $KEEP == 1 ]] || rm -rf "$RUN"
  sync

  f_s=$(secs "$t0" "$t1") d_s=$(secs "$t2" "$t3")
  printf '%s\t%s\t%s\n' "$rep" "$f_s" "$d_s" >>"$RESULTS"
  awk -v r="$rep" -v f="$f_s" -v d="$d_s" -v n="$COUNT" -v i="$t_in" -v c="$c_ms" \
    -v dm="$d_ms" -v sm="$s_ms" -v vm="$v_ms" -v de="${deid_ms:-0}" -v l="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
    printf "run %d: fiona %.3f s (%.1f inst/s), direct %.3f s (%.1f inst/s), fiona/direct %.2fx  (load %s)\n",
      r, f, n / f, d, n / d, f / d, l
    printf "       stages: wait for pipeline pass %.2f s, de-identify %.2f s, send %.2f s, verify %.2f s,",
      (dm - de - c) / 1e3, de / 1e3, (sm - dm) / 1e3, (vm - sm) / 1e3
    printf " assign call + poll %.2f s; (receive before: %.2f s)\n", f - (vm - c) / 1e3, i }'
done

# --- summary ---------------------------------------------------------------------------
median() { sort -g | awk '{v[NR] = $1} END {printf "%.3f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
row() { # NAME COLUMN
  awk -v name="$1" -v m="$(cut -f"$2" "$RESULTS" | median)" -v n="$COUNT" -v b="$BYTES" \
    -v runs="$(cut -f"$2" "$RESULTS" | paste -sd/ | sed 's#/# / #g')" \
    'BEGIN {printf "| %s | %.3f | %.1f | %.1f | %s |\n", name, m, n / m, b / m / 1e6, runs}'
}
{
  echo
  echo "Forward benchmark $STAMP: $COUNT CT instances ($BYTES bytes), median of $REPEAT runs;"
  echo "quiet_period_secs=$QUIET_SECS, verify_after_secs=$VERIFY_AFTER_SECS; load at end $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "| path | median s | instances/s | MB/s | runs (s) |"
  echo "|---|---:|---:|---:|---|"
  row "fiona: assign -> verified" 2
  row "storescu -> dcmqrscp (anchor)" 3
  echo
  awk -v f="$(cut -f2 "$RESULTS" | median)" -v d="$(cut -f3 "$RESULTS" | median)" \
    'BEGIN {printf "fiona / direct (time, medians): %.2fx (target: at most 1.5x)\n", f / d}'
  echo "Command: \`COUNT=$COUNT REPEAT=$REPEAT bash bench/forward.sh\`; fiona git $GIT_REV, DCMTK $DCMTK"
} | tee "$REPORT"
echo "report written to $REPORT"
