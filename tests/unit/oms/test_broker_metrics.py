"""The OMS service's broker-error and reconciliation metrics, read from its Prometheus registry: the real
TradierBroker against the Tradier sim (a real HTTP server on 127.0.0.1) with its faults, the real
OrderManager and OmsHooks as the service wires them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.core.clock import ReplayClock
from services.core.events import OrderEvent, OrderRequest
from services.core.metrics import StageMetrics
from services.core.session_config import TradierRetry
from services.core.state import MemoryState
from services.oms.audit import AuditLog
from services.oms.brokers.tradier import TradierAuthError, TradierBroker
from services.oms.config import BrokerConfig, TradierConfig
from services.oms.engine import OrderManager
from services.oms.hooks import OmsHooks, ResumableAudit
from services.runtime.service import GuardedWrites
from services.sim import SimServer
from services.sim.tradier import TradierSim
from tests.unit.sim.conftest import ACCOUNT, TRADIER_TOKEN

NS = 1_000_000_000
T0 = int(dt.datetime(2025, 7, 9, 14, 0, tzinfo=dt.UTC).timestamp()) * NS  # 10:00 New York
C620 = "SPY250709C00620000"
P615 = "SPY250709P00615000"
HEADERS = {"Authorization": f"Bearer {TRADIER_TOKEN}", "Accept": "application/json"}


@pytest.fixture
def venue() -> Iterator[SimServer]:
    sim = TradierSim(TRADIER_TOKEN, ACCOUNT)
    server = SimServer(sim.app()).start()
    yield server
    server.stop()


class Oms:
    def __init__(self, server: SimServer, tmp: Path, token: str = TRADIER_TOKEN, **kw: Any) -> None:
        base: dict[str, Any] = {
            "base_url": f"{server.url}/v1", "request_timeout_secs": 0.3, "poll_interval_secs": 0.05,
            "status_timeout_secs": 0.5, "reconcile_interval_secs": 1.0,
            "retry": TradierRetry(max_attempts=4, backoff_initial_secs=0.02, backoff_max_secs=0.05, budget_secs=2.0),
        }
        base.update(kw)
        config = TradierConfig(**base)
        self.clock = ReplayClock(T0)
        self.broker = TradierBroker(config, self.clock, access_token=token, account_id=ACCOUNT, env={})
        self.manager = OrderManager(self.broker, self.clock, BrokerConfig(broker="tradier", tradier=config))
        self.metrics = StageMetrics("oms")
        audit = ResumableAudit(AuditLog(tmp / "audit.jsonl"))
        self.hooks = OmsHooks(self.metrics, self.manager, audit, GuardedWrites(MemoryState(), self.metrics),
                              self.clock)

    def errors(self, kind: str) -> float | None:
        return self.metrics.registry.get_sample_value("dreambot_broker_errors_total", {"stage": "oms", "kind": kind})

    def reconciled(self) -> float | None:
        return self.metrics.registry.get_sample_value("dreambot_reconciled", {"stage": "oms"})


def request(rid: str, contract: str = C620) -> OrderRequest:
    return OrderRequest(ts=T0, id=rid, intent_id=f"i-{rid}", underlying="SPY", contract=contract, side="buy",
                        quantity=1, limit_price=1.50, take_profit=2.00, stop_loss=1.00)


def fault(server: SimServer, **spec: Any) -> None:
    assert httpx.post(f"{server.url}/sim/faults", json=spec).status_code == 200, spec


def test_429s_and_5xx_are_counted_per_failed_attempt(venue: SimServer, tmp_path: Path) -> None:
    oms = Oms(venue, tmp_path)
    fault(venue, endpoint="place", status=429, retry_after=0.05, times=2)
    fault(venue, endpoint="orders", status=503, times=3)
    events = oms.broker.submit_otoco(request("r1"), "r1")
    assert any(e.leg == "entry" and e.status == "accepted" for e in events)
    assert oms.errors("http_429") == 2.0
    assert oms.errors("http_5xx") == 3.0
    assert oms.errors("timeout") == 0.0 and oms.errors("rejected") == 0.0  # exported at 0 from the start


def test_a_timeout_is_counted_as_a_timeout(venue: SimServer, tmp_path: Path) -> None:
    oms = Oms(venue, tmp_path)
    fault(venue, endpoint="place", status="timeout", accept="before", delay_s=1.0)
    oms.broker.submit_otoco(request("r1"), "r1")
    assert oms.errors("timeout") == 1.0


def test_an_order_the_venue_refuses_is_counted_as_rejected(venue: SimServer, tmp_path: Path) -> None:
    oms = Oms(venue, tmp_path)
    events = oms.broker.submit_market("f1", "SPY", C620, "sell", 0)  # quantity 0: the venue answers 400 errors
    assert [e.status for e in events] == ["rejected"]
    assert oms.errors("rejected") == 1.0 and oms.errors("http_4xx") == 0.0


def test_a_refused_token_is_counted_once(venue: SimServer, tmp_path: Path) -> None:
    oms = Oms(venue, tmp_path, token="tt-WRONG-0000")
    assert oms.errors("auth") == 0.0  # there before the first error, so an alert sees it rise
    with pytest.raises(TradierAuthError):
        oms.broker.submit_otoco(request("r1"), "r1")
    with pytest.raises(TradierAuthError):
        oms.broker.submit_otoco(request("r2"), "r2")  # refused by the broker itself: no request, no count
    assert oms.errors("auth") == 1.0


def test_reconciled_is_0_until_book_and_venue_agree(venue: SimServer, tmp_path: Path) -> None:
    assert httpx.post(f"{venue.url}/sim/positions", json={"symbol": P615, "quantity": 3,
                                                         "cost_basis": 420.0}).status_code == 200
    oms = Oms(venue, tmp_path)
    assert oms.reconciled() == 0.0  # nothing read from the venue yet
    refused = oms.manager.on_order_request(request("r1"))
    assert [(e.leg, e.status) for e in refused if isinstance(e, OrderEvent)] == [("entry", "rejected")]
    oms.hooks.round_completed(-1, 0)
    assert oms.reconciled() == 0.0  # the venue holds 3 P615 the book does not know
    httpx.post(f"{venue.url}/sim/positions", json={"symbol": P615, "quantity": 0})
    oms.clock.advance_to(T0 + 2 * NS)  # past reconcile_interval_secs: the next look
    oms.manager.check_venue()
    oms.hooks.periodic()
    assert oms.reconciled() == 1.0


def test_a_paper_session_is_reconciled_after_its_first_look(tmp_path: Path) -> None:
    from services.oms.brokers.paper import PaperBroker

    clock = ReplayClock(T0)
    manager = OrderManager(PaperBroker(clock), clock, BrokerConfig())
    metrics = StageMetrics("oms")
    hooks = OmsHooks(metrics, manager, ResumableAudit(AuditLog(tmp_path / "a.jsonl")),
                     GuardedWrites(MemoryState(), metrics), clock)
    assert metrics.registry.get_sample_value("dreambot_reconciled", {"stage": "oms"}) == 0.0
    manager.check_venue()
    hooks.round_completed(-1, 0)
    assert metrics.registry.get_sample_value("dreambot_reconciled", {"stage": "oms"}) == 1.0
