#!/usr/bin/env bash
# The test command (README): installs what the tests need when it is missing, then runs
# formatting, lints and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
command -v gdcmconv >/dev/null 2>&1 || need+=(libgdcm-tools)
# Building the JPEG-LS decoder (charls, via dicom-pixeldata) needs CMake and a C++ compiler.
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v c++ >/dev/null 2>&1 || need+=(g++)
# OCR: Tesseract and Leptonica headers and pkg-config data, libclang for the bindings'
# build, and the English and Norwegian models.
# The text evaluation (tests/real/text_eval.py) draws in Debian's DejaVu and Liberation fonts
# and reads with the tesseract program (the independent reader).
for p in libtesseract-dev libleptonica-dev libclang-dev pkg-config tesseract-ocr tesseract-ocr-eng tesseract-ocr-nor fonts-dejavu-core fonts-liberation; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
# Orthanc as a research PACS (the tests start their own instances on free ports).
[ -x /usr/sbin/Orthanc ] || need+=(orthanc)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# promtool (Debian package prometheus) checks the metrics exposition (daemon/tests/metrics.rs).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# OpenLDAP for the LDAP login test (daemon/tests/ldap.rs starts its own slapd on free ports):
# slapd (in /usr/sbin), slapadd/slappasswd, and ldapadd from ldap-utils.
[ -x /usr/sbin/slapd ] || need+=(slapd)
command -v ldapadd >/dev/null 2>&1 || need+=(ldap-utils)
# Headless Chromium and its WebDriver for the web page's browser test (daemon/tests/web.rs).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The hardened units (os/systemd/): systemd-analyze scores and verifies them offline
# (daemon/tests/systemd_unit.rs); the boot test (daemon/tests/systemd_nspawn.rs, through
# os/tests/nspawn-unit.sh) runs them in a systemd-nspawn container whose Debian rootfs
# mmdebstrap makes once.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
# Provisioning bundles as admins make them (daemon/tests/bundle.rs, selftest.rs): minisign signs,
# age encrypts secrets to the box's key.
command -v minisign >/dev/null 2>&1 || need+=(minisign)
command -v age >/dev/null 2>&1 || need+=(age)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
# The appliance (daemon/tests/appliance.rs, through os/tests/appliance-nspawn.sh): os/build.sh
# strips the binary (objcopy), the boot test gives the container a veth (ip) and reads the web
# port (curl, above).
command -v objcopy >/dev/null 2>&1 || need+=(binutils)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# ... and makes the disk image from it (image/build.sh): no mounts, so the file system tools.
command -v sfdisk >/dev/null 2>&1 || need+=(fdisk)
command -v mkfs.fat >/dev/null 2>&1 || need+=(dosfstools)
command -v mcopy >/dev/null 2>&1 || need+=(mtools)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
if ((${#need[@]})); then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing missing test tools: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  if [[ " ${need[*]} " == *" orthanc "* ]]; then
    # The package's own service (ports 4242 and 8042 on every interface) is not wanted.
    $SUDO systemctl disable --now orthanc >/dev/null 2>&1 || $SUDO service orthanc stop >/dev/null 2>&1 || true
  fi
  if [[ " ${need[*]} " == *" slapd "* ]]; then
    # The package's own directory service (port 389 on every interface) is not wanted.
    $SUDO systemctl disable --now slapd >/dev/null 2>&1 || $SUDO service slapd stop >/dev/null 2>&1 || true
  fi
  if [[ " ${need[*]} " == *" prometheus "* ]]; then
    # Only promtool is wanted: not the server (port 9090) nor the node exporter (9100) that
    # come with the package.
    for s in prometheus prometheus-node-exporter; do
      $SUDO systemctl disable --now "$s" >/dev/null 2>&1 || $SUDO service "$s" stop >/dev/null 2>&1 || true
    done
  fi
fi

# The real-file test's Python side (daemon/tests/real_files.rs, tests/real/): a venv outside
# the tree with the pinned packages of tests/real/requirements.txt, created when missing and
# brought up to date when the pins change. The test finds it through FIONA_TEST_PYTHON.
venv="${FIONA_TEST_VENV:-$HOME/.cache/fiona-real-venv}"
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing missing test tools: python3-venv"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pins=$(sha256sum tests/real/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$venv/.fiona-pins" 2>/dev/null)" != "$pins" ]; then
  echo "installing the real-file test's Python packages into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/real/requirements.txt
  echo "$pins" >"$venv/.fiona-pins"
fi
export FIONA_TEST_PYTHON="$venv/bin/python"

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

# Tests; their output is also kept to sum up the counts at the end.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --release 2>&1 | tee -a "$log"
# The fuzz crate (outside the workspace): seeds and saved reproducers replay on stable.
cargo test --release --manifest-path daemon/fuzz/Cargo.toml 2>&1 | tee -a "$log"

# One closing line over every test binary (cargo prints one `test result` line per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
