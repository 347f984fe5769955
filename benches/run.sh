#!/usr/bin/env bash
# Runs Quiver's whole load suite (Redis, Quiver and the floors are started by the suite itself)
# and prints one table; results also go to target/bench/load.json. Arguments are passed on, e.g.
#   benches/run.sh --seconds 5 --zipf 1.1
# See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || {
    echo "redis-server not found: apt-get install -y redis-server" >&2
    exit 1
}
exec cargo run --release -p quiver-benches --bin load -- "$@"
