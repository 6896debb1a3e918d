"""A running risk stage re-reads the calibration's risk_multiplier at the next session open.

Caps are risk.yaml's scaled by the multiplier (clamped to ``risk_multiplier_max``):
max_contracts_per_order 8 -> floor(8 x 0.5) = 4 at 0.5; an intent for 8 contracts is capped to it.
"""

from __future__ import annotations

from pathlib import Path

from ops.nightly_calibration import publish
from services.core import topics
from services.core.calibration_watch import CalibrationWatch
from services.core.events import FeatureVector, OrderRequest
from services.risk.config import RiskConfig, risk_multiplier_of
from services.risk.stage import RiskStage
from tests.unit.risk.support import Harness, make_intent, ny_ns

CONFIG = RiskConfig(max_contracts_per_order=8, max_premium_per_symbol_usd=1e6, max_premium_total_usd=1e6,
                    max_open_positions=100)


def _stage(path: Path, t0: int, *, reload: bool = True) -> tuple[RiskStage, Harness]:
    watch = CalibrationWatch(path, path.name, risk_multiplier_of, stage="risk", reload=reload)
    start = watch.start()
    h = Harness(CONFIG, risk_multiplier=1.0 if start is None else start, t0=t0)
    return RiskStage(h.engine, h.clock, None, watch), h


def _approved_quantity(stage: RiskStage, h: Harness, iid: str, ts: int) -> int:
    h.heartbeat(ts)
    stage.handle(topics.FEATURES, FeatureVector(ts=ts, symbol="SPY", values={"close": 600.0}))
    out = stage.handle(topics.SIGNALS, make_intent(iid, ts, quantity=8, contract=f"SPY250708C0062{iid}000"))
    order = out[0].event
    assert isinstance(order, OrderRequest), order
    return order.quantity


def test_the_multiplier_published_overnight_caps_the_next_session_not_this_one(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    publish({"risk_multiplier": 1.0}, path)
    day1 = ny_ns(2025, 7, 8, 10, 0)
    stage, h = _stage(path, day1)
    assert _approved_quantity(stage, h, "1", day1) == 8

    publish({"risk_multiplier": 0.5, "inputs": {"first_session": "2025-04-09", "last_session": "2025-07-08"}}, path)
    assert _approved_quantity(stage, h, "2", ny_ns(2025, 7, 8, 14, 0)) == 8  # same session: unchanged

    assert _approved_quantity(stage, h, "3", ny_ns(2025, 7, 9, 10, 0)) == 4  # next session: floor(8 x 0.5)
    assert h.engine.snapshot().risk_multiplier == 0.5


def test_risk_never_grows_past_risk_multiplier_max_and_keeps_its_value_on_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    publish({"risk_multiplier": 0.5}, path)
    day1 = ny_ns(2025, 7, 8, 10, 0)
    stage, h = _stage(path, day1)
    assert _approved_quantity(stage, h, "1", day1) == 4

    publish({"risk_multiplier": 3.0}, path)  # clamped to risk_multiplier_max (1.0): 8, not 24
    assert _approved_quantity(stage, h, "2", ny_ns(2025, 7, 9, 10, 0)) == 8

    publish({"risk_multiplier": -1}, path)  # refused: keeps 1.0 (from the 3.0 clamped)
    assert _approved_quantity(stage, h, "3", ny_ns(2025, 7, 10, 10, 0)) == 8
    assert stage.calibration is not None and stage.calibration.refusals == 1


def test_a_pinned_risk_stage_ignores_a_republished_file(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    publish({"risk_multiplier": 1.0}, path)
    day1 = ny_ns(2025, 7, 8, 10, 0)
    stage, h = _stage(path, day1, reload=False)
    publish({"risk_multiplier": 0.25}, path)
    assert _approved_quantity(stage, h, "1", ny_ns(2025, 7, 9, 10, 0)) == 8
