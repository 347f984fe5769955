"""The Python package against the `quiver` command: the same training sets bit for bit, the
online store in-process, pushes, transforms and errors."""

from __future__ import annotations

import base64
import datetime as dt
import struct
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import quiver
from conftest import assert_same_training_set, cli_historical
from projects import (
    EDGE_FEATURES,
    edge_entities,
    quickstart_data,
    write_edge_project,
    write_quickstart_project,
)


def test_a_training_set_from_python_equals_the_cli_on_every_point_in_time_edge_case(
    tmp_path: Path, quiver_bin: Path
) -> None:
    config = write_edge_project(tmp_path / "edges")
    entities = edge_entities()
    pq.write_table(entities, tmp_path / "entities.parquet")
    expected = cli_historical(
        quiver_bin, config, tmp_path / "entities.parquet", tmp_path / "cli.parquet", EDGE_FEATURES
    )
    store = quiver.FeatureStore(config)
    actual = store.get_historical_features(entities, features=EDGE_FEATURES)
    assert_same_training_set(actual, expected)
    # The rule, spelled out: the values the edge cases must give.
    assert actual.column("score").to_pylist() == [
        None,
        1.0,
        2.0,
        4.0,
        4.0,
        None,
        5.0,
        9.0,
        None,
        None,
        1.0,
        None,
        None,
        None,
    ]
    assert actual.column("tag").to_pylist()[8] is None
    assert actual.column("level").to_pylist()[-1] == 2
    assert actual.column("label").to_pylist() == list(range(entities.num_rows))


def test_a_pandas_entity_dataframe_gives_the_same_training_set_and_to_pandas_works(
    tmp_path: Path,
) -> None:
    config = write_edge_project(tmp_path / "edges")
    store = quiver.FeatureStore(config)
    from_arrow = store.get_historical_features(edge_entities(), features=EDGE_FEATURES)
    from_pandas = store.get_historical_features(edge_entities().to_pandas(), features=EDGE_FEATURES)
    assert_same_training_set(from_pandas, from_arrow)
    frame = from_pandas.to_pandas()
    assert list(frame.columns) == from_arrow.column_names
    assert len(frame) == from_arrow.num_rows


def test_full_feature_names_and_the_training_metadata_match_the_cli(
    tmp_path: Path, quiver_bin: Path
) -> None:
    config = write_edge_project(tmp_path / "edges")
    pq.write_table(edge_entities(), tmp_path / "entities.parquet")
    expected = cli_historical(
        quiver_bin,
        config,
        tmp_path / "entities.parquet",
        tmp_path / "cli.parquet",
        EDGE_FEATURES,
        full_feature_names=True,
    )
    actual = quiver.FeatureStore(config).get_historical_features(
        edge_entities(), features=EDGE_FEATURES, full_feature_names=True
    )
    assert_same_training_set(actual, expected)
    assert "scores__score" in actual.column_names
    metadata = actual.schema.metadata
    assert metadata is not None
    for key in (b"quiver.features", b"quiver.feature_views", b"quiver.profile"):
        assert key in metadata, key
    # The CLI's record is the Parquet file's key-value metadata; the same keys and values.
    cli_metadata = pq.ParquetFile(tmp_path / "cli.parquet").metadata.metadata
    for key in (b"quiver.features", b"quiver.feature_views", b"quiver.full_feature_names"):
        assert metadata[key] == cli_metadata[key], key
    assert set(cli_metadata) - {b"ARROW:schema"} == set(metadata)


def test_the_quickstart_training_set_with_on_demand_features_equals_the_cli(
    tmp_path: Path, quiver_bin: Path, wasm_dir: Path
) -> None:
    config = write_quickstart_project(tmp_path / "qs", quickstart_data(), wasm_dir)
    labels = tmp_path / "qs" / "data" / "labels.parquet"
    expected = cli_historical(
        quiver_bin, config, labels, tmp_path / "cli.parquet", feature_service="fraud_model_v2"
    )
    actual = quiver.FeatureStore(config).get_historical_features(
        pq.read_table(labels), feature_service="fraud_model_v2"
    )
    assert_same_training_set(actual, expected)
    assert actual.column("risk_score").null_count < actual.num_rows
    assert b"user_risk" in actual.schema.metadata[b"quiver.transforms"]


def test_a_transform_applied_to_a_table_gives_the_on_demand_columns_of_the_training_set(
    tmp_path: Path, wasm_dir: Path
) -> None:
    config = write_quickstart_project(tmp_path / "qs", quickstart_data(), wasm_dir)
    store = quiver.FeatureStore(config)
    training = store.get_historical_features(
        pq.read_table(tmp_path / "qs" / "data" / "labels.parquet"),
        features=[
            "user_features:avg_order_value_7d",
            "user_features:total_orders_30d",
            "user_features:preferred_category",
            "user_features:account_age_days",
            "user_features:fraud_score",
            "user_risk",
        ],
    )
    transform = quiver.Transform("user_risk", store)
    assert transform.outputs == ["order_value_per_order", "amount_over_avg", "risk_score"]
    inputs = training.select(transform.inputs)
    applied = transform.apply(inputs)
    assert applied.column_names == transform.inputs + transform.outputs
    for name in transform.outputs:
        assert applied.column(name).equals(training.column(name)), name
    # The same module from its file, and rebuilt from its parts as executors do.
    from_file = quiver.Transform(wasm_dir / "user_risk.wasm", store)
    assert from_file.sha256 == transform.sha256
    rebuilt = quiver.Transform.from_parts(transform.wasm, transform.spec)
    assert rebuilt.apply(inputs).equals(applied)


