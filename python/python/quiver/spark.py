"""Quiver on Spark: training sets computed by Spark with Quiver's rule, on-demand features by
Quiver's Wasm engine on the executors, and writes into the online store from the executors.

The point-in-time join is expressed in Spark itself (no Quiver process does the join), with the
rule of ``runtime/src/registry/rule.rs``: a source row stamped ``ts`` is usable at an entity
row's time ``T`` iff ``ts <= T`` and ``T - ts <= ttl`` (both inclusive; no ttl, no lower bound);
among usable rows the greatest ``(event_timestamp, created_timestamp)`` wins, and rows equal in
both resolve to the first in scan order (files sorted by path, then row order within a file,
from Spark's ``_metadata.file_path`` and ``_metadata.row_index``). The winner's values are taken
as they are: a null never falls back to an older row. Every entity row comes back once, in input
order. On-demand views run the project's ``.wasm`` bytes, broadcast from the driver, through
``mapInArrow`` on the executors.

Timestamps are compared as microseconds since the epoch; timestamps without time zone
(``TIMESTAMP_NTZ``) are read in the session time zone, so run with
``spark.sql.session.timeZone=UTC`` (as ``quiver historical`` reads them as UTC).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from quiver import FeatureStore, QuiverError, Transform

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import DataType

__all__ = ["apply_transform", "get_historical_features", "write_online"]

_ROW = "__quiver_row"
_MIN_MICROS = -(2**63)


def _store(store: FeatureStore | str | Path) -> FeatureStore:
    return store if isinstance(store, FeatureStore) else FeatureStore(store)


def _spark_type(dtype: str) -> DataType:
    from pyspark.sql import types as T

    scalars: dict[str, DataType] = {
        "int32": T.IntegerType(),
        "int64": T.LongType(),
        "float32": T.FloatType(),
        "float64": T.DoubleType(),
        "string": T.StringType(),
        "bool": T.BooleanType(),
        "bytes": T.BinaryType(),
        "unix_timestamp": T.TimestampType(),
    }
    if dtype.startswith("list<") and dtype.endswith(">"):
        return T.ArrayType(scalars[dtype[5:-1]], containsNull=True)
    return scalars[dtype]


def _micros_of(column: Column) -> Column:
    from pyspark.sql import functions as F

    return F.unix_micros(column.cast("timestamp"))


def _internal(view: str, feature: str) -> str:
    return f"__quiver__{view}__{feature}"


def _view_rows(spark: Any, view: dict[str, Any]) -> DataFrame:
    """A view's source rows with their key columns, event and created times (microseconds),
    scan position, and features under internal names."""
    from pyspark.sql import functions as F

    if not view["files"]:
        raise QuiverError(f'feature view "{view["name"]}": its source has no Parquet files')
    df: DataFrame = spark.read.parquet(*view["files"])
    created = view["created_timestamp_column"]
    columns = [F.col(k["name"]).alias(f"__quiver_key_{i}") for i, k in enumerate(view["join_keys"])]
    columns.append(_micros_of(F.col(view["timestamp_field"])).alias("__quiver_ts"))
    columns.append(
        F.coalesce(_micros_of(F.col(created)), F.lit(_MIN_MICROS)).alias("__quiver_created")
        if created
        else F.lit(_MIN_MICROS).alias("__quiver_created")
    )
    columns.append(F.col("_metadata.file_path").alias("__quiver_file"))
    columns.append(F.col("_metadata.row_index").alias("__quiver_index"))
    for field in view["fields"]:
        columns.append(
            F.col(field["name"])
            .cast(_spark_type(field["dtype"]))
            .alias(_internal(view["name"], field["name"]))
        )
    rows = df.select(*columns).where(F.col("__quiver_ts").isNotNull())
    for i in range(len(view["join_keys"])):
        rows = rows.where(F.col(f"__quiver_key_{i}").isNotNull())
    return rows


def _join_view(entities: DataFrame, spark: Any, view: dict[str, Any]) -> DataFrame:
    """``entities`` (with ``__quiver_row`` and ``__quiver_t``) with the view's features as of
    each row's time, by Quiver's rule."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    source = _view_rows(spark, view)
    keys = [k["name"] for k in view["join_keys"]]
    left = entities.select(
        _ROW, "__quiver_t", *[F.col(k).alias(f"__quiver_ekey_{k}") for k in keys]
    )
    condition = [
        F.col(f"__quiver_ekey_{k}") == F.col(f"__quiver_key_{i}") for i, k in enumerate(keys)
    ]
    condition.append(F.col("__quiver_ts") <= F.col("__quiver_t"))
    ttl = view["ttl_micros"]
    if ttl is not None:
        condition.append(F.col("__quiver_t") - F.col("__quiver_ts") <= F.lit(ttl))
    cond = condition[0]
    for c in condition[1:]:
        cond = cond & c
    candidates = left.join(source, cond, "inner")
    order = Window.partitionBy(_ROW).orderBy(
        F.col("__quiver_ts").desc(),
        F.col("__quiver_created").desc(),
        F.col("__quiver_file").asc(),
        F.col("__quiver_index").asc(),
    )
    features = [_internal(view["name"], f["name"]) for f in view["fields"]]
    winners = (
        candidates.withColumn("__quiver_rank", F.row_number().over(order))
        .where(F.col("__quiver_rank") == 1)
        .select(_ROW, *features)
    )
    return entities.join(winners, _ROW, "left")


