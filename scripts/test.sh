#!/usr/bin/env bash
# The test command (README, .ci/run): installs what it needs, then format, lints, tests.
# Tests start their own nats-server (the pinned one) on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-nats-server.sh
# The console's browser tests (tests/console.rs) drive Debian's headless Chromium through
# chromedriver; installed only when missing, quietly.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    # Root on the CI machine; elsewhere through sudo.
    as_root=""
    if [ "$(id -u)" != 0 ]; then as_root="sudo"; fi
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    $as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
