"""The money alerts end to end: a real Prometheus loads charts/dreambot/files/alerts.yaml and scrapes the
/metrics of the risk stage's hooks (the day's PnL against its loss limit) and of the OMS's hooks around
the real TradierBroker talking to the Tradier sim with a refused token; the alerts fire in Prometheus
as the stages' own numbers cross the thresholds.

What it proves beyond the promtool unit tests: the names the code exports are the names the rules
query (``_total`` suffixes, the ``stage`` label), and the first broker error is seen as an increase.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.core import topics
from services.core.clock import ReplayClock
from services.core.events import OrderRequest
from services.core.health import HealthServer
from services.core.metrics import StageMetrics
from services.core.session_config import TradierRetry
from services.core.state import MemoryState
from services.oms.audit import AuditLog
from services.oms.brokers.tradier import TradierAuthError, TradierBroker
from services.oms.config import BrokerConfig, TradierConfig
from services.oms.engine import OrderManager
from services.oms.hooks import OmsHooks, ResumableAudit
from services.risk.config import RiskConfig
from services.runtime.service import GuardedWrites
from services.sim import SimServer
from services.sim.tradier import TradierSim
from tests.harness.prometheus_server import PrometheusServer
from tests.unit.risk.support import T0 as RISK_T0
from tests.unit.risk.test_metrics import Service, outcome
from tests.unit.sim.conftest import ACCOUNT, TRADIER_TOKEN

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
ALERTS = ROOT / "charts" / "dreambot" / "files" / "alerts.yaml"
SESSION = "money"
NS = 1_000_000_000


class RulesPrometheus(PrometheusServer):
    """The harness's Prometheus with the chart's alert rules loaded."""

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "rule_files": [str(ALERTS)]}

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/alerts", timeout=5) as resp:
            return list(json.loads(resp.read())["data"]["alerts"])

    def firing(self) -> dict[str, dict[str, Any]]:
        return {a["labels"]["alertname"]: a for a in self.alerts() if a["state"] == "firing"}

    def wait_firing(self, name: str, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.firing().get(name)
            if found is not None:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{name} did not fire within {timeout_s}s; alerts: {self.alerts()}")


@pytest.fixture
def stages(tmp_path: Path) -> Iterator[tuple[Service, OmsHooks, TradierBroker, list[HealthServer]]]:
    risk = Service(RiskConfig(max_daily_loss_usd=1000), live=False)
    sim = TradierSim(TRADIER_TOKEN, ACCOUNT)
    server = SimServer(sim.app()).start()
    clock = ReplayClock(RISK_T0)
    config = TradierConfig(base_url=f"{server.url}/v1", request_timeout_secs=0.5,
                           retry=TradierRetry(max_attempts=2, backoff_initial_secs=0.01, backoff_max_secs=0.02,
                                              budget_secs=1.0))
    broker = TradierBroker(config, clock, access_token="tt-REVOKED-0000", account_id=ACCOUNT, env={})
    manager = OrderManager(broker, clock, BrokerConfig(broker="tradier", tradier=config))
    oms_metrics = StageMetrics("oms")
    oms = OmsHooks(oms_metrics, manager, ResumableAudit(AuditLog(tmp_path / "audit.jsonl")),
                   GuardedWrites(MemoryState(), oms_metrics), clock)
    servers = [HealthServer(risk.metrics.registry, lambda: [], 0, "127.0.0.1").start(),
               HealthServer(oms_metrics.registry, lambda: [], 0, "127.0.0.1").start()]
    try:
        yield risk, oms, broker, servers
    finally:
        for s in servers:
            s.close()
        broker.close()
        server.stop()


def test_daily_loss_and_broker_auth_alerts_fire_in_prometheus_from_the_stages_metrics(
        stages: tuple[Service, OmsHooks, TradierBroker, list[HealthServer]]) -> None:
    risk, _oms, broker, servers = stages
    risk.features("SPY", RISK_T0)  # the risk gauges exist: PnL 0 of a 1000 USD limit
    prom = RulesPrometheus([f"127.0.0.1:{s.port}" for s in servers], labels={"session": SESSION}).start()
    try:
        prom.wait_for('dreambot_daily_loss_limit_usd{stage="risk"} == 1000')
        prom.wait_for('dreambot_broker_errors_total{stage="oms",kind="auth"} == 0')
        time.sleep(2.0)  # a couple of rule evaluations with everything quiet
        money = {"DreamBotDailyLossNearLimit", "DreamBotDailyLossLimitReached", "DreamBotBrokerAuthFailed"}
        assert money & {a["labels"]["alertname"] for a in prom.alerts()} == set()

        # -850 of 1000: past 80 %, not at the limit.
        risk.send(topics.OUTCOMES, outcome("o1", RISK_T0 + 60 * NS, -850.0))
        near = prom.wait_firing("DreamBotDailyLossNearLimit")
        assert near["labels"] == {"alertname": "DreamBotDailyLossNearLimit", "session": SESSION, "severity": "warning"}
        assert near["annotations"]["description"].startswith("Daily PnL is -850.00 USD")
        assert near["annotations"]["runbook_url"].endswith("/ops/runbook.md#dreambotdailylossnearlimit")
        assert "DreamBotDailyLossLimitReached" not in prom.firing()

        # Another -200: -1050, past the limit (risk engaged the kill switch too).
        risk.send(topics.OUTCOMES, outcome("o2", RISK_T0 + 120 * NS, -200.0))
        reached = prom.wait_firing("DreamBotDailyLossLimitReached")
        assert reached["labels"]["severity"] == "critical"
        assert reached["annotations"]["description"].startswith("Daily PnL is -1050.00 USD")
        prom.wait_firing("DreamBotKillSwitchEngaged")
        deadline = time.monotonic() + 10
        while "DreamBotDailyLossNearLimit" in prom.firing() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "DreamBotDailyLossNearLimit" not in prom.firing(), "at the limit only the critical one fires"

        # The venue refuses the token: one 401, counted, and the alert fires on that first error.
        request = OrderRequest(ts=RISK_T0, id="r1", intent_id="i-r1", underlying="SPY", contract="SPY250708C00620000",
                               side="buy", quantity=1, limit_price=1.5, take_profit=2.0, stop_loss=1.0)
        with pytest.raises(TradierAuthError):
            broker.submit_otoco(request, "r1")
        auth = prom.wait_firing("DreamBotBrokerAuthFailed")
        assert auth["labels"] == {"alertname": "DreamBotBrokerAuthFailed", "session": SESSION, "severity": "critical"}
    finally:
        prom.stop()
