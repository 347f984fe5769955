#!/usr/bin/env bash
# Feast's feature server and Quiver side by side: installs the pinned Feast into a venv of its own
# (target/python/feast, the tests' pin), materializes the same generated data with
# `feast materialize`, runs `feast serve` (one worker per core, never recycled, no access log) and
# `quiver serve` (L1 off and on) on Redis standalone and on a Redis Cluster, drives each with the
# same client and bodies, and prints one table. Results also go to target/bench/vs_feast.json.
#
#   benches/vs-feast.sh --quick          # 2 s windows, concurrency 16: about 6 minutes
#   benches/vs-feast.sh                  # 4 s windows, concurrency 16 and 64: about 12 minutes
#   benches/vs-feast.sh --only wide --redis standalone --seconds 10
#
# Other options: target/release/vs-feast --help. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

missing() {
    echo "$1 not found: $2" >&2
    exit 1
}
command -v redis-server >/dev/null || missing redis-server "apt-get install -y redis-server"
command -v redis-cli >/dev/null || missing redis-cli "apt-get install -y redis-tools"
command -v python3 >/dev/null || missing python3 "apt-get install -y python3 python3-venv python3-pip"
python3 -c 'import venv, ensurepip' 2>/dev/null || missing "python3's venv module" "apt-get install -y python3-venv"
command -v cargo >/dev/null || missing cargo "https://rustup.rs"
sysroot=$(rustc --print sysroot)
[ -d "$sysroot/lib/rustlib/wasm32-unknown-unknown" ] ||
    missing "the wasm32-unknown-unknown target" "rustup target add wasm32-unknown-unknown"

cargo build --release -q -p quiver -p quiver-benches
exec "${CARGO_TARGET_DIR:-target}/release/vs-feast" "$@"
