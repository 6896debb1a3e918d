"""What a session writes to its parquet journal (:mod:`services.core.journal`), from the events it publishes.

One recorder per session: the embedded runner attaches it to its in-process bus, so ``dreambot run`` and
the backtest journal exactly what their stages published. Rows:

- ``features``: each FeatureVector with the bar it was computed from (the latest bar of its symbol);
- ``orders``: every OrderEvent, and ``fills`` the ones that filled quantity;
- ``trades``: every TradeOutcome;
- ``chain``: per chain snapshot, the nearest live expiry's contracts ATM ± ``strikes`` strikes with IV and
  delta, analysed here on that subset only (a whole chain is hundreds of contracts a minute).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Final

import numpy as np

from services.core import topics
from services.core.bus import InProcessBus
from services.core.calendar import MarketCalendar, default_calendar, ny_date
from services.core.events import Bar, ChainSnapshot, Event, FeatureVector, OrderEvent, TradeOutcome
from services.core.journal import JournalWriter, event_row, feature_row, is_fill
from services.options.chain import analyze_chain

STRIKES_AROUND: Final = 10
JOURNAL_TOPICS: Final = (topics.MD_BARS, topics.MD_CHAIN, topics.FEATURES, topics.EXECUTIONS, topics.OUTCOMES)


def around_the_money(snapshot: ChainSnapshot, strikes: int = STRIKES_AROUND) -> ChainSnapshot | None:
    """The snapshot cut to its nearest expiry not before the snapshot's NY date and the ``strikes``
    strikes each side of the one nearest the underlying; None when no such expiry is quoted."""
    today = ny_date(snapshot.ts).isoformat()
    expiries = sorted({q.expiry for q in snapshot.quotes if q.expiry >= today})
    if not expiries:
        return None
    nearest = [q for q in snapshot.quotes if q.expiry == expiries[0]]
    ladder = sorted({q.strike for q in nearest})
    atm = min(range(len(ladder)), key=lambda i: (abs(ladder[i] - snapshot.underlying_price), ladder[i]))
    keep = set(ladder[max(0, atm - strikes): atm + strikes + 1])
    quotes = tuple(q for q in nearest if q.strike in keep)
    return ChainSnapshot(ts=snapshot.ts, underlying=snapshot.underlying,
                         underlying_price=snapshot.underlying_price, quotes=quotes)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def chain_rows(snapshot: ChainSnapshot, calendar: MarketCalendar, strikes: int = STRIKES_AROUND,
               rate: float = 0.0) -> list[dict[str, Any]]:
    """The ``chain`` rows of one snapshot (see the module docstring)."""
    cut = around_the_money(snapshot, strikes)
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

    def attach(self, bus: InProcessBus) -> None:
        """Record every event the bus carries on the journal's topics."""
        for topic in JOURNAL_TOPICS:
            bus.subscribe(topic, functools.partial(self.on_event, topic), group="journal")

    def on_event(self, topic: str, event: Event) -> None:
        """One published event; events the journal does not keep are ignored."""
        if isinstance(event, Bar):
            self._bars[event.symbol] = event
        elif isinstance(event, FeatureVector):
            self.writer.append("features", feature_row(self._bars.get(event.symbol), event))
        elif isinstance(event, OrderEvent):
            row = event_row(event)
            self.writer.append("orders", row)
            if is_fill(event):
                self.writer.append("fills", row)
        elif isinstance(event, TradeOutcome):
            self.writer.append("trades", event_row(event))
        elif isinstance(event, ChainSnapshot) and topic == topics.MD_CHAIN:
            for row in chain_rows(event, self.calendar, self.strikes, self.rate):
                self.writer.append("chain", row)

    def close(self) -> None:
        """Write what is buffered."""
        self.writer.close()
