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

With ``DREAMBOT_MARKET_DATA=polygon`` it runs the live Polygon feed instead, the same one
``dreambot run --live`` runs (:class:`services.ingest.polygon_live.PolygonLiveFeed`, settings
``POLYGON_*``): free-running, each arrival published at once, the heartbeat on its timer.

Metrics: besides the events published per topic, ``dreambot_market_data_age_seconds{symbol}`` — wall-clock
seconds since the symbol's last event on the live feed, replay-clock seconds in a replay
(:class:`services.ingest.hooks.IngestHooks`).

Built by the composition root (:func:`services.app.services.run_stage`) from the session's
SessionConfig; ``--help`` lists the flags, ``--check`` validates the configuration and exits.
"""

from __future__ import annotations

from services.app.services import run_stage


def main() -> int:
    return run_stage("ingest")


if __name__ == "__main__":
    raise SystemExit(main())
