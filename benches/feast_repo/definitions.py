"""The Feast repository of `benches/vs-feast.sh`: the sample repository's `driver_hourly_stats`
and `trip_estimate` (tests/feast_repo), plus the feast-benchmarks shape: 25 feature views of 10
features each (250 features) over the same entity, all read from one Parquet file.

The Quiver registry serving the same Redis is written by the benchmark (benches/src/bin/vs_feast.rs)
from the same two constants.
"""
from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Bool, Float32, Float64, Int64, String

WIDE_VIEWS = 25
WIDE_FEATURES = 10

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)

driver_stats_source = FileSource(
    name="driver_stats_source",
    path="data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=2),
    schema=[
        Field(name="driver_id", dtype=Int64),
        Field(name="conv_rate", dtype=Float32),
        Field(name="acc_rate", dtype=Float64),
        Field(name="avg_daily_trips", dtype=Int64),
        Field(name="city", dtype=String),
        Field(name="active", dtype=Bool),
    ],
    online=True,
    source=driver_stats_source,
)

wide_source = FileSource(
    name="wide_source",
    path="data/wide.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

# `feast apply` finds objects among the module's globals, so each view gets one.
for _v in range(WIDE_VIEWS):
    globals()[f"wide_{_v:02}"] = FeatureView(
        name=f"wide_{_v:02}",
        entities=[driver],
        ttl=timedelta(days=2),
        schema=[Field(name="driver_id", dtype=Int64)]
        + [Field(name=f"v{_v:02}_f{_f}", dtype=Float64) for _f in range(WIDE_FEATURES)],
        online=True,
        source=wide_source,
    )

trip_request = RequestSource(name="trip_request", schema=[Field(name="distance_km", dtype=Float64)])


@on_demand_feature_view(
    sources=[driver_hourly_stats, trip_request],
    schema=[Field(name="expected_conversions", dtype=Float64)],
)
def trip_estimate(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["expected_conversions"] = inputs["conv_rate"] * inputs["distance_km"]
    return out
