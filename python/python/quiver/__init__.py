"""Quiver in Python: training sets, the online store, pushes and Wasm transforms, in-process.

The package wraps Quiver's Rust library (no server, no subprocess) with the names Feast users
know::

    import quiver
    store = quiver.FeatureStore("feature_store.yaml")
    training = store.get_historical_features(entity_df, features=["user_features:fraud_score"])

``get_historical_features`` runs the engine of ``quiver historical`` (the same point-in-time
rule, the same ``.wasm`` modules for on-demand views), ``get_online_features`` and ``push`` go
through the same request path as ``quiver serve`` (called in-process), and ``Transform`` runs an
on-demand view's module over any Arrow table. Arrow data crosses into and out of Rust through the
Arrow C stream interface. ``quiver.spark`` runs the same rule and modules on Spark.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from quiver._quiver import QuiverError
from quiver._quiver import Store as _Store
from quiver._quiver import Transform as _NativeTransform

__all__ = ["FeatureStore", "OnlineResponse", "QuiverError", "Transform"]

PushTarget = Literal["online", "offline", "online_and_offline"]


def to_arrow(data: Any) -> Any:
    """Returns ``data`` as Arrow data: a pandas DataFrame becomes a pyarrow Table (its index
    dropped); anything with ``__arrow_c_stream__`` (pyarrow, Polars, ...) is returned as is."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is optional
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    if hasattr(data, "__arrow_c_stream__"):
        return data
    raise TypeError(
        f"expected a pandas DataFrame or Arrow data (pyarrow Table or RecordBatchReader), "
        f"got {type(data).__name__}"
    )


def _read_stream(capsule: object) -> pa.Table:
    """Reads an ``arrow_array_stream`` capsule returned by the native module into a Table."""
    reader: pa.RecordBatchReader = pa.RecordBatchReader._import_from_c_capsule(capsule)
    return reader.read_all()


def _micros(t: dt.datetime | str) -> int:
    """Microseconds since the epoch of ``t``: an aware datetime, a naive one (UTC), or an ISO
    8601 string (UTC when it has no offset)."""
    if isinstance(t, str):
        t = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _json_value(value: Any) -> Any:
    """A Python value as Quiver's JSON takes it: times as RFC 3339 (UTC when naive), bytes as
    base64, lists item by item."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return _json_value(item())
    return value


class OnlineResponse:
    """The answer of :meth:`FeatureStore.get_online_features`, as Feast's ``OnlineResponse``."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self._body = body

    def to_dict(self) -> dict[str, list[Any]]:
        """Every column (join keys first, then features) as a list of values, one per entity
        row: Feast's ``OnlineResponse.to_dict()``."""
        names = self._body["metadata"]["feature_names"]
        results = self._body["results"]
        return {name: list(result["values"]) for name, result in zip(names, results)}

    def statuses(self) -> dict[str, list[str]]:
        """Each column's per-row status (``PRESENT``, ``NOT_FOUND``, ``OUTSIDE_MAX_AGE``, ...)."""
        names = self._body["metadata"]["feature_names"]
        return {
            name: list(result["statuses"]) for name, result in zip(names, self._body["results"])
        }

    def to_json(self) -> Mapping[str, Any]:
        """The answer as ``POST /get-online-features`` gives it."""
        return self._body


