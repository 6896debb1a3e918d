"""The local flat-file tree ``{dest}/{SYMBOL}/YYYY-MM-DD.csv``: which days, which names, written how.

One file holds one symbol's minute bars of one New York trading day, in Polygon's flat-file minute
aggregate columns (``ticker,volume,open,close,high,low,window_start,transactions``, ``window_start`` in
Unix ns) plus ``vwap``, which the REST API has and the bulk files lack (blank there). ``ticker`` is our
symbol (``SPX``, not ``I:SPX``) so that :func:`services.ingest.sources.open_bars` finds the rows; index
bars have volume 0 and blank ``transactions``/``vwap``, as Polygon publishes them.

A file is written under a hidden temporary name in the same folder, fsynced, then renamed into place, so
a day file that exists is complete: a sync that is killed leaves at most a ``.part`` file, which the
next run (holding :func:`sync_lock`) deletes. That is what makes a rerun skip finished days safely.

Trading days come from :class:`~services.core.calendar.MarketCalendar`: holidays have no session, and an
early-close day's regular bars end at 13:00. A day file holds every minute bar of its New York date
(pre- and post-market included, as Polygon serves them), so a session is synced only once its data is
final: after the post-market ends (20:00 New York) plus the 15-minute delay of delayed plans, i.e. from
:data:`DATA_FINAL` on. A file written earlier would lack the evening's bars and, being in place, would
never be fetched again.
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from services.core.calendar import NEW_YORK, NS_PER_S, MarketCalendar, Session, ny_date
from services.core.events import Bar

FLATFILE_COLUMNS: Final = ("ticker", "volume", "open", "close", "high", "low", "window_start", "transactions", "vwap")
PART_SUFFIX: Final = ".part"
LOCK_NAME: Final = ".polygon_sync.lock"
#: A New York day's minute bars are final after the post-market (20:00) and a delayed plan's 15 minutes.
DATA_FINAL: Final = dt.time(20, 15)

Row = tuple[str, ...]


class SyncPlanError(ValueError):
    """The requested days cannot be planned; the message is one line."""


class SyncBusyError(RuntimeError):
    """Another sync holds the destination's lock."""


# --- days ------------------------------------------------------------------------------------------


def _previous_session(cal: MarketCalendar, day: dt.date) -> Session:
    d = day - dt.timedelta(days=1)
    while (s := cal.session(d)) is None:
        d -= dt.timedelta(days=1)
    return s


def data_final_ns(day: dt.date) -> int:
    """When ``day``'s minute bars are final (:data:`DATA_FINAL` New York, ns since epoch)."""
    return int(dt.datetime.combine(day, DATA_FINAL, tzinfo=NEW_YORK).timestamp()) * NS_PER_S


def last_completed_session(cal: MarketCalendar, now_ns: int) -> Session:
    """The latest session whose data is final at ``now_ns`` (see :data:`DATA_FINAL`)."""
    try:
        today = cal.session(ny_date(now_ns))
        if today is not None and data_final_ns(today.date) <= now_ns:
            return today
        return _previous_session(cal, ny_date(now_ns))
    except ValueError as exc:
        raise SyncPlanError(str(exc)) from None


def plan_sessions(
    cal: MarketCalendar,
    now_ns: int,
    *,
    days: int | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> list[Session]:
    """Sessions to sync, oldest first: ``days`` sessions back from ``end`` (default: the last completed
    session), or every session from ``start`` to ``end``. Days not yet final at ``now_ns`` are left out."""
    if (days is None) == (start is None):
        raise SyncPlanError("give either --days N or --start YYYY-MM-DD (with an optional --end)")
    if days is not None and days < 1:
        raise SyncPlanError(f"--days must be >= 1, got {days}")
    last = last_completed_session(cal, now_ns).date
    until = last if end is None else min(end, last)
    try:
        if start is not None:
            if end is not None and start > end:
                raise SyncPlanError(f"--start {start} is after --end {end}")
            sessions = cal.sessions_between(start, until)
            if not sessions:
                raise SyncPlanError(f"no completed trading session from {start} to {until}")
            return sessions
        assert days is not None
        first = cal.session(until) or _previous_session(cal, until)
        sessions = [first]
        while len(sessions) < days:
            sessions.append(_previous_session(cal, sessions[-1].date))
    except ValueError as exc:
        if isinstance(exc, SyncPlanError):
            raise
        raise SyncPlanError(str(exc)) from None
    return sessions[::-1]


# --- names -----------------------------------------------------------------------------------------


def day_path(dest: Path, symbol: str, day: dt.date) -> Path:
    """``{dest}/{SYMBOL}/YYYY-MM-DD.csv``."""
    return dest / symbol.upper() / f"{day.isoformat()}.csv"


def is_complete(dest: Path, symbol: str, day: dt.date) -> bool:
    """True when the day's file is in place (only a finished write renames it there)."""
    return day_path(dest, symbol, day).is_file()


# --- rows ------------------------------------------------------------------------------------------


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def row_from_bar(symbol: str, bar: Bar) -> Row:
    """A REST bar as a flat-file row (``ticker`` = our symbol)."""
    return (
        symbol,
        _number(bar.volume),
        repr(bar.open),
        repr(bar.close),
        repr(bar.high),
        repr(bar.low),
        str(bar.ts),
        "" if bar.trades is None else str(bar.trades),
        "" if bar.vwap is None else repr(bar.vwap),
    )


def day_rows(rows: Sequence[Row], day: dt.date) -> list[Row]:
    """The rows of New York date ``day``, in time order (the replay refuses rows out of order), one per
    ``window_start`` (a bar repeated across pages is kept once, its last copy)."""
    start = FLATFILE_COLUMNS.index("window_start")
    by_ts: dict[int, Row] = {}
    for r in rows:
        by_ts[int(r[start])] = r
    return [by_ts[ts] for ts in sorted(by_ts) if ny_date(ts) == day]


# --- writing ---------------------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def part_path(path: Path) -> Path:
    """The temporary name a day file is written under (hidden, so no reader takes it for a day)."""
    return path.with_name(f".{path.name}.{os.getpid()}{PART_SUFFIX}")


def write_day(path: Path, rows: Sequence[Row]) -> None:
    """Write a day file atomically: temporary name, fsync, rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(path)
    try:
        with part.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(FLATFILE_COLUMNS)
            writer.writerows(rows)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    # The rename is durable only once the folder's entry is on disk too.
    _fsync_dir(path.parent)


def remove_stale_parts(dest: Path) -> list[Path]:
    """Delete ``.part`` files a killed sync left behind (call while holding :func:`sync_lock`)."""
    if not dest.is_dir():
        return []
    stale = sorted(dest.glob(f"*/.*{PART_SUFFIX}"))
    for part in stale:
        part.unlink(missing_ok=True)
    return stale


@contextmanager
def sync_lock(dest: Path) -> Iterator[None]:
    """Hold ``{dest}/.polygon_sync.lock`` exclusively, so two syncs never write the same tree."""
    dest.mkdir(parents=True, exist_ok=True)
    lock = dest / LOCK_NAME
    with lock.open("a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise SyncBusyError(f"another sync (pid {holder}) is writing {dest}; wait for it to finish") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
