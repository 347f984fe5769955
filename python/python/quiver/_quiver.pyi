"""Type stubs of the native module ``quiver._quiver`` (see ``python/src/lib.rs``)."""

from pathlib import Path
from typing import Any

class QuiverError(Exception):
    """An error from Quiver: a bad configuration, request, file or transform."""

class Store:
    """A ``feature_store.yaml`` opened in-process."""

    def __init__(self, config: Path) -> None: ...
    @property
    def config(self) -> Path: ...
    @property
    def project(self) -> str: ...
    def request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        """Sends JSON ``body`` to the serving router; returns (status, body)."""
    def historical(
        self,
        entities: Any,
        features: list[str] | None = None,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        memory_mib: int = 1024,
        threads: int = 0,
    ) -> object:
        """Builds a training set; returns an ``arrow_array_stream`` PyCapsule."""
    def push(self, source: str, data: Any, to: str) -> dict[str, Any]:
        """Pushes Arrow data through a push source; returns the write's summary."""
    def write_online(self, view: str, data: Any) -> dict[str, Any]:
        """Writes Arrow data to a view's online records; returns the write's summary."""
    def materialize(
        self, start: int | None, end: int, views: list[str] = ...
    ) -> list[dict[str, Any]]:
        """Materializes ``[start, end]`` (microseconds; ``start`` None: incremental)."""
    def describe(
        self, features: list[str] | None = None, feature_service: str | None = None
    ) -> str:
        """The resolved registry and references as JSON."""
    def transform(self, view: str) -> Transform:
        """The transform of an on-demand view."""

class Transform:
    """An on-demand view's compiled ``.wasm`` module."""

    @staticmethod
    def from_parts(wasm: bytes, spec: str) -> Transform: ...
    @property
    def view(self) -> str: ...
    @property
    def module(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def inputs(self) -> list[str]: ...
    @property
    def outputs(self) -> list[str]: ...
    @property
    def spec(self) -> str: ...
    @property
    def wasm(self) -> bytes: ...
    def apply(self, data: Any, batch_rows: int = 4096) -> object:
        """Runs the transform; returns an ``arrow_array_stream`` PyCapsule."""
