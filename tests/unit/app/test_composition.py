"""The composition root builds what SessionConfig says: the broker, the feed, the session's playbooks
and risk limits, and the calibration (or none) for signals and risk alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.app.stages import (
    approval_key,
    build_broker,
    build_feed,
    build_oms,
    build_risk,
    build_signals,
    require_paper,
    session_playbooks,
    session_risk,
)
from services.core import topics
from services.core.calendar import default_calendar
from services.core.clock import ReplayClock
from services.core.events import OrderRequest
from services.core.session_config import SessionConfig, load_session_config
from services.core.settings import ConfigError
from services.core.state import MemoryState
from services.oms.brokers.paper import PaperBroker
from services.oms.brokers.tradier import TradierBroker
from services.sim import SimServer
from services.sim.tradier import TradierSim
from tests.unit.sim.conftest import ACCOUNT, TRADIER_TOKEN

CAL = default_calendar()
T0 = 1_752_069_600_000_000_000  # 2025-07-09 10:00 New York


def _load(**env: str) -> SessionConfig:
    return load_session_config(environ=env, use_env_file=False).config


def test_paper_is_the_default_broker() -> None:
    config = _load()
    assert config.mode == "paper" and config.broker.provider == "paper"
    stage = build_oms(config, ReplayClock(T0), CAL)
    assert isinstance(stage.manager.broker, PaperBroker)


def test_a_tradier_config_builds_the_tradier_broker_and_its_orders_reach_the_venue(
        tradier: tuple[SimServer, TradierSim]) -> None:
    server, sim = tradier
    config = _load(DREAMBOT_BROKER="tradier", TRADIER_BASE_URL=f"{server.url}/v1",
                   TRADIER_ACCESS_TOKEN=TRADIER_TOKEN, TRADIER_ACCOUNT_ID=ACCOUNT)
    stage = build_oms(config, ReplayClock(T0), CAL)
    broker = stage.manager.broker
    assert isinstance(broker, TradierBroker)
    assert broker.connection.environment == "sandbox" and broker.connection.base_url == f"{server.url}/v1"
    request = OrderRequest(ts=T0, id="r1", intent_id="i-r1", underlying="SPY", contract="SPY250709C00620000",
                           side="buy", quantity=1, limit_price=1.50, take_profit=2.00, stop_loss=1.00)
    request = approval_key(config).sign(request)  # as risk, in this process, signs it
    out = list(stage.handle(topics.ORDERS, request))
    posted = [r for r in sim.requests if r["method"] == "POST"]
    assert len(posted) == 1, "the order went to the Tradier sim"
    assert any(o.event.status in ("accepted", "working") for o in out)  # type: ignore[union-attr]
    assert TRADIER_TOKEN not in repr(config) and TRADIER_TOKEN not in repr(broker)


def test_broker_yaml_chooses_the_broker_when_nothing_overrides_it(tmp_path: Path) -> None:
    from services.core.settings import CONFIG_DIR

    for f in CONFIG_DIR.glob("*.yaml"):
        (tmp_path / f.name).write_text(f.read_text())
    text = (tmp_path / "broker.yaml").read_text().replace("broker: paper ", "broker: tradier ", 1)
    (tmp_path / "broker.yaml").write_text(text)
    loaded = load_session_config(environ={"DREAMBOT_CONFIG_DIR": str(tmp_path), "TRADIER_ACCESS_TOKEN": "t",
                                          "TRADIER_ACCOUNT_ID": "a"}, use_env_file=False)
    assert loaded.config.broker.provider == "tradier"
    assert loaded.origin(("broker", "provider")) == str(tmp_path / "broker.yaml")
    assert isinstance(build_broker(loaded.config, ReplayClock(T0)), TradierBroker)


@pytest.mark.parametrize(("env", "message"), [
    ({"DREAMBOT_MODE": "live", "DREAMBOT_LIVE_CONFIRM": "true"}, "mode live with the paper broker"),
    ({"DREAMBOT_MODE": "live", "DREAMBOT_BROKER": "tradier"}, "set live_confirm"),
    ({"DREAMBOT_BROKER": "tradier", "TRADIER_ENVIRONMENT": "live"}, "mode paper with a live Tradier account"),
])
def test_unsafe_combinations_are_refused_with_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(**env)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_live_tradier_needs_the_credentials_from_the_environment() -> None:
    config = _load(DREAMBOT_MODE="live", DREAMBOT_LIVE_CONFIRM="true", DREAMBOT_BROKER="tradier",
                   TRADIER_ENVIRONMENT="live")
    with pytest.raises(ConfigError, match="TRADIER_ACCESS_TOKEN"):
        build_broker(config, ReplayClock(T0))


def test_embedded_runners_trade_paper_only() -> None:
    config = _load(DREAMBOT_BROKER="tradier", TRADIER_ACCESS_TOKEN="t", TRADIER_ACCOUNT_ID="a")
    with pytest.raises(ConfigError, match="paper broker"):
        require_paper(config, "`dreambot run`")


def test_the_feed_is_the_configured_replay(tmp_path: Path) -> None:
    from services.core.datasets import SAMPLE_BARS

    config = _load(DREAMBOT_REPLAY_SOURCE=str(SAMPLE_BARS))
    assert config.market_data.source == "replay"
    outs = list(build_feed(config, MemoryState(), CAL))
    bars = [o for o in outs if o.topic == topics.MD_BARS]
    assert len(bars) > 300 and all(o.event.symbol == "SPY" for o in bars)  # type: ignore[union-attr]
    synthetic = list(build_feed(_load(DREAMBOT_REPLAY_SESSIONS="2"), None, CAL))
    days = {o.event.ts // 86_400_000_000_000 for o in synthetic if o.topic == topics.MD_BARS}
    assert len(days) == 2
    with pytest.raises(ConfigError, match="polygon needs POLYGON_API_KEY"):
        build_feed(_load(DREAMBOT_MARKET_DATA="polygon"), None, CAL)
    with pytest.raises(ConfigError, match="no capture there"):
        build_feed(_load(DREAMBOT_MARKET_DATA="capture", DREAMBOT_REPLAY_SOURCE=str(tmp_path / "none.jsonl")),
                   None, CAL)


def test_calibration_none_turns_calibration_off_for_signals_and_risk(tmp_path: Path) -> None:
    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps({"risk_multiplier": 0.5, "pot_threshold": 0.9}))
    on = _load(DREAMBOT_CALIBRATION=str(cal))
    assert build_signals(on, CAL).engine.calibration.pot_threshold == 0.9
    assert build_risk(on, ReplayClock(T0), MemoryState(), CAL).engine.limits.risk_multiplier == 0.5
    off = _load(DREAMBOT_CALIBRATION="none")
    assert off.calibration.path is None
    defaults = session_playbooks(off).calibration
    signals = build_signals(off, CAL).engine.calibration
    assert signals.source == "defaults" and signals.pot_threshold == defaults.pot_threshold
    assert build_risk(off, ReplayClock(T0), MemoryState(), CAL).engine.limits.risk_multiplier == 1.0


def test_session_playbook_selection_and_overrides() -> None:
    config = SessionConfig(playbooks={"enabled": ["orb_calls", "orb_puts"],
                                      "overrides": {"orb_calls": {"symbols": ["SPY"]}}})
    playbooks = session_playbooks(config)
    enabled = {p.name: p for p in playbooks.playbooks if p.enabled}
    assert set(enabled) == {"orb_calls", "orb_puts"}
    assert enabled["orb_calls"].symbols == ("SPY",) or list(enabled["orb_calls"].symbols) == ["SPY"]
    with pytest.raises(ConfigError, match="unknown playbook"):
        session_playbooks(SessionConfig(playbooks={"enabled": ["no_such_playbook"]}))
    with pytest.raises(ConfigError, match="orb_calls"):
        session_playbooks(SessionConfig(playbooks={"overrides": {"orb_calls": {"sizing": {"bogus": 1}}}}))


def test_session_risk_overrides_merge_over_risk_yaml() -> None:
    base = session_risk(SessionConfig())
    risk = session_risk(SessionConfig(risk={"max_daily_loss_usd": 250, "max_orders_per_minute": 2}))
    assert risk.max_daily_loss_usd == 250 and risk.throttle.max_orders_per_minute == 2
    assert risk.max_open_positions == base.max_open_positions
