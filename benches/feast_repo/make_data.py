"""Writes the Parquet sources of definitions.py, with event times relative to now so the rows are
live: `driver_hourly_stats` as in tests/feast_repo/make_data.py (two rows per driver, the newer one
wins), and one row per driver of the 25 x 10 wide features.

    python make_data.py <out dir> <drivers>

`feast apply` imports every Python file of the repository, this one included: it only writes
when run as a script.
"""
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

WIDE_VIEWS = 25
WIDE_FEATURES = 10


def main():
    out = Path(sys.argv[1])
    drivers = int(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    ids = np.arange(1001, 1001 + drivers, dtype=np.int64)

    rows = []
    for hours_ago in (30, 5):
        ts = now - timedelta(hours=hours_ago)
        rows.append(
            pd.DataFrame(
                {
                    "driver_id": ids,
                    "event_timestamp": ts,
                    "created": ts + timedelta(minutes=1),
                    "conv_rate": ((ids % 7) / 7.0 + hours_ago / 1000.0).astype("float32"),
                    "acc_rate": (ids % 11) / 11.0,
                    "avg_daily_trips": ids * 3 + hours_ago,
                    "city": np.array(["Lisbon", "Oslo", "Quito"])[ids % 3],
                    "active": ids % 2 == 0,
                }
            )
        )
    pd.concat(rows, ignore_index=True).to_parquet(out / "driver_stats.parquet", index=False)

    ts = now - timedelta(hours=5)
    wide = {"driver_id": ids, "event_timestamp": ts, "created": ts + timedelta(minutes=1)}
    for v in range(WIDE_VIEWS):
        for f in range(WIDE_FEATURES):
            # Distinct per driver, view and feature; exact in float64 and in JSON.
            wide[f"v{v:02}_f{f}"] = (ids % 1000) * 0.25 + v + f / 8.0
    pd.DataFrame(wide).to_parquet(out / "wide.parquet", index=False)


if __name__ == "__main__":
    main()
