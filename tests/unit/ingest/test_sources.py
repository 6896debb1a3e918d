"""Replay sources: every format reads the same bars, bad rows are refused with reasons, zones are right."""

from __future__ import annotations

import datetime as dt
import gzip
import math
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import msgspec
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from services.core.calendar import NEW_YORK, default_calendar, ny_date
from services.core.datasets import QQQ_1MIN_UTC, SPY_1MIN
from services.core.events import Bar, encode_msgpack
from services.ingest.sources import DataSourceError, bars_from_frame, main, open_bars, write_bars
from services.ingest.synthetic import synthetic_bars
from services.ingest.validation import RejectReason
from tests.realdata import require_real
from tests.unit.ingest.strategies import Row, corrupted_rows, valid_rows

UTC = dt.UTC


def ns(y: int, mo: int, d: int, h: int, mi: int, tz: dt.tzinfo = UTC) -> int:
    return int(dt.datetime(y, mo, d, h, mi, tzinfo=tz).timestamp()) * 1_000_000_000


def stream(bars: object) -> list[bytes]:
    return [encode_msgpack(b) for b in bars]  # type: ignore[attr-defined]


def seed_text(rows: list[Row], symbol: str | None = None) -> str:
    """A seed-format CSV written by hand (independent of write_bars), New York offsets."""
    head = "Datetime,Symbol,Open,High,Low,Close,Volume" if symbol else "Datetime,Open,High,Low,Close,Volume"
    lines = [head]
    for r in rows:
        stamp = dt.datetime.fromtimestamp(r.ts // 1_000_000_000, NEW_YORK).isoformat(sep=" ")
        sym = f"{symbol}," if symbol else ""
        lines.append(f"{stamp},{sym}{r.open!r},{r.high!r},{r.low!r},{r.close!r},{r.volume!r}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def sample_bars() -> list[Bar]:
    """Two synthetic sessions with vwap/trades on some bars, so optional fields round-trip too."""
    bars = synthetic_bars("SPY", "2025-07-08", 2, seed=11, start_price=620.0)
    return [
        msgspec.structs.replace(b, vwap=round((b.high + b.low) / 2, 4), trades=i % 50) if i % 3 == 0 else b
        for i, b in enumerate(bars)
    ]


# --- bad rows ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted_rows())
def test_a_corrupted_csv_row_is_refused_with_reason_and_line(
    case: tuple[list[Row], int, RejectReason],
) -> None:
    rows, k, reason = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bars.csv"
        path.write_text(seed_text(rows))
        replay = open_bars(path, "SPY")
        bars = list(replay)
    assert (replay.accepted, replay.rejected) == (len(rows) - 1, 1)
    (rej,) = replay.report.examples
    assert (rej.reason, rej.row, rej.source) == (reason, k + 2, str(path))
    assert [b.ts for b in bars] == [r.ts for i, r in enumerate(rows) if i != k]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_rows())
def test_valid_csv_rows_give_finite_bars_equal_to_the_input(rows: list[Row]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bars.csv"
        path.write_text(seed_text(rows))
        # The rows are 1 to 600 minutes apart, so the interval is given rather than read from them.
        bars = list(open_bars(path, "SPY", interval_s=60))
    assert all(math.isfinite(x) for b in bars for x in (b.open, b.high, b.low, b.close, b.volume))
    assert [(b.ts, b.open, b.high, b.low, b.close, b.volume) for b in bars] == [tuple(r) for r in rows]
    assert all(b.symbol == "SPY" and b.interval_s == 60 for b in bars)


def test_unparseable_cells_are_refused_not_guessed(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(
        "Datetime,Open,High,Low,Close,Volume\n"
        "2025-07-08 09:30:00-04:00,1,2,1,2,10\n"
        "not a time,1,2,1,2,10\n"
        "2025-07-08 09:32:00-04:00,abc,2,1,2,10\n"
        "\n"
        "2025-07-08 09:33:00-04:00,1,2,1,2,\n"
        "2025-07-08 09:34:00-04:00,1,2,1,2,10\n"
    )
    replay = open_bars(path, "SPY")
    got = [(e.row, e.reason) for e in replay.report.examples]
    assert got == [(3, RejectReason.BAD_TIMESTAMP), (4, RejectReason.NAN), (6, RejectReason.NAN)]
    assert replay.accepted == 2 and "not a time" in replay.report.examples[0].detail


def test_naive_new_york_times_in_a_dst_gap_or_fold_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(
        "Datetime,Open,High,Low,Close,Volume\n"
        "2025-03-09 01:59:00,1,1,1,1,0\n"
        "2025-03-09 02:30:00,1,1,1,1,0\n"  # does not exist in New York
        "2025-11-02 01:30:00,1,1,1,1,0\n"  # happens twice in New York
        "2025-11-03 09:30:00,1,1,1,1,0\n"
    )
    replay = open_bars(path, "SPY")
    assert dict(replay.report.counts) == {RejectReason.BAD_TIMESTAMP: 2}
    assert [b.ts for b in replay] == [ns(2025, 3, 9, 6, 59), ns(2025, 11, 3, 14, 30)]


# --- real recordings ---------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_spy_file_reads_three_sessions_with_offsets() -> None:
    path = require_real(SPY_1MIN)
    replay = open_bars(path, "SPY")
    bars = list(replay)
    rows = len(path.read_text().splitlines()) - 1
    assert (replay.accepted, replay.rejected, len(bars)) == (rows, 0, rows)
    assert sorted({ny_date(b.ts) for b in bars}) == [dt.date(2025, 7, d) for d in (8, 9, 10)]
    assert bars[0].ts == ns(2025, 7, 8, 8, 0)  # 04:00 New York, first pre-market bar
    regular = [b for b in bars if default_calendar().is_open(b.ts)]
    assert regular[0].ts == ns(2025, 7, 8, 13, 30) == ns(2025, 7, 8, 9, 30, NEW_YORK)
    assert (regular[0].open, regular[0].volume) == (621.3499755859375, 1170178.0)  # line 316, verbatim
    premarket_zero = [b for b in bars if b.volume == 0 and not default_calendar().is_open(b.ts)]
    assert len(premarket_zero) > 1000  # real zero-volume extended-hours bars are kept
    # Real gaps are kept as gaps: fewer than 390 regular minutes on 2025-07-10, none invented.
    assert sum(1 for b in regular if ny_date(b.ts) == dt.date(2025, 7, 10)) < 390


@pytest.mark.realdata
def test_real_qqq_file_is_read_as_utc() -> None:
    path = require_real(QQQ_1MIN_UTC)
    replay = open_bars(path, "QQQ")
    bars = list(replay)
    assert len(bars) == replay.accepted == len(path.read_text().splitlines()) - 1 and replay.rejected == 0
    assert bars[0].ts == ns(2025, 4, 30, 14, 16) == ns(2025, 4, 30, 10, 16, NEW_YORK)
    assert (bars[0].open, bars[0].close, bars[0].volume) == (466.18, 465.845, 152279.0)
    # An explicit zone wins over the file-name rule.
    shifted = next(iter(open_bars(path, "qqq", tz="America/New_York")))
    assert shifted.ts == ns(2025, 4, 30, 18, 16) and shifted.symbol == "QQQ"


@pytest.mark.realdata
def test_replaying_a_file_twice_gives_byte_identical_events() -> None:
    path = require_real(SPY_1MIN)
    first = open_bars(path, "SPY")
    once, again = stream(first), stream(first)
    assert once == again == stream(open_bars(path, "SPY"))
    assert len(once) == first.accepted


@pytest.mark.realdata
def test_seed_csv_writer_reproduces_the_real_file_byte_for_byte(tmp_path: Path) -> None:
    path = require_real(SPY_1MIN)
    out = tmp_path / "spy_1m.csv"
    write_bars(open_bars(path, "SPY"), out)
    assert out.read_bytes() == path.read_bytes()


# --- formats round-trip ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bars.csv", "bars.csv.gz", "bars.parquet", "bars.duckdb", "bars.db"])
def test_each_format_round_trips_the_same_bars(tmp_path: Path, sample_bars: list[Bar], name: str) -> None:
    path = tmp_path / name
    assert write_bars(sample_bars, path) == len(sample_bars)
    replay = open_bars(path, "SPY")
    assert stream(replay) == stream(sample_bars)
    assert replay.rejected == 0


def test_duckdb_round_trip_with_a_named_table_and_the_cli(tmp_path: Path, sample_bars: list[Bar]) -> None:
    src = tmp_path / "spy.csv"
    write_bars(sample_bars, src)
    db = tmp_path / "backtests" / "spy_1m.duckdb"
    assert (
        main(["convert", "--data", str(src), "--symbol", "SPY", "--output", str(db), "--table", "bars_1m"])
        == 0
    )
    assert stream(open_bars(db, "SPY", table="bars_1m")) == stream(sample_bars)
    back = tmp_path / "back.csv"
    assert (
        main(["convert", "--data", str(db), "--symbol", "spy", "--output", str(back), "--table", "bars_1m"])
        == 0
    )
    assert back.read_bytes() == src.read_bytes()


def test_multi_symbol_csv_has_a_symbol_column_and_filters(tmp_path: Path, sample_bars: list[Bar]) -> None:
    qqq = [
        msgspec.structs.replace(
            b, symbol="QQQ", open=b.open / 2, high=b.high / 2, low=b.low / 2, close=b.close / 2
        )
        for b in sample_bars[:50]
    ]
    path = tmp_path / "both.csv"
    write_bars([*sample_bars[:50], *qqq], path)
    assert path.read_text().splitlines()[0] == "Datetime,Symbol,Open,High,Low,Close,Volume,VWAP,Trades"
    assert stream(open_bars(path, "QQQ")) == stream(qqq)
    assert stream(open_bars(path, "SPY")) == stream(sample_bars[:50])


def test_flat_file_tree_is_read_day_by_day_in_date_order(tmp_path: Path, sample_bars: list[Bar]) -> None:
    root = tmp_path / "flat"
    days = sorted({ny_date(b.ts) for b in sample_bars}, reverse=True)  # write newest first
    for day in days:
        write_bars([b for b in sample_bars if ny_date(b.ts) == day], root / "SPY" / f"{day}.csv")
    (root / "SPY" / "README.txt").write_text("not a day file")
    write_bars([msgspec.structs.replace(sample_bars[0], symbol="QQQ")], root / "QQQ" / f"{days[0]}.csv")
    replay = open_bars(root, "spy")
    assert stream(replay) == stream(sample_bars)
    assert replay.report.source == str(root)


def test_flat_file_tree_checks_order_across_days(tmp_path: Path, sample_bars: list[Bar]) -> None:
    root = tmp_path / "flat"
    first_day = ny_date(sample_bars[0].ts)
    write_bars(sample_bars[:10], root / "SPY" / f"{first_day}.csv")
    # A later-named file holding earlier bars is refused row by row, naming that file.
    later = root / "SPY" / f"{first_day + dt.timedelta(days=1)}.csv"
    write_bars(sample_bars[5:8], later)
    replay = open_bars(root, "SPY")
    assert replay.accepted == 10 and dict(replay.report.counts) == {RejectReason.OUT_OF_ORDER: 3}
    assert {e.source for e in replay.report.examples} == {str(later)}


def polygon_csv(bars_by_ticker: dict[str, list[Bar]]) -> str:
    lines = ["ticker,volume,open,close,high,low,window_start,transactions"]
    for ticker, bars in sorted(bars_by_ticker.items()):
        for b in bars:
            vol = int(b.volume)
            lines.append(f"{ticker},{vol},{b.open!r},{b.close!r},{b.high!r},{b.low!r},{b.ts},{b.trades or 0}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", ["2025-07-08.csv", "2025-07-08.csv.gz"])
def test_polygon_flat_file_csv_is_sniffed_and_read(tmp_path: Path, sample_bars: list[Bar], name: str) -> None:
    spy = [msgspec.structs.replace(b, vwap=None, trades=i + 1) for i, b in enumerate(sample_bars[:120])]
    aapl = [msgspec.structs.replace(b, symbol="AAPL", trades=3) for b in sample_bars[:30]]
    text = polygon_csv({"SPY": spy, "AAPL": aapl})
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    replay = open_bars(path, "SPY")
    assert stream(replay) == stream(spy)


def test_polygon_day_files_in_a_flat_file_tree(tmp_path: Path, sample_bars: list[Bar]) -> None:
    spy = [msgspec.structs.replace(b, vwap=None, trades=7) for b in sample_bars]
    for day in sorted({ny_date(b.ts) for b in spy}):
        path = tmp_path / "SPY" / f"{day}.csv"
        path.parent.mkdir(exist_ok=True)
        path.write_text(polygon_csv({"SPY": [b for b in spy if ny_date(b.ts) == day]}))
    assert stream(open_bars(tmp_path, "SPY")) == stream(spy)


# --- columns and time zones --------------------------------------------------------------------


def test_common_column_names_are_accepted_case_insensitively(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("TIMESTAMP,Ticker,o,h,l,c,Vol\n2025-07-08T13:30:00Z,spy,1,2,0.5,1.5,7\n")
    (bar,) = list(open_bars(path, "SPY"))
    assert (bar.ts, bar.symbol, bar.open, bar.high, bar.low, bar.close, bar.volume) == (
        ns(2025, 7, 8, 13, 30),
        "SPY",
        1.0,
        2.0,
        0.5,
        1.5,
        7.0,
    )


def test_separate_date_and_time_columns_are_joined(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("Date,Time,Open,High,Low,Close,Volume\n2025-07-08,09:30:00,1,1,1,1,0\n")
    assert next(iter(open_bars(path, "SPY"))).ts == ns(2025, 7, 8, 13, 30)


@pytest.mark.parametrize(
    ("name", "tz", "expected_hour_utc"),
    [
        ("bars.csv", None, 13),  # naive, no 'utc' in the name: New York
        ("bars_UTC.csv", None, 9),  # naive, 'utc' in the name: UTC
        ("bars.csv", "UTC", 9),
        ("bars_utc.csv", "America/Chicago", 14),
    ],
)
def test_naive_timestamps_follow_the_zone_rule(
    tmp_path: Path, name: str, tz: str | None, expected_hour_utc: int
) -> None:
    path = tmp_path / name
    path.write_text("Datetime,Open,High,Low,Close,Volume\n2025-07-08 09:30:00,1,1,1,1,0\n")
    assert next(iter(open_bars(path, "SPY", tz=tz))).ts == ns(2025, 7, 8, expected_hour_utc, 30)


def test_offsets_win_over_the_zone_rule_and_may_change_with_dst(tmp_path: Path) -> None:
    path = tmp_path / "bars_utc.csv"
    path.write_text(
        "Datetime,Open,High,Low,Close,Volume\n"
        "2025-10-31 09:30:00-04:00,1,1,1,1,0\n"
        "2025-11-03 09:30:00-05:00,1,1,1,1,0\n"
    )
    assert [b.ts for b in open_bars(path, "SPY", tz="Asia/Tokyo")] == [
        ns(2025, 10, 31, 13, 30),
        ns(2025, 11, 3, 14, 30),
    ]


def test_epoch_columns_infer_their_unit(tmp_path: Path) -> None:
    t = ns(2025, 7, 8, 13, 30)
    for unit, value in (("s", t // 10**9), ("ms", t // 10**6), ("ns", t)):
        path = tmp_path / f"{unit}.csv"
        path.write_text(f"ts,open,high,low,close,volume\n{value},1,1,1,1,0\n")
        assert next(iter(open_bars(path, "SPY"))).ts == t


def test_bars_from_frame_uses_the_same_rules() -> None:
    df = pd.DataFrame(
        {
            "Datetime": ["2025-07-08 09:30:00-04:00", "2025-07-08 09:30:00-04:00"],
            "Open": [1.0, 1.0],
            "High": [1.0, 1.0],
            "Low": [1.0, 1.0],
            "Close": [1.0, 1.0],
            "Volume": [0, 0],
        }
    )
    replay = bars_from_frame(df, "SPY", source="rest")
    assert replay.accepted == 1 and replay.report.examples[0].reason is RejectReason.DUPLICATE


# --- DuckDB specifics --------------------------------------------------------------------------


def test_duckdb_table_is_read_in_time_order_with_a_symbol_filter(tmp_path: Path) -> None:
    db = tmp_path / "md.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE bars_intraday (symbol VARCHAR, ts TIMESTAMP, open DECIMAL(10,2), high DOUBLE, "
        "low DOUBLE, close DOUBLE, volume BIGINT)"
    )
    con.execute(
        "INSERT INTO bars_intraday VALUES "
        "('SPY', '2025-07-08 09:31:00', 2, 2, 2, 2, 5), ('QQQ', '2025-07-08 09:30:00', 9, 9, 9, 9, 1), "
        "('SPY', '2025-07-08 09:30:00', 1, 1, 1, 1, 4), ('SPY', '2025-07-08 09:31:00', 2, 2, 2, 2, 5)"
    )
    con.close()
    replay = open_bars(db, "SPY", table="BARS_INTRADAY")  # naive TIMESTAMP, no 'utc' in name: New York
    assert [(b.ts, b.open) for b in replay] == [(ns(2025, 7, 8, 13, 30), 1.0), (ns(2025, 7, 8, 13, 31), 2.0)]
    (dup,) = replay.report.examples
    assert dup.reason is RejectReason.DUPLICATE and dup.row == 4 and dup.source == f"{db}[bars_intraday]"
    assert open_bars(db, "QQQ").accepted == 1  # the only table is used when none is named


def test_duckdb_errors_name_the_tables(tmp_path: Path, sample_bars: list[Bar]) -> None:
    db = tmp_path / "md.duckdb"
    write_bars(sample_bars[:3], db, table="a")
    write_bars(sample_bars[:3], db, table="b")
    with pytest.raises(DataSourceError, match=r"choose a table .*\(tables: a, b\)"):
        open_bars(db, "SPY")
    with pytest.raises(DataSourceError, match=r"unknown table 'c' \(tables: a, b\)"):
        open_bars(db, "SPY", table="c")
    with pytest.raises(DataSourceError, match=r"no rows for symbol QQQ \(symbols present: SPY\)"):
        open_bars(db, "QQQ", table="a")
    lite = tmp_path / "other.db"
    sqlite3.connect(lite).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(DataSourceError, match="SQLite"):
        open_bars(lite, "SPY")


# --- errors and the CLI ------------------------------------------------------------------------


def _error_cases(tmp: Path) -> list[tuple[Path, dict[str, str], str]]:
    header_only = tmp / "qqq_only.csv"
    header_only.write_text("Datetime,Symbol,Open,High,Low,Close,Volume\n2025-07-08 09:30:00,QQQ,1,1,1,1,0\n")
    no_vol = tmp / "no_vol.csv"
    no_vol.write_text("Datetime,Open,High,Low,Close\n2025-07-08 09:30:00,1,1,1,1\n")
    blank = tmp / "blank.csv"
    blank.write_text("")
    xlsx = tmp / "bars.xlsx"
    xlsx.write_text("x")
    (tmp / "tree" / "QQQ").mkdir(parents=True)
    (tmp / "tree2" / "SPY").mkdir(parents=True)
    return [
        (tmp / "missing.csv", {}, "no such file or directory"),
        (xlsx, {}, "unknown market-data format '.xlsx'"),
        (no_vol, {}, "missing column(s) volume"),
        (header_only, {}, "no rows for symbol SPY (symbols present: QQQ)"),
        (no_vol, {"table": "bars"}, "a table only applies to a DuckDB database"),
        (blank, {}, "empty file"),
        (no_vol, {"tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        (tmp / "tree", {}, "no folder for symbol SPY"),
        (tmp / "tree2", {}, "no YYYY-MM-DD.csv day files"),
    ]


def test_bad_sources_raise_one_line_errors(tmp_path: Path) -> None:
    for path, kwargs, message in _error_cases(tmp_path):
        with pytest.raises(DataSourceError) as info:
            open_bars(path, "SPY", **kwargs)  # type: ignore[arg-type]
        text = str(info.value)
        assert message in text and "\n" not in text, (path, text)


def test_cli_reports_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["convert", "--data", str(tmp_path / "nope.csv"), "--symbol", "SPY", "--output", "x.csv"]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.csv: no such file or directory" in err
    src = tmp_path / "a.csv"
    src.write_text("Datetime,Open,High,Low,Close,Volume\n2025-07-08 09:30:00,1,1,1,1,0\n")
    assert (
        main(
            [
                "convert",
                "--data",
                str(src),
                "--symbol",
                "SPY",
                "--output",
                str(tmp_path / "b.csv"),
                "--table",
                "t",
            ]
        )
        == 2
    )
    assert "--table applies only" in capsys.readouterr().err


def test_cli_bad_arguments_exit_2_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "services.ingest.sources", "convert", "--data", "x.csv"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "required: --symbol, --output" in proc.stderr
    assert "Traceback" not in proc.stderr
