"""Times one training set four ways on the same files: `quiver historical` (the CLI), the Python
package's in-process call, DuckDB's ASOF JOIN (the reference of benches/historical.sh) and Spark
(local[N]) through `quiver.spark`. Used by `benches/python.sh`; prints one line per way, then
checks that Quiver's three outputs (CLI, in-process, Spark) are equal value for value and counts
the rows where DuckDB differs (exact (event, created) ties, which DuckDB breaks arbitrarily)."""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import quiver
import quiver.spark

TTL = "INTERVAL 7 DAYS"  # user_features' ttl in gen-historical's feature_store.yaml


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quiver", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--entities", required=True)
    parser.add_argument("--features", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--spark-memory", default="6g")
    args = parser.parse_args()
    work = Path(args.work)
    features = args.features.split(",")
    columns = [f.split(":")[1] for f in features]
    rows = pq.ParquetFile(args.entities).metadata.num_rows
    print(f"{'':58} {'seconds':>8}   {'rows/s':>10}")

    started = time.perf_counter()
    done = subprocess.run(
        [
            args.quiver,
            "-c",
            args.config,
            "historical",
            "--entities",
            args.entities,
            "--features",
            args.features,
            "--output",
            str(work / "cli.parquet"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    report(
        "quiver historical (CLI: process, read, join, write)", rows, time.perf_counter() - started
    )
    print(f"    the CLI says: {done.stdout.strip().splitlines()[-1]}")

    store = quiver.FeatureStore(args.config)
    started = time.perf_counter()
    entities = pq.read_table(args.entities)
    read = time.perf_counter() - started
    table = store.get_historical_features(entities, features=features)
    inproc = time.perf_counter() - started
    report("Python in-process (read file, join, Arrow table out)", rows, inproc)
    report("  of which get_historical_features (Arrow in, Arrow out)", rows, inproc - read)

    con = duckdb.connect()
    picked = ",\n".join(
        f"CASE WHEN e.event_timestamp - f.event_timestamp <= {TTL} THEN f.{c} END AS {c}"
        for c in columns
    )
    started = time.perf_counter()
    con.execute(f"""
    COPY (
      SELECT e.user_id, e.event_timestamp, e.amount, e.label, {picked}
      FROM read_parquet('{args.entities}', file_row_number = true) e
      ASOF LEFT JOIN read_parquet('{work}/data/user_features/*.parquet') f
        ON e.user_id = f.user_id AND e.event_timestamp >= f.event_timestamp
      ORDER BY e.file_row_number
    ) TO '{work}/duck.parquet' (FORMAT PARQUET, COMPRESSION SNAPPY)
    """)
    report(
        f"DuckDB {duckdb.__version__} ASOF LEFT JOIN (read, join, write)",
        rows,
        time.perf_counter() - started,
    )

    from pyspark.sql import SparkSession

    started = time.perf_counter()
    spark = (
        SparkSession.builder.master(args.spark_master)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", args.spark_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    print(f"    (Spark session start, not counted: {time.perf_counter() - started:.2f} s)")
    started = time.perf_counter()
    df = quiver.spark.get_historical_features(spark.read.parquet(args.entities), features, store)
    df.write.mode("overwrite").parquet(str(work / "spark"))
    report(
        f"Spark {args.spark_master} via quiver.spark (read, join, write)",
        rows,
        time.perf_counter() - started,
    )
    spark.stop()

    cli_table = pq.read_table(work / "cli.parquet")
    spark_table = pq.read_table(work / "spark")
    assert table.num_rows == cli_table.num_rows == spark_table.num_rows == rows
    for column in columns:
        expected = cli_table.column(column)
        assert table.column(column).equals(expected), column
        assert spark_table.column(column).cast(expected.type).equals(expected), column
    print("outputs equal: in-process == CLI == Spark")
    distinct = " OR ".join(f"q.{c} IS DISTINCT FROM d.{c}" for c in columns)
    differ = con.execute(f"""
      SELECT count(*) FROM read_parquet('{work}/cli.parquet', file_row_number = true) q
      JOIN read_parquet('{work}/duck.parquet', file_row_number = true) d USING (file_row_number)
      WHERE q.user_id <> d.user_id OR {distinct}
    """).fetchone()
    print(f"rows where DuckDB differs from Quiver: {differ[0] if differ else 'n/a'}")


def report(what: str, rows: int, seconds: float) -> None:
    print(f"{what:58} {seconds:8.2f}   {rows / seconds:10.0f}", flush=True)


if __name__ == "__main__":
    main()
