#!/usr/bin/env bash
# The main job (README): a province's review season through the real ledger, with an
# embedded nats-server (fsync before every ack), verified and summarised.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-nats-server.sh
data_dir="${ANSINH_DATA_DIR:-$(mktemp -d)/ansinh-data}"
cargo run --release --locked --bin ansinh -- --data-dir "$data_dir" demo "$@"
echo "data kept in $data_dir (run again with ANSINH_DATA_DIR=$data_dir: idempotency keys make the rerun append nothing)"
