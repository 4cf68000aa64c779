#!/usr/bin/env bash
# De-identification benchmark (issue 3, preliminary): how fast `fiona deid` de-identifies a
# directory tree, next to GDCM gdcmanon -e, DCMTK dcmodify, pydicom's deid and `cp -r`,
# all on the same corpus in one run. See docs/BENCHMARKS.md for what it measures and how
# to read the output.
#
#   bash bench/deid.sh
#
# Knobs (environment variables, defaults in brackets):
#   CT_COUNT         CT instances in the corpus [1000]; 512x512 16-bit, ~0.5 MB each
#   MR_COUNT         MR instances in the corpus [200]; 256x256 16-bit, ~0.13 MB each
#   REPEAT           timed runs per tool; the median is reported [3]
#   TOOLS            tools to measure, in this order in every repetition
#                    ["cp cp-sync fiona fiona-nofsync gdcmanon dcmodify pydeid"]; the table
#                    needs cp and gdcmanon for its ratio columns
#   DCMODIFY_JOBS    parallel dcmodify processes (xargs -P) [2]
#   DCMODIFY_BATCH   files per dcmodify call (xargs -n) [100]
#   DEID_PIP         what is pip-installed into the venv ["deid==0.4.13 pydicom==3.0.2"]
#   PYTHON           interpreter that creates the venv [python3]
#   BENCH_OUT        corpus, venv, run directories and reports [bench/out]
#   FIONA_BIN        fiona binary; if unset, `cargo build --release -p fiona` is run and
#                    target/release/fiona used
#   FIONA_REV        a git revision (e.g. HEAD): build fiona from a clean `git archive` of
#                    that commit (own target directory BENCH_OUT/target-rev; the binary is
#                    kept as BENCH_OUT/fiona-bin-COMMIT and reused), so uncommitted edits in
#                    the work tree are not measured; overrides FIONA_BIN
#   KEEP_RUNS=1      keep the last run's output directory of each tool (default: delete)
#
# Per tool and repetition, outside the timed window: the previous output is deleted,
# `sync` is run (no run pays for an earlier run's writeback), the corpus is read once
# (cat > /dev/null) so every tool starts from a warm page cache, and a fresh output
# directory on the same file system is prepared (for dcmodify, which edits in place, a
# `cp -r` of the corpus followed by `sync`). The timed window is the tool's command alone
# (bash `time`: wall, user and sys of the command and all its children). After each run
# the output is checked: exactly CT_COUNT + MR_COUNT files, the tool's own success report,
# and (for the de-identifiers) none of the corpus's patient IDs or names left in any file.
# Any failure stops the script with the output kept.
#
# Tools (commands as run; IN is the corpus, OUT a fresh directory):
#   cp        cp -r IN OUT                                              (I/O floor)
#   cp-sync   cp -r IN OUT && sync      (extra row: the floor when the copy must reach
#             the disk, for comparison with fiona, which fsyncs every output file)
#   fiona-nofsync  eatmydata fiona deid ...   (extra row, diagnostic: the same command
#             with fsync made a no-op by libeatmydata, to show what the per-file fsync
#             costs; not a way to run fiona)
#   fiona     fiona deid --project PROJ1 --participant PROJ001 --event baseline
#                        --data-dir DATADIR IN OUT          (rayon, all cores)
#   gdcmanon  gdcmanon -e --certificate CERT -i IN -o OUT --recursive
#             (PS3.15 basic profile with the original attributes encrypted into the
#             Encrypted Attributes Sequence; CERT is a throwaway self-signed RSA 2048
#             certificate made with openssl for this run; one process, GDCM's own
#             directory mode)
#   dcmodify  find OUT -type f -print0 | xargs -0 -P DCMODIFY_JOBS -n DCMODIFY_BATCH
#               dcmodify -nb -imt <22 edits from bench/deid_recipe.dcmodify>
#             (OUT is a copy of IN made before the timed window)
#   pydeid    VENV/bin/python bench/deid_pydeid.py IN OUT
#             (deid's get_files + replace_identifiers, default recipe, one process)
#
# Installs what is missing: dcmtk, libgdcm-tools, openssl and eatmydata (apt-get), and a
# venv under BENCH_OUT with DEID_PIP (the system Python is not changed). The corpus is generated
# once with the fiona-tests examples make_corpus (CT, and MR with the `mr` argument) and reused.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CT_COUNT=${CT_COUNT:-1000}
MR_COUNT=${MR_COUNT:-200}
REPEAT=${REPEAT:-3}
TOOLS=${TOOLS:-"cp cp-sync fiona fiona-nofsync gdcmanon dcmodify pydeid"}
DCMODIFY_JOBS=${DCMODIFY_JOBS:-2}
DCMODIFY_BATCH=${DCMODIFY_BATCH:-100}
DEID_PIP=${DEID_PIP:-"deid==0.4.13 pydicom==3.0.2"}
PYTHON=${PYTHON:-python3}
BENCH_OUT=${BENCH_OUT:-$ROOT/bench/out}
KEEP_RUNS=${KEEP_RUNS:-0}
RECIPE=$ROOT/bench/deid_recipe.dcmodify
DRIVER=$ROOT/bench/deid_pydeid.py

