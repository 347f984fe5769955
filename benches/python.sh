#!/usr/bin/env bash
# Times one training set four ways on the same generated data (benches/historical.sh's
# generator: 1M entity rows x 10M source rows by default), from release builds:
# `quiver historical` (the CLI), the Python package's in-process call, DuckDB's ASOF JOIN, and
# Spark local[2] through quiver.spark; then checks that Quiver's three outputs are equal.
#
#   benches/python.sh [SOURCE_ROWS] [ENTITY_ROWS]     (default: 10000000 1000000)
#
# Environment: USERS (distinct users; SOURCE_ROWS/20), SPARK_MASTER (local[2]), SPARK_MEMORY
# (the driver's, 6g), KEEP=1 keeps the generated data. Needs python3 with venv, java (Spark),
# and PyPI once for the pinned packages of target/bench-python.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source_rows=${1:-10000000}
entity_rows=${2:-1000000}
users=${USERS:-$((source_rows / 20))}
work=$(mktemp -d "${TMPDIR:-/tmp}/quiver-bench-python.XXXXXX")
if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$work"' EXIT; fi

command -v java >/dev/null || { echo "java not found: apt-get install -y default-jre-headless" >&2; exit 1; }
venv="$root/target/bench-python"
requirements="pyarrow==21.0.0 pandas==2.3.3 pyspark==4.0.1 duckdb==1.4.2"
if [ "$(cat "$venv/requirements.txt" 2>/dev/null)" != "$requirements" ]; then
    echo "== creating $venv"
    python3 -m venv --clear "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install -q --disable-pip-version-check $requirements
    echo "$requirements" >"$venv/requirements.txt"
fi

# One cargo invocation for the command, the generator and the extension: one set of features,
# so the Quiver library is compiled once. The extension is the cdylib cargo builds (abi3, the
# `extension-module` feature is on), put beside the package's Python files in the scratch dir.
echo "== building (release): quiver, the generator, and the Python extension"
PYO3_PYTHON="$venv/bin/python" cargo build --release -q -p quiver -p quiver-benches -p quiver-python
mkdir -p "$work/pkg"
cp -r "$root/python/python/quiver" "$work/pkg/"
rm -f "$work/pkg/quiver/"*.so
cp "$root/target/release/lib_quiver.so" "$work/pkg/quiver/_quiver.abi3.so"

echo "== generating $source_rows source rows, $entity_rows entity rows, $users users in $work"
"$root/target/release/gen-historical" --dir "$work" --source-rows "$source_rows" \
    --entity-rows "$entity_rows" --users "$users" --transforms-dir "$work"
du -sh "$work/data" "$work/entities.parquet"

features=user_features:avg_order_value_7d,user_features:total_orders_30d,user_features:preferred_category,user_features:account_age_days,user_features:fraud_score
echo "== $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
PYTHONPATH="$work/pkg" PYSPARK_PYTHON="$venv/bin/python" "$venv/bin/python" \
    benches/python_bench.py --quiver "$root/target/release/quiver" \
    --config "$work/feature_store.yaml" --entities "$work/entities.parquet" \
    --features "$features" --work "$work" --spark-master "${SPARK_MASTER:-local[2]}" \
    --spark-memory "${SPARK_MEMORY:-6g}"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
