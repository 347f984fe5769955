"""Drives Feast's Python SDK against the feature server this repository's `remote` online store
names (`feast serve` or `quiver serve`), and prints what it got as JSON.

    python sdk_client.py lookup
    python sdk_client.py materialize <start ISO> <end ISO>
    python sdk_client.py write <driver_id> <conv_rate>
    python sdk_client.py push <driver_id> <conv_rate>
"""

import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode

DRIVERS = [1001, 1002, 1003, 1004, 1005, 9999]
CUSTOMERS = ["c1", "c2", "c3", "c4", "c5", "nobody"]
FEATURES = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
    "driver_hourly_stats:city",
    "driver_hourly_stats:active",
    "customer_profile:lifetime_value",
    "customer_profile:tier",
    "customer_profile:recent_scores",
    "trip_estimate:expected_conversions",
]


def lookup(store: FeatureStore) -> dict[str, Any]:
    rows = [
        {"driver_id": d, "customer_id": c, "distance_km": 2.5 * (i + 1)}
        for i, (d, c) in enumerate(zip(DRIVERS, CUSTOMERS))
    ]
    by_name = store.get_online_features(features=FEATURES, entity_rows=rows).to_dict()
    service = store.get_feature_service("driver_activity")
    by_service = store.get_online_features(
        features=service,
        entity_rows=[{"driver_id": d, "customer_id": c} for d, c in zip(DRIVERS, CUSTOMERS)],
    ).to_dict()
    full_names = store.get_online_features(
        features=FEATURES[:2],
        entity_rows=[{"driver_id": d} for d in DRIVERS],
        full_feature_names=True,
    ).to_dict()
    return {"features": by_name, "feature_service": by_service, "full_feature_names": full_names}


def driver_row(driver_id: int, conv_rate: float) -> pd.DataFrame:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    frame = pd.DataFrame(
        {
            "driver_id": [driver_id],
            "event_timestamp": [now - timedelta(minutes=1)],
            "created": [now],
            "conv_rate": [conv_rate],
            "acc_rate": [0.5],
            "avg_daily_trips": [77],
            "city": ["Accra"],
            "active": [True],
        }
    )
    frame["conv_rate"] = frame["conv_rate"].astype("float32")
    return frame


def main() -> None:
    store = FeatureStore(repo_path=".")
    command = sys.argv[1]
    out: Any
    if command == "lookup":
        out = lookup(store)
    elif command == "materialize":
        store.materialize(datetime.fromisoformat(sys.argv[2]), datetime.fromisoformat(sys.argv[3]))
        out = {"materialized": True}
    elif command == "write":
        store.write_to_online_store("driver_hourly_stats", driver_row(int(sys.argv[2]), float(sys.argv[3])))
        out = {"written": True}
    elif command == "push":
        store.push("driver_stats_push", driver_row(int(sys.argv[2]), float(sys.argv[3])), to=PushMode.ONLINE)
        out = {"pushed": True}
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