die() { echo "deid.sh: FAILED: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
loadavg1() { cut -d' ' -f1 /proc/loadavg; }
# cpu_jiffies: "total busy iowait steal" over all CPUs since boot, from /proc/stat.
cpu_jiffies() {
  awk '$1 == "cpu" {t = 0; for (i = 2; i <= 9; i++) t += $i
    print t, t - $5 - $6, $6, $9; exit}' /proc/stat
}

[[ $CT_COUNT =~ ^[1-9][0-9]*$ ]] || die "CT_COUNT must be a positive integer (got '$CT_COUNT')"
[[ $MR_COUNT =~ ^[1-9][0-9]*$ ]] || die "MR_COUNT must be a positive integer (got '$MR_COUNT')"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer (got '$REPEAT')"
[[ $DCMODIFY_JOBS =~ ^[1-9][0-9]*$ ]] || die "DCMODIFY_JOBS must be a positive integer"
[[ $DCMODIFY_BATCH =~ ^[1-9][0-9]*$ ]] || die "DCMODIFY_BATCH must be a positive integer"
((CT_COUNT % 4 == 0)) || die "CT_COUNT must be a multiple of 4 (4 series)"
((MR_COUNT % 2 == 0)) || die "MR_COUNT must be a multiple of 2 (2 series)"
for t in $TOOLS; do
  case $t in cp | cp-sync | fiona | fiona-nofsync | gdcmanon | dcmodify | pydeid) ;;
    *) die "unknown tool '$t' (cp cp-sync fiona fiona-nofsync gdcmanon dcmodify pydeid)" ;;
  esac
done
has_tool() { [[ " $TOOLS " == *" $1 "* ]]; }
TOTAL=$((CT_COUNT + MR_COUNT))

# --- cleanup ---------------------------------------------------------------------------
WORK=""        # this invocation's scratch directory (certificate, data dir, run outputs)
CUR_RUN=""     # output directory of the run in progress: removed when interrupted
INTERRUPTED=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if ((INTERRUPTED)) && [[ -n $CUR_RUN ]]; then rm -rf "$CUR_RUN"; fi
  if [[ -n $WORK && -d $WORK ]]; then
    rm -rf "$WORK/cert"
    if ((rc == 0)) && ((!KEEP_RUNS)); then rm -rf "$WORK"; fi
    if ((rc != 0)) && ((!INTERRUPTED)); then
      echo "deid.sh: run directories kept in $WORK" >&2
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'INTERRUPTED=1; exit 130' INT
trap 'INTERRUPTED=1; exit 143' TERM

