"""Quiver on Spark (local[2]): training sets computed by Spark equal to `quiver historical` bit
for bit, on-demand features by the same `.wasm` bytes on the executors, and streaming writes
into the online store that `quiver serve` then answers."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import quiver
import quiver.spark
from conftest import assert_same_training_set, cli_historical, spark_to_arrow
from projects import (
    EDGE_FEATURES,
    edge_entities,
    quickstart_data,
    write_edge_project,
    write_quickstart_project,
)


def test_spark_builds_the_same_training_set_as_the_cli_on_every_point_in_time_edge_case(
    tmp_path: Path, quiver_bin: Path, spark: Any
) -> None:
    config = write_edge_project(tmp_path / "edges")
    pq.write_table(edge_entities(), tmp_path / "entities.parquet")
    expected = cli_historical(
        quiver_bin, config, tmp_path / "entities.parquet", tmp_path / "cli.parquet", EDGE_FEATURES
    )
    entity_df = spark.read.parquet(str(tmp_path / "entities.parquet"))
    training = quiver.spark.get_historical_features(entity_df, EDGE_FEATURES, str(config))
    assert_same_training_set(spark_to_arrow(training), expected)


def test_entity_rows_read_in_several_partitions_come_back_in_input_order(
    tmp_path: Path, quiver_bin: Path, spark: Any
) -> None:
    config = write_edge_project(tmp_path / "edges")
    # Row groups of 2 rows, and splits of a few hundred bytes: several input partitions.
    pq.write_table(edge_entities(), tmp_path / "entities.parquet", row_group_size=2)
    expected = cli_historical(
        quiver_bin, config, tmp_path / "entities.parquet", tmp_path / "cli.parquet", EDGE_FEATURES
    )
    spark.conf.set("spark.sql.files.maxPartitionBytes", "200")
    spark.conf.set("spark.sql.files.openCostInBytes", "0")
    try:
        entity_df = spark.read.parquet(str(tmp_path / "entities.parquet"))
        assert entity_df.rdd.getNumPartitions() > 1
        training = quiver.spark.get_historical_features(entity_df, EDGE_FEATURES, str(config))
        assert_same_training_set(spark_to_arrow(training), expected)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
        spark.conf.unset("spark.sql.files.openCostInBytes")


def test_spark_builds_the_same_quickstart_training_set_with_on_demand_features_as_the_cli(
    tmp_path: Path, quiver_bin: Path, wasm_dir: Path, spark: Any
) -> None:
    config = write_quickstart_project(tmp_path / "qs", quickstart_data(), wasm_dir)
    labels = tmp_path / "qs" / "data" / "labels.parquet"
    for full in (False, True):
        expected = cli_historical(
            quiver_bin,
            config,
            labels,
            tmp_path / f"cli-{full}.parquet",
            feature_service="fraud_model_v2",
            full_feature_names=full,
        )
        entity_df = spark.read.parquet(str(labels))
        training = quiver.spark.get_historical_features(
            entity_df,
            store=str(config),
            feature_service="fraud_model_v2",
            full_feature_names=full,
        )
        assert_same_training_set(spark_to_arrow(training), expected)


def test_apply_transform_runs_the_module_on_the_executors_like_the_python_package(
    tmp_path: Path, wasm_dir: Path, spark: Any
) -> None:
    config = write_quickstart_project(tmp_path / "qs", quickstart_data(), wasm_dir)
    store = quiver.FeatureStore(config)
    transform = store.transform("user_risk")
    training = store.get_historical_features(
        pq.read_table(tmp_path / "qs" / "data" / "labels.parquet"),
        features=["user_features", "user_risk"],
    )
    inputs = training.select(transform.inputs)
    expected = transform.apply(inputs)
    pq.write_table(inputs, tmp_path / "inputs.parquet")
    df = spark.read.parquet(str(tmp_path / "inputs.parquet")).repartition(2)
    applied = spark_to_arrow(quiver.spark.apply_transform(df, "user_risk", store))
    by_row = applied.sort_by([(c, "ascending") for c in transform.inputs])
    wanted = expected.sort_by([(c, "ascending") for c in transform.inputs])
    assert_same_training_set(by_row.select(wanted.column_names), wanted)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real `redis-server` on a free loopback port, without persistence."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server not found: apt-get install -y redis-server")
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):  # up to 10 s to listen
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait(timeout=30)


@pytest.mark.parametrize("online_store", ["redis", "sqlite"])
def test_a_stream_written_through_write_online_is_answered_by_quiver_serve(
    tmp_path: Path, quiver_bin: Path, spark: Any, online_store: str, request: Any
) -> None:
    config = write_edge_project(tmp_path / "edges")
    if online_store == "redis":
        url = request.getfixturevalue("redis_url")
        config.write_text(
            config.read_text().replace(
                "  type: sqlite\n  path: online.db\n",
                f'  type: redis\n  connection_string: "{url}"\n',
            )
        )
        assert "type: redis" in config.read_text()
    events = tmp_path / "events"
    events.mkdir()
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
            ("score", pa.float64()),
            ("weight", pa.float32()),
            ("count", pa.int64()),
            ("tag", pa.string()),
        ]
    )

    def events_file(name: str, rows: list[tuple[Any, ...]]) -> None:
        table = pa.table([pa.array(c, f.type) for c, f in zip(zip(*rows), schema)], schema=schema)
        pq.write_table(table, events / name)

    minute = dt.timedelta(minutes=1)
    events_file(
        "0.parquet",
        [
            ("s1", now - 2 * minute, 1.5, 0.25, 1, "old"),
            ("s1", now - minute, 2.5, 0.5, 2, "new"),
            ("s2", now - minute, 3.5, 0.75, 3, "only"),
        ],
    )
    # A later file holds an older event for s1: newer-wins keeps "new".
    events_file("1.parquet", [("s1", now - 3 * minute, 9.5, 9.0, 9, "stale")])
    # A file stream takes files in modification-time order.
    os.utime(events / "0.parquet", (1_000_000, 1_000_000))
    os.utime(events / "1.parquet", (2_000_000, 2_000_000))

    written: list[int] = []

    def batch(df: Any, _batch_id: int) -> None:
        written.append(quiver.spark.write_online(df, "scores", str(config)))

    stream = (
        spark.readStream.schema(quiver_spark_schema(schema))
        .option("maxFilesPerTrigger", 1)
        .parquet(str(events))
        .writeStream.foreachBatch(batch)
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    stream.awaitTermination(240)
    assert written == [2, 0], written

    port = free_port()
    server = subprocess.Popen(
        [str(quiver_bin), "--config", str(config), "serve", "--bind", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        body = json.dumps(
            {
                "features": ["scores:score", "scores:weight", "scores:tag"],
                "entities": {"user_id": ["s1", "s2", "zzz"]},
            }
        ).encode()
        answer = None
        for _ in range(100):  # up to 10 s for the server to listen
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/get-online-features",
                    data=body,
                    headers={"content-type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    answer = json.load(response)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                time.sleep(0.1)
        assert answer is not None, "quiver serve did not answer"
        values = {
            name: result["values"]
            for name, result in zip(answer["metadata"]["feature_names"], answer["results"])
        }
        assert values["score"] == [2.5, 3.5, None]
        assert values["weight"] == [0.5, 0.75, None]
        assert values["tag"] == ["new", "only", None]
    finally:
        server.kill()
        server.wait(timeout=30)


def quiver_spark_schema(schema: pa.Schema) -> Any:
    """The Spark schema of an Arrow schema (streams need one up front)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)
