"""The replay feed: turns bars (and an option-chain source) into market-data events in time order.

For each bar, in event-time order across symbols: the option chain as of the bar's end (when the
market is open and a chain source is given), a modeled top-of-book quote of the underlying (only
when asked for: bar files carry no quotes), then the bar itself; the ingest heartbeat is written as
it goes. The chain comes first so that a signal fired by the bar's features selects contracts from
quotes of the same instant, as a live system would see them.

The modeled quote is the one-tick market around the bar's close (ETFs quote in cents: bid = close
rounded down to the cent, ask = bid + 0.01, 100 x 100). It stands in for the quote feed so that
spread gates can be exercised on bar-only history; it is never used for fills (option fills come
from option quotes). Indices (SPX, NDX) have no book and get no quote.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

from services.core import keys, shared_state, topics
from services.core.calendar import NS_PER_S, MarketCalendar, default_calendar
from services.core.events import Bar, ChainSnapshot, Quote
from services.core.shared_state import IngestHeartbeat
from services.core.stage import Output
from services.core.state import StateStore

INDICES = frozenset({"SPX", "NDX"})
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
        modeled_quotes: bool = False,
    ) -> None:
        self._bars = bars
        self._modeled_quotes = modeled_quotes
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
                self._state.set(keys.INGEST_HEARTBEAT, shared_state.encode(IngestHeartbeat(ts=end, seq=self.seq)))
            if self._chain_source is not None and cal.is_open(bar.ts):
                chain = self._chain_source(bar.symbol, bar.close, end)
                if chain is not None:
                    yield Output(topics.MD_CHAIN, bar.symbol, chain)
            if self._modeled_quotes and bar.symbol not in INDICES:
                bid = math.floor(bar.close * 100 + 1e-6) / 100
                quote = Quote(ts=end, symbol=bar.symbol, bid=bid, ask=round(bid + 0.01, 2),
                              bid_size=100.0, ask_size=100.0)
                yield Output(topics.MD_QUOTES, bar.symbol, quote)
            yield Output(topics.MD_BARS, bar.symbol, bar)
