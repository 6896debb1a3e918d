"""export_features: one row per bar, ISO New York timestamps, blanks where features are absent."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from services.core.calendar import NS_PER_MIN, iso_ny
from services.features.engine import FeatureEngine
from services.features.export import export_columns, export_features, iso_ny_many

from .conftest import bad_print_mask, bar, frame_bars, ny_ns

talib = pytest.importorskip("talib")

LEADING = [
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "vwap",
    "vwap_upper_1",
    "vwap_upper_2",
    "vwap_upper_3",
    "vwap_lower_1",
    "vwap_lower_2",
    "vwap_lower_3",
    "atr_14",
    "adx_14",
    "plus_di_14",
    "minus_di_14",
]


@pytest.mark.realdata
def test_csv_export_of_a_real_recording(spy_frame: pd.DataFrame, tmp_path: Path) -> None:
    bars = frame_bars(spy_frame)
    out = tmp_path / "features.csv"
    assert export_features(bars, out) == len(bars)

    with out.open() as fh:
        header = next(csv.reader(fh))
    assert header[: len(LEADING)] == LEADING
    assert header == list(export_columns())
    table = pd.read_csv(out, keep_default_na=True)
    assert len(table) == len(bars)
    assert table["ts"].iloc[0] == "2025-07-08T04:00:00-04:00"
    assert table["ts"].tolist() == [iso_ny(b.ts) for b in bars]
    np.testing.assert_array_equal(table["close"], spy_frame["close"])
    np.testing.assert_array_equal(table["volume"], spy_frame["volume"])

    # Warm-up and extended hours are blank; values are the streaming engine's, bit for bit.
    engine = FeatureEngine("SPY")
    for row, b in zip(table.itertuples(index=False), bars, strict=True):
        values = engine.on_bar(b).values
        for name in header[6:]:
            cell = getattr(row, name)
            if name in values:
                assert cell == values[name], name
            else:
                assert np.isnan(cell), name
    assert table["vwap"].iloc[0:300].isna().all()  # 04:00-08:59: pre-market
    # ATR is TA-Lib's over the good bars; the bad prints' rows are blank (they feed no indicator).
    bad = bad_print_mask(spy_frame)
    assert bad.sum() == 11
    good = spy_frame[~bad]
    atr = talib.ATR(*(good[c].to_numpy() for c in ("high", "low", "close")), 14)
    np.testing.assert_allclose(table["atr_14"].to_numpy()[~bad], atr, rtol=1e-9, equal_nan=True)
    assert table["atr_14"][bad].isna().all() and table["close"][bad].notna().all()

    raw = out.read_text().splitlines()[1].split(",")
    assert raw[header.index("vwap")] == "" and raw[header.index("atr_14")] == ""


@pytest.mark.realdata
def test_parquet_export_equals_csv(qqq_frame: pd.DataFrame, tmp_path: Path) -> None:
    bars = frame_bars(qqq_frame.iloc[:3000])
    n_csv = export_features(bars, tmp_path / "f.csv")
    n_parquet = export_features(bars, tmp_path / "f.parquet")
    assert n_csv == n_parquet == 3000
    from_csv = pd.read_csv(tmp_path / "f.csv")
    from_parquet = pd.read_parquet(tmp_path / "f.parquet")
    assert list(from_parquet.columns) == list(from_csv.columns)
    assert from_parquet["ts"].tolist() == from_csv["ts"].tolist()
    assert from_csv["ts"].iloc[0] == "2025-04-30T10:16:00-04:00"  # naive UTC 14:16 in the file
    pd.testing.assert_frame_equal(
        from_parquet.drop(columns="ts"), from_csv.drop(columns="ts"), check_exact=True
    )


def test_duplicate_bars_are_skipped_and_bad_suffix_refused(tmp_path: Path) -> None:
    ts = ny_ns("2025-07-09", "09:30")
    bars = [bar(ts, 100.0), bar(ts, 100.0), bar(ts + NS_PER_MIN, 101.0), bar(ts, 99.0)]
    assert export_features(bars, tmp_path / "x.csv") == 2
    assert export_features([], tmp_path / "empty.csv") == 0
    assert pd.read_csv(tmp_path / "empty.csv").columns.tolist() == list(export_columns())
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        export_features(bars, tmp_path / "x.json")


def test_iso_timestamps_match_the_core_formatter() -> None:
    stamps = np.array(
        [
            ny_ns("2025-03-07", "09:30"),
            ny_ns("2025-03-10", "09:30"),
            ny_ns("2025-11-03", "16:00") + 1_500_000_000,
        ]
    )
    assert iso_ny_many(stamps) == [iso_ny(int(t)) for t in stamps]
    assert iso_ny_many(stamps[:2]) == ["2025-03-07T09:30:00-05:00", "2025-03-10T09:30:00-04:00"]
