#!/usr/bin/env bash
# Web page benchmark (issue 17): the Assign page with UNASSIGNED unassigned studies and the
# Transfers page with TRANSFERS transfers of one project, under concurrent requests over HTTPS
# on 127.0.0.1, and the daemon's peak RSS.
#
#   1. `daemon/examples/web_scale.rs` builds the index directly: TRANSFERS assigned studies
#      (project BENCH, one transfer each, over two years), UNASSIGNED studies of the last six
#      days (all on the Assign list), PER instances each, and a local admin account `bench`
#      with a random password (given on stdin, never on a command line).
#   2. `fiona serve` on it ([web] listen on a free 127.0.0.1 port, housekeeping every hour so
#      no pass runs during the measurement); waits for the start-up housekeeping pass.
#   3. Logs in with curl (POST /login with the Origin header) for the session cookie, checks
#      that each page answers 200 with the expected counts.
#   4. wrk (Debian package; HTTPS, certificate not verified) with the cookie, CONNS connections
#      on THREADS threads for DURATION each: GET /assign, GET /transfers?project=BENCH (first
#      page), and GET /static/fiona.css as the anchor (the same TLS, server and session-less
#      path, no index work). p50, p99 and requests/s from `wrk --latency`.
#   5. The same pages one request at a time (curl, median of REPEAT), next to the control
#      API's JSON listing of the same data over its Unix socket (GET /v1/studies,
#      GET /v1/transfers?project=BENCH), with the ratio; and the status page (GET /).
#   The daemon's peak RSS (VmHWM) after start and after each phase.
#
# Usage: bash bench/web.sh   (see docs/BENCHMARKS.md, "Web page")
# Knobs: UNASSIGNED [10000], TRANSFERS [100000], PER [10], CONNS [8], THREADS [2],
#        DURATION [20s], REPEAT [9], BENCH_OUT [bench/out], FIONA_BIN and WEB_SCALE_BIN (skip
#        the build), KEEP=1 keeps the scratch directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
UNASSIGNED=${UNASSIGNED:-10000} TRANSFERS=${TRANSFERS:-100000} PER=${PER:-10}
CONNS=${CONNS:-8} THREADS=${THREADS:-2} DURATION=${DURATION:-20s} REPEAT=${REPEAT:-9} KEEP=${KEEP:-0}
BENCH_OUT=${BENCH_OUT:-$ROOT/bench/out}

die() { echo "web.sh: FAILED: $*" >&2; exit 1; }
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

if ! command -v wrk >/dev/null; then
  log "wrk missing: installing it (Debian package wrk)"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
for t in wrk curl jq setsid; do command -v "$t" >/dev/null || die "$t is needed"; done

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -z ${FIONA_BIN:-} || -z ${WEB_SCALE_BIN:-} ]]; then
  log "building (cargo build --release -p fiona --bin fiona --example web_scale)"
  cargo build --release -q -p fiona --bin fiona --example web_scale
  FIONA_BIN=$TARGET_DIR/release/fiona WEB_SCALE_BIN=$TARGET_DIR/release/examples/web_scale
fi

mkdir -p "$BENCH_OUT"
WORK=$(mktemp -d "$BENCH_OUT/web.XXXXXX")
DATA=$WORK/data
echo "== web page benchmark $(date -u +%Y%m%dT%H%M%SZ)"
echo "machine:  nproc $(nproc), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "fiona:    git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([[ -z $(git status --porcelain -- daemon 2>/dev/null | head -n1) ]] || echo ' (dirty tree)')"
echo "load:     $(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2), $CONNS connections on $THREADS threads, $DURATION per page"

PASSWORD=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
t=$(now_ns)
printf '%s\n' "$PASSWORD" | "$WEB_SCALE_BIN" "$DATA" "$UNASSIGNED" "$TRANSFERS" "$PER" | sed 's/^/          /'
log "index built in $(ms "$t" "$(now_ns)") ms; index file $(du -h "$DATA/index.redb" | cut -f1)"

cat >"$WORK/fiona.toml" <<EOF
ae_title = "FIONA"
listen = "127.0.0.1:0"
data_dir = "$DATA"
min_free_bytes = 0
[web]
listen = "127.0.0.1:0"
[eviction]
interval_secs = 3600
[projects.BENCH]
participant_pattern = "BENCH-[0-9]{6}"
events = ["baseline"]
approval_start = "2025-01-01"
approval_end = "2099-12-31"
destinations = ["research"]
[destinations.research]
host = "127.0.0.1"
port = 9
ae_title = "RESEARCH"
EOF
F() { "$FIONA_BIN" "$@" --data-dir "$DATA"; }
FIONA_LOG=info NO_COLOR=1 setsid "$FIONA_BIN" serve --config "$WORK/fiona.toml" >>"$WORK/fiona.log" 2>&1 &
FIONA_PID=$!
for _ in $(seq 6000); do
  [[ -S $DATA/run/control.sock && -s $DATA/run/web.addr ]] && F status --json >/dev/null 2>&1 && break
  kill -0 "$FIONA_PID" 2>/dev/null || die "fiona exited (see $WORK/fiona.log)"
  sleep 0.05
