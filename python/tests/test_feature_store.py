"""The Python package against the `quiver` command: the same training sets bit for bit, the
online store in-process, pushes, transforms and errors."""

from __future__ import annotations

import datetime as dt
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
