"""The features stage: market data in, one FeatureVector per bar out (per underlying).

Quotes and trades update the microstructure state and chain snapshots the options analytics; both
reach consumers inside the next bar's vector rather than as vectors of their own, so the features
topic carries exactly one vector per bar. Chain analytics (IV, SVI) cost milliseconds, so they run
at most once per ``chain_every_s`` seconds of event time per underlying.
"""

from __future__ import annotations

from services.core import topics
from services.core.calendar import NS_PER_S, MarketCalendar
from services.core.events import Bar, ChainSnapshot, Event, Quote, Trade
from services.core.stage import Output
from services.features.engine import FeatureConfig, FeatureEngine


class FeatureStage:
    """Routes market data to one FeatureEngine per configured underlying."""

    name: str = "features"
    inputs: tuple[str, ...] = (topics.MD_BARS, topics.MD_QUOTES, topics.MD_TRADES, topics.MD_CHAIN)

    def __init__(
        self,
        symbols: list[str],
        config: FeatureConfig | None = None,
        calendar: MarketCalendar | None = None,
        chain_every_s: float = 300.0,
    ) -> None:
        self.engines = {s: FeatureEngine(s, config, calendar) for s in symbols}
        self._chain_every_ns = int(chain_every_s * NS_PER_S)
        self._last_chain: dict[str, int] = {}

    def _engine(self, symbol: str) -> FeatureEngine:
        engine = self.engines.get(symbol)
        if engine is None:
            raise ValueError(f"symbol {symbol!r} is not traded in this session ({', '.join(self.engines)})")
        return engine

    def handle(self, topic: str, event: Event) -> list[Output]:
        if isinstance(event, Bar):
            vector = self._engine(event.symbol).on_bar(event)
            return [Output(topics.FEATURES, event.symbol, vector)]
        if isinstance(event, ChainSnapshot):
            last = self._last_chain.get(event.underlying)
            if last is None or event.ts - last >= self._chain_every_ns:
                self._engine(event.underlying).on_chain(event)
                self._last_chain[event.underlying] = event.ts
            return []
        if isinstance(event, Quote):
            self._engine(event.symbol).on_quote(event)
            return []
        if isinstance(event, Trade):
            self._engine(event.symbol).on_trade(event)
            return []
        raise ValueError(f"features stage cannot handle {type(event).__name__} on {topic}")

    def finish(self, now_ns: int) -> list[Output]:
        return []