# --- tools -----------------------------------------------------------------------------
apt_install() {
  local SUDO=""
  [[ $(id -u) == 0 ]] || SUDO="sudo"
  log "installing $* with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
need_pkgs=()
# DCMTK always: dcmdump reads the corpus's planted values for the output checks.
command -v dcmodify >/dev/null 2>&1 && command -v dcmdump >/dev/null 2>&1 || need_pkgs+=(dcmtk)
if has_tool gdcmanon; then
  command -v gdcmanon >/dev/null 2>&1 || need_pkgs+=(libgdcm-tools)
  command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
fi
if has_tool fiona-nofsync; then
  command -v eatmydata >/dev/null 2>&1 || need_pkgs+=(eatmydata)
fi
((${#need_pkgs[@]} == 0)) || apt_install "${need_pkgs[@]}"

FIONA_DESC=""
if [[ -n ${FIONA_REV:-} ]]; then
  rev=$(git -C "$ROOT" rev-parse --short=12 "$FIONA_REV^{commit}") \
    || die "FIONA_REV '$FIONA_REV' is not a commit"
  FIONA=$BENCH_OUT/fiona-bin-$rev
  if [[ ! -x $FIONA ]]; then
    src=$BENCH_OUT/fiona-src-$rev
    log "exporting commit $rev to $src"
    rm -rf "$src"
    mkdir -p "$src"
    git -C "$ROOT" archive "$rev" | tar -x -C "$src"
    # git archive stamps files with the commit time, which can be older than an earlier
    # build in the shared target directory: make them new so cargo cannot take another
    # commit's build for this one (dependencies from the registry are still reused).
    find "$src" -type f -exec touch {} +
    log "cargo build --release -p fiona (commit $rev, target directory $BENCH_OUT/target-rev)"
    cargo build --release -p fiona --manifest-path "$src/Cargo.toml" \
      --target-dir "$BENCH_OUT/target-rev" 2>&1 | tail -n 3
    cp "$BENCH_OUT/target-rev/release/fiona" "$FIONA.partial"
    mv "$FIONA.partial" "$FIONA"
    rm -rf "$src"
  fi
  FIONA_DESC="commit $rev (clean export)"
elif [[ -n ${FIONA_BIN:-} ]]; then
  FIONA=$FIONA_BIN
  FIONA_DESC="FIONA_BIN as given"
else
  log "cargo build --release -p fiona"
  cargo build --release -p fiona 2>&1 | tail -n 3
  FIONA=$ROOT/target/release/fiona
fi
if [[ -z $FIONA_DESC ]]; then
  FIONA_DESC="work tree at $(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo '?')"
  git -C "$ROOT" diff --quiet HEAD -- daemon Cargo.lock 2>/dev/null \
    || FIONA_DESC+=" WITH UNCOMMITTED CHANGES in daemon/ (use FIONA_REV=HEAD to measure the commit)"
fi
[[ -x $FIONA ]] || die "fiona binary $FIONA not found or not executable"
"$FIONA" deid --help >/dev/null 2>&1 || die "$FIONA has no 'deid' subcommand (stale build?)"

VENV=$BENCH_OUT/venv
PY=$VENV/bin/python
if has_tool pydeid; then
  if [[ ! -x $PY ]]; then
    log "creating venv $VENV"
    mkdir -p "$BENCH_OUT"
    "$PYTHON" -m venv "$VENV" || die "cannot create a venv with $PYTHON (python3-venv missing?)"
  fi
  want_ok=1
  for spec in $DEID_PIP; do
    name=${spec%%[=<>!~]*}
    ver=""
    [[ $spec == *==* ]] && ver=${spec#*==}
    have=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
    if [[ -z $have || (-n $ver && $have != "$ver") ]]; then want_ok=0; fi
  done
  if ((!want_ok)); then
    log "pip install $DEID_PIP (into $VENV)"
    # shellcheck disable=SC2086
    "$PY" -m pip install -q --disable-pip-version-check $DEID_PIP || die "pip install failed"
  fi
fi

# --- corpus ----------------------------------------------------------------------------
CORPUS=$BENCH_OUT/corpus-deid-ct${CT_COUNT}-mr${MR_COUNT}
if [[ ! -d $CORPUS ]]; then
  log "generating the corpus $CORPUS (once; reused by later runs)"
  rm -rf "$CORPUS.partial"
  mkdir -p "$CORPUS.partial"
  cargo run --release -q -p fiona-tests --example make_corpus -- \
    "$CORPUS.partial/ct" "$CT_COUNT" 4
  cargo run --release -q -p fiona-tests --example make_corpus -- \
    "$CORPUS.partial/mr" "$MR_COUNT" 2 mr
  mv "$CORPUS.partial" "$CORPUS"
fi
n_in=$(find "$CORPUS" -type f | wc -l)
((n_in == TOTAL)) || die "corpus $CORPUS holds $n_in files, expected $TOTAL (delete it to regenerate)"
BYTES=$(find "$CORPUS" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d", s}')
# Identifying values planted by the generator; none may survive de-identification.
# first_file DIR: the first file of DIR in sort order (sed, not head: no SIGPIPE under pipefail)
first_file() { find "$1" -type f | sort | sed -n 1p; }
mapfile -t PLANTED < <(for d in ct mr; do
  f=$(first_file "$CORPUS/$d")
  dcmdump +P PatientID +P PatientName "$f" | sed -n 's/.*\[\(.*\)\].*/\1/p'
done)
((${#PLANTED[@]} == 4)) || die "could not read the corpus's patient IDs and names (got ${PLANTED[*]:-none})"
GREP_ARGS=()
for p in "${PLANTED[@]}"; do GREP_ARGS+=(-e "$p"); done

# dcmodify edit list: one option (and its argument) per line, comments after '#'.
DCMODIFY_ARGS=()
N_EDITS=0
while read -r opt arg; do
  [[ -z $opt ]] && continue
  DCMODIFY_ARGS+=("$opt")
  [[ -n ${arg:-} ]] && DCMODIFY_ARGS+=("$arg")
  N_EDITS=$((N_EDITS + 1))
done < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$RECIPE")
((N_EDITS > 0)) || die "no edits in $RECIPE"

# --- scratch space, certificate, fiona data directory ---------------------------------
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$BENCH_OUT/deid-runs/$STAMP
mkdir -p "$WORK"
[[ $(stat -c %d "$WORK") == $(stat -c %d "$CORPUS") ]] \
  || log "note: $WORK and the corpus are on different file systems"
if has_tool gdcmanon; then
  mkdir -p "$WORK/cert"
  # gdcmanon -e encrypts the original attributes for the holder of a certificate; it
  # needs one even when nobody will ever re-identify. Throwaway, deleted at the end.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=fiona-deid-bench-throwaway" \
    -keyout "$WORK/cert/key.pem" -out "$WORK/cert/cert.pem" >/dev/null 2>&1 \
    || die "openssl could not make a throwaway certificate"
fi
FIONA_DATA=$WORK/fiona-data
if has_tool fiona || has_tool fiona-nofsync; then
  # Create the project secret once (untimed), so no timed run pays for generating it.
  one=$(first_file "$CORPUS/mr")
  "$FIONA" deid --project PROJ1 --participant PROJ001 --event baseline --data-dir "$FIONA_DATA" \
    "$one" "$WORK/secret-probe.dcm" >/dev/null || die "fiona deid on one file failed"
  rm -f "$WORK/secret-probe.dcm"
fi

# --- machine and versions --------------------------------------------------------------
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
fs=$(df -T "$WORK" | awk 'NR == 2 {print $2 " on " $1}')
LOAD_START=$(loadavg)
echo "== machine"
echo "nproc:        $(nproc)"
echo "cpu:          ${cpu:-unknown}"
echo "memory:       $mem"
echo "file system:  $fs ($WORK)"
echo "load average: $LOAD_START (start)"
echo "== versions"
echo "fiona:        $FIONA_DESC; $FIONA, sha256 $(sha256sum "$FIONA" | cut -c1-16)"
has_tool fiona-nofsync && echo "eatmydata:    $(dpkg-query -W -f '${Version}' eatmydata 2>/dev/null || echo '?')"
has_tool gdcmanon && echo "gdcmanon:     $(gdcmanon --version 2>&1 | sed -n 1p)"
has_tool gdcmanon && echo "openssl:      $(openssl version)"
# shellcheck disable=SC2016 # a literal $ in the sed pattern
has_tool dcmodify && echo "dcmodify:     $(dcmodify --version 2>&1 | sed -n 's/^\$dcmtk: //p')"
if has_tool pydeid; then
  echo "python:       $("$PY" --version 2>&1)"
  "$PY" -m pip show deid pydicom 2>/dev/null | sed -n 's/^\(Name\|Version\): //p' | paste -d' ' - - \
    | sed 's/^/pip show:     /'
fi
echo "== corpus"
echo "$CORPUS: $CT_COUNT CT 512x512 + $MR_COUNT MR 256x256, $TOTAL files, $BYTES bytes"
echo "dcmodify:     $N_EDITS edits from ${RECIPE#"$ROOT"/}, xargs -P $DCMODIFY_JOBS -n $DCMODIFY_BATCH"
echo "repetitions:  $REPEAT, tools in order: $TOOLS"

# --- one run ---------------------------------------------------------------------------
warm_corpus() { find "$CORPUS" -type f -exec cat {} + >/dev/null; }

# check_output TOOL OUT LOGFILE: file count, the tool's own report, no planted value left.
check_output() {
  local tool=$1 out=$2 logf=$3 n leaks
  n=$(find "$out" -type f | wc -l)
  ((n == TOTAL)) || { cat "$logf" >&2; die "$tool wrote $n files into $out, expected $TOTAL"; }
  case $tool in
    fiona | fiona-nofsync | pydeid)
      grep -qx "$TOTAL de-identified, 0 failed" "$logf" \
        || { cat "$logf" >&2; die "$tool did not report '$TOTAL de-identified, 0 failed'"; } ;;
  esac
  case $tool in
    cp | cp-sync) ;;
    *)
      leaks=$(grep -rlaF "${GREP_ARGS[@]}" "$out" | wc -l || true)
      ((leaks == 0)) || die "$tool: $leaks output files still contain a planted patient ID or name"
      ;;
  esac
}

RAW=$WORK/times.tsv
: >"$RAW"
run_tool() { # run_tool TOOL REP
  local tool=$1 rep=$2 out=$WORK/out-$1 logf=$WORK/$1.log t rc=0
  rm -rf "$out"
  if [[ $tool == dcmodify ]]; then
    cp -r "$CORPUS" "$out"
  fi
  sync
  warm_corpus
  CUR_RUN=$out
  local l1 l2
  l1=$(loadavg1)
  TIMEFORMAT='%3R %3U %3S'
  case $tool in
    cp) { time cp -r "$CORPUS" "$out" >"$logf" 2>&1; } 2>"$WORK/time" || rc=$? ;;
    cp-sync) { time { cp -r "$CORPUS" "$out" && sync; } >"$logf" 2>&1; } 2>"$WORK/time" || rc=$? ;;
    fiona)
      { time "$FIONA" deid --project PROJ1 --participant PROJ001 --event baseline \
        --data-dir "$FIONA_DATA" "$CORPUS" "$out" >"$logf" 2>&1; } 2>"$WORK/time" || rc=$? ;;
    fiona-nofsync)
      { time eatmydata "$FIONA" deid --project PROJ1 --participant PROJ001 --event baseline \
        --data-dir "$FIONA_DATA" "$CORPUS" "$out" >"$logf" 2>&1; } 2>"$WORK/time" || rc=$? ;;
    gdcmanon)
      { time gdcmanon -e --certificate "$WORK/cert/cert.pem" -i "$CORPUS" -o "$out" \
        --recursive >"$logf" 2>&1; } 2>"$WORK/time" || rc=$? ;;
    dcmodify)
      { time { find "$out" -type f -print0 \
        | xargs -0 -P "$DCMODIFY_JOBS" -n "$DCMODIFY_BATCH" \
          dcmodify -nb -imt "${DCMODIFY_ARGS[@]}"; } >"$logf" 2>&1; } 2>"$WORK/time" || rc=$? ;;
    pydeid)
      { time "$PY" "$DRIVER" "$CORPUS" "$out" >"$logf" 2>&1; } 2>"$WORK/time" || rc=$? ;;
  esac
  CUR_RUN=""
  ((rc == 0)) || { cat "$logf" >&2; die "$tool exited with status $rc (output kept in $out)"; }
  read -r wall user sys <"$WORK/time"
  check_output "$tool" "$out" "$logf"
  l2=$(loadavg1)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$tool" "$wall" "$user" "$sys" "$l1" "$l2" >>"$RAW"
  awk -v t="$tool" -v r="$rep" -v w="$wall" -v u="$user" -v s="$sys" -v n="$TOTAL" \
    -v b="$BYTES" -v l1="$l1" -v l2="$l2" 'BEGIN {
      printf "[rep %d] %-9s %7.3f s  %7.1f files/s  %6.1f MB/s  cpu %6.2f s (%.2f cores)  load %s -> %s\n",
        r, t, w, n / w, b / w / 1e6, u + s, (u + s) / w, l1, l2 }'
}

