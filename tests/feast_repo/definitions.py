from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Bool, Float32, Float64, Int64, String, Array

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)

driver_stats_source = FileSource(
    name="driver_stats_source",
    path="data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
driver_stats_push = PushSource(name="driver_stats_push", batch_source=driver_stats_source)

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
    source=driver_stats_push,
)

customer_source = FileSource(
    name="customer_source",
    path="data/customer_profile.parquet",
    timestamp_field="event_timestamp",
)
customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(days=2),
    schema=[
        Field(name="customer_id", dtype=String),
        Field(name="lifetime_value", dtype=Float64),
        Field(name="tier", dtype=Int64),
        Field(name="recent_scores", dtype=Array(Float64)),
    ],
    online=True,
    source=customer_source,
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


driver_activity = FeatureService(
    name="driver_activity",
    features=[driver_hourly_stats[["conv_rate", "avg_daily_trips"]], customer_profile],
)
