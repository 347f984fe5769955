"""Times one training set three ways on the same files: `quiver historical` (the CLI), the Python
package's in-process call, and Spark (local[N]) through `quiver.spark`. Used by
`benches/python.sh`; prints one line per way and checks that the three outputs are equal."""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq

import quiver
import quiver.spark


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quiver", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--entities", required=True)
    parser.add_argument("--features", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--spark-master", default="local[2]")
    args = parser.parse_args()
    work = Path(args.work)
    features = args.features.split(",")
    rows = pq.ParquetFile(args.entities).metadata.num_rows

    started = time.perf_counter()
    subprocess.run(
        [args.quiver, "-c", args.config, "historical", "--entities", args.entities,
         "--features", args.features, "--output", str(work / "cli.parquet")],
        check=True, capture_output=True,
    )
    cli = time.perf_counter() - started
    report("quiver historical (CLI, incl. process start)", rows, cli)

    store = quiver.FeatureStore(args.config)
    started = time.perf_counter()
    entities = pq.read_table(args.entities)
    table = store.get_historical_features(entities, features=features)
    inproc = time.perf_counter() - started
    report("Python in-process (read + join + to Arrow)", rows, inproc)

    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(args.spark_master)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "6g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    started = time.perf_counter()
    df = quiver.spark.get_historical_features(spark.read.parquet(args.entities), features, store)
    df.write.mode("overwrite").parquet(str(work / "spark"))
    on_spark = time.perf_counter() - started
    report(f"Spark {args.spark_master} (join + write Parquet)", rows, on_spark)

    cli_table = pq.read_table(work / "cli.parquet")
    spark_table = pq.read_table(work / "spark")
    assert table.num_rows == cli_table.num_rows == spark_table.num_rows
    for name in features:
        column = name.split(":")[1]
        assert table.column(column).equals(cli_table.column(column)), column
        assert spark_table.column(column).cast(cli_table.column(column).type).equals(
            cli_table.column(column)
        ), column
    print("outputs equal: in-process == CLI == Spark")
    spark.stop()


def report(what: str, rows: int, seconds: float) -> None:
    print(f"{what:50} {seconds:8.2f} s {rows / seconds:12.0f} rows/s")


if __name__ == "__main__":
    main()
