"""The ingest service: replays market data onto the md.* topics (``python -m services.ingest.main``).

The source is ``DREAMBOT_REPLAY_SOURCE`` (a bars file or flat-file folder; ``DREAMBOT_REPLAY_TABLE`` and
``DREAMBOT_REPLAY_TZ`` as for the backtest) or, when unset, deterministic synthetic bars
(``DREAMBOT_REPLAY_SESSIONS``). It is the same feed a backtest replays
(:func:`services.app.stages.build_replay_feed`): chains, modeled quotes and bars per bar, the ingest
heartbeat written to Redis as it goes (a failed write is logged and counted, never fatal).

With ``DREAMBOT_REPLAY_LOCKSTEP=true`` (default) the ingest is the lockstep's source: it publishes the
next event only when the pipeline has finished with the previous one (:mod:`services.runtime.lockstep`),
so the run equals the embedded one byte for byte, and a restarted ingest continues where it stopped.
Without lockstep it publishes as fast as ``DREAMBOT_REPLAY_RATE`` allows and then idles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from services.core.events import Bar, ChainSnapshot, Event, Quote, Trade
from services.core.metrics import StageMetrics
from services.core.stage import Output
from services.runtime.service import (
    BestEffortState,
    ServiceHooks,
)


def paced(outputs: Iterable[Output], rate: float) -> Iterator[Output]:
    """``outputs`` at most ``rate`` per second (0: unpaced)."""
    if rate <= 0:
        yield from outputs
        return
    interval = 1.0 / rate
    next_at = time.monotonic()
    for out in outputs:
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_at = max(next_at + interval, time.monotonic() - 1.0)
        yield out


def market_symbol(event: Event) -> str | None:
    """The underlying a market-data event is about (None for anything else)."""
    if isinstance(event, Bar | Quote | Trade):
        return event.symbol
    if isinstance(event, ChainSnapshot):
        return event.underlying
    return None


class IngestHooks(ServiceHooks):
    """Counts what the feed publishes and exports ``dreambot_market_data_age_seconds{symbol}``: on a live
    feed (``live``) wall-clock seconds since the symbol's last event was published; in a replay, on the
    replay clock: the newest event time of any symbol minus the symbol's newest (wall time means nothing
    to a recording played at any rate). Set on the runner's periodic tick and after each round."""

    def __init__(self, metrics: StageMetrics, heartbeat: BestEffortState, *, live: bool = False,
                 wall_s: Callable[[], float] = time.monotonic) -> None:
        super().__init__(metrics)
        self.heartbeat = heartbeat
        self.live = live
        self._wall_s = wall_s
        self._last: dict[str, float] = {}  # symbol -> wall_s() (live) or event time in ns (replay)
        self._newest_ts = 0

    def replaying(self, active: bool) -> None:
        if active:
            self.heartbeat.muted = True
        else:
            self.heartbeat.release()

    def injected(self, root: Output) -> None:
        self.metrics.count_out(root.topic)
        symbol = market_symbol(root.event)
        if symbol is None:
            return
        if self.live:
            self._last[symbol] = self._wall_s()
        else:
            ts = root.event.ts
            self._newest_ts = max(self._newest_ts, ts)
            self._last[symbol] = max(self._last.get(symbol, ts), ts)

    def round_completed(self, number: int, root_wall_ns: int) -> None:
        super().round_completed(number, root_wall_ns)
        self.export_ages()

    def periodic(self) -> None:
        self.export_ages()

    def export_ages(self) -> None:
        """Set the market-data age of every symbol seen."""
        m = self.metrics
        now = self._wall_s() if self.live else self._newest_ts
        scale = 1.0 if self.live else 1e-9
        for symbol, last in self._last.items():
            m.market_data_age.labels(m.stage, symbol).set(max(now - last, 0) * scale)
