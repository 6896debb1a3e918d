"""Bar interval read from the data, irregular spacing counted, and a file that names another symbol refused.

Expected values are computed here with pandas from the raw CSV text, independently of the readers.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest

from services.core.datasets import QQQ_1MIN_UTC, SPY_1MIN
from services.features.engine import FeatureEngine
from services.ingest.sources import DataSourceError, named_symbols, open_bars
from tests.realdata import require_real

NY = "America/New_York"


def _ny_stamps(path: Path, utc: bool) -> pd.Series:
    raw = pd.read_csv(path)["Datetime"]
    stamps = pd.to_datetime(raw).dt.tz_localize("UTC") if utc else pd.to_datetime(raw, utc=True)
    return stamps.dt.tz_convert(NY)


def _expected_spacing(stamps: pd.Series) -> tuple[dict[int, int], int]:
    """Within-date spacings (s) and missing regular-hours minutes inside the data's span, by hand."""
    frame = pd.DataFrame({"t": stamps})
    frame["day"] = frame["t"].dt.date
    diffs = frame.groupby("day")["t"].diff().dropna().dt.total_seconds().astype(int)
    minute_of_day = frame["t"].dt.hour * 60 + frame["t"].dt.minute
    regular = frame[(minute_of_day >= 570) & (minute_of_day < 960)]
    first, last = stamps.iloc[0], stamps.iloc[-1]
    missing = 0
    for day, rows in regular.groupby("day"):
        slots = pd.date_range(pd.Timestamp(f"{day} 09:30", tz=NY), pd.Timestamp(f"{day} 15:59", tz=NY), freq="1min")
        slots = slots[(slots >= first) & (slots <= last)]
        missing += len(slots) - len(set(rows["t"]) & set(slots))
    return diffs.value_counts().to_dict(), missing


@pytest.mark.realdata
def test_spy_recording_reads_as_one_minute_bars_with_its_real_gaps() -> None:
    path = require_real(SPY_1MIN)
    replay = open_bars(path, "SPY")
    spacings, missing = _expected_spacing(_ny_stamps(path, utc=False))
    sp = replay.spacing
    assert (sp.interval_s, sp.interval_source) == (60, "data")
    assert dict(sp.spacings) == spacings
    assert sp.gaps == sum(n for s, n in spacings.items() if s > 60)
    assert sp.off_grid == 0 and sp.overlapping == 0 and not sp.regular
    # 388, 390 and 383 regular-hours bars on the three days: 9 minutes are missing.
    assert missing == 9 and sp.missing_regular == 9
    assert all(b.interval_s == 60 for b in replay)


@pytest.mark.realdata
def test_qqq_recording_starting_mid_session_counts_no_missing_minutes_before_its_start() -> None:
    path = require_real(QQQ_1MIN_UTC)
    replay = open_bars(path, "QQQ")
    spacings, missing = _expected_spacing(_ny_stamps(path, utc=True))
    assert (replay.spacing.interval_s, replay.spacing.missing_regular) == (60, missing)
    assert dict(replay.spacing.spacings) == spacings


def _five_minute_copy(tmp_path: Path) -> Path:
    """The real SPY recording resampled to 5-minute bars (bar starts), written by pandas."""
    src = require_real(SPY_1MIN)
    df = pd.read_csv(src)
    df.index = pd.to_datetime(df["Datetime"], utc=True).dt.tz_convert(NY)
    agg = df.resample("5min", label="left", closed="left").agg(
        {"Open": "first", "High": "max", "Low": "min", "Close": "last", "Volume": "sum"}).dropna()
    out = pd.DataFrame({"Datetime": [t.isoformat(sep=" ") for t in agg.index], **{c: agg[c] for c in agg.columns}})
    path = tmp_path / "spy_5min.csv"
    out.to_csv(path, index=False)
    return path


@pytest.mark.realdata
def test_a_five_minute_file_replays_as_five_minute_bars_and_features_use_its_length(tmp_path: Path) -> None:
    path = _five_minute_copy(tmp_path)
    replay = open_bars(path, "SPY")
    assert (replay.interval_s, replay.spacing.interval_source) == (300, "data")
    bars = list(replay)
    engine = FeatureEngine("SPY")
    vectors = {b.ts: engine.on_bar(b) for b in bars}
    first_regular = next(b for b in bars if pd.Timestamp(b.ts, tz="UTC").tz_convert(NY).strftime("%H:%M") == "09:30")
    v = vectors[first_regular.ts]
    # The 09:30 bar of a 5-minute file closes at 09:35: known then, 5 minutes into the session.
    assert v.ts == first_regular.ts + 300 * 1_000_000_000
    assert v.values["minutes_since_open"] == 5.0 and v.values["minutes_to_close"] == 385.0
    # rv_5 of the last bar, annualised with 78 five-minute bars per 6.5 h session, by numpy.
    closes = np.array([b.close for b in bars[-6:]])
    r = np.diff(np.log(closes))
    expected = float(np.std(r, ddof=1) * np.sqrt(252 * 78))
    assert engine.latest is not None
    assert engine.latest.values["rv_5"] == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="interval"):
        engine.on_bar(msgspec.structs.replace(bars[-1], ts=bars[-1].ts + 300 * 1_000_000_000, interval_s=60))


@pytest.mark.realdata
def test_a_given_interval_longer_than_the_spacing_is_refused(tmp_path: Path) -> None:
    path = require_real(SPY_1MIN)
    with pytest.raises(DataSourceError, match="overlap"):
        open_bars(path, "SPY", interval_s=300)
    assert open_bars(path, "SPY", interval_s=60).spacing.interval_source == "given"


@pytest.mark.realdata
def test_a_file_named_for_spy_is_not_qqq() -> None:
    path = require_real(SPY_1MIN)
    with pytest.raises(DataSourceError, match="names SPY"):
        open_bars(path, "QQQ")
    assert len(open_bars(path, "spy")) == 2814


@pytest.mark.realdata
def test_a_symbol_column_decides_over_the_file_name(tmp_path: Path) -> None:
    qqq = require_real(QQQ_1MIN_UTC)
    with pytest.raises(DataSourceError, match="no rows for symbol SPY"):
        open_bars(qqq, "SPY")
    # A QQQ file with a symbol column, misleadingly named for SPY, is read by its column.
    renamed = tmp_path / "spy_utc.csv"
    renamed.write_text("".join(qqq.open().readlines()[:50]))
    assert len(open_bars(renamed, "QQQ")) == 49


def test_file_name_words() -> None:
    assert named_symbols(Path("spy_1min_2025-07-08_2025-07-10.csv")) == ["SPY"]
    assert named_symbols(Path("qqq_1min_utc_2025-04-30.csv")) == ["QQQ"]
    assert named_symbols(Path("bars.csv")) == [] and named_symbols(Path("spyder.csv")) == []
    assert named_symbols(Path("SPX-NDX.parquet")) == ["SPX", "NDX"]
