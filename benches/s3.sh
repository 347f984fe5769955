#!/usr/bin/env bash
# The offline store on S3 against local disk, same data, same run: `quiver materialize` and
# `quiver historical` (release build) reading from a local S3 server (moto's, on loopback) and from
# local files, alternating, best of ROUNDS (3) each, with the bytes each read (from the summary
# lines: footers and column chunks fetched; local reads include buffered read-ahead).
#
#   benches/s3.sh [SOURCE_ROWS] [ENTITY_ROWS]     (default: 2000000 200000)
#
# Needs python3 with venv, and network access once to `pip install moto[server]` into
# target/python/moto (the venv the tests use). KEEP=1 keeps the generated data.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source_rows=${1:-2000000}
entity_rows=${2:-200000}
users=$((source_rows / 20))
work=$(mktemp -d "${TMPDIR:-/tmp}/quiver-bench-s3.XXXXXX")
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

echo "== building (release)"
cargo build --release -q -p quiver -p quiver-benches
quiver="$root/target/release/quiver"

venv="$root/target/python/moto"
if [ "$(cat "$venv/quiver-requirements.txt" 2>/dev/null)" != "moto[server]==5.2.5" ]; then
    echo "== creating $venv with moto"
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==5.2.5"
    echo "moto[server]==5.2.5" >"$venv/quiver-requirements.txt"
fi

echo "== generating $source_rows source rows, $entity_rows entity rows, $users users in $work"
"$root/target/release/gen-historical" --dir "$work/local" --source-rows "$source_rows" \
    --entity-rows "$entity_rows" --users "$users" --transforms-dir "$work"
du -sh "$work/local/data" "$work/local/entities.parquet"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
server_pid=$!
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 \
    AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
for _ in $(seq 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then break; fi
    sleep 0.1
done
echo "== uploading to s3://bench/ (moto on 127.0.0.1:$port)"
"$venv/bin/python" - "$work/local" <<'PY'
import os, sys, boto3
root = sys.argv[1]
s3 = boto3.client("s3")
s3.create_bucket(Bucket="bench")
for base in ("data", "entities.parquet"):
    path = os.path.join(root, base)
    files = [path] if os.path.isfile(path) else [
        os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".parquet")]
    for f in files:
        s3.upload_file(f, "bench", os.path.relpath(f, root))
PY

mkdir -p "$work/s3"
sed -e 's|path: data/user_features|path: s3://bench/data/user_features/|' \
    -e "s|dir: .*|dir: $work|" "$work/local/feature_store.yaml" >"$work/s3/feature_store.yaml"

features=user_features:avg_order_value_7d,user_features:total_orders_30d,user_features:preferred_category,user_features:account_age_days,user_features:fraud_score
declare -A secs bytes
run() { # name config args...: the best of the rounds so far, and the bytes the summary reports
    local name=$1 config=$2
    shift 2
    local started ended took
    started=$(date +%s.%N)
    "$quiver" -c "$config" "$@" >"$work/$name.out" 2>"$work/$name.err" || {
        cat "$work/$name.out" "$work/$name.err"
        exit 1
    }
    ended=$(date +%s.%N)
    took=$(awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.2f", b - a }')
    secs[$name]=$(awk -v a="${secs[$name]:-1e9}" -v b="$took" 'BEGIN { print (b < a) ? b : a }')
    bytes[$name]=$(grep -o 'skipped, [0-9.]* [KMGT]*i*B read' "$work/$name.out" | tail -1 | sed 's/skipped, //; s/ read//')
}

rounds=${ROUNDS:-3}
echo "== $rounds rounds, alternating local disk and S3 (the best of each is kept)"
for round in $(seq "$rounds"); do
    for where in local s3; do
        rm -f "$work/$where/online_store.db"
        run "materialize_$where" "$work/$where/feature_store.yaml" materialize 1970-01-01 now
    done
    run historical_local "$work/local/feature_store.yaml" historical \
        --entities "$work/local/entities.parquet" --features "$features" \
        --output "$work/local/out.parquet" --temp-dir "$work"
    run historical_s3 "$work/s3/feature_store.yaml" historical \
        --entities s3://bench/entities.parquet --features "$features" \
        --output s3://bench/out.parquet --temp-dir "$work"
    echo "round $round: materialize ${secs[materialize_local]}s / ${secs[materialize_s3]}s, historical ${secs[historical_local]}s / ${secs[historical_s3]}s (best so far, local / S3)"
done
tail -1 "$work/historical_s3.out"

echo
echo "== results: $source_rows source rows, $entity_rows entity rows, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-14s %9s %9s %9s %16s %16s\n' "" "local s" "S3 s" "S3/local" "local bytes read" "S3 bytes read"
for op in materialize historical; do
    l=${secs[${op}_local]} s=${secs[${op}_s3]}
    printf '%-14s %9s %9s %9s %16s %16s\n' "$op" "$l" "$s" \
        "$(awk -v a="$s" -v b="$l" 'BEGIN { printf "%.2fx", a / b }')" "${bytes[${op}_local]}" "${bytes[${op}_s3]}"
done
