"""Shared fixtures: the `quiver` command, the example `.wasm` modules, projects on disk, a local
Spark session, and comparison of training sets value for value (floats by their bits).

`tests/python.rs` runs this suite and passes, through the environment, the `quiver` binary built
from the same sources (QUIVER_BIN), the built example transforms (QUIVER_WASM_DIR) and generated
quickstart data (QUIVER_QUICKSTART_DATA). A missing one fails the suite; nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]


def required_env(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run this suite through `cargo test --test python`")
    return Path(value)


@pytest.fixture(scope="session")
def quiver_bin() -> Path:
    return required_env("QUIVER_BIN")


@pytest.fixture(scope="session")
def wasm_dir() -> Path:
    return required_env("QUIVER_WASM_DIR")


def run_cli(quiver_bin: Path, config: Path, *args: str) -> str:
    done = subprocess.run(
        [str(quiver_bin), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"quiver {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def cli_historical(
    quiver_bin: Path,
    config: Path,
    entities: Path,
    out: Path,
    features: list[str] | None = None,
    feature_service: str | None = None,
    full_feature_names: bool = False,
) -> pa.Table:
    args = ["historical", "--entities", str(entities), "--output", str(out)]
    if features is not None:
        args += ["--features", ",".join(features)]
    if feature_service is not None:
        args += ["--feature-service", feature_service]
    if full_feature_names:
        args.append("--full-feature-names")
    run_cli(quiver_bin, config, *args)
    return pq.read_table(out)


def _normalized(column: pa.ChunkedArray) -> list[Any]:
    """Values to compare: timestamps as UTC microseconds, floats as their bits."""
    t = column.type
    if pa.types.is_timestamp(t):
        column = column.cast(pa.timestamp("us", tz=t.tz)).cast(pa.int64())
        return column.to_pylist()
    if pa.types.is_float32(t):
        return [None if v is None else struct.pack("<f", v) for v in column.to_pylist()]
    if pa.types.is_float64(t):
        return [None if v is None else struct.pack("<d", v) for v in column.to_pylist()]
    return column.to_pylist()


def assert_same_training_set(actual: pa.Table, expected: pa.Table) -> None:
    """Equal row for row, value for value: same columns in the same order, same types (up to a
    timestamp's unit and zone), timestamps equal to the microsecond, floats equal bit for bit."""
    assert actual.column_names == expected.column_names
    assert actual.num_rows == expected.num_rows
    for name in expected.column_names:
        a, e = actual.column(name), expected.column(name)
        if pa.types.is_timestamp(e.type):
            assert pa.types.is_timestamp(a.type), f"{name}: {a.type} is not a timestamp"
        else:
            assert a.type == e.type, f"{name}: {a.type} != {e.type}"
        a_values, e_values = _normalized(a), _normalized(e)
        for row, (x, y) in enumerate(zip(a_values, e_values)):
            assert x == y, f"{name}, row {row}: {x!r} != {y!r}"


def spark_to_arrow(df: Any) -> pa.Table:
    """A Spark DataFrame collected as an Arrow table: ``toArrow`` on PySpark 4; on 3.5, which
    lacks it, the Arrow collection that ``toArrow`` wraps (the same batches and types)."""
    if hasattr(df, "toArrow"):
        table: pa.Table = df.toArrow()
        return table
    batches = df._collect_as_arrow()
    if batches:
        return pa.Table.from_batches(batches)
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(df.schema).empty_table()


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    if shutil.which("java") is None:
        raise RuntimeError("java not found: apt-get install -y default-jre-headless")
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("quiver-tests")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
