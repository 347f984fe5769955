"""Projects written to disk for the tests: the point-in-time edge cases of `tests/historical.rs`,
and the quickstart with its generated data and real transform modules."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

T0 = 1_700_000_000_000_000  # microseconds
SECOND = 1_000_000
HOUR = 3600 * SECOND

EDGE_YAML = """
project: edges
online_store:
  type: sqlite
  path: online.db
entities:
  - name: user
    join_keys: [user_id]
    value_type: string
feature_views:
  - name: scores
    entities: [user]
    ttl: 1h
    schema:
      - { name: score, dtype: float64 }
      - { name: weight, dtype: float32 }
      - { name: count, dtype: int64 }
      - { name: tag, dtype: string }
    source:
      path: scores
      timestamp_field: event_timestamp
      created_timestamp_column: created
  - name: forever
    entities: [user]
    schema:
      - { name: level, dtype: int64 }
    source:
      path: forever.parquet
      timestamp_field: ts
"""

_SCORE_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("created", pa.timestamp("us", tz="UTC")),
        ("score", pa.float64()),
        ("weight", pa.float32()),
        ("count", pa.int64()),
        ("tag", pa.string()),
    ]
)


def _rows(rows: list[tuple[object, ...]]) -> pa.Table:
    columns = list(zip(*rows))
    return pa.table(
        [pa.array(list(c), type=f.type) for c, f in zip(columns, _SCORE_SCHEMA)],
        schema=_SCORE_SCHEMA,
    )


def write_edge_project(root: Path) -> Path:
    """The edge cases: before the first row, exactly at a row, at ts + ttl and 1 µs past it,
    created-timestamp ties, ties broken by scan order within a file and across files, nulls that
    do not fall back, unknown entities, duplicate entity rows, and a view without ttl."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "feature_store.yaml").write_text(EDGE_YAML)
    scores = root / "scores"
    scores.mkdir(exist_ok=True)
    t = T0
    # part-0 is scanned before part-1 (files sorted by path).
    pq.write_table(
        _rows(
            [
                ("a", t, t, 1.0, 0.1, 1, "a0"),
                ("a", t + 10 * SECOND, t + 10 * SECOND, 2.0, 0.2, 2, "a10"),
                ("a", t + 20 * SECOND, t + 20 * SECOND, 3.0, 0.3, 3, "a20-old"),
                ("a", t + 20 * SECOND, t + 21 * SECOND, 4.0, 0.4, 4, "a20-new"),
                ("b", t, t, 5.0, 0.5, 5, "b-first"),
                ("b", t, t, 6.0, 0.6, 6, "b-second"),
                ("c", t, t, 9.0, 0.9, 9, "c-part0"),
                ("n", t, t, 10.0, 1.0, 10, "n-old"),
                ("n", t + 50 * SECOND, t + 50 * SECOND, None, None, None, None),
                ("f", t + HOUR, t + HOUR, 11.0, 1.1, 11, "future"),
            ]
        ),
        scores / "part-0.parquet",
    )
    pq.write_table(
        _rows(
            [
                ("c", t, t, 8.0, 0.8, 8, "c-part1"),
                ("b", t, t, 7.0, 0.7, 7, "b-part1"),
                ("e", t - 2 * HOUR, t - 2 * HOUR, 12.0, 1.2, 12, "expired"),
            ]
        ),
        scores / "part-1.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "user_id": ["a", "b"],
                "ts": pa.array([t - 1000 * HOUR, t], type=pa.timestamp("us", tz="UTC")),
                "level": pa.array([1, 2], type=pa.int64()),
            }
        ),
        root / "forever.parquet",
    )
    return root / "feature_store.yaml"


def edge_entities() -> pa.Table:
    """Entity rows covering every edge case, with a pass-through column."""
    t = T0
    rows = [
        ("a", t - 1),  # before the first row
        ("a", t),  # exactly at a row
        ("a", t + 15 * SECOND),
        ("a", t + 20 * SECOND),  # created-timestamp tie-break
        ("a", t + 20 * SECOND + HOUR),  # exactly ts + ttl
        ("a", t + 20 * SECOND + HOUR + 1),  # 1 µs past it
        ("b", t),  # ties in scan order, within a file and across files
        ("c", t + 5),
        ("n", t + 100 * SECOND),  # a null latest value does not fall back
        ("zzz", t),  # unknown entity
        ("a", t),  # duplicate entity row
        ("f", t),  # rows from the future are never used
        ("e", t),  # expired
        ("b", t + 500 * HOUR),  # only the view without ttl answers
    ]
    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "event_timestamp": pa.array([r[1] for r in rows], type=pa.timestamp("us", tz="UTC")),
            "label": pa.array(list(range(len(rows))), type=pa.int64()),
        }
    )


EDGE_FEATURES = ["scores:score", "scores:weight", "scores:count", "scores:tag", "forever:level"]


def write_quickstart_project(root: Path, data: Path, wasm_dir: Path) -> Path:
    """The repository's quickstart registry over generated data, with the example modules."""
    root.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[2]
    yaml = (repo / "feature_store.yaml").read_text()
    shutil.copytree(data, root / "data", dirs_exist_ok=True)
    yaml = yaml.replace("examples/quickstart/data/", f"{root / 'data'}/")
    yaml = yaml.replace("path: data/online_store.db", f"path: {root}/online.db")
    yaml += f"\ntransforms:\n  dir: {root / 'wasm'}\n"
    (root / "wasm").mkdir(exist_ok=True)
    for module in ("user_risk", "order_stats"):
        shutil.copy(wasm_dir / f"{module}.wasm", root / "wasm" / f"{module}.wasm")
    (root / "feature_store.yaml").write_text(yaml)
    return root / "feature_store.yaml"


def quickstart_data() -> Path:
    value = os.environ.get("QUIVER_QUICKSTART_DATA")
    if not value:
        raise RuntimeError(
            "QUIVER_QUICKSTART_DATA is not set: run through `cargo test --test python`"
        )
    return Path(value)
