"""The session journal: persisted live outputs as hive-partitioned parquet, readable by pandas and DuckDB.

Layout: ``root/<table>/session=<session>/date=YYYY-MM-DD/part-<seq>-<uuid>.parquet``; ``date`` is the
New York trading date of the row's ``ts``. Each flush writes new part files (a temporary ``.tmp`` name,
then an atomic rename), so a crash never leaves a partial part under a readable name and a part once
written never changes. Every row has ``ts`` (int64 ns UTC, the event time). Missing values are null
(NaN for floats), never 0. Columns per table (extra keys a caller passes are dropped):

``features`` (one row per minute bar per underlying: the bar and the FeatureVector the features stage
emitted for it): ts, symbol, open, high, low, volume, then every name of
``services.core.feature_names`` (close, vwap, vwap_upper_1..3, vwap_lower_1..3, vwap_sigma, atr_14,
adx_14, plus_di_14, minus_di_14, rv_5..rv_60, opening ranges, microstructure, chain summary), float64.

``orders`` (every OrderEvent, every lifecycle status) and ``fills`` (the OrderEvents that filled
quantity: status ``partial`` or ``filled``): ts, id, order_id, client_order_id, underlying, contract,
leg (entry | take_profit | stop_loss | flatten), side, status, quantity, filled_quantity (int64),
fill_price, limit_price, stop_price, fees (float64), reason.

``trades`` (TradeOutcome): ts, id, underlying, playbook, contract, entry_ts, exit_ts (int64 ns),
entry_price, exit_price (float64), quantity (int64), pnl, mae, mfe (float64), exit_reason, reason.

``chain`` (snapshots of the chain around the money: ATM ± 10 strikes of the nearest expiry, once per
underlying per minute bar): ts, underlying, underlying_price, expiry, strike, right (C | P), bid, ask,
mid, iv, delta (float64; iv/delta null where the chain could not solve them).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from services.core.calendar import ny_date
from services.core.events import Bar, FeatureVector, OrderEvent
from services.core.feature_names import CHAIN_FEATURES, UNDERLYING_FEATURES

if TYPE_CHECKING:
    import pandas

TABLES: Final = ("features", "orders", "fills", "trades", "chain")

_F64: Final = pa.float64()
_I64: Final = pa.int64()
_STR: Final = pa.string()

_ORDER_FIELDS: Final = [
    ("ts", _I64), ("id", _STR), ("order_id", _STR), ("client_order_id", _STR), ("underlying", _STR),
    ("contract", _STR), ("leg", _STR), ("side", _STR), ("status", _STR), ("quantity", _I64),
    ("filled_quantity", _I64), ("fill_price", _F64), ("limit_price", _F64), ("stop_price", _F64),
    ("fees", _F64), ("reason", _STR),
]

SCHEMAS: Final[dict[str, pa.Schema]] = {
    "features": pa.schema(
        [("ts", _I64), ("symbol", _STR), ("open", _F64), ("high", _F64), ("low", _F64), ("volume", _F64)]
        + [(name, _F64) for name in UNDERLYING_FEATURES + CHAIN_FEATURES]),
    "orders": pa.schema(_ORDER_FIELDS),
    "fills": pa.schema(_ORDER_FIELDS),
    "trades": pa.schema([
        ("ts", _I64), ("id", _STR), ("underlying", _STR), ("playbook", _STR), ("contract", _STR),
        ("entry_ts", _I64), ("exit_ts", _I64), ("entry_price", _F64), ("exit_price", _F64),
        ("quantity", _I64), ("pnl", _F64), ("mae", _F64), ("mfe", _F64), ("exit_reason", _STR),
        ("reason", _STR)]),
    "chain": pa.schema([
        ("ts", _I64), ("underlying", _STR), ("underlying_price", _F64), ("expiry", _STR), ("strike", _F64),
        ("right", _STR), ("bid", _F64), ("ask", _F64), ("mid", _F64), ("iv", _F64), ("delta", _F64)]),
}
"""The columns of every table, in file order."""

SESSION_PREFIX: Final = "session="
DATE_PREFIX: Final = "date="


class JournalError(ValueError):
    """A row the journal cannot take (unknown table, no ``ts``)."""


def _check_table(table: str) -> pa.Schema:
    schema = SCHEMAS.get(table)
    if schema is None:
        raise JournalError(f"unknown journal table {table!r} (known: {', '.join(TABLES)})")
    return schema


def _cell(value: Any, kind: pa.DataType) -> Any:
    # None stays null; a float column takes ints and bools as floats so one part never flips its type.
    if value is None:
        return None
    if kind == _F64:
        return float(value)
    if kind == _I64:
        return int(value)
    return str(value)


class JournalWriter:
    """Buffers one session's rows per table and writes them as new parquet parts by rows or time."""

    def __init__(self, root: Path, session: str, *, flush_rows: int = 500, flush_seconds: float = 5.0) -> None:
        if not session or "/" in session or session.startswith("."):
            raise JournalError(f"bad journal session name {session!r}")
        self.root = Path(root)
        self.session = session
        self.flush_rows = max(1, flush_rows)
        self.flush_seconds = flush_seconds
        self._buffers: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
        self._pending = 0
        self._seq = 0
        self._lock = threading.RLock()
        self._closed = False
        self._last_flush = time.monotonic()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        if flush_seconds > 0:
            # A quiet feed still gets its last rows on disk within flush_seconds (the console reads them).
            self._timer = threading.Thread(target=self._flush_loop, name=f"journal-{session}", daemon=True)
            self._timer.start()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_seconds / 2):
            if time.monotonic() - self._last_flush >= self.flush_seconds:
                self.flush()

    def append(self, table: str, row: Mapping[str, Any]) -> None:
        """Buffer one row of ``table``; flush when the buffer is full."""
        schema = _check_table(table)
        if row.get("ts") is None:
            raise JournalError(f"journal row of {table!r} has no ts")
        clean = {f.name: _cell(row.get(f.name), f.type) for f in schema}
        with self._lock:
            if self._closed:
                raise JournalError("journal writer is closed")
            self._buffers[table].append(clean)
            self._pending += 1
            if self._pending >= self.flush_rows:
                self.flush()

    def flush(self) -> None:
        """Write every buffered row as new part files (one per table and NY date)."""
        with self._lock:
            self._last_flush = time.monotonic()
            if not self._pending:
                return
            for table, rows in self._buffers.items():
                if rows:
                    self._write(table, rows)
                    self._buffers[table] = []
            self._pending = 0

    def _write(self, table: str, rows: list[dict[str, Any]]) -> None:
        by_day: dict[dt.date, list[dict[str, Any]]] = {}
        for row in rows:
            by_day.setdefault(ny_date(row["ts"]), []).append(row)
        schema = SCHEMAS[table]
        for day, day_rows in by_day.items():
            folder = self.root / table / f"{SESSION_PREFIX}{self.session}" / f"{DATE_PREFIX}{day.isoformat()}"
            folder.mkdir(parents=True, exist_ok=True)
            self._seq += 1
            name = f"part-{time.time_ns():020d}-{self._seq:06d}-{uuid.uuid4().hex[:8]}.parquet"
            tmp = folder / f".{name}.tmp"
            pq.write_table(pa.Table.from_pylist(day_rows, schema=schema), tmp)
            os.replace(tmp, folder / name)

    def close(self) -> None:
        """Flush and stop the timer; calling it again does nothing."""
        self._stop.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join()
        with self._lock:
            if self._closed:
                return
            self.flush()
            self._closed = True


