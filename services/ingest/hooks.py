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
from collections.abc import Iterable, Iterator

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


class IngestHooks(ServiceHooks):
    def __init__(self, metrics: StageMetrics, heartbeat: BestEffortState) -> None:
        super().__init__(metrics)
        self.heartbeat = heartbeat

    def replaying(self, active: bool) -> None:
        if active:
            self.heartbeat.muted = True
        else:
            self.heartbeat.release()

    def injected(self, root: Output) -> None:
        self.metrics.count_out(root.topic)
