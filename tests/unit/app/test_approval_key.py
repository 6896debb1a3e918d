"""Services-mode risk and OMS need the session's approval key; embedded sessions share one in-process."""

from __future__ import annotations

import pytest

from services.app.stage_builders import check_stage
from services.app.stages import build_stages
from services.backtest.embedded import EmbeddedSession
from services.core.calendar import default_calendar
from services.core.clock import ReplayClock
from services.core.session_config import SessionConfig, load_session_config
from services.core.state import MemoryState
from services.oms.stage import OmsStage
from services.risk.stage import RiskStage

KEY = "approval-key-for-unit-tests-0123456789abcdef"


def _config(**env: str) -> SessionConfig:
    return load_session_config(environ={"DREAMBOT_CALIBRATION": "none", **env}, use_env_file=False).config


@pytest.mark.parametrize("stage", ["risk", "oms"])
def test_a_services_stage_without_the_key_refuses_to_start_with_one_line(
        stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_stage(stage, _config(), "prog") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("prog: error: services mode needs risk's approval key: set DREAMBOT_APPROVAL_KEY")


@pytest.mark.parametrize("stage", ["risk", "oms"])
def test_a_short_key_is_refused(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_stage(stage, _config(DREAMBOT_APPROVAL_KEY="short"), "prog") == 2
    assert "has 5 characters; set DREAMBOT_APPROVAL_KEY (at least 32 characters" in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["risk", "oms"])
def test_a_services_stage_with_the_key_builds(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_stage(stage, _config(DREAMBOT_APPROVAL_KEY=KEY), "prog") == 0
    assert capsys.readouterr().out.startswith(f"{stage}: ok")


def test_embedded_risk_and_oms_share_a_key_that_no_other_session_has() -> None:
    config = _config()
    stages = build_stages(config, ReplayClock(), MemoryState(), default_calendar())
    risk = next(s for s in stages if isinstance(s, RiskStage))
    oms = next(s for s in stages if isinstance(s, OmsStage))
    assert risk.approval_key is not None and oms.gate is not None and risk.approval_key is oms.gate.key
    other = _config(DREAMBOT_SESSION="another")
    others = build_stages(other, ReplayClock(), MemoryState(), default_calendar())
    assert next(s for s in others if isinstance(s, OmsStage)).gate.key is not risk.approval_key  # type: ignore[union-attr]


def test_an_embedded_replay_still_trades() -> None:
    from services.app.market_data import load_market_data
    from services.app.stages import build_replay_feed
    from services.core.datasets import SAMPLE_BARS

    session = EmbeddedSession(_config())
    data = load_market_data(["SPY"], SAMPLE_BARS)
    record = session.run(build_replay_feed(data.bars, session.state, session.calendar))
    assert record.orders and all(o.approval is not None for o in record.orders)
    # Every approved order passed the OMS's gate: each became a bracket at the broker.
    assert len(session.oms.book.brackets) == len(record.orders)
    assert record.fills


def test_an_embedded_session_refuses_an_injected_forged_order_and_carries_on() -> None:
    from services.core import topics
    from services.core.events import OrderRequest
    from services.core.stage import Output

    session = EmbeddedSession(_config())
    forged = OrderRequest(ts=1_752_069_600_000_000_000, id="forged", intent_id="i", underlying="SPY",
                          contract="SPY250709C00620000", side="buy", quantity=500, limit_price=1.5,
                          take_profit=2.0, stop_loss=1.0)
    session.publish(Output(topics.ORDERS, "SPY", forged))
    assert [(s, t, e.event_id, why) for s, t, e, why in session.refused] == [
        ("oms", topics.ORDERS, forged.event_id, "approval: order request forged carries no risk approval")]
    assert session.oms.book.brackets == {} and session.record.order_events == []