def test_materialize_then_get_online_features_answers_in_feasts_to_dict_shape(
    tmp_path: Path, wasm_dir: Path
) -> None:
    config = write_quickstart_project(tmp_path / "qs", quickstart_data(), wasm_dir)
    store = quiver.FeatureStore(config)
    now = dt.datetime.now(dt.timezone.utc)
    summaries = store.materialize(now - dt.timedelta(days=30), now)
    assert {s["view"] for s in summaries} == {"user_features", "user_sessions"}
    assert all(s["written"] > 0 for s in summaries)
    answer = store.get_online_features(
        features=["user_features:total_orders_30d", "user_features:preferred_category"],
        entity_rows=[{"user_id": "user_0001"}, {"user_id": "nobody"}],
    ).to_dict()
    assert list(answer) == ["user_id", "total_orders_30d", "preferred_category"]
    assert answer["user_id"] == ["user_0001", "nobody"]
    assert answer["total_orders_30d"][1] is None
    # An incremental run after a full one has nothing new to load.
    again = store.materialize_incremental(now)
    assert {s["view"] for s in again} == {"user_features", "user_sessions"}


def test_a_pushed_row_is_served_and_an_older_push_does_not_replace_it(tmp_path: Path) -> None:
    config = write_edge_project(tmp_path / "edges")
    (tmp_path / "edges" / "feature_store.yaml").write_text(
        config.read_text() + "push_sources:\n  - name: scores_push\n    feature_view: scores\n"
    )
    store = quiver.FeatureStore(config)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    row = {
        "user_id": ["p"],
        "event_timestamp": [now],
        "score": [0.25],
        "weight": pa.array([0.5], pa.float32()),
        "count": [3],
        "tag": ["pushed"],
    }
    summary = store.push("scores_push", pa.table(row))
    assert summary["written"] == 1
    older = dict(row, event_timestamp=[now - dt.timedelta(minutes=1)], score=[9.0])
    assert store.push("scores_push", pa.table(older))["skipped_older"] == 1
    answer = store.get_online_features(
        features=["scores:score", "scores:weight", "scores:tag"], entity_rows=[{"user_id": "p"}]
    ).to_dict()
    assert answer["score"] == [0.25]
    assert answer["weight"] == [0.5]
    assert answer["tag"] == ["pushed"]


def test_errors_are_quiver_errors_with_quivers_messages(tmp_path: Path) -> None:
    with pytest.raises(quiver.QuiverError, match="nowhere.yaml"):
        quiver.FeatureStore(tmp_path / "nowhere.yaml")
    config = write_edge_project(tmp_path / "edges")
    store = quiver.FeatureStore(config)
    with pytest.raises(quiver.QuiverError, match="nope"):
        store.get_historical_features(edge_entities(), features=["nope:score"])
    no_time = edge_entities().drop_columns(["event_timestamp"])
    with pytest.raises(quiver.QuiverError, match="event_timestamp"):
        store.get_historical_features(no_time, features=EDGE_FEATURES)
    with pytest.raises(quiver.QuiverError, match="scores_missing"):
        store.push("scores_missing", pa.table({"user_id": ["a"]}))
    with pytest.raises(TypeError):
        store.get_historical_features([1, 2, 3], features=EDGE_FEATURES)
    assert issubclass(quiver.QuiverError, Exception)


def test_no_file_is_written_between_python_and_the_engine(
    tmp_path: Path, wasm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_quickstart_project(tmp_path / "qs", quickstart_data(), wasm_dir)
    store = quiver.FeatureStore(config)
    labels = pq.read_table(tmp_path / "qs" / "data" / "labels.parquet")
    # Every temporary file of the engine goes under TMPDIR (read when it makes one); an empty
    # one stays empty when the entity rows, the training set and transform tables all cross in
    # memory.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    project = sorted((tmp_path / "qs").rglob("*"))
    training = store.get_historical_features(
        labels,
        features=[
            "user_features:avg_order_value_7d",
            "user_features:total_orders_30d",
            "user_features:preferred_category",
            "user_features:account_age_days",
            "user_features:fraud_score",
            "user_risk",
        ],
    )
    transform = quiver.Transform("user_risk", store)
    applied = transform.apply(training.select(transform.inputs))
    assert training.num_rows == labels.num_rows == applied.num_rows
    assert list(scratch.iterdir()) == []
    # Nor beside the project's files.
    assert sorted((tmp_path / "qs").rglob("*")) == project


TYPED_YAML = """
project: typed
online_store:
  type: sqlite
  path: online.db
entities:
  - name: user
    join_keys: [user_id]
    value_type: string
feature_views:
  - name: typed
    entities: [user]
    schema:
      - { name: f64, dtype: float64 }
      - { name: f32, dtype: float32 }
      - { name: i64, dtype: int64 }
      - { name: i32, dtype: int32 }
      - { name: text, dtype: string }
      - { name: flag, dtype: bool }
      - { name: raw, dtype: bytes }
      - { name: seen, dtype: unix_timestamp }
      - { name: counts, dtype: "list<int64>" }
    source:
      path: typed.parquet
      timestamp_field: event_timestamp
push_sources:
  - name: typed_push
    feature_view: typed
"""

TYPED_FEATURES = [
    f"typed:{name}"
    for name in ("f64", "f32", "i64", "i32", "text", "flag", "raw", "seen", "counts")
]


def _typed_project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "feature_store.yaml").write_text(TYPED_YAML)
    now = dt.datetime.now(dt.timezone.utc)
    pq.write_table(_typed_rows("source", now).slice(0, 0), root / "typed.parquet")
    return root / "feature_store.yaml"


