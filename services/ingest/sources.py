"""Market-data replay sources: bar files in several formats become validated Bar events in time order.

:func:`open_bars` picks the reader from the path:

- ``.csv`` / ``.csv.gz``: the seed format (``Datetime,[Symbol,]Open,High,Low,Close,Volume``; column
  names are matched case-insensitively, see ``_ALIASES``) or Polygon (Massive) flat-file minute
  aggregates (``ticker,volume,open,close,high,low,window_start,transactions``), told apart by header;
- ``.parquet`` with the same columns;
- ``.duckdb`` / ``.db``: a DuckDB database, ``table`` naming the table (optional when there is one);
- a directory: the flat-file tree ``<root>/{SYMBOL}/YYYY-MM-DD.csv``, read day by day in date order.

Timestamps are bar starts (Polygon's ``window_start`` is; the seed files' first regular bar is
stamped 09:30): a bar stamped ``t`` covers ``[t, t + interval)`` and its values are known at
``t + interval``. The interval is read from the data (the most common spacing of consecutive
bars of one date) unless given; irregular spacing and missing regular-hours bars are counted in
``BarReplay.spacing``. Text with an offset (``2025-07-08 09:30:00-04:00``) or typed time-zone
aware columns are respected; integer epochs are UTC (unit inferred from magnitude, nanoseconds
for Polygon's ``window_start``). Naive timestamps are read in ``tz`` when given; when ``tz`` is
None they are UTC if the file name (or the tree root's name) contains ``utc`` (case-insensitive)
and America/New_York otherwise. Naive New York times that fall in a DST gap or repeat are refused
as ``bad_timestamp`` rather than guessed.

Rows are validated by :class:`~services.ingest.validation.BarValidator`; refused rows are counted
in ``BarReplay.report``, never fixed. Files replay in file order (an out-of-order row is refused);
DuckDB tables, which have no row order, are read ordered by time.

CLI: ``python -m services.ingest.sources convert --data SRC --symbol SYM --output DST [--table T]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
import sys
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from services.cliutil import OneLineParser
from services.core.calendar import NEW_YORK
from services.core.events import Bar
from services.ingest.validation import (
    BarSpacing,
    BarValidator,
    BoolArray,
    FloatArray,
    IntArray,
    RejectionReport,
    bar_spacing,
)

DEFAULT_TABLE = "bars_intraday"

# Polygon (Massive) flat files, e.g. us_stocks_sip/minute_aggs_v1/YYYY/MM/YYYY-MM-DD.csv.gz, carry
# `ticker,volume,open,close,high,low,window_start,transactions`, window_start being "the Unix
# nanosecond timestamp for the start of the aggregate window". Sources: massive.com/docs/flat-files/
# options/day-aggregates.md (this exact header and sample rows), massive.com/docs/flat-files/
# indices/minute-aggregates.md (window_start in ns), and github.com/shinathan/polygon.io-stock-database
# (reads us_stocks_sip/minute_aggs_v1 files with pd.to_datetime(window_start, unit="ns")).
POLYGON_COLUMNS = ("ticker", "volume", "open", "close", "high", "low", "window_start", "transactions")

_ALIASES: dict[str, tuple[str, ...]] = {
    "ts": ("datetime", "timestamp", "ts", "window_start", "date_time", "t"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "vol", "v"),
    "symbol": ("symbol", "ticker", "sym"),
    "vwap": ("vwap", "vw"),
    "trades": ("trades", "transactions", "n"),
}
_REQUIRED = ("open", "high", "low", "close", "volume")
_OFFSET = r"(?:[Zz]|[+-]\d\d:?\d\d)$"
_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.csv(?:\.gz)?$", re.IGNORECASE)
_CSV_SUFFIXES = (".csv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_DUCKDB_SUFFIXES = (".duckdb", ".db")
_EPOCH_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_TS_MAX = float(np.iinfo(np.int64).max)
#: How far past the wall clock a recorded bar may be stamped (clock skew, time zones) before it is
#: refused as from the future.
FUTURE_TOLERANCE_NS: Final = 86_400 * 1_000_000_000

#: Roots a file name may name (index and ETF underlyings and their option roots); a file without a
#: symbol column whose name names one of them holds that symbol's bars.
KNOWN_SYMBOLS: frozenset[str] = frozenset({
    "SPY", "QQQ", "SPX", "SPXW", "NDX", "NDXP", "XSP", "IWM", "DIA", "RUT", "RUTW", "VIX", "TLT", "GLD",
})


class DataSourceError(ValueError):
    """A market-data source cannot be read; the message is one line that names the path."""


# --- columns -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Columns:
    """Which source column plays which role (names as spelled in the source)."""

    ts: str | None
    date: str | None
    time: str | None
    open: str
    high: str
    low: str
    close: str
    volume: str
    symbol: str | None
    vwap: str | None
    trades: str | None
    epoch_unit: str | None

    def used(self) -> list[str]:
        names = (
            self.ts,
            self.date,
            self.time,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            self.symbol,
            self.vwap,
            self.trades,
        )
        return list(dict.fromkeys(n for n in names if n is not None))


def _resolve_columns(names: Sequence[str], where: str) -> _Columns:
    by_lower: dict[str, str] = {}
    for name in names:
        by_lower.setdefault(str(name).strip().lstrip("\ufeff").lower(), str(name))

    def find(role: str) -> str | None:
        return next((by_lower[a] for a in _ALIASES[role] if a in by_lower), None)

    ts, date, time = find("ts"), by_lower.get("date"), by_lower.get("time")
    if ts is None and date is None and time is not None:
        ts, time = time, None
    missing = [r for r in _REQUIRED if find(r) is None]
    if ts is None and date is None:
        missing.insert(0, "timestamp")
    if missing:
        found = ", ".join(str(n) for n in names) or "none"
        raise DataSourceError(
            f"{where}: missing column(s) {', '.join(missing)} (found: {found}; expected e.g. "
            f"Datetime,Open,High,Low,Close,Volume or Polygon's {','.join(POLYGON_COLUMNS)})"
        )
    # Sniff Polygon: its window_start is always ns, so the unit is not left to magnitude guessing.
    polygon = {"ticker", "window_start"} <= by_lower.keys()
    epoch_unit = "ns" if polygon or (ts is not None and ts.strip().lower() == "window_start") else None
    return _Columns(
        ts=ts,
        date=date if ts is None else None,
        time=time if ts is None else None,
        open=find("open") or "",
        high=find("high") or "",
        low=find("low") or "",
        close=find("close") or "",
        volume=find("volume") or "",
        symbol=find("symbol"),
        vwap=find("vwap"),
        trades=find("trades"),
        epoch_unit=epoch_unit,
    )


# --- timestamps --------------------------------------------------------------------------------


def _zone(tz: str | dt.tzinfo | None) -> dt.tzinfo | None:
    if tz is None or isinstance(tz, dt.tzinfo):
        return tz
    if tz.strip().upper() == "UTC":
        return dt.UTC
    try:
        return ZoneInfo(tz.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise DataSourceError(
            f"unknown time zone {tz!r} (use an IANA name such as America/New_York)"
        ) from None


def naive_zone(tz: dt.tzinfo | None, *names: str) -> dt.tzinfo:
    """Zone for naive timestamps: ``tz``, else UTC when a name contains 'utc', else New York."""
    if tz is not None:
        return tz
    return dt.UTC if any("utc" in n.lower() for n in names) else NEW_YORK


def _aware_to_ns(stamps: pd.Series) -> tuple[IntArray, BoolArray]:
    utc = stamps.dt.tz_convert("UTC").dt.as_unit("ns")
    ok = utc.notna().to_numpy()
    ns = np.where(ok, utc.to_numpy("int64", na_value=0), 0).astype(np.int64)
    return ns, ok


def _localize(stamps: pd.Series, zone: dt.tzinfo) -> pd.Series:
    return stamps.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")


def _epoch_to_ns(values: FloatArray | IntArray, unit: str | None) -> tuple[IntArray, BoolArray]:
    ok = np.isfinite(values) if values.dtype.kind == "f" else np.ones(len(values), dtype=bool)
    if unit is None:
        # Magnitude of a present-day epoch: ~1.7e18 ns, 1.7e15 us, 1.7e12 ms, 1.7e9 s.
        med = float(np.median(np.abs(values[ok]))) if ok.any() else 0.0
        unit = "ns" if med >= 1e17 else "us" if med >= 1e14 else "ms" if med >= 1e11 else "s"
    mult = _EPOCH_UNITS[unit]
    ok &= np.abs(np.where(ok, values, 0)) < _TS_MAX / mult
    if values.dtype.kind == "f":
        ns = np.rint(np.where(ok, values, 0.0) * mult).astype(np.int64)
    else:
        ns = np.where(ok, values, 0).astype(np.int64) * mult
    return ns, ok


def _parse_timestamps(
    values: pd.Series, zone: dt.tzinfo, epoch_unit: str | None
) -> tuple[IntArray, BoolArray]:
    """Timestamps of one column as UTC ns plus a mask of the cells that parsed."""
    n = len(values)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return _aware_to_ns(values)
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return _aware_to_ns(_localize(values, zone))
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        if values.isna().any():
            return _epoch_to_ns(values.to_numpy("float64", na_value=np.nan), epoch_unit)
        return _epoch_to_ns(values.to_numpy(), epoch_unit)

    text = values.astype("str").str.strip().where(values.notna())
    ns = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    digits = text.str.fullmatch(r"-?\d+").fillna(False).to_numpy(dtype=bool)
    if digits.any():
        # Parsed as Python ints, never through float64, which would round nanosecond epochs.
        as_int = pd.to_numeric(text[digits]).to_numpy(np.int64)
        ns[digits], ok[digits] = _epoch_to_ns(as_int, epoch_unit)
    rest = text.notna().to_numpy() & ~digits
    if rest.any():
        sub = text[rest]
        aware = sub.str.contains(_OFFSET, regex=True).fillna(False).to_numpy(dtype=bool)
        sub_ns = np.zeros(len(sub), dtype=np.int64)
        sub_ok = np.zeros(len(sub), dtype=bool)
        if aware.any():
            parsed = pd.to_datetime(sub[aware], utc=True, format="ISO8601", errors="coerce")
            sub_ns[aware], sub_ok[aware] = _aware_to_ns(parsed)
        if (~aware).any():
            parsed = pd.to_datetime(sub[~aware], format="ISO8601", errors="coerce")
            sub_ns[~aware], sub_ok[~aware] = _aware_to_ns(_localize(parsed, zone))
        ns[rest], ok[rest] = sub_ns, sub_ok
    return ns, ok


# --- parsed columns ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """Columns of one source (file) for one symbol, parsed but not yet validated."""

    source: str
    rows: IntArray
    ts: IntArray
    ts_ok: BoolArray
    ts_text: Sequence[object]
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    vwap: FloatArray | None
    trades: FloatArray | None

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, order: IntArray) -> _Part:
        def pick(a: FloatArray | None) -> FloatArray | None:
            return None if a is None else a[order]

        return _Part(
            self.source,
            self.rows[order],
            self.ts[order],
            self.ts_ok[order],
            [self.ts_text[i] for i in order.tolist()],
            self.open[order],
            self.high[order],
            self.low[order],
            self.close[order],
            self.volume[order],
            pick(self.vwap),
            pick(self.trades),
        )


def _floats(col: pd.Series) -> FloatArray:
    if not pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
        # A stray word in a numeric column becomes NaN here, so the row is refused as `nan`.
        col = pd.to_numeric(col, errors="coerce")
    values: np.ndarray[tuple[Any, ...], np.dtype[np.float64]] = col.to_numpy(dtype=np.float64, na_value=np.nan)
    return values


def _symbol_rows(df: pd.DataFrame, cols: _Columns, symbol: str) -> pd.DataFrame:
    if cols.symbol is None:
        return df
    wanted = df[cols.symbol].astype("str").str.strip().str.upper() == symbol
    return df[wanted.fillna(False).to_numpy(dtype=bool)]


def _symbols_present(df: pd.DataFrame, cols: _Columns) -> str:
    if cols.symbol is None or df.empty:
        return "none"
    found = sorted(df[cols.symbol].dropna().astype("str").str.strip().str.upper().unique().tolist())
    return ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")


def _frame_part(df: pd.DataFrame, cols: _Columns, zone: dt.tzinfo, source: str, rows: IntArray) -> _Part:
    if cols.ts is not None:
        stamps = df[cols.ts]
    else:
        assert cols.date is not None
        stamps = df[cols.date].astype("str")
        if cols.time is not None:
            stamps = stamps + " " + df[cols.time].astype("str")
    ts, ts_ok = _parse_timestamps(stamps, zone, cols.epoch_unit)
    return _Part(
        source=source,
        rows=rows,
        ts=ts,
        ts_ok=ts_ok,
        ts_text=stamps.tolist(),
        open=_floats(df[cols.open]),
        high=_floats(df[cols.high]),
        low=_floats(df[cols.low]),
        close=_floats(df[cols.close]),
        volume=_floats(df[cols.volume]),
        vwap=_floats(df[cols.vwap]) if cols.vwap else None,
        trades=_floats(df[cols.trades]) if cols.trades else None,
    )


# --- the replay --------------------------------------------------------------------------------


class BarReplay:
    """Validated bars of one symbol, replayable any number of times with identical events.

    Rows are parsed and validated when the replay is opened, so ``report``, ``accepted`` and
    ``rejected`` are final before (and after) iteration; iterating builds the Bar events.
    """

    def __init__(
        self, symbol: str, source: str, parts: Sequence[_Part], *, interval_s: int | None = None
    ) -> None:
        self.symbol = symbol
        self.source = source
        # A recorded file holds no bar from after now: one stamped beyond the wall clock (plus a day for
        # clock skew and time zones) is refused as "future" instead of hiding every good row after it.
        validator = BarValidator(source, not_after_ns=time.time_ns() + FUTURE_TOLERANCE_NS)
        kept: list[_Part] = []
        for part in parts:
            mask = validator.check_batch(
                symbol,
                part.ts,
                part.open,
                part.high,
                part.low,
                part.close,
                part.volume,
                ts_ok=part.ts_ok,
                ts_text=part.ts_text,
                vwap=part.vwap,
                trades=part.trades,
                rows=part.rows,
                source=part.source,
            )
            kept.append(part if bool(mask.all()) else part.take(np.flatnonzero(mask)))
        self.report: RejectionReport = validator.report()

        def cat(get: str) -> list[float]:
            arrays = [getattr(p, get) for p in kept]
            return np.concatenate(arrays).tolist() if arrays else []

        self._ts: list[int] = np.concatenate([p.ts for p in kept]).tolist() if kept else []
        self._open, self._high, self._low = cat("open"), cat("high"), cat("low")
        self._close, self._volume = cat("close"), cat("volume")
        # Optional columns: a blank cell (NaN) is a missing value, i.e. None on the Bar.
        vwap = _optional_column(kept, "vwap")
        trades = _optional_column(kept, "trades")
        self._vwap = None if vwap is None else [None if math.isnan(x) else x for x in vwap]
        self._trades = None if trades is None else [None if math.isnan(x) else int(x) for x in trades]
        try:
            self.spacing: BarSpacing = bar_spacing(self._ts, interval_s)
        except ValueError as exc:
            raise DataSourceError(f"{source}: {exc}") from None
        self.interval_s = self.spacing.interval_s
        if self.spacing.interval_source == "given" and self.spacing.overlapping:
            shortest = min(self.spacing.spacings)
            raise DataSourceError(
                f"{source}: bars start {shortest} s apart but the interval given is {self.interval_s} s: "
                f"bars would overlap (omit the interval to read it from the data)"
            )

    @property
    def accepted(self) -> int:
        return self.report.accepted

    @property
    def rejected(self) -> int:
        return self.report.rejected

    def __len__(self) -> int:
        return len(self._ts)

    def __iter__(self) -> Iterator[Bar]:
        sym, iv = self.symbol, self.interval_s
        n = len(self._ts)
        vwaps: Iterable[float | None] = self._vwap if self._vwap is not None else [None] * n
        trades: Iterable[int | None] = self._trades if self._trades is not None else [None] * n
        for ts, o, h, lo, c, v, w, k in zip(
            self._ts,
            self._open,
            self._high,
            self._low,
            self._close,
            self._volume,
            vwaps,
            trades,
            strict=True,
        ):
            yield Bar(
                ts=ts, symbol=sym, open=o, high=h, low=lo, close=c, volume=v, interval_s=iv, vwap=w, trades=k
            )

    def __repr__(self) -> str:
        return (
            f"BarReplay({self.symbol!r}, {self.source!r}, accepted={self.accepted}, rejected={self.rejected})"
        )


def _optional_column(parts: Sequence[_Part], name: str) -> list[float] | None:
    arrays = [getattr(p, name) for p in parts]
    if all(a is None for a in arrays):
        return None
    filled = [np.full(len(p), np.nan) if a is None else a for p, a in zip(parts, arrays, strict=True)]
    values: list[float] = np.concatenate(filled).tolist()
    return values


# --- readers -----------------------------------------------------------------------------------


def _no_rows(where: str, symbol: str, df: pd.DataFrame, cols: _Columns) -> DataSourceError:
    return DataSourceError(
        f"{where}: no rows for symbol {symbol} (symbols present: {_symbols_present(df, cols)})"
    )


def _csv_part(path: Path, symbol: str, zone: dt.tzinfo) -> tuple[_Part, pd.DataFrame, _Columns]:
    try:
        header = pd.read_csv(path, nrows=0)
        cols = _resolve_columns(list(header.columns), str(path))
        # Timestamps stay text: offsets remain visible and nanosecond epochs (Polygon's window_start)
        # are parsed as integers, never rounded through float64 when a cell is blank.
        text_cols = [c for c in (cols.ts, cols.symbol, cols.date, cols.time) if c is not None]
        df = pd.read_csv(
            path, usecols=cols.used(), dtype=dict.fromkeys(text_cols, "str"), skip_blank_lines=False
        )
    except DataSourceError:
        raise
    except pd.errors.EmptyDataError:
        raise DataSourceError(f"{path}: empty file (no header)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataSourceError(f"{path}: not a readable CSV ({first})") from None
    except (OSError, EOFError, zlib.error) as exc:  # a .gz/.bz2/.zip that is not one, or a truncated one
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataSourceError(f"{path}: not a readable compressed CSV ({first})") from None
    # Blank lines are kept while parsing so row numbers stay CSV line numbers; they hold no data.
    df = df[df.notna().any(axis=1).to_numpy()]
    sel = _symbol_rows(df, cols, symbol)
    lines = sel.index.to_numpy(dtype=np.int64) + 2  # line 1 is the header
    return _frame_part(sel, cols, zone, str(path), lines), df, cols


def named_symbols(path: Path) -> list[str]:
    """Symbols a file name names: its words (split on anything but letters and digits) that are
    known roots (:data:`KNOWN_SYMBOLS`), upper-cased, e.g. ``spy_1min_2025-07-08.csv`` -> ``["SPY"]``."""
    words = re.split(r"[^A-Za-z0-9]+", path.name)
    return list(dict.fromkeys(w.upper() for w in words if w.upper() in KNOWN_SYMBOLS))


def _check_named_symbol(path: Path, cols: _Columns, symbol: str) -> None:
    # A symbol column decides which rows are read; without one the file name is the only witness.
    if cols.symbol is not None:
        return
    named = named_symbols(path)
    if named and symbol not in named:
        raise DataSourceError(
            f"{path}: the file name names {', '.join(named)} and the file has no symbol column, "
            f"so its bars are not {symbol} (pick the {symbol} file, or rename the file if it really holds {symbol})"
        )


def _read_csv(path: Path, symbol: str, tz: dt.tzinfo | None) -> list[_Part]:
    part, df, cols = _csv_part(path, symbol, naive_zone(tz, path.name))
    _check_named_symbol(path, cols, symbol)
    if len(part) == 0:
        raise _no_rows(str(path), symbol, df, cols)
    return [part]


def _read_parquet(path: Path, symbol: str, tz: dt.tzinfo | None) -> list[_Part]:
    try:
        schema = pq.read_schema(path)
        cols = _resolve_columns(schema.names, str(path))
        df = pq.read_table(path, columns=cols.used()).to_pandas()
    except DataSourceError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise DataSourceError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    _check_named_symbol(path, cols, symbol)
    df = df.reset_index(drop=True)
    sel = _symbol_rows(df, cols, symbol)
    if sel.empty:
        raise _no_rows(str(path), symbol, df, cols)
    rows = sel.index.to_numpy(dtype=np.int64) + 1
    return [_frame_part(sel, cols, naive_zone(tz, path.name), str(path), rows)]


def _quote_ident(name: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def _check_duckdb_file(path: Path) -> None:
    with path.open("rb") as fh:
        head = fh.read(16)
    if head.startswith(b"SQLite format 3"):
        raise DataSourceError(f"{path}: is a SQLite database; only DuckDB databases are supported")
    if head[8:12] != b"DUCK":
        raise DataSourceError(f"{path}: not a DuckDB database file")


def _read_duckdb(path: Path, symbol: str, table: str | None, tz: dt.tzinfo | None) -> list[_Part]:
    _check_duckdb_file(path)
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise DataSourceError(f"{path}: cannot open DuckDB database ({str(exc).splitlines()[0]})") from None
    try:
        listed = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables ORDER BY 1, 2"
        ).fetchall()
        names = {f"{s}.{t}".lower(): f"{s}.{t}" for s, t in listed}
        names.update({t.lower(): f"{s}.{t}" for s, t in listed if s == "main"})
        shown = ", ".join(t if s == "main" else f"{s}.{t}" for s, t in listed) or "none"
        if table is None:
            if len(listed) != 1:
                raise DataSourceError(f"{path}: choose a table with --table/table= (tables: {shown})")
            qualified = f"{listed[0][0]}.{listed[0][1]}"
        else:
            found = names.get(table.strip().lower())
            if found is None:
                raise DataSourceError(f"{path}: unknown table {table!r} (tables: {shown})")
            qualified = found
        where = f"{path}[{qualified.removeprefix('main.')}]"
        tbl = _quote_ident(qualified)
        described = con.execute(f"SELECT * FROM {tbl} LIMIT 0").description or []
        cols = _resolve_columns([d[0] for d in described], where)
        _check_named_symbol(path, cols, symbol)
        select = ", ".join(_quote_ident(c) for c in cols.used())
        # Row numbers are taken before filtering so a rejection points at the stored row.
        sql = f"SELECT {select}, __row FROM (SELECT *, row_number() OVER () AS __row FROM {tbl})"
        params: list[object] = []
        if cols.symbol is not None:
            sql += f" WHERE upper(trim(CAST({_quote_ident(cols.symbol)} AS VARCHAR))) = ?"
            params.append(symbol)
        df = con.execute(sql, params).df()
        if df.empty:
            present = "none"
            if cols.symbol is not None:
                sym = _quote_ident(cols.symbol)
                got = con.execute(
                    f"SELECT DISTINCT upper(trim(CAST({sym} AS VARCHAR))) FROM {tbl} "
                    f"WHERE {sym} IS NOT NULL ORDER BY 1 LIMIT 9"
                ).fetchall()
                present = ", ".join(str(r[0]) for r in got[:8]) + (" and more" if len(got) > 8 else "")
            raise DataSourceError(f"{where}: no rows for symbol {symbol} (symbols present: {present})")
    except duckdb.Error as exc:
        raise DataSourceError(f"{path}: DuckDB query failed ({str(exc).splitlines()[0]})") from None
    finally:
        con.close()
    part = _frame_part(df, cols, naive_zone(tz, path.name), where, df["__row"].to_numpy(dtype=np.int64))
    # A table is a set: time order is the only order it has (stable, so duplicates stay adjacent).
    return [part.take(np.argsort(part.ts, kind="stable").astype(np.int64))]


def _symbol_dir(root: Path, symbol: str) -> Path:
    exact = root / symbol
    if exact.is_dir():
        return exact
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    for folder in folders:
        if folder.name.upper() == symbol:
            return folder
    shown = ", ".join(f.name for f in folders[:8]) or "none"
    raise DataSourceError(
        f"{root}: no folder for symbol {symbol} (expected {root}/{symbol}/YYYY-MM-DD.csv; folders: {shown})"
    )


def _read_tree(root: Path, symbol: str, tz: dt.tzinfo | None) -> list[_Part]:
    folder = _symbol_dir(root, symbol)
    days = sorted((m.group(1), p) for p in folder.iterdir() if p.is_file() and (m := _DAY_FILE.match(p.name)))
    if not days:
        raise DataSourceError(f"{folder}: no YYYY-MM-DD.csv day files")
    parts = []
    for _, path in days:
        part, _df, _cols = _csv_part(path, symbol, naive_zone(tz, root.name, path.name))
        parts.append(part)
    if not any(len(p) for p in parts):
        raise DataSourceError(f"{folder}: no rows for symbol {symbol} in {len(days)} day files")
    return parts


def _has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def _clean_symbol(symbol: str) -> str:
    sym = symbol.strip().upper()
    if not sym or len(sym) > 64:
        raise DataSourceError(f"invalid symbol {symbol!r} (1-64 characters)")
    return sym


def open_bars(
    path: str | Path,
    symbol: str,
    *,
    table: str | None = None,
    tz: str | dt.tzinfo | None = None,
    interval_s: int | None = None,
) -> BarReplay:
    """Open a bar source (CSV, Polygon CSV, Parquet, DuckDB, flat-file tree) for ``symbol``.

    ``table`` names the DuckDB table; ``tz`` is the zone of naive timestamps (default: UTC when
    the file name contains 'utc', else America/New_York). Symbols match case-insensitively and
    the bars carry the upper-cased symbol. ``interval_s`` is the bar length; None reads it from the
    data (see :class:`~services.ingest.validation.BarSpacing`, reported as ``BarReplay.spacing``).
    A file without a symbol column whose name names another symbol (``spy_1m.csv`` read as QQQ) is
    refused. Raises DataSourceError (one line) when the source cannot be read.
    """
    p = Path(path)
    sym = _clean_symbol(symbol)
    zone = _zone(tz)
    if not p.exists():
        raise DataSourceError(f"{p}: no such file or directory")
    is_duckdb = p.is_file() and _has_suffix(p, _DUCKDB_SUFFIXES)
    if table is not None and not is_duckdb:
        raise DataSourceError(f"{p}: a table only applies to a DuckDB database (.duckdb/.db)")
    if p.is_dir():
        parts = _read_tree(p, sym, zone)
    elif _has_suffix(p, _CSV_SUFFIXES):
        parts = _read_csv(p, sym, zone)
    elif _has_suffix(p, _PARQUET_SUFFIXES):
        parts = _read_parquet(p, sym, zone)
    elif is_duckdb:
        parts = _read_duckdb(p, sym, table, zone)
    else:
        raise DataSourceError(
            f"{p}: unknown market-data format {p.suffix or '(no extension)'!r} (expected .csv, .csv.gz, "
            ".parquet, .duckdb/.db or a folder of SYMBOL/YYYY-MM-DD.csv files)"
        )
    return BarReplay(sym, str(p), parts, interval_s=interval_s)


def bars_from_frame(
    df: pd.DataFrame,
    symbol: str,
    *,
    source: str = "frame",
    tz: str | dt.tzinfo | None = None,
    interval_s: int | None = None,
) -> BarReplay:
    """A replay of an in-memory frame with the same columns as the files (rows numbered from 1)."""
    sym = _clean_symbol(symbol)
    cols = _resolve_columns([str(c) for c in df.columns], source)
    frame = df.reset_index(drop=True)
    sel = _symbol_rows(frame, cols, sym)
    part = _frame_part(sel, cols, naive_zone(_zone(tz), source), source, sel.index.to_numpy(np.int64) + 1)
    return BarReplay(sym, source, [part], interval_s=interval_s)


# --- writers -----------------------------------------------------------------------------------


def _bar_columns(bars: Sequence[Bar]) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {
        "ts": np.fromiter((b.ts for b in bars), np.int64, len(bars)),
        "symbol": np.array([b.symbol for b in bars], dtype=object),
        "open": np.fromiter((b.open for b in bars), np.float64, len(bars)),
        "high": np.fromiter((b.high for b in bars), np.float64, len(bars)),
        "low": np.fromiter((b.low for b in bars), np.float64, len(bars)),
        "close": np.fromiter((b.close for b in bars), np.float64, len(bars)),
        "volume": np.fromiter((b.volume for b in bars), np.float64, len(bars)),
    }
    if any(b.vwap is not None for b in bars):
        cols["vwap"] = np.array([np.nan if b.vwap is None else b.vwap for b in bars], dtype=np.float64)
    if any(b.trades is not None for b in bars):
        cols["trades"] = np.array([b.trades for b in bars], dtype=object)
    return cols


def _ny_text(ts: np.ndarray) -> list[str]:
    stamps = pd.DatetimeIndex(pd.to_datetime(ts, unit="ns", utc=True)).tz_convert(NEW_YORK)
    if np.any(ts % 1_000_000_000):
        return [s.isoformat(sep=" ") for s in stamps]
    raw = pd.Series(stamps.strftime("%Y-%m-%d %H:%M:%S%z"))
    stamps_out: list[str] = (raw.str[:-2] + ":" + raw.str[-2:]).tolist()  # -0400 -> -04:00, as in the seed file
    return stamps_out


def _write_csv(cols: dict[str, np.ndarray], path: Path) -> None:
    out: dict[str, object] = {"Datetime": _ny_text(cols["ts"])}
    if len(set(cols["symbol"].tolist())) > 1:
        out["Symbol"] = cols["symbol"]
    for name in ("open", "high", "low", "close"):
        out[name.capitalize()] = cols[name]
    vol = cols["volume"]
    whole = bool(np.all(np.mod(vol, 1.0) == 0)) and bool(np.all(np.abs(vol) < 2**53))
    out["Volume"] = vol.astype(np.int64) if whole else vol
    if "vwap" in cols:
        out["VWAP"] = cols["vwap"]
    if "trades" in cols:
        out["Trades"] = pd.array(cols["trades"].tolist(), dtype="Int64")
    pd.DataFrame(out).to_csv(path, index=False)


def _arrow_table(cols: dict[str, np.ndarray], ts_unit: str) -> pa.Table:
    ts = cols["ts"] if ts_unit == "ns" else cols["ts"] // 1000
    arrays: dict[str, pa.Array] = {
        "datetime": pa.array(ts, type=pa.timestamp(ts_unit, tz="UTC")),
        "symbol": pa.array(cols["symbol"].tolist(), type=pa.string()),
    }
    for name in ("open", "high", "low", "close", "volume"):
        arrays[name] = pa.array(cols[name], type=pa.float64())
    if "vwap" in cols:
        arrays["vwap"] = pa.array(cols["vwap"], type=pa.float64(), from_pandas=True)
    if "trades" in cols:
        arrays["trades"] = pa.array(cols["trades"].tolist(), type=pa.int64())
    return pa.table(arrays)


def _write_duckdb(cols: dict[str, np.ndarray], path: Path, table: str) -> None:
    if np.any(cols["ts"] % 1000):
        raise DataSourceError(
            f"{path}: DuckDB TIMESTAMPTZ holds microseconds; these bars have finer timestamps"
        )
    if path.exists():
        _check_duckdb_file(path)
    arrow = _arrow_table(cols, "us")
    try:
        con = duckdb.connect(str(path))
    except duckdb.Error as exc:
        raise DataSourceError(f"{path}: cannot open DuckDB database ({str(exc).splitlines()[0]})") from None
    try:
        con.register("dreambot_bars_in", arrow)
        # Replacing (not appending) keeps a conversion repeatable: run it twice, get the same table.
        con.execute(f"CREATE OR REPLACE TABLE {_quote_ident(table)} AS SELECT * FROM dreambot_bars_in")
        con.unregister("dreambot_bars_in")
    except duckdb.Error as exc:
        raise DataSourceError(f"{path}: DuckDB write failed ({str(exc).splitlines()[0]})") from None
    finally:
        con.close()


def write_bars(bars: Iterable[Bar], path: str | Path, *, table: str | None = None) -> int:
    """Write bars as CSV (seed format, New York offsets), Parquet or a DuckDB table; returns the count.

    The format follows the extension (.csv/.csv.gz, .parquet, .duckdb/.db). CSV has a Symbol column
    only when the bars hold several symbols; Parquet and DuckDB always have one. DuckDB writes
    ``table`` (default ``bars_intraday``), replacing it if it exists.
    """
    p = Path(path)
    is_duckdb = _has_suffix(p, _DUCKDB_SUFFIXES)
    if table is not None and not is_duckdb:
        raise DataSourceError(f"{p}: a table only applies to a DuckDB database (.duckdb/.db)")
    if not (is_duckdb or _has_suffix(p, _CSV_SUFFIXES) or _has_suffix(p, _PARQUET_SUFFIXES)):
        raise DataSourceError(
            f"{p}: unknown output format {p.suffix or '(no extension)'!r} "
            "(expected .csv, .csv.gz, .parquet or .duckdb/.db)"
        )
    items = list(bars)
    cols = _bar_columns(items)
    p.parent.mkdir(parents=True, exist_ok=True)
    if is_duckdb:
        _write_duckdb(cols, p, table or DEFAULT_TABLE)
    elif _has_suffix(p, _PARQUET_SUFFIXES):
        pq.write_table(_arrow_table(cols, "ns"), p)
    else:
        _write_csv(cols, p)
    return len(items)


# --- CLI ---------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m services.ingest.sources", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser(
        "convert", help="read bars of one symbol from any source, write them in another format"
    )
    conv.add_argument("--data", required=True, help="source file or flat-file folder")
    conv.add_argument("--symbol", required=True, help="symbol to read, e.g. SPY")
    conv.add_argument("--output", required=True, help="destination .csv, .parquet or .duckdb")
    conv.add_argument(
        "--table", help=f"DuckDB table to read from and/or write to (writing default: {DEFAULT_TABLE})"
    )
    conv.add_argument("--tz", help="zone of naive timestamps in the source (default: by file name, see docs)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    src, dst = Path(args.data), Path(args.output)
    src_db = src.is_file() and _has_suffix(src, _DUCKDB_SUFFIXES)
    dst_db = _has_suffix(dst, _DUCKDB_SUFFIXES)
    try:
        if args.table is not None and not (src_db or dst_db):
            raise DataSourceError("--table applies only when --data or --output is a DuckDB database")
        replay = open_bars(src, args.symbol, table=args.table if src_db else None, tz=args.tz)
        written = write_bars(replay, dst, table=args.table if dst_db else None)
    except DataSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {dst}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    where = f"{dst} (table {args.table or DEFAULT_TABLE})" if dst_db else str(dst)
    print(f"wrote {written} {replay.symbol} bars to {where}")
    if replay.rejected:
        print(replay.report, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