class FeatureStore:
    """A Quiver project opened in-process from its ``feature_store.yaml``.

    Holds the registry, a connection to the configured online store (SQLite or Redis) and the
    serving request path; safe to share between threads.
    """

    def __init__(self, config: str | Path = "feature_store.yaml") -> None:
        self._native = _Store(Path(config))

    @property
    def config(self) -> Path:
        """The configuration file."""
        return Path(self._native.config)

    @property
    def project(self) -> str:
        """The project name."""
        return self._native.project

    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str] | None = None,
        *,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        memory_mib: int = 1024,
        threads: int = 0,
    ) -> pa.Table:
        """Builds a point-in-time-correct training set, as ``quiver historical`` does.

        ``entity_df`` (pandas or Arrow) holds the join keys, ``event_timestamp`` and any other
        columns, which pass through. Every row comes back once, in input order, with each
        feature as the online store would have served it at the row's ``event_timestamp``
        (nulls where nothing was usable). ``features`` are ``view:feature`` references or whole
        views; or name a ``feature_service``. The schema's metadata holds the training set's
        record (``quiver.features``, ``quiver.feature_views``, ``quiver.transforms``) and its
        profile (``quiver.profile``), as the Parquet file of the CLI does.
        """
        capsule = self._native.historical(
            to_arrow(entity_df),
            list(features) if features is not None else None,
            feature_service,
            full_feature_names,
            memory_mib,
            threads,
        )
        return _read_stream(capsule)

    def get_online_features(
        self,
        features: Sequence[str] | str,
        entity_rows: Sequence[Mapping[str, Any]],
        *,
        full_feature_names: bool = False,
    ) -> OnlineResponse:
        """Looks features up in the online store, as ``POST /get-online-features`` answers.

        ``features`` is a list of ``view:feature`` references or a feature service's name;
        ``entity_rows`` are dicts of join keys (and request fields of on-demand views).
        """
        entities: dict[str, list[Any]] = {}
        for i, row in enumerate(entity_rows):
            if i == 0:
                entities = {k: [] for k in row}
            if set(row) != set(entities):
                raise QuiverError(
                    f"entity_rows[{i}] has keys {sorted(row)}, entity_rows[0] has "
                    f"{sorted(entities)}: every row needs the same keys"
                )
            for k, v in row.items():
                entities[k].append(_json_value(v))
        body: dict[str, Any] = {
            "entities": entities,
            "full_feature_names": full_feature_names,
        }
        if isinstance(features, str):
            body["feature_service"] = features
        else:
            body["features"] = list(features)
        return OnlineResponse(self._post("/get-online-features", body))

    def materialize(
        self,
        start_date: dt.datetime | str,
        end_date: dt.datetime | str,
        feature_views: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Loads the latest value per entity in ``[start_date, end_date]`` from the sources into
        the online store (newer wins over what is there); returns what each view did."""
        return self._native.materialize(
            _micros(start_date), _micros(end_date), list(feature_views or [])
        )

    def materialize_incremental(
        self,
        end_date: dt.datetime | str,
        feature_views: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Materializes each view from its watermark (the end of its last incremental run) up
        to ``end_date``."""
        return self._native.materialize(None, _micros(end_date), list(feature_views or []))

    def push(
        self,
        push_source_name: str,
        df: Any,
        to: PushTarget = "online",
    ) -> dict[str, Any]:
        """Pushes rows (pandas or Arrow) through a push source with the checks, write-ahead log
        and newer-wins writer of ``POST /push``: online rows obey the store's newer-wins rule,
        offline rows are appended to the view's source. The Arrow columns go to Quiver as they
        are (typed timestamps and nulls included), not through JSON; the whole frame is checked
        before anything is written, and at most ``server.max_entities`` rows go in one call."""
        return self._native.push(push_source_name, to_arrow(df), to)

    def write_to_online_store(self, feature_view_name: str, df: Any) -> dict[str, Any]:
        """Writes rows (pandas or Arrow) straight to a view's online records with the checks and
        writer of ``POST /write-to-online-store``: an older event never replaces a newer one.
        The Arrow columns go to Quiver as they are; at most ``server.max_entities`` rows per
        call."""
        return self._native.write_online(feature_view_name, to_arrow(df))

    def transform(self, view: str) -> Transform:
        """The transform of on-demand view ``view``."""
        return Transform(view, store=self)

    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        status, answer = self._native.request("POST", path, json.dumps(body).encode())
        text = answer.decode("utf-8", errors="replace")
        if status != 200:
            try:
                detail = json.loads(text)
                message = detail.get("detail") or detail.get("error") or text
            except (ValueError, AttributeError):
                message = text
            raise QuiverError(f"POST {path}: {status}: {message}")
        result: dict[str, Any] = json.loads(text)
        return result


class Transform:
    """An on-demand view's ``.wasm`` module, run over Arrow data by Quiver's Wasm engine (the
    same fuel and memory limits, and the same row isolation, as serving).

    ``Transform("user_risk", store)`` takes the module of on-demand view ``user_risk`` from the
    project's ``transforms.dir``; ``Transform("path/to/user_risk.wasm", store)`` takes the bytes
    of that file for the on-demand view whose transform is named ``user_risk``.
    """

    def __init__(
        self,
        path_or_name: str | Path,
        store: FeatureStore | str | Path = "feature_store.yaml",
    ) -> None:
        if not isinstance(store, FeatureStore):
            store = FeatureStore(store)
        text = str(path_or_name)
        if text.endswith(".wasm"):
            path = Path(text)
            described = json.loads(store._native.describe())
            views = [
                v["name"]
                for v in described["on_demand_feature_views"]
                if v["transform"] == path.stem
            ]
            if not views:
                raise QuiverError(
                    f'{path}: no on-demand view of {store.config} has transform "{path.stem}"'
                )
            spec = store._native.transform(views[0]).spec
            self._native = _NativeTransform.from_parts(path.read_bytes(), spec)
        else:
            self._native = store._native.transform(text)

    @classmethod
    def from_parts(cls, wasm: bytes, spec: str) -> Transform:
        """A transform from a module's bytes and its spec (``Transform.spec``): how Spark
        executors rebuild it from what the driver broadcast."""
        transform = cls.__new__(cls)
        transform._native = _NativeTransform.from_parts(wasm, spec)
        return transform

    @property
    def view(self) -> str:
        """The on-demand view it computes."""
        return self._native.view

    @property
    def inputs(self) -> list[str]:
        """Input column names, in call order."""
        return self._native.inputs

    @property
    def outputs(self) -> list[str]:
        """Output column names."""
        return self._native.outputs

    @property
    def sha256(self) -> str:
        """SHA-256 of the module's bytes."""
        return self._native.sha256

    @property
    def spec(self) -> str:
        """Inputs, outputs and limits as JSON."""
        return self._native.spec

    @property
    def wasm(self) -> bytes:
        """The module's bytes."""
        return self._native.wasm

    def apply(self, table: Any, batch_rows: int = 4096) -> pa.Table:
        """Runs the transform over ``table`` (pandas or Arrow, holding every input column);
        returns ``table``'s columns followed by the output columns. A row on which the module
        fails (trap, fuel, bad output) gets nulls, as it would online."""
        return _read_stream(self._native.apply(to_arrow(table), batch_rows))
