#!/usr/bin/env bash
# Times `quiver skew` (release build) over a feature log of LOG_ROWS rows: the generated data of
# benches/historical.sh, a feature service over user_features and the user_risk on-demand view, a
# training set of it, turned into a log as if every row had been served (so the check must find a
# 100% match), then `quiver skew` with peak memory.
#
#   benches/skew.sh [SOURCE_ROWS] [LOG_ROWS]     (default: 10000000 1000000)
#
# Environment: USERS (SOURCE_ROWS/20), MEMORY_MIB (1024), KEEP=1 keeps the data.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source_rows=${1:-10000000}
log_rows=${2:-1000000}
users=${USERS:-$((source_rows / 20))}
memory_mib=${MEMORY_MIB:-1024}
work=$(mktemp -d "${TMPDIR:-/tmp}/quiver-bench-skew.XXXXXX")
if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$work"' EXIT; fi

echo "== building (release) and the user_risk transform (wasm)"
cargo build --release -q -p quiver -p quiver-benches
wasm_target="$root/target/wasm-fixtures"
CARGO_TARGET_DIR="$wasm_target" cargo build -q --profile wasm-release \
    --target wasm32-unknown-unknown -p user_risk
wasm_dir="$wasm_target/wasm32-unknown-unknown/wasm-release"

echo "== generating $source_rows source rows, $log_rows entity rows, $users users in $work"
"$root/target/release/gen-historical" --dir "$work" --source-rows "$source_rows" \
    --entity-rows "$log_rows" --users "$users" --transforms-dir "$wasm_dir"
cat >>"$work/feature_store.yaml" <<'YAML'
feature_services:
  - name: scored
    features: [user_features, user_risk]
YAML

echo "== the served values: a training set of the service, turned into a log"
"$root/target/release/quiver" -c "$work/feature_store.yaml" historical \
    --entities "$work/entities.parquet" --feature-service scored --full-feature-names \
    --output "$work/served.parquet" --memory-mib "$memory_mib" --temp-dir "$work"
"$root/target/release/log-from-training" --config "$work/feature_store.yaml" \
    --feature-service scored --training "$work/served.parquet" --log "$work/logs"
du -sh "$work/logs"

echo "== quiver skew ($memory_mib MiB budget)"
/usr/bin/time -v "$root/target/release/quiver" -c "$work/feature_store.yaml" skew \
    --log "$work/logs" --memory-mib "$memory_mib" --temp-dir "$work" \
    >"$work/skew.out" 2>"$work/skew.time"
cat "$work/skew.out"
secs=$(sed -n 's/.* in \([0-9.]*\)s$/\1/p' "$work/skew.out")
rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$work/skew.time")
wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/skew.time")
printf '\n| logged rows | check seconds | rows/s | process wall clock | peak RSS |\n|---:|---:|---:|---:|---:|\n'
printf '| %s | %s | %.0f | %s | %s MiB |\n' "$log_rows" "$secs" "$(echo "$log_rows / $secs" | bc -l)" "$wall" "$rss"
