#!/usr/bin/env bash
# Times `quiver historical` (release build) against DuckDB's ASOF JOIN on the same generated data:
# rows/s of the point-in-time join, rows/s of the on-demand transform step, and peak memory.
#
#   benches/historical.sh [SOURCE_ROWS] [ENTITY_ROWS]     (default: 10000000 1000000)
#
# Environment: USERS (distinct users; SOURCE_ROWS/20), MEMORY_MIB (Quiver's memory budget; 1024),
# KEEP=1 keeps the generated data. Needs python3 with venv, and network access once to
# `pip install duckdb` into target/bench-venv.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source_rows=${1:-10000000}
entity_rows=${2:-1000000}
users=${USERS:-$((source_rows / 20))}
memory_mib=${MEMORY_MIB:-1024}
work=$(mktemp -d "${TMPDIR:-/tmp}/quiver-bench-historical.XXXXXX")
if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$work"' EXIT; fi

echo "== building (release) and the user_risk transform (wasm)"
cargo build --release -q -p quiver -p quiver-benches
wasm_target="$root/target/wasm-fixtures"
CARGO_TARGET_DIR="$wasm_target" cargo build -q --profile wasm-release \
    --target wasm32-unknown-unknown -p user_risk
wasm_dir="$wasm_target/wasm32-unknown-unknown/wasm-release"

venv="$root/target/bench-venv"
if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv with duckdb"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q duckdb
fi

echo "== generating $source_rows source rows, $entity_rows entity rows, $users users in $work"
"$root/target/release/gen-historical" --dir "$work" --source-rows "$source_rows" \
    --entity-rows "$entity_rows" --users "$users" --transforms-dir "$wasm_dir"
du -sh "$work/data" "$work/entities.parquet"

features=user_features:avg_order_value_7d,user_features:total_orders_30d,user_features:preferred_category,user_features:account_age_days,user_features:fraud_score
odfv=user_risk:order_value_per_order,user_risk:amount_over_avg,user_risk:risk_score

max_rss_mib() { awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$1"; }

run_quiver() { # name features
    /usr/bin/time -v "$root/target/release/quiver" -c "$work/feature_store.yaml" historical \
        --entities "$work/entities.parquet" --features "$2" --output "$work/$1.parquet" \
        --memory-mib "$memory_mib" --temp-dir "$work" >"$work/$1.out" 2>"$work/$1.time"
    cat "$work/$1.out"
}

echo "== quiver historical: point-in-time join ($memory_mib MiB budget)"
run_quiver quiver_join "$features"
join_secs=$(sed -n 's/.* in \([0-9.]*\)s (.*/\1/p' "$work/quiver_join.out")
join_rss=$(max_rss_mib "$work/quiver_join.time")

echo "== quiver historical: join + on-demand transform (user_risk)"
run_quiver quiver_odfv "$features,$odfv"
transform_secs=$(sed -n 's/.*transforms \([0-9.]*\)s.*/\1/p' "$work/quiver_odfv.out")
odfv_secs=$(sed -n 's/.* in \([0-9.]*\)s (.*/\1/p' "$work/quiver_odfv.out")
odfv_rss=$(max_rss_mib "$work/quiver_odfv.time")

echo "== duckdb: ASOF LEFT JOIN with the ttl condition, same files, input order kept"
cat >"$work/duck.py" <<PY
import sys, time, duckdb
work = sys.argv[1]
con = duckdb.connect()
cols = ["avg_order_value_7d", "total_orders_30d", "preferred_category", "account_age_days", "fraud_score"]
picked = ",\n".join(
    f"CASE WHEN e.event_timestamp - f.event_timestamp <= INTERVAL 7 DAYS THEN f.{c} END AS {c}" for c in cols
)
started = time.time()
con.execute(f"""
COPY (
  SELECT e.user_id, e.event_timestamp, e.amount, e.label, {picked}
  FROM read_parquet('{work}/entities.parquet', file_row_number = true) e
  ASOF LEFT JOIN read_parquet('{work}/data/user_features/*.parquet') f
    ON e.user_id = f.user_id AND e.event_timestamp >= f.event_timestamp
  ORDER BY e.file_row_number
) TO '{work}/duck.parquet' (FORMAT PARQUET, COMPRESSION SNAPPY)
""")
elapsed = time.time() - started
print(f"duckdb {duckdb.__version__}: {elapsed:.2f}s")
with open(f"{work}/duck.secs", "w") as f:
    f.write(f"{elapsed:.2f}")
# Not timed: compare with Quiver's output row by row (exact (ts, created) ties, which DuckDB
# breaks arbitrarily, are the only expected differences).
differ = con.execute(f"""
  SELECT count(*) FROM read_parquet('{work}/quiver_join.parquet', file_row_number = true) q
  JOIN read_parquet('{work}/duck.parquet', file_row_number = true) d USING (file_row_number)
  WHERE q.user_id <> d.user_id OR {" OR ".join(f"q.{c} IS DISTINCT FROM d.{c}" for c in cols)}
""").fetchone()[0]
present = con.execute(f"SELECT count(fraud_score) FROM '{work}/quiver_join.parquet'").fetchone()[0]
print(f"rows that differ between Quiver and DuckDB: {differ} (rows with a fraud_score: {present})")
PY
/usr/bin/time -v "$venv/bin/python" "$work/duck.py" "$work" 2>"$work/duck.time"
duck_secs=$(cat "$work/duck.secs")
duck_rss=$(max_rss_mib "$work/duck.time")

rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "n/a" }'; }
echo
echo "== results: $entity_rows entity rows x $source_rows source rows, $(nproc) cores"
printf '%-40s %10s %14s %14s\n' "" "seconds" "rows/s" "peak RSS MiB"
printf '%-40s %10s %14s %14s\n' "quiver historical (join)" "$join_secs" "$(rate "$entity_rows" "$join_secs")" "$join_rss"
printf '%-40s %10s %14s %14s\n' "quiver historical (join + transform)" "$odfv_secs" "$(rate "$entity_rows" "$odfv_secs")" "$odfv_rss"
printf '%-40s %10s %14s %14s\n' "  of which the transform step" "$transform_secs" "$(rate "$entity_rows" "$transform_secs")" ""
printf '%-40s %10s %14s %14s\n' "duckdb ASOF JOIN (reference)" "$duck_secs" "$(rate "$entity_rows" "$duck_secs")" "$duck_rss"