def _is_part(path: Path) -> bool:
    # Temporary files (".part-....parquet.tmp") are not parts: a crash mid-write leaves one behind.
    return path.suffix == ".parquet" and not path.name.startswith((".", "_"))


def _parts(root: Path, table: str, session: str | None, day: dt.date | None) -> list[tuple[str, Path]]:
    base = Path(root) / table
    if not base.is_dir():
        return []
    sess_glob = f"{SESSION_PREFIX}{session}" if session is not None else f"{SESSION_PREFIX}*"
    day_glob = f"{DATE_PREFIX}{day.isoformat()}" if day is not None else f"{DATE_PREFIX}*"
    found = [(p.parent.parent.name[len(SESSION_PREFIX):], p) for p in base.glob(f"{sess_glob}/{day_glob}/*")
             if _is_part(p)]
    return sorted(found, key=lambda sp: (sp[0], sp[1].parent.name, sp[1].name))


def read_table(root: Path, table: str, *, session: str | None = None,
               day: dt.date | None = None) -> pandas.DataFrame:
    """Every row of ``table`` (optionally one session / NY day), sorted by ts, with the table's dtypes
    and a ``session`` column; an empty frame with those columns when nothing was written."""
    schema = _check_table(table)
    tables = []
    for sess, part in _parts(root, table, session, day):
        data = pq.read_table(part, schema=schema)
        tables.append(data.append_column("session", pa.array([sess] * data.num_rows, _STR)))
    full_schema = schema.append(pa.field("session", _STR))
    joined = pa.concat_tables(tables) if tables else full_schema.empty_table()
    frame = joined.to_pandas()
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def sessions(root: Path) -> list[str]:
    """Session names present in any table of the journal at ``root`` (sorted)."""
    found: set[str] = set()
    for table in TABLES:
        base = Path(root) / table
        if base.is_dir():
            found.update(p.name[len(SESSION_PREFIX):] for p in base.glob(f"{SESSION_PREFIX}*") if p.is_dir())
    return sorted(found)


def clear_session(root: Path, session: str) -> None:
    """Remove every table's partitions of ``session`` (a replay rerun replaces its journal, not appends)."""
    for table in TABLES:
        shutil.rmtree(Path(root) / table / f"{SESSION_PREFIX}{session}", ignore_errors=True)


def event_row(event: Any) -> dict[str, Any]:
    """A msgspec event's fields as builtins (an OrderEvent for orders/fills, a TradeOutcome for trades)."""
    return dict(msgspec.to_builtins(event))


def feature_row(bar: Bar | None, vector: FeatureVector) -> dict[str, Any]:
    """The features row of one minute: the bar's OHLCV (when known) and every value of the vector."""
    row: dict[str, Any] = {"ts": vector.ts, "symbol": vector.symbol, **vector.values}
    if bar is not None:
        row.update(open=bar.open, high=bar.high, low=bar.low, volume=bar.volume)
        row.setdefault("close", bar.close)
    return row


def is_fill(event: OrderEvent) -> bool:
    """Whether an order event belongs in ``fills`` (it carries filled quantity at a price)."""
    return event.status in ("partial", "filled") and event.filled_quantity > 0
