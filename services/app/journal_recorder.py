"""What a session writes to its parquet journal (:mod:`services.core.journal`), from the events it publishes.

One recorder per session: the embedded runner attaches it to its in-process bus, so ``dreambot run`` and
the backtest journal exactly what their stages published. Rows:

- ``features``: each FeatureVector with the bar it was computed from (the latest bar of its symbol);
- ``orders``: every OrderEvent, and ``fills`` the ones that filled quantity;
- ``trades``: every TradeOutcome;
- ``chain``: per chain snapshot, one expiry's contracts ATM ± ``strikes`` strikes with IV and delta,
  analysed here on that subset only (a whole chain is hundreds of contracts a minute). The expiry is the
  nearest one the session holds a contract of (so the console can show the position in its smile), else
  the nearest live one.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Collection
from typing import Any, Final

import numpy as np

from services.core import topics
from services.core.bus import InProcessBus
from services.core.calendar import MarketCalendar, default_calendar, ny_date
from services.core.events import Bar, ChainSnapshot, Event, FeatureVector, OrderEvent, TradeOutcome
from services.core.journal import JournalWriter, event_row, feature_row, is_fill
from services.options.chain import analyze_chain

STRIKES_AROUND: Final = 10
_OCC: Final = re.compile(r"^[A-Z.]{1,6}(\d{2})(\d{2})(\d{2})[CP]\d{8}$")
JOURNAL_TOPICS: Final = (topics.MD_BARS, topics.MD_CHAIN, topics.FEATURES, topics.EXECUTIONS, topics.OUTCOMES)


def around_the_money(snapshot: ChainSnapshot, strikes: int = STRIKES_AROUND,
                     prefer: Collection[str] = ()) -> ChainSnapshot | None:
    """The snapshot cut to one expiry not before the snapshot's NY date — the nearest of ``prefer``
    that is quoted, else the nearest — and the ``strikes`` strikes each side of the one nearest the
    underlying; None when no such expiry is quoted."""
    today = ny_date(snapshot.ts).isoformat()
    expiries = sorted({q.expiry for q in snapshot.quotes if q.expiry >= today})
    if not expiries:
        return None
    chosen = next((e for e in expiries if e in prefer), expiries[0])
    nearest = [q for q in snapshot.quotes if q.expiry == chosen]
    ladder = sorted({q.strike for q in nearest})
    atm = min(range(len(ladder)), key=lambda i: (abs(ladder[i] - snapshot.underlying_price), ladder[i]))
    keep = set(ladder[max(0, atm - strikes): atm + strikes + 1])
    quotes = tuple(q for q in nearest if q.strike in keep)
    return ChainSnapshot(ts=snapshot.ts, underlying=snapshot.underlying,
                         underlying_price=snapshot.underlying_price, quotes=quotes)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def chain_rows(snapshot: ChainSnapshot, calendar: MarketCalendar, strikes: int = STRIKES_AROUND,
               rate: float = 0.0, prefer: Collection[str] = ()) -> list[dict[str, Any]]:
    """The ``chain`` rows of one snapshot (see the module docstring; ``prefer``: held expiries)."""
    cut = around_the_money(snapshot, strikes, prefer)
    if cut is None or not cut.quotes:
        return []
    analysis = analyze_chain(cut, cut.ts, rate=rate, calendar=calendar, svi_expiries=0)
    rows = []
    for i, quote in enumerate(cut.quotes):
        mid = analysis.mid[i]
        rows.append({
            "ts": cut.ts, "underlying": cut.underlying, "underlying_price": cut.underlying_price,
            "expiry": quote.expiry, "strike": quote.strike, "right": quote.right, "bid": quote.bid,
            "ask": quote.ask, "mid": _finite(mid), "iv": _finite(analysis.iv[i]),
            "delta": _finite(analysis.delta[i]) if np.isfinite(analysis.iv[i]) else None,
        })
    return rows


class JournalRecorder:
    """Turns a session's published events into journal rows (see the module docstring)."""

    def __init__(self, writer: JournalWriter, calendar: MarketCalendar | None = None,
                 strikes: int = STRIKES_AROUND, rate: float = 0.0) -> None:
        self.writer = writer
        self.calendar = calendar or default_calendar()
        self.strikes = strikes
        self.rate = rate
        self._bars: dict[str, Bar] = {}
        self._pending: dict[str, ChainSnapshot] = {}
        # order_id -> (underlying, contract, signed filled quantity: + entries, - exit legs)
        self._filled: dict[str, tuple[str, str, int]] = {}

    def attach(self, bus: InProcessBus) -> None:
        """Record every event the bus carries on the journal's topics."""
        for topic in JOURNAL_TOPICS:
            bus.subscribe(topic, functools.partial(self.on_event, topic), group="journal")

    def on_event(self, topic: str, event: Event) -> None:
        """One published event; events the journal does not keep are ignored."""
        if isinstance(event, Bar):
            self._bars[event.symbol] = event
            pending = self._pending.get(event.symbol)
            if pending is not None and event.ts >= pending.ts:
                self._write_chain(event.symbol)
        elif isinstance(event, FeatureVector):
            self.writer.append("features", feature_row(self._bars.get(event.symbol), event))
        elif isinstance(event, OrderEvent):
            row = event_row(event)
            self.writer.append("orders", row)
            if is_fill(event):
                self.writer.append("fills", row)
                sign = 1 if event.leg == "entry" else -1
                self._filled[event.order_id] = (event.underlying, event.contract, sign * event.filled_quantity)
        elif isinstance(event, TradeOutcome):
            self.writer.append("trades", event_row(event))
        elif isinstance(event, ChainSnapshot) and topic == topics.MD_CHAIN:
            # Written once the OMS has worked it: at the first bar starting at or after it, or the next
            # snapshot (the replay publishes a bar's chain before the bar, and the bus delivers
            # breadth-first), so a position opened on this snapshot's quotes shows in it.
            self._write_chain(event.underlying)
            self._pending[event.underlying] = event

    def _write_chain(self, underlying: str) -> None:
        snapshot = self._pending.pop(underlying, None)
        if snapshot is not None:
            for row in chain_rows(snapshot, self.calendar, self.strikes, self.rate, self.held_expiries(underlying)):
                self.writer.append("chain", row)

    def held_expiries(self, underlying: str) -> set[str]:
        """Expiries (YYYY-MM-DD) of the contracts of ``underlying`` held now, from the fills seen."""
        net: dict[str, int] = {}
        for und, contract, qty in self._filled.values():
            if und == underlying:
                net[contract] = net.get(contract, 0) + qty
        found = set()
        for contract, qty in net.items():
            m = _OCC.match(contract.removeprefix("O:"))
            if qty > 0 and m is not None:
                found.add(f"20{m.group(1)}-{m.group(2)}-{m.group(3)}")
        return found

    def close(self) -> None:
        """Write what is buffered."""
        for underlying in list(self._pending):
            self._write_chain(underlying)
        self.writer.close()
