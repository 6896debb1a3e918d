"""Logical StateStore keys (stores prefix them with the session: ``<session>:<key>``).

The values more than one component reads have their schema in :mod:`services.core.shared_state`.
"""

from __future__ import annotations

from typing import Final

KILL_SWITCH: Final = "dreambot:kill_switch"  # shared_state.KillSwitchState {engaged, reason, ts, source}
KILL_SWITCH_AUDIT: Final = "dreambot:kill_switch_audit"  # stream of shared_state.KillSwitchAudit (who, when, why)
INGEST_HEARTBEAT: Final = "dreambot:ingest_heartbeat"  # shared_state.IngestHeartbeat {ts, seq}
OMS_METRICS_STREAM: Final = "dreambot:oms_metrics"  # overridable with OMS_METRIC_STREAM
POSITIONS: Final = "dreambot:positions"  # shared_state.OmsSnapshot: the OMS's orders and positions
FLATTEN_REQUEST: Final = "dreambot:flatten_request"  # shared_state.FlattenRequest {nonce, ts, source}
FLATTEN_ACK: Final = "dreambot:flatten_ack"  # shared_state.FlattenAck: the request the OMS acted on last
LEARNER_STATE: Final = "dreambot:learner_state"  # the learner's own (services.learner.stage)
LEARNER_VIEW: Final = "dreambot:learner_view"  # shared_state.LearnerView: arms, model, regimes (for the console)


def latest_features(symbol: str) -> str:
    """Key of the newest FeatureVector of ``symbol``."""
    return f"dreambot:features:{symbol}"
