"""The parquet journal: hand-built events read back exactly by pandas and DuckDB, NY-day partitions, crash safety."""

from __future__ import annotations

import datetime as dt
import math
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from services.core.events import Bar, FeatureVector, OrderEvent, TradeOutcome
from services.core.journal import (
    SCHEMAS,
    TABLES,
    JournalError,
    JournalWriter,
    event_row,
    feature_row,
    is_fill,
    read_table,
    sessions,
)

# 2025-01-15 (winter, NY = UTC-5): 14:31 UTC is 09:31 NY; 23:30 UTC is 18:30 NY the same NY date.
T0 = 1_736_951_460_000_000_000
assert dt.datetime.fromtimestamp(T0 / 1e9, dt.UTC) == dt.datetime(2025, 1, 15, 14, 31, tzinfo=dt.UTC)
LATE = int(dt.datetime(2025, 1, 15, 23, 30, tzinfo=dt.UTC).timestamp()) * 10**9
NEXT = int(dt.datetime(2025, 1, 16, 5, 0, tzinfo=dt.UTC).timestamp()) * 10**9  # 00:00 NY on the 16th


def _duck(query: str) -> list[tuple[object, ...]]:
    rel = duckdb.sql(query)
    assert rel is not None
    return rel.fetchall()


def _fill(ts: int, status: str = "filled", filled: int = 2, price: float | None = 1.25) -> OrderEvent:
    return OrderEvent(ts=ts, id=f"ev-{ts}", order_id="B-17", client_order_id="dreambot-abc", underlying="SPY",
                      contract="SPY250115C00590000", leg="entry", side="buy", status=status,  # type: ignore[arg-type]
                      quantity=2, filled_quantity=filled, fill_price=price, limit_price=1.30, fees=1.3)


def _trade() -> TradeOutcome:
    return TradeOutcome(ts=LATE, id="t-1", underlying="SPY", playbook="vwap_reversion",
                        contract="SPY250115C00590000", entry_ts=T0, exit_ts=T0 + 600 * 10**9, entry_price=1.25,
                        exit_price=1.75, quantity=2, pnl=97.4, mae=-0.2, mfe=0.6, exit_reason="take_profit",
                        reason="below -2σ")


def test_rows_read_back_exactly_by_pandas_and_duckdb(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path, "s1", flush_rows=1000, flush_seconds=0)
    working = _fill(T0, status="working", filled=0, price=None)
    filled = _fill(T0 + 60 * 10**9)
    for ev in (working, filled):
        w.append("orders", event_row(ev))
        if is_fill(ev):
            w.append("fills", event_row(ev))
    w.append("trades", event_row(_trade()))
    w.close()
    w.close()  # idempotent

    fills = read_table(tmp_path, "fills")
    assert len(fills) == 1
    row = fills.iloc[0]
    assert (row.ts, row.order_id, row.client_order_id, row.status) == (T0 + 60 * 10**9, "B-17", "dreambot-abc",
                                                                       "filled")
    assert (row.quantity, row.filled_quantity, row.fill_price, row.limit_price, row.fees) == (2, 2, 1.25, 1.30, 1.3)
    assert math.isnan(row.stop_price)  # not carried by the event: null, never 0
    orders = read_table(tmp_path, "orders")
    assert orders["status"].tolist() == ["working", "filled"]
    assert math.isnan(orders["fill_price"].iloc[0])

    got = _duck(f"select order_id, status, fill_price, session, date from read_parquet("
                     f"'{tmp_path}/fills/**/*.parquet', hive_partitioning=true)")
    assert [(a, b, c, d, str(e)) for a, b, c, d, e in got] == [("B-17", "filled", 1.25, "s1", "2025-01-15")]
    trades = _duck(f"select pnl, entry_price, exit_price, entry_ts from read_parquet("
                        f"'{tmp_path}/trades/**/*.parquet', hive_partitioning=true)")
    assert trades == [(97.4, 1.25, 1.75, T0)]


