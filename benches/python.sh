#!/usr/bin/env bash
# Times a training set built by `quiver historical`, by the Python package in-process and by
# Spark local[2] through quiver.spark, on the same generated data (benches/historical.sh's
# generator), all from release builds.
#
#   benches/python.sh [SOURCE_ROWS] [ENTITY_ROWS]     (default: 10000000 1000000)
#
# Needs python3 with venv, java (Spark), and PyPI once for the pinned packages of
# target/bench-python. KEEP=1 keeps the generated data.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source_rows=${1:-10000000}
entity_rows=${2:-1000000}
users=${USERS:-$((source_rows / 20))}
work=$(mktemp -d "${TMPDIR:-/tmp}/quiver-bench-python.XXXXXX")
if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$work"' EXIT; fi

venv="$root/target/bench-python"
if [ ! -x "$venv/bin/maturin" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q maturin==1.9.6 pyarrow==21.0.0 pandas==2.3.3 pyspark==4.0.1
fi

echo "== building (release): quiver, the generator, and the Python extension"
cargo build --release -q -p quiver -p quiver-benches
(cd python && VIRTUAL_ENV="$venv" PYO3_PYTHON="$venv/bin/python" \
    CARGO_TARGET_DIR="$root/target/python-build" "$venv/bin/maturin" develop --release --quiet)

echo "== generating $source_rows source rows, $entity_rows entity rows, $users users in $work"
"$root/target/release/gen-historical" --dir "$work" --source-rows "$source_rows" \
    --entity-rows "$entity_rows" --users "$users" --transforms-dir "$work"

features=user_features:avg_order_value_7d,user_features:total_orders_30d,user_features:preferred_category,user_features:account_age_days,user_features:fraud_score
"$venv/bin/python" benches/python_bench.py --quiver "$root/target/release/quiver" \
    --config "$work/feature_store.yaml" --entities "$work/entities.parquet" \
    --features "$features" --work "$work"
