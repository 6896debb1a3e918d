"""TradingSession spec -> the operator's session.yaml in the ConfigMap -> SessionConfig -> the risk and
signals stages, on a real API server: a risk override and a reduced playbook list are honoured."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from services.app.stages import build_risk, build_signals
from services.core.calendar import default_calendar
from services.core.clock import ReplayClock
from services.core.session_config import load_session_config
from services.core.state import MemoryState
from tests.k8s.conftest import Cluster, OperatorProcess, condition, wait_for


def test_the_operators_session_file_drives_the_stages(
    cluster: Cluster, operator: OperatorProcess, paper_session: dict[str, Any], tmp_path: Path
) -> None:
    body = copy.deepcopy(paper_session)
    body["spec"]["risk"] = {"maxDailyLoss": 321, "maxContractsPerOrder": 2}
    body["spec"]["playbooks"] = {"enabled": ["vwap_reversion_puts"]}
    cluster.apply(body)
    config_map = wait_for(lambda: cluster.get("configmap", "paper-etf-config"), 30, what="the session ConfigMap")

    # The stage's view: the ConfigMap mounted as its config folder, DREAMBOT_SESSION_FILE pointing in it.
    for name, text in config_map["data"].items():
        (tmp_path / name).write_text(text)
    oms = wait_for(lambda: cluster.get("deployment", "paper-etf-oms"), 30, what="the OMS Deployment")
    env = {e["name"]: e["value"] for e in oms["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in e}
    assert env["DREAMBOT_SESSION_FILE"].endswith("/session.yaml")
    env["DREAMBOT_SESSION_FILE"] = str(tmp_path / "session.yaml")
    env["DREAMBOT_CONFIG_DIR"] = str(tmp_path)
    loaded = load_session_config(environ=env, use_env_file=False)
    config = loaded.config
    assert config.name == "paper-etf" and config.risk.max_daily_loss_usd == 321
    assert loaded.origin(("risk", "max_daily_loss_usd")) == f"session file {tmp_path / 'session.yaml'}"

    calendar = default_calendar()
    risk = build_risk(config, ReplayClock(), MemoryState(), calendar).engine
    assert risk.config.max_daily_loss_usd == 321 and risk.config.max_contracts_per_order == 2
    signals = build_signals(config, calendar).engine
    enabled = [p.name for p in signals.config.playbooks if p.enabled]
    assert enabled == ["vwap_reversion_puts"]


def test_a_spec_the_stages_cannot_honour_is_refused_not_dropped(
    cluster: Cluster, operator: OperatorProcess, paper_session: dict[str, Any]
) -> None:
    body = copy.deepcopy(paper_session)
    body["spec"]["playbooks"] = {"enabled": ["no_such_playbook"]}
    cluster.apply(body)

    def refused() -> dict[str, Any] | None:
        session = cluster.get("tradingsession", "paper-etf")
        degraded = condition(session, "Degraded")
        return degraded if degraded and "no_such_playbook" in str(degraded.get("message")) else None

    degraded = wait_for(refused, 30, what="the Degraded condition")
    assert degraded["status"] == "True" and "unknown playbook" in degraded["message"]
    assert cluster.get("deployment", "paper-etf-oms") is None  # nothing was applied
