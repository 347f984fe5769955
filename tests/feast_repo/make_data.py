"""Writes the sample Parquet sources, with event times relative to now so the rows are live.

    python make_data.py [out dir] [drivers]
"""
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

out = Path(sys.argv[1] if len(sys.argv) > 1 else "data")
drivers = int(sys.argv[2]) if len(sys.argv) > 2 else 20
out.mkdir(parents=True, exist_ok=True)
now = datetime.now(timezone.utc).replace(microsecond=0)
rows = []
for driver_id in range(1001, 1001 + drivers):
    for hours_ago in (30, 5):
        ts = now - timedelta(hours=hours_ago)
        rows.append(
            {
                "driver_id": driver_id,
                "event_timestamp": ts,
                "created": ts + timedelta(minutes=1),
                "conv_rate": (driver_id % 7) / 7.0 + hours_ago / 1000.0,
                "acc_rate": (driver_id % 11) / 11.0,
                "avg_daily_trips": driver_id * 3 + hours_ago,
                "city": ["Lisbon", "Oslo", "Quito"][driver_id % 3],
                "active": driver_id % 2 == 0,
            }
        )
drivers = pd.DataFrame(rows)
drivers["conv_rate"] = drivers["conv_rate"].astype("float32")
drivers.to_parquet(out / "driver_stats.parquet", index=False)

customers = pd.DataFrame(
    {
        "customer_id": [f"c{i}" for i in range(1, 11)],
        "event_timestamp": [now - timedelta(hours=i) for i in range(1, 11)],
        "lifetime_value": [100.5 * i for i in range(1, 11)],
        "tier": [i % 3 for i in range(1, 11)],
        "recent_scores": [[0.5 * i, 1.0 * i] for i in range(1, 11)],
    }
)
customers.to_parquet(out / "customer_profile.parquet", index=False)
