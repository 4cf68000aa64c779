# Shared by the container boot tests (nspawn-unit.sh, appliance-nspawn.sh); sourced after
# setting `tag` (the script's name, for messages). Defines fail/say, install_missing,
# start_container/stop_container/in_ct (systemd-nspawn --boot, its PID 1 found from here)
# and write_ct_instance (a tiny CT for C-STORE).

fail() {
  echo "$tag: FAIL: $*" >&2
  exit 1
}
say() { echo "$tag: $*"; }

# install_missing PROBE:PACKAGE ...: apt-get installs the packages whose probe is missing, a
# command (storescu) or, when it starts with /, a file (OVMF's firmware).
install_missing() {
  local need=() pair probe
  for pair in "$@"; do
    probe=${pair%%:*}
    if [[ "$probe" == /* ]]; then
      [ -e "$probe" ] || need+=("${pair#*:}")
    else
      command -v "$probe" >/dev/null 2>&1 || need+=("${pair#*:}")
    fi
  done
  if ((${#need[@]})); then
    say "installing missing tools: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# start_container MACHINE ROOT CONSOLE_LOG [systemd-nspawn options]: boots ROOT and sets
# nspawn_pid and leader (the container's PID 1, seen from here: the process whose innermost
# PID is 1). PID 1 of this machine need not be systemd: no machined, so no registration.
nspawn_pid=""
leader=""
start_container() {
  local machine=$1 dir=$2 console=$3
  shift 3
  systemd-nspawn --quiet --register=no --keep-unit --machine="$machine" --directory="$dir" \
    "$@" --boot </dev/null >"$console" 2>&1 &
  nspawn_pid=$!
  local p
  for _ in $(seq 1 100); do
    for p in $(pgrep -P "$nspawn_pid" 2>/dev/null || true); do
      if grep -qE '^NSpid:.*[[:space:]]1$' "/proc/$p/status" 2>/dev/null; then
        leader=$p
      fi
    done
    [ -n "$leader" ] && return 0
    kill -0 "$nspawn_pid" 2>/dev/null || fail "systemd-nspawn exited: $(tail -5 "$console")"
    sleep 0.2
  done
  fail "no container PID 1 after 20 s"
}

# A command inside the container (its mount, UTS, IPC, network and PID namespaces).
in_ct() { nsenter --target "$leader" --mount --uts --ipc --net --pid -- "$@"; }

# stop_container: one SIGTERM (nspawn asks the container's systemd to halt), 30 s, then KILL.
stop_container() {
  [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null || return 0
  kill "$nspawn_pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$nspawn_pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -9 "$nspawn_pid" 2>/dev/null || true
  wait "$nspawn_pid" 2>/dev/null || true
}

# write_ct_instance DIR NUMBER NAME ID: DIR/ct.dcm, a 2x2 CT whose UIDs end in NUMBER.
write_ct_instance() {
  local dir=$1 n=$2 name=$3 id=$4
  cat >"$dir/ct.dump" <<DUMP
(0008,0016) UI =CTImageStorage
(0008,0018) UI [1.2.826.0.1.3680043.8.498.$n.1.1]
(0008,0060) CS [CT]
(0010,0010) PN [$name]
(0010,0020) LO [$id]
(0020,000d) UI [1.2.826.0.1.3680043.8.498.$n.1]
(0020,000e) UI [1.2.826.0.1.3680043.8.498.$n.1.0]
(0028,0002) US 1
(0028,0004) CS [MONOCHROME2]
(0028,0010) US 2
(0028,0011) US 2
(0028,0100) US 16
(0028,0101) US 16
(0028,0102) US 15
(0028,0103) US 0
(7fe0,0010) OW 0000\0001\0002\0003
DUMP
  dump2dcm --write-xfer-little "$dir/ct.dump" "$dir/ct.dcm"
}