def test_features_row_has_bar_and_nan_for_missing(tmp_path: Path) -> None:
    bar = Bar(ts=T0, symbol="SPY", open=590.0, high=591.5, low=589.5, close=591.0, volume=12345.0)
    vec = FeatureVector(ts=T0, symbol="SPY", values={"close": 591.0, "vwap": 590.4, "vwap_upper_1": 591.2})
    w = JournalWriter(tmp_path, "s1", flush_rows=1, flush_seconds=0)  # flush by rows: every append
    w.append("features", feature_row(bar, vec))
    assert len(list((tmp_path / "features").rglob("*.parquet"))) == 1
    w.close()
    got = read_table(tmp_path, "features").iloc[0]
    assert (got.open, got.high, got.low, got.close, got.volume, got.vwap) == (590.0, 591.5, 589.5, 591.0, 12345.0,
                                                                              590.4)
    assert math.isnan(got.atr_14) and math.isnan(got.adx_14) and math.isnan(got.vwap_lower_3)


def test_partition_per_new_york_day(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path, "s1", flush_seconds=0)
    for ts in (NEXT, T0, LATE):
        w.append("fills", event_row(_fill(ts)))
    w.close()
    days = sorted(p.name for p in (tmp_path / "fills" / "session=s1").iterdir())
    assert days == ["date=2025-01-15", "date=2025-01-16"]
    assert read_table(tmp_path, "fills", day=dt.date(2025, 1, 15))["ts"].tolist() == [T0, LATE]
    assert read_table(tmp_path, "fills", day=dt.date(2025, 1, 16))["ts"].tolist() == [NEXT]
    assert read_table(tmp_path, "fills")["ts"].tolist() == [T0, LATE, NEXT]  # sorted by ts across parts


def test_leftover_temp_file_is_ignored(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path, "s1", flush_seconds=0)
    w.append("fills", event_row(_fill(T0)))
    w.close()
    folder = tmp_path / "fills" / "session=s1" / "date=2025-01-15"
    (folder / ".part-crashed.parquet.tmp").write_bytes(b"PAR1 half a file")
    assert read_table(tmp_path, "fills")["ts"].tolist() == [T0]
    got = _duck(f"select count(*) from read_parquet('{tmp_path}/fills/**/*.parquet', "
                     "hive_partitioning=true)")
    assert got == [(1,)]


def test_empty_tables_keep_their_columns_and_dtypes(tmp_path: Path) -> None:
    for table in TABLES:
        frame = read_table(tmp_path, table)
        assert len(frame) == 0
        assert list(frame.columns) == [*SCHEMAS[table].names, "session"]
        assert frame["ts"].dtype == "int64"
    assert read_table(tmp_path, "trades")["pnl"].dtype == "float64"


def test_sessions_and_session_filter(tmp_path: Path) -> None:
    for name, ts in (("b", T0), ("a", LATE)):
        w = JournalWriter(tmp_path, name, flush_seconds=0)
        w.append("trades", {**event_row(_trade()), "ts": ts})
        w.close()
    assert sessions(tmp_path) == ["a", "b"]
    assert read_table(tmp_path, "trades", session="b")["ts"].tolist() == [T0]
    assert read_table(tmp_path, "trades")["session"].tolist() == ["b", "a"]


def test_time_flush_writes_without_more_appends(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path, "s1", flush_rows=10_000, flush_seconds=0.2)
    w.append("fills", event_row(_fill(T0)))
    deadline = time.monotonic() + 20
    while not list((tmp_path / "fills").rglob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read_table(tmp_path, "fills")["ts"].tolist() == [T0]  # on disk before close
    w.close()
    assert len(read_table(tmp_path, "fills")) == 1


def test_bad_rows_are_refused_readably(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path, "s1", flush_seconds=0)
    with pytest.raises(JournalError, match="unknown journal table 'quotes'"):
        w.append("quotes", {"ts": T0})
    with pytest.raises(JournalError, match="has no ts"):
        w.append("fills", {"order_id": "x"})
    w.close()
    assert isinstance(read_table(tmp_path, "fills"), pd.DataFrame)