def _typed_rows(user: str, now: dt.datetime) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([user, user + "-nulls"]),
            "event_timestamp": pa.array([now, now], pa.timestamp("us", tz="UTC")),
            "f64": pa.array([0.1, None], pa.float64()),
            "f32": pa.array([0.1, None], pa.float32()),
            "i64": pa.array([2**53 + 1, None], pa.int64()),
            "i32": pa.array([-7, None], pa.int32()),
            "text": pa.array(["é ✓", None]),
            "flag": pa.array([True, None]),
            "raw": pa.array([b"\x00\xff", None], pa.binary()),
            "seen": pa.array(
                [now - dt.timedelta(days=1, microseconds=1), None], pa.timestamp("us", tz="UTC")
            ),
            "counts": pa.array([[1, None, 3], None], pa.list_(pa.int64())),
        }
    )


def test_an_arrow_push_stores_the_values_a_json_push_stores_with_their_types_and_nulls(
    tmp_path: Path,
) -> None:
    store = quiver.FeatureStore(_typed_project(tmp_path / "typed"))
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=123456)
    summary = store.push("typed_push", _typed_rows("arrow", now))
    assert (summary["rows"], summary["written"]) == (2, 2)
    # The same rows through POST /push's JSON, for another user: the answers must be equal.
    table = _typed_rows("json", now)
    df = {
        name: [
            base64.b64encode(v).decode()
            if isinstance(v, bytes)
            else v.isoformat()
            if isinstance(v, dt.datetime)
            else v
            for v in table.column(name).to_pylist()
        ]
        for name in table.column_names
    }
    assert store._post("/push", {"push_source_name": "typed_push", "df": df})["written"] == 2
    users = ["arrow", "arrow-nulls", "json", "json-nulls"]
    answer = store.get_online_features(
        features=TYPED_FEATURES, entity_rows=[{"user_id": u} for u in users]
    )
    values = answer.to_dict()
    for name in values:
        if name != "user_id":
            assert values[name][:2] == values[name][2:], name
    # float32 0.1 is answered as the shortest text that reads back as that float32.
    assert struct.pack("<f", values["f32"][0]) == struct.pack("<f", 0.1)
    assert values["f64"][0] == 0.1
    assert values["i64"][0] == 2**53 + 1
    assert values["counts"][0] == [1, None, 3]
    assert values["seen"][0] is not None
    assert quiver_time(values["seen"][0]) == now - dt.timedelta(days=1, microseconds=1)
    assert all(values[n][1] is None for n in values if n != "user_id")
    statuses = answer.statuses()
    assert statuses["f64"] == ["PRESENT", statuses["f64"][1], "PRESENT", statuses["f64"][1]]


def quiver_time(value: object) -> dt.datetime:
    """A timestamp as Quiver's JSON renders it (RFC 3339 text or epoch seconds), as a datetime."""
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert isinstance(value, (int, float)), value
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
        microseconds=int(value * 1e6)
    )


def test_a_mistyped_or_missing_pushed_column_is_a_quiver_error_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    store = quiver.FeatureStore(_typed_project(tmp_path / "typed"))
    now = dt.datetime.now(dt.timezone.utc)
    rows = _typed_rows("bad", now)
    mistyped = rows.set_column(rows.column_names.index("f64"), "f64", pa.array(["0.1", "x"]))
    with pytest.raises(
        quiver.QuiverError,
        match=r"df\.f64: has Arrow type (Utf8|string), which cannot be read as float64",
    ):
        store.push("typed_push", mistyped)
    with pytest.raises(quiver.QuiverError, match='df is missing column "flag"'):
        store.push("typed_push", rows.drop_columns(["flag"]))
    with pytest.raises(quiver.QuiverError, match='has no column "extra"'):
        store.write_to_online_store("typed", rows.append_column("extra", pa.array([1, 2])))
    answer = store.get_online_features(features=["typed:f64"], entity_rows=[{"user_id": "bad"}])
    assert answer.statuses()["f64"] == ["NOT_FOUND"]
