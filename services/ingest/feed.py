"""The replay feed: turns bars (and an option-chain source) into market-data events in time order.

For each bar, in event-time order across symbols: the option chain as of the bar's end (when the
market is open and a chain source is given), then the bar itself, then the ingest heartbeat. The
chain comes first so that a signal fired by the bar's features selects contracts from quotes of the
same instant, as a live system would see them.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence

import orjson

from services.core import keys, topics
from services.core.calendar import NS_PER_S, MarketCalendar, default_calendar
from services.core.events import Bar, ChainSnapshot
from services.core.stage import Output
from services.core.state import StateStore

ChainSource = Callable[[str, float, int], ChainSnapshot | None]


def merge_bars(streams: Sequence[Iterable[Bar]]) -> Iterator[Bar]:
    """Merge per-symbol bar streams by (ts, symbol): a stable, deterministic interleaving."""
    return heapq.merge(*streams, key=lambda b: (b.ts, b.symbol))


class ReplayFeed:
    """Iterates the md.* outputs of a replay; writes the ingest heartbeat to ``state`` as it goes."""

    def __init__(
        self,
        bars: Iterable[Bar],
        chain_source: ChainSource | None = None,
        state: StateStore | None = None,
        calendar: MarketCalendar | None = None,
    ) -> None:
        self._bars = bars
        self._chain_source = chain_source
        self._state = state
        self._calendar = calendar or default_calendar()
        self.seq = 0

    def __iter__(self) -> Iterator[Output]:
        cal = self._calendar
        for bar in self._bars:
            end = bar.ts + bar.interval_s * NS_PER_S
            self.seq += 1
            if self._state is not None:
                self._state.set(keys.INGEST_HEARTBEAT, orjson.dumps({"ts": end, "seq": self.seq}))
            if self._chain_source is not None and cal.is_open(bar.ts):
                chain = self._chain_source(bar.symbol, bar.close, end)
                if chain is not None:
                    yield Output(topics.MD_CHAIN, bar.symbol, chain)
            yield Output(topics.MD_BARS, bar.symbol, bar)