def _on_demand(df: DataFrame, od: dict[str, Any], transform: Transform) -> DataFrame:
    """Appends an on-demand view's outputs (under internal names), computed by its module on the
    executors through ``mapInArrow``."""
    from pyspark.sql import types as T

    inputs: list[tuple[str, str]] = []
    for i in od["inputs"]:
        if "request" in i:
            inputs.append((i["request"], i["name"]))
        else:
            inputs.append((_internal(i["view"], i["feature"]), i["name"]))
    outputs = [(_internal(od["name"], f["name"]), f) for f in od["fields"]]
    schema = T.StructType(
        list(df.schema.fields)
        + [T.StructField(name, _spark_type(f["dtype"]), True) for name, f in outputs]
    )
    return df.mapInArrow(
        _transform_batches(df.sparkSession, transform, inputs, [n for n, _ in outputs]),
        schema,
    )


_TRANSFORMS: dict[str, Transform] = {}


def _transform_batches(
    spark: Any, transform: Transform, inputs: list[tuple[str, str]], outputs: list[str]
) -> Any:
    """The function ``mapInArrow`` runs on the executors: it rebuilds the transform once per
    Python worker from the broadcast bytes and spec, and appends its outputs to every batch."""
    shipped = spark.sparkContext.broadcast((transform.wasm, transform.spec, transform.sha256))

    def run(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        wasm, spec, sha = shipped.value
        key = f"{sha}:{spec}"
        module = _TRANSFORMS.get(key)
        if module is None:
            module = Transform.from_parts(wasm, spec)
            _TRANSFORMS[key] = module
        for batch in batches:
            table = pa.table(
                [batch.column(batch.schema.get_field_index(c)) for c, _ in inputs],
                names=[name for _, name in inputs],
            )
            result = module.apply(table)
            columns = list(batch.columns) + [
                result.column(name).combine_chunks() for name in module.outputs
            ]
            names = list(batch.schema.names) + outputs
            yield pa.RecordBatch.from_arrays(columns, names=names)

    return run


def get_historical_features(
    entity_df: DataFrame,
    features: Sequence[str] | None = None,
    store: FeatureStore | str | Path = "feature_store.yaml",
    *,
    feature_service: str | None = None,
    full_feature_names: bool = False,
) -> DataFrame:
    """A training set computed by Spark: every row of ``entity_df`` once, in input order, with
    its pass-through columns and the requested features as of its ``event_timestamp``, equal to
    what ``quiver historical`` writes for the same data.

    ``features`` are ``view:feature`` references or whole views (or name a
    ``feature_service``); ``store`` is the project (a ``FeatureStore`` or its
    ``feature_store.yaml``), whose source files Spark reads. On-demand views run their ``.wasm``
    modules on the executors.
    """
    from pyspark.sql import functions as F

    store = _store(store)
    described = json.loads(
        store._native.describe(list(features) if features is not None else None, feature_service)
    )
    views = {v["name"]: v for v in described["feature_views"]}
    on_demand = {v["name"]: v for v in described["on_demand_feature_views"]}
    refs = described["references"]
    if not refs:
        raise QuiverError("give features or feature_service")

    needed: list[str] = []
    needed_od: list[str] = []
    for r in refs:
        if r["on_demand"]:
            if r["view"] not in needed_od:
                needed_od.append(r["view"])
            for source in on_demand[r["view"]]["sources"]:
                if source not in needed:
                    needed.append(source)
        elif r["view"] not in needed:
            needed.append(r["view"])

    names = [f"{r['view']}__{r['feature']}" if full_feature_names else r["feature"] for r in refs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise QuiverError(
            f"feature names {duplicates} appear more than once; set full_feature_names=True"
        )

    spark = entity_df.sparkSession
    passthrough = entity_df.columns
    if "event_timestamp" not in passthrough:
        raise QuiverError("entity_df has no event_timestamp column")
    rows = entity_df.withColumn(_ROW, F.monotonically_increasing_id()).withColumn(
        "__quiver_t", _micros_of(F.col("event_timestamp"))
    )
    for name in needed:
        view = views[name]
        missing = [k["name"] for k in view["join_keys"] if k["name"] not in passthrough]
        if missing:
            raise QuiverError(
                f'entity_df has no join key column "{missing[0]}" of feature view "{name}"'
            )
        rows = _join_view(rows, spark, view)
    for name in needed_od:
        od = on_demand[name]
        for field in od["request_fields"]:
            if field["name"] not in passthrough:
                raise QuiverError(
                    f'entity_df has no column "{field["name"]}", a request field of on-demand '
                    f'view "{name}"'
                )
        rows = _on_demand(rows, od, store.transform(name))
    out = [F.col(c) for c in passthrough] + [
        F.col(_internal(r["view"], r["feature"])).alias(n) for r, n in zip(refs, names)
    ]
    return rows.orderBy(_ROW).select(*out)


def apply_transform(
    df: DataFrame,
    name: str,
    store: FeatureStore | str | Path = "feature_store.yaml",
) -> DataFrame:
    """``df`` with the outputs of on-demand view ``name`` appended, computed by its ``.wasm``
    module on the executors; ``df`` holds the transform's inputs under their input names."""
    transform = _store(store).transform(name)
    schema_fields = {f.name for f in df.schema.fields}
    missing = [c for c in transform.inputs if c not in schema_fields]
    if missing:
        raise QuiverError(f'transform of "{name}": input column "{missing[0]}" is missing')
    described = json.loads(_store(store)._native.describe())
    od = next(v for v in described["on_demand_feature_views"] if v["name"] == name)
    from pyspark.sql import types as T

    schema = T.StructType(
        list(df.schema.fields)
        + [T.StructField(f["name"], _spark_type(f["dtype"]), True) for f in od["fields"]]
    )
    inputs = [(c, c) for c in transform.inputs]
    return df.mapInArrow(
        _transform_batches(df.sparkSession, transform, inputs, transform.outputs), schema
    )


_STORES: dict[str, FeatureStore] = {}
_WRITE_ROWS = 1000


def write_online(
    df: DataFrame,
    view: str,
    store: FeatureStore | str | Path = "feature_store.yaml",
) -> int:
    """Writes ``df``'s latest row per entity key into the online store of ``view``, from the
    executors, through Quiver's newer-wins writer (``POST /write-to-online-store``, called
    in-process): an older event never replaces a newer one already stored. Returns the rows
    stored. Usable as is in Structured Streaming's ``foreachBatch``; every executor must reach
    the project's ``feature_store.yaml`` at the same path and its online store.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    store = _store(store)
    described = json.loads(store._native.describe())
    matching = [v for v in described["feature_views"] if v["name"] == view]
    if not matching:
        raise QuiverError(f'no feature view "{view}" in {store.config}')
    v = matching[0]
    keys = [k["name"] for k in v["join_keys"]]
    order = [F.col(v["timestamp_field"]).desc()]
    if v["created_timestamp_column"] and v["created_timestamp_column"] in df.columns:
        order.append(F.col(v["created_timestamp_column"]).desc())
    latest = (
        df.withColumn(
            "__quiver_rank", F.row_number().over(Window.partitionBy(*keys).orderBy(*order))
        )
        .where(F.col("__quiver_rank") == 1)
        .drop("__quiver_rank")
    )
    config = str(store.config.resolve())

    def write(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        target = _STORES.get(config)
        if target is None:
            target = FeatureStore(config)
            _STORES[config] = target
        written = 0
        for batch in batches:
            # Writes of at most _WRITE_ROWS rows (below `server.max_entities`), each handed to
            # Quiver as Arrow columns, not JSON.
            for offset in range(0, batch.num_rows, _WRITE_ROWS):
                chunk = pa.Table.from_batches([batch.slice(offset, _WRITE_ROWS)])
                answer = target.write_to_online_store(view, chunk)
                written += int(answer.get("written", 0))
        yield pa.RecordBatch.from_arrays([pa.array([written], pa.int64())], names=["written"])

    result = latest.mapInArrow(write, "written long").agg(F.sum("written")).collect()
    total = result[0][0] if result else 0
    return int(total or 0)
