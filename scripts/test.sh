#!/usr/bin/env bash
# The test command (README, .ci/run): installs what it needs, then format, lints, tests.
# Tests start their own nats-server (the pinned one) on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-nats-server.sh
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
