"""Export the streaming engine's bar features of a bar sequence to CSV or Parquet, one row per bar.

Columns: ``ts`` (the bar start, ISO 8601 with the New York offset), ``open, high, low, close,
volume``, then every bar feature of :func:`~services.features.engine.bar_feature_names` after
``close`` (``vwap``, the bands, ``atr_14, adx_14, plus_di_14, minus_di_14`` first). A feature that
is warming up or does not apply (VWAP outside regular hours) is blank in CSV and null in Parquet.
The numbers are the FeatureEngine's, computed bar by bar as a live session would see them; a bar
that repeats or precedes an earlier one is skipped, as the engine ignores it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from services.core.calendar import NEW_YORK, NS_PER_S, MarketCalendar, iso_ny
from services.core.events import Bar

from .engine import FeatureConfig, FeatureEngine, bar_feature_names

BAR_COLUMNS: tuple[str, ...] = ("ts", "open", "high", "low", "close", "volume")


def export_columns(config: FeatureConfig | None = None) -> tuple[str, ...]:
    """The exported column names in order."""
    return BAR_COLUMNS + tuple(name for name in bar_feature_names(config) if name != "close")


def iso_ny_many(ts_ns: np.ndarray) -> list[str]:
    """:func:`services.core.calendar.iso_ny` of many timestamps (vectorised for whole seconds)."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    if ts.size == 0:
        return []
    if np.any(ts % NS_PER_S):
        return [iso_ny(int(t)) for t in ts]
    local = pd.DatetimeIndex(pd.to_datetime(ts, utc=True)).tz_convert(NEW_YORK)
    base = local.strftime("%Y-%m-%dT%H:%M:%S")
    offset = local.strftime("%z")  # "-0400"; ISO 8601 as isoformat() writes it wants "-04:00"
    return [f"{b}{o[:3]}:{o[3:]}" for b, o in zip(base, offset, strict=True)]


def feature_frame(
    bars: Iterable[Bar], config: FeatureConfig | None = None, calendar: MarketCalendar | None = None
) -> pd.DataFrame:
    """The export table as a DataFrame (``ts`` as ISO text, NaN where a feature is absent)."""
    columns = export_columns(config)
    names = columns[6:]
    engine: FeatureEngine | None = None
    last_ts = -1
    stamps: list[int] = []
    raw: list[tuple[float, float, float, float, float]] = []
    rows: list[list[float]] = []
    nan = math.nan
    for bar in bars:
        if engine is None:
            engine = FeatureEngine(bar.symbol, config, calendar)
        if bar.ts <= last_ts:
            continue
        values = engine.on_bar(bar).values
        last_ts = bar.ts
        stamps.append(bar.ts)
        raw.append((bar.open, bar.high, bar.low, bar.close, bar.volume))
        rows.append([values.get(name, nan) for name in names])
    frame = pd.DataFrame(rows, columns=list(names), dtype="float64")
    ohlcv = pd.DataFrame(raw, columns=list(BAR_COLUMNS[1:]), dtype="float64")
    frame = pd.concat([ohlcv, frame], axis=1)
    frame.insert(0, "ts", iso_ny_many(np.asarray(stamps, dtype=np.int64)))
    return frame[list(columns)]


def export_features(
    bars: Iterable[Bar],
    output: Path,
    config: FeatureConfig | None = None,
    *,
    calendar: MarketCalendar | None = None,
) -> int:
    """Write one row of streaming bar features per bar to ``output`` (.csv or .parquet); rows written."""
    path = Path(output)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ValueError(f"unsupported output {path.name!r}: use a .csv or .parquet file name")
    frame = feature_frame(bars, config, calendar)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.to_csv(path, index=False, na_rep="")
    else:
        frame.to_parquet(path, index=False)
    return len(frame)