done
WEB=$(tr -d '[:space:]' <"$DATA/run/web.addr")
[[ -n $WEB ]] || die "fiona did not start (see $WORK/fiona.log)"
for _ in $(seq 6000); do
  [[ $(F status --json | jq '.disk.surveyed_ms') != 0 ]] && break
  sleep 0.1
done
hwm() { awk '/^VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$FIONA_PID/status"; }
rss() { awk '/^VmRSS/ {printf "%.0f MiB", $2 / 1024}' "/proc/$FIONA_PID/status"; }
log "daemon up on https://$WEB, start-up housekeeping pass done; RSS $(rss), peak $(hwm)"

# Log in: the password on curl's stdin, the cookie from Set-Cookie.
COOKIE=$(printf '%s' "$PASSWORD" | curl -sk -o /dev/null -D - -H "Origin: https://$WEB" \
  --data-urlencode name=bench --data-urlencode password@- "https://$WEB/login" \
  | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: __Host-fiona=\([^;]*\);.*/\1/p')
[[ -n $COOKIE ]] || die "login failed (see $WORK/fiona.log)"

ASSIGN=/assign TRANSFERS_PAGE="/transfers?project=BENCH" ANCHOR=/static/fiona.css
page() { curl -sk -o "$WORK/page.html" -w '%{http_code}' -H "Cookie: __Host-fiona=$COOKIE" "https://$WEB$1"; }
[[ $(page "$ASSIGN") == 200 ]] || die "GET $ASSIGN did not answer 200"
grep -q "$UNASSIGNED unassigned studies" "$WORK/page.html" || die "GET $ASSIGN does not show $UNASSIGNED unassigned studies"
[[ $(page "$TRANSFERS_PAGE") == 200 ]] || die "GET $TRANSFERS_PAGE did not answer 200"
grep -q "$TRANSFERS transfers" "$WORK/page.html" || die "GET $TRANSFERS_PAGE does not show $TRANSFERS transfers"
[[ $(page "$ANCHOR") == 200 ]] || die "GET $ANCHOR did not answer 200"

# load NAME PATH: wrk with the session cookie; prints p50, p99, requests/s, the daemon's peak.
load() {
  local name=$1 path=$2 out
  out=$WORK/wrk-$name.txt
  wrk -t "$THREADS" -c "$CONNS" -d "$DURATION" --timeout 60s --latency -H "Cookie: __Host-fiona=$COOKIE" "https://$WEB$path" >"$out"
  ! grep -q 'Non-2xx' "$out" || die "$path: $(grep 'Non-2xx' "$out") (see $out)"
  awk -v name="$name" -v path="$path" -v peak="$(hwm)" '
    /^ +50%/ {p50 = $2} /^ +99%/ {p99 = $2} /^Requests\/sec/ {rps = $2}
    / requests in / {n = $1}
    END {printf "  %-10s %-28s p50 %9s  p99 %9s  %8s req/s  (%s requests; daemon peak RSS %s)\n", name, path, p50, p99, rps, n, peak}' "$out"
}
log "under load: $CONNS connections, $DURATION each"
load assign "$ASSIGN"
load transfers "$TRANSFERS_PAGE"
load anchor "$ANCHOR"

# one NAME CURL-ARGS...: REPEAT sequential requests; the median and max total time in ms.
one() {
  local name=$1 i times=()
  shift
  for i in $(seq "$REPEAT"); do
    times+=("$(curl -s -o /dev/null -w '%{time_total}' "$@")")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk -v n="$REPEAT" '{v[NR] = $1 * 1000} END {printf "%.1f %.1f\n", v[int((n + 1) / 2)], v[n]}'
}
log "one request at a time, median of $REPEAT: the page and the control API's JSON of the same data"
SOCK=$DATA/run/control.sock
read -r a_med a_max < <(one assign -k -H "Cookie: __Host-fiona=$COOKIE" "https://$WEB$ASSIGN")
read -r s_med s_max < <(one studies --unix-socket "$SOCK" "http://fiona/v1/studies")
read -r t_med t_max < <(one transfers -k -H "Cookie: __Host-fiona=$COOKIE" "https://$WEB$TRANSFERS_PAGE")
read -r v_med v_max < <(one v1transfers --unix-socket "$SOCK" "http://fiona/v1/transfers?project=BENCH")
read -r h_med h_max < <(one status -k -H "Cookie: __Host-fiona=$COOKIE" "https://$WEB/")
printf '  %-44s median %8.1f ms  max %8.1f ms\n' "GET $ASSIGN" "$a_med" "$a_max" \
  "control API GET /v1/studies (JSON)" "$s_med" "$s_max" \
  "GET $TRANSFERS_PAGE" "$t_med" "$t_max" \
  "control API GET /v1/transfers?project=BENCH" "$v_med" "$v_max" \
  "GET / (status; not a target here)" "$h_med" "$h_max"
awk -v a="$a_med" -v s="$s_med" -v t="$t_med" -v v="$v_med" \
  'BEGIN {printf "  page / control API: Assign %.2f, Transfers %.2f\n", a / s, t / v}'
echo "  daemon RSS at the end $(rss), peak $(hwm)"
