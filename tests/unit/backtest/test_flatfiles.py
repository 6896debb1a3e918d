"""The flat-file tree: which sessions a sync plans, atomic day files, the lock, flat-file parsing."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import multiprocessing
from pathlib import Path

import pytest

from services.backtest import flatfiles as ff
from services.backtest.polygon_sync import check_manifest, flatfile_key, rows_from_flatfile
from services.core.calendar import NEW_YORK, default_calendar
from services.core.settings import ConfigError


def ny_ns(y: int, m: int, d: int, hh: int, mm: int) -> int:
    return int(dt.datetime(y, m, d, hh, mm, tzinfo=NEW_YORK).timestamp()) * 1_000_000_000


def test_a_session_is_synced_once_its_evening_bars_are_final() -> None:
    cal = default_calendar()  # 2025-11-28, the day after Thanksgiving, closes at 13:00
    assert cal.session(dt.date(2025, 11, 28)).early_close  # type: ignore[union-attr]
    assert ff.last_completed_session(cal, ny_ns(2025, 11, 28, 20, 14)).date == dt.date(2025, 11, 26)
    assert ff.last_completed_session(cal, ny_ns(2025, 11, 28, 20, 15)).date == dt.date(2025, 11, 28)
    assert ff.last_completed_session(cal, ny_ns(2025, 11, 29, 9, 0)).date == dt.date(2025, 11, 28)  # Saturday


def test_days_count_sessions_back_skipping_weekends_and_holidays() -> None:
    cal = default_calendar()
    sessions = ff.plan_sessions(cal, ny_ns(2025, 7, 8, 10, 0), days=4)  # during the 8th: it is not complete
    assert [s.date for s in sessions] == [dt.date(2025, 7, 1), dt.date(2025, 7, 2), dt.date(2025, 7, 3),
                                          dt.date(2025, 7, 7)]  # July 4th and the weekend skipped
    assert sessions[2].early_close


def test_start_end_and_errors() -> None:
    cal = default_calendar()
    now = ny_ns(2025, 7, 10, 21, 0)
    got = ff.plan_sessions(cal, now, start=dt.date(2025, 7, 3), end=dt.date(2025, 7, 20))
    assert [s.date for s in got] == [dt.date(2025, 7, 3), dt.date(2025, 7, 7), dt.date(2025, 7, 8),
                                     dt.date(2025, 7, 9), dt.date(2025, 7, 10)]  # end capped at the last close
    with pytest.raises(ff.SyncPlanError, match="after --end"):
        ff.plan_sessions(cal, now, start=dt.date(2025, 7, 9), end=dt.date(2025, 7, 8))
    with pytest.raises(ff.SyncPlanError, match="either --days"):
        ff.plan_sessions(cal, now)
    with pytest.raises(ff.SyncPlanError, match="no completed trading session"):
        ff.plan_sessions(cal, now, start=dt.date(1990, 1, 2), end=dt.date(1990, 1, 5))
    with pytest.raises(ff.SyncPlanError, match="outside the calendar"):
        ff.plan_sessions(cal, now, days=10_000)


def test_day_rows_keep_the_day_in_time_order_once_per_minute() -> None:
    day = dt.date(2025, 7, 9)
    t0 = ny_ns(2025, 7, 9, 9, 30)
    row = lambda ts, c: ("SPY", "1", "1", c, "1", "1", str(ts), "", "")  # noqa: E731
    rows = [row(t0 + 60_000_000_000, "b"), row(t0, "a"), row(t0 + 60_000_000_000, "b2"),
            row(ny_ns(2025, 7, 10, 9, 30), "next day")]
    assert [r[3] for r in ff.day_rows(rows, day)] == ["a", "b2"]


def test_write_day_is_whole_or_absent(tmp_path: Path) -> None:
    path = ff.day_path(tmp_path, "spy", dt.date(2025, 7, 9))
    assert path == tmp_path / "SPY" / "2025-07-09.csv"

    class InterruptedWriteError(Exception):
        pass

    class Rows(list[ff.Row]):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield ("SPY", "1", "1", "1", "1", "1", "0", "", "")
            raise InterruptedWriteError

    with pytest.raises(InterruptedWriteError):
        ff.write_day(path, Rows())
    assert [p.name for p in tmp_path.rglob("*")] == ["SPY"]  # no day file, no .part left
    ff.write_day(path, [("SPY", "1", "2", "3", "4", "5", "6", "", "")])
    assert path.read_text().splitlines() == [",".join(ff.FLATFILE_COLUMNS), "SPY,1,2,3,4,5,6,,"]
    assert ff.is_complete(tmp_path, "SPY", dt.date(2025, 7, 9))


def _try_lock(dest: str, out: multiprocessing.Queue[str]) -> None:
    try:
        with ff.sync_lock(Path(dest)):
            out.put("locked")
    except ff.SyncBusyError as exc:
        out.put(str(exc))


def test_one_sync_per_tree_and_stale_parts_are_removed(tmp_path: Path) -> None:
    (tmp_path / "SPY").mkdir()
    stale = tmp_path / "SPY" / ".2025-07-09.csv.4242.part"
    stale.write_text("partial")
    with ff.sync_lock(tmp_path):
        q: multiprocessing.Queue[str] = multiprocessing.Queue()
        p = multiprocessing.Process(target=_try_lock, args=(str(tmp_path), q))
        p.start()
        p.join(30)
        message = q.get(timeout=5)
        assert "another sync" in message and "wait for it to finish" in message
        assert ff.remove_stale_parts(tmp_path) == [stale]
    assert not stale.exists()


def test_flatfile_rows_pick_our_tickers_and_fill_index_gaps() -> None:
    text = "ticker,open,close,high,low,window_start\nI:NDX,1,2,3,0.5,100\nI:SPX,4,5,6,3,100\nI:SPXEW,7,8,9,6,100\n"
    rows = rows_from_flatfile(io.BytesIO(gzip.compress(text.encode())), {"I:SPX": "SPX"})
    assert rows == {"SPX": [("SPX", "0", "4", "5", "6", "3", "100", "", "")]}
    assert flatfile_key("stocks", dt.date(2025, 7, 9)) == "us_stocks_sip/minute_aggs_v1/2025/07/2025-07-09.csv.gz"
    assert flatfile_key("indices", dt.date(2025, 7, 9)) == "us_indices/minute_aggs_v1/2025/07/2025-07-09.csv.gz"


def test_a_tree_holds_one_kind_of_bars(tmp_path: Path) -> None:
    check_manifest(tmp_path, "rest", True)
    assert json.loads((tmp_path / ".polygon_sync.json").read_text()) == {"adjusted": True, "source": "rest"}
    check_manifest(tmp_path, "rest", True)
    with pytest.raises(ConfigError, match="use another --dest"):
        check_manifest(tmp_path, "rest", False)
    with pytest.raises(ConfigError, match="use another --dest"):
        check_manifest(tmp_path, "s3", None)
