"""Logical StateStore keys (stores prefix them with the session: ``<session>:<key>``)."""

from __future__ import annotations

from typing import Final

KILL_SWITCH: Final = "dreambot:kill_switch"  # JSON {"engaged": bool, "reason": str, "ts": ns}
INGEST_HEARTBEAT: Final = "dreambot:ingest_heartbeat"  # JSON {"ts": ns, "seq": int}
OMS_METRICS_STREAM: Final = "dreambot:oms_metrics"  # overridable with OMS_METRIC_STREAM
POSITIONS: Final = "dreambot:positions"  # JSON snapshot of open orders and positions
LEARNER_STATE: Final = "dreambot:learner_state"


def latest_features(symbol: str) -> str:
    """Key of the newest FeatureVector of ``symbol``."""
    return f"dreambot:features:{symbol}"
