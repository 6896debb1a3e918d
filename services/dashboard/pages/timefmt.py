"""Event times (int ns UTC) as the New York wall-clock text the pages draw on their time axes."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

NEW_YORK = "America/New_York"
FORMAT = "%Y-%m-%d %H:%M:%S"


def ny_text(ts_ns: Iterable[int]) -> list[str]:
    """``2025-07-09 10:17:00`` (New York, no offset: plotly's date axes take wall-clock text) per ns time."""
    values = [int(t) for t in ts_ns]
    if not values:
        return []
    index = pd.to_datetime(pd.Series(values, dtype="int64"), unit="ns", utc=True).dt.tz_convert(NEW_YORK)
    return [str(s) for s in index.dt.strftime(FORMAT).tolist()]