echo "== runs (wall seconds; cpu = user + sys of the command and its children)"
JIFFIES_START=$(cpu_jiffies)
for rep in $(seq "$REPEAT"); do
  for tool in $TOOLS; do
    run_tool "$tool" "$rep"
    # Delete right away (outside the timed window) so at most one output is on disk and
    # in the page cache at a time; KEEP_RUNS=1 keeps the last repetition's.
    if ((!KEEP_RUNS)) || [[ $rep != "$REPEAT" ]]; then rm -rf "$WORK/out-$tool"; fi
  done
done
LOAD_END=$(loadavg)
# Share of all CPU time from the first run to the last (including untimed preparation and
# checks): busy (everything, this script and anything else), iowait, and steal (time the
# hypervisor gave to other guests).
CPU_SHARE=$(echo "$JIFFIES_START $(cpu_jiffies)" | awk '{t = $5 - $1
  if (t <= 0) {print "n/a"; exit}
  printf "busy %.0f %%, iowait %.0f %%, steal %.1f %%", 100 * ($6 - $2) / t, 100 * ($7 - $3) / t, 100 * ($8 - $4) / t}')

# --- summary ---------------------------------------------------------------------------
median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
med_wall() { awk -F'\t' -v t="$1" '$2 == t {print $3}' "$RAW" | median; }
med_cpu() { awk -F'\t' -v t="$1" '$2 == t {print $4 + $5}' "$RAW" | median; }
runs_of() { awk -F'\t' -v t="$1" '$2 == t {printf "%s%.2f", (n++ ? " / " : ""), $3}' "$RAW"; }
label() {
  case $1 in
    cp) echo "cp -r (I/O floor)" ;;
    cp-sync) echo "cp -r + sync (durable floor, extra)" ;;
    fiona) echo "fiona deid (rayon, $(nproc) threads)" ;;
    fiona-nofsync) echo "fiona deid under eatmydata (fsync off; diagnostic, extra)" ;;
    gdcmanon) echo "gdcmanon -e (1 process)" ;;
    dcmodify) echo "dcmodify, $N_EDITS edits (xargs -P $DCMODIFY_JOBS)" ;;
    pydeid) echo "pydicom + deid, default recipe (1 process)" ;;
  esac
}
REF_GDCM=""; REF_CP=""
has_tool gdcmanon && REF_GDCM=$(med_wall gdcmanon)
has_tool cp && REF_CP=$(med_wall cp)
REPORT=$BENCH_OUT/deid-$STAMP.md
{
  echo "Median of $REPEAT runs; $TOTAL files ($CT_COUNT CT 512x512, $MR_COUNT MR 256x256), $BYTES bytes; load average $LOAD_START at start, $LOAD_END at end; CPU over the runs: $CPU_SHARE; nproc $(nproc)."
  echo
  echo "| tool | median s | files/s | MB/s | vs gdcmanon -e | vs cp -r | CPU s (cores busy) | runs (s) |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|"
  for tool in $TOOLS; do
    w=$(med_wall "$tool")
    c=$(med_cpu "$tool")
    awk -v l="$(label "$tool")" -v w="$w" -v c="$c" -v n="$TOTAL" -v b="$BYTES" \
      -v g="$REF_GDCM" -v p="$REF_CP" -v runs="$(runs_of "$tool")" 'BEGIN {
        vg = (g == "") ? "-" : sprintf("%.2fx", g / w)
        vp = (p == "") ? "-" : sprintf("%.2fx", p / w)
        printf "| %s | %.3f | %.0f | %.0f | %s | %s | %.2f (%.2f) | %s |\n",
          l, w, n / w, b / w / 1e6, vg, vp, c, c / w, runs }'
  done
} >"$REPORT"
cp "$RAW" "$BENCH_OUT/deid-$STAMP.tsv"
echo "== load average: $LOAD_END (end); CPU over the runs: $CPU_SHARE"
echo "== summary (also in ${REPORT#"$ROOT"/}; raw times in bench/out/deid-$STAMP.tsv)"
cat "$REPORT"
if has_tool fiona && [[ -n $REF_GDCM && -n $REF_CP ]]; then
  awk -v f="$(med_wall fiona)" -v g="$REF_GDCM" -v p="$REF_CP" 'BEGIN {
    printf "\nissue 3 targets: fiona vs gdcmanon -e %.2fx (target >= 1.5x: %s), vs cp -r %.2fx (target >= 0.7x: %s)\n",
      g / f, (g / f >= 1.5 ? "met" : "NOT met"), p / f, (p / f >= 0.7 ? "met" : "NOT met") }'
fi
