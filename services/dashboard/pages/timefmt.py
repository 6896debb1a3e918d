"""Event times (int ns UTC) as the New York wall-clock text the pages draw on their time axes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

import pandas as pd

NEW_YORK = "America/New_York"
FORMAT = "%Y-%m-%d %H:%M:%S"
_NY: Final = ZoneInfo(NEW_YORK)
# Below this many values a per-value zoneinfo conversion beats pandas' fixed ~1.5 ms of set-up (the live
# chart's refresh converts a handful of trade and bracket times); above it pandas' vectorised path wins.
_VECTOR_FROM: Final = 400


def ny_text(ts_ns: Iterable[int]) -> list[str]:
    """``2025-07-09 10:17:00`` (New York, no offset: plotly's date axes take wall-clock text) per ns time."""
    values = [int(t) for t in ts_ns]
    if not values:
        return []
    if len(values) < _VECTOR_FROM:
        # Whole seconds, floored, as pandas' strftime does.
        return [datetime.fromtimestamp(t // 10**9, _NY).strftime(FORMAT) for t in values]
    index = pd.to_datetime(pd.Series(values, dtype="int64"), unit="ns", utc=True).dt.tz_convert(NEW_YORK)
    return [str(s) for s in index.dt.strftime(FORMAT).tolist()]
