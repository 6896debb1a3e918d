"""The real TradierBroker and OrderManager against the Tradier sim over HTTP on 127.0.0.1: lost answers,
5xx, 429 with Retry-After and a degraded venue never double an order (counted by tag at the sim);
start-up reconciliation adopts own orders and refuses entries while the venue holds what the book does
not; bad credentials are one line after one request; the composition root builds it all from a
SessionConfig pointed at the sim.

The sim runs in a thread of this process (:class:`services.sim.SimServer`), a real aiohttp server on a
free port; nothing is mocked between the client and it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.app.stages import approval_key, build_oms
from services.core.calendar import default_calendar
from services.core.clock import ReplayClock
from services.core.events import OptionQuote, OrderEvent, OrderRequest, RiskCommand, encode_json
from services.core.session_config import TradierRetry, load_session_config
from services.oms.brokers.tradier import TradierAuthError, TradierBroker
from services.oms.brokers.tradier_parsing import tag_for
from services.oms.config import BrokerConfig, TradierConfig
from services.oms.engine import OrderManager
from services.sim import SimServer
from services.sim.tradier import TradierSim
from tests.unit.sim.conftest import ACCOUNT, TRADIER_TOKEN

pytestmark = pytest.mark.integration

NS = 1_000_000_000
T0 = int(dt.datetime(2025, 7, 9, 14, 0, tzinfo=dt.UTC).timestamp()) * NS  # 10:00 New York
C620 = "SPY250709C00620000"
P615 = "SPY250709P00615000"


@pytest.fixture
def venue() -> Iterator[tuple[SimServer, TradierSim]]:
    sim = TradierSim(TRADIER_TOKEN, ACCOUNT)
    server = SimServer(sim.app()).start()
    yield server, sim
    server.stop()


def tradier_config(server: SimServer, **kw: Any) -> TradierConfig:
    base: dict[str, Any] = {
        "base_url": f"{server.url}/v1",
        "request_timeout_secs": 0.3,
        "poll_interval_secs": 0.05,
        "status_timeout_secs": 2.0,
        "reconcile_interval_secs": 1.0,
        "retry": TradierRetry(max_attempts=4, backoff_initial_secs=0.05, backoff_max_secs=0.2, budget_secs=3.0),
    }
    base.update(kw)
    return TradierConfig(**base)


def make_broker(server: SimServer, clock: ReplayClock, token: str = TRADIER_TOKEN, **kw: Any) -> TradierBroker:
    return TradierBroker(tradier_config(server, **kw), clock, access_token=token, account_id=ACCOUNT, env={})


def make_oms(server: SimServer, clock: ReplayClock, **kw: Any) -> OrderManager:
    broker = make_broker(server, clock, **kw)
    return OrderManager(broker, clock, BrokerConfig(broker="tradier", tradier=broker.config))


def request(rid: str, contract: str = C620, qty: int = 2) -> OrderRequest:
    return OrderRequest(ts=T0, id=rid, intent_id=f"i-{rid}", underlying="SPY", contract=contract, side="buy",
                        quantity=qty, limit_price=1.50, take_profit=2.00, stop_loss=1.00)


def quote(s: float, bid: float, ask: float, contract: str = C620) -> OptionQuote:
    return OptionQuote(ts=T0 + int(s * NS), symbol=contract, underlying="SPY", expiry="2025-07-09",
                       strike=620.0 if contract == C620 else 615.0, right="C" if contract == C620 else "P",
                       bid=bid, ask=ask, bid_size=10, ask_size=10, underlying_price=620.1)


def post_quote(server: SimServer, q: OptionQuote) -> None:
    assert httpx.post(f"{server.url}/sim/quotes", content=encode_json(q)).status_code == 200


def fault(server: SimServer, **spec: Any) -> None:
    assert httpx.post(f"{server.url}/sim/faults", json=spec).status_code == 200, spec


def orders_tagged(server: SimServer, tag: str) -> list[dict[str, Any]]:
    """The venue's orders carrying ``tag``, read over its own API (what a person would count)."""
    doc = httpx.get(f"{server.url}/v1/accounts/{ACCOUNT}/orders", params={"includeTags": "true"},
                    headers={"Authorization": f"Bearer {TRADIER_TOKEN}", "Accept": "application/json"}).json()
    orders = doc["orders"]
    if orders == "null":
        return []
    found = orders["order"] if isinstance(orders["order"], list) else [orders["order"]]
    return [o for o in found if o.get("tag") == tag]


def posts(sim: TradierSim) -> list[dict[str, Any]]:
    return [r for r in sim.requests if r["method"] == "POST"]


def statuses(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.leg, e.status) for e in events if isinstance(e, OrderEvent)]


# --- the sim behaves like the venue -------------------------------------------------------------


def test_the_sim_does_not_deduplicate_tags(venue: tuple[SimServer, TradierSim]) -> None:
    server, _ = venue
    form = {"class": "option", "tag": "db-same", "symbol": "SPY", "option_symbol": C620, "side": "buy_to_open",
            "quantity": "1", "type": "market", "duration": "day"}
    headers = {"Authorization": f"Bearer {TRADIER_TOKEN}", "Accept": "application/json"}
    ids = [httpx.post(f"{server.url}/v1/accounts/{ACCOUNT}/orders", data=form, headers=headers).json()["order"]["id"]
           for _ in range(2)]
    assert ids[0] != ids[1]
    assert len(orders_tagged(server, "db-same")) == 2


def test_a_429_carries_retry_after_and_tradiers_rate_limit_headers(venue: tuple[SimServer, TradierSim]) -> None:
    server, _ = venue
    fault(server, endpoint="positions", status=429, retry_after=2)
    headers = {"Authorization": f"Bearer {TRADIER_TOKEN}", "Accept": "application/json"}
    first = httpx.get(f"{server.url}/v1/accounts/{ACCOUNT}/positions", headers=headers)
    assert first.status_code == 429 and first.headers["Retry-After"] == "2"
    assert first.headers["X-Ratelimit-Available"] == "0"
    assert int(first.headers["X-Ratelimit-Expiry"]) > time.time() * 1000
    again = httpx.get(f"{server.url}/v1/accounts/{ACCOUNT}/positions", headers=headers)
    assert again.status_code == 200 and again.json() == {"positions": "null"}


# --- submissions whose answer was lost ----------------------------------------------------------


def test_a_timeout_after_the_venue_accepted_places_exactly_one_order(venue: tuple[SimServer, TradierSim]) -> None:
    server, sim = venue
    fault(server, endpoint="place", status="timeout", accept="before", delay_s=1.0)
    b = make_broker(server, ReplayClock(T0))
    events = b.submit_otoco(request("r1"), "r1")
    assert statuses(events)[:3] == [("entry", "accepted"), ("take_profit", "accepted"), ("stop_loss", "accepted")]
    assert b.submit_otoco(request("r1"), "r1")  # the same client id again: its state, no new POST
    assert len(posts(sim)) == 1
    assert len(orders_tagged(server, tag_for("r1"))) == 1
    assert b.entries_refused() is None


def test_a_500_after_the_venue_accepted_keeps_the_bracket_tracked(venue: tuple[SimServer, TradierSim]) -> None:
    server, sim = venue
    clock = ReplayClock(T0)
    oms = make_oms(server, clock)
    fault(server, endpoint="place", status=500, accept="before")
    out = oms.on_order_request(request("r1"))
    assert ("entry", "accepted") in statuses(out)
    bracket = oms.book.brackets["r1"]
    assert bracket.entry_id and bracket.take_profit_id and bracket.stop_loss_id, "every leg is tracked"
    post_quote(server, quote(1, 1.40, 1.48))
    filled = oms.on_option_quote(quote(1, 1.40, 1.48))
    assert ("entry", "filled") in statuses(filled)
    assert oms.positions.positions[C620].quantity == 2
    assert len(posts(sim)) == 1 and len(orders_tagged(server, tag_for("r1"))) == 1


def test_a_late_acceptance_is_adopted_and_never_sent_again(venue: tuple[SimServer, TradierSim]) -> None:
    """The answer times out and the order only appears after the lookup gave up: the submission is
    unresolved (entries refused), a poll adopts it once it shows, and nothing is posted twice."""
    server, sim = venue
    clock = ReplayClock(T0)
    oms = make_oms(server, clock, status_timeout_secs=0.2)
    fault(server, endpoint="place", status="timeout", accept="after", delay_s=0.8)
    assert statuses(oms.on_order_request(request("r1"))) == []
    assert oms.book.brackets["r1"].entry_id is None
    refused = oms.on_order_request(request("r2"))
    assert statuses(refused) == [("entry", "rejected")]
    assert isinstance(refused[0], OrderEvent) and "outcome" in refused[0].reason and tag_for("r1") in refused[0].reason
    time.sleep(1.0)  # the sim places r1 now
    found = oms.on_option_quote(quote(1, 1.40, 1.60))  # a market-data poll looks for it
    assert statuses(found)[:3] == [("entry", "accepted"), ("take_profit", "accepted"), ("stop_loss", "accepted")]
    assert oms.book.brackets["r1"].stop_loss_id is not None and oms.entries_refused() is None
    assert len(orders_tagged(server, tag_for("r1"))) == 1 and orders_tagged(server, tag_for("r2")) == []
    assert len(posts(sim)) == 1
    placed = oms.on_order_request(request("r3"))
    assert ("entry", "accepted") in statuses(placed) and len(posts(sim)) == 2


# --- rate limits and 5xx ------------------------------------------------------------------------


def test_a_429_is_retried_after_its_retry_after_and_places_one_order(venue: tuple[SimServer, TradierSim]) -> None:
    server, sim = venue
    b = make_broker(server, ReplayClock(T0))
    fault(server, endpoint="place", status=429, retry_after=0.4, times=2)
    started = time.monotonic()
    events = b.submit_otoco(request("r1"), "r1")
    waited = time.monotonic() - started
    assert ("entry", "accepted") in statuses(events)
    assert waited >= 0.8, f"two Retry-After waits of 0.4 s, got {waited:.3f}s"
    assert len(posts(sim)) == 3 and b.retries == 2  # two refused by the rate limiter, one placed
    assert len(orders_tagged(server, tag_for("r1"))) == 1


def test_5xx_on_reads_back_off_and_recover(venue: tuple[SimServer, TradierSim]) -> None:
    server, _ = venue
    b = make_broker(server, ReplayClock(T0))
    fault(server, endpoint="orders", status=503, times=2)
    events = b.submit_otoco(request("r1"), "r1")
    assert ("entry", "accepted") in statuses(events) and b.retries == 2
    assert len(orders_tagged(server, tag_for("r1"))) == 1


def test_past_the_budget_entries_are_refused_and_exits_still_worked(venue: tuple[SimServer, TradierSim]) -> None:
    server, sim = venue
    clock = ReplayClock(T0)
    oms = make_oms(server, clock, retry=TradierRetry(max_attempts=20, backoff_initial_secs=0.05,
                                                     backoff_max_secs=0.1, budget_secs=0.6))
    oms.on_order_request(request("r1"))
    post_quote(server, quote(1, 1.40, 1.48))
    assert ("entry", "filled") in statuses(oms.on_option_quote(quote(1, 1.40, 1.48)))
    fault(server, endpoint="place", status=429, retry_after=0.1, times=100)
    started = time.monotonic()
    refused = oms.on_order_request(request("r2", contract=P615))
    spent = time.monotonic() - started
    assert statuses(refused) == [("entry", "rejected")]
    assert isinstance(refused[0], OrderEvent) and "Tradier unavailable" in refused[0].reason
    assert spent < 1.5, f"bounded by the 0.6 s budget, took {spent:.2f}s"
    assert orders_tagged(server, tag_for("r2")) == []
    assert oms.entries_refused() is not None
    # Exits still work while entries are refused: the flatten cancels the exits and sells at market.
    # Its market order is a POST too, refused by the rate limiter until the faults clear.
    httpx.delete(f"{server.url}/sim/faults")
    cmd = RiskCommand(ts=T0 + 2 * NS, id="flat-1", underlying="SPY", action="flatten", order_id="r1", reason="t")
    out = oms.on_risk_command(cmd)
    assert ("take_profit", "canceled") in statuses(out) and ("stop_loss", "canceled") in statuses(out)
    assert ("flatten", "accepted") in statuses(out)
    assert oms.entries_refused() is None, "a request that succeeds ends the degradation"
    assert len(posts(sim)) - len([r for r in posts(sim) if r.get("fault")]) == 2  # r1 and the flatten


# --- start-up reconciliation --------------------------------------------------------------------


def test_a_restarted_oms_adopts_its_orders_and_trades_on(venue: tuple[SimServer, TradierSim]) -> None:
    server, sim = venue
    first = make_oms(server, ReplayClock(T0))
    first.on_order_request(request("r1"))
    post_quote(server, quote(1, 1.40, 1.48))
    first.on_option_quote(quote(1, 1.40, 1.48))
    assert first.positions.positions[C620].quantity == 2
    # A new process: empty memory, same account.
    clock = ReplayClock(T0 + 5 * NS)
    oms = make_oms(server, clock)
    adopted = oms.check_venue()
    assert oms.reconciliation.adopted == ["r1"] and oms.reconciliation.mismatch is None
    assert ("entry", "filled") in statuses(adopted)
    assert oms.positions.positions[C620].quantity == 2
    bracket = oms.book.brackets["r1"]
    assert oms.book.legs[bracket.stop_loss_id or ""].status == "working"
    assert oms.on_order_request(request("r1")) == [], "a redelivered request is a duplicate, not a new order"
    assert ("entry", "accepted") in statuses(oms.on_order_request(request("r2", contract=P615)))
    assert len(posts(sim)) == 2 and len(orders_tagged(server, tag_for("r1"))) == 1
    # The adopted stop is worked: moving it reaches the venue.
    moved = oms.on_risk_command(RiskCommand(ts=T0 + 6 * NS, id="m1", underlying="SPY", action="modify",
                                            order_id="r1", stop_price=1.20, reason="t"))
    assert ("stop_loss", "modified") in statuses(moved)


def test_a_position_the_book_does_not_know_refuses_entries_until_resolved(
        venue: tuple[SimServer, TradierSim]) -> None:
    server, sim = venue
    headers = {"Authorization": f"Bearer {TRADIER_TOKEN}", "Accept": "application/json"}
    foreign = {"class": "option", "symbol": "SPY", "option_symbol": P615, "side": "buy_to_open", "quantity": "1",
               "type": "market", "duration": "day", "tag": "manual-1"}
    httpx.post(f"{server.url}/v1/accounts/{ACCOUNT}/orders", data=foreign, headers=headers)
    assert httpx.post(f"{server.url}/sim/positions", json={"symbol": P615, "quantity": 3,
                                                          "cost_basis": 420.0}).status_code == 200
    clock = ReplayClock(T0)
    oms = make_oms(server, clock)
    refused = oms.on_order_request(request("r1"))
    assert statuses(refused) == [("entry", "rejected")]
    assert isinstance(refused[0], OrderEvent)
    assert f"positions differ: {P615} venue 3 book 0" in refused[0].reason
    assert oms.reconciliation.foreign == [str(next(iter(sim.orders)))]
    assert orders_tagged(server, tag_for("r1")) == []
    # Still there at the next look: still refused.
    clock.advance_to(T0 + 2 * NS)
    assert statuses(oms.on_order_request(request("r2"))) == [("entry", "rejected")]
    # Someone closes it at the venue; the next look (after reconcile_interval_secs) agrees.
    httpx.post(f"{server.url}/sim/positions", json={"symbol": P615, "quantity": 0})
    clock.advance_to(T0 + 4 * NS)
    assert ("entry", "accepted") in statuses(oms.on_order_request(request("r3")))
    assert oms.reconciliation.mismatch is None and oms.reconciliation.checks == 3


def test_an_unreadable_positions_report_is_not_flat(venue: tuple[SimServer, TradierSim]) -> None:
    server, _ = venue
    fault(server, endpoint="positions", status=502, times=1000)
    oms = make_oms(server, ReplayClock(T0), retry=TradierRetry(max_attempts=2, backoff_initial_secs=0.01,
                                                                backoff_max_secs=0.01, budget_secs=1.0))
    refused = oms.on_order_request(request("r1"))
    assert statuses(refused) == [("entry", "rejected")]
    assert isinstance(refused[0], OrderEvent) and "could not be read" in refused[0].reason
    assert orders_tagged(server, tag_for("r1")) == []


# --- credentials and the composition root -------------------------------------------------------


def test_bad_credentials_are_one_clear_error_after_one_request(venue: tuple[SimServer, TradierSim]) -> None:
    server, sim = venue
    oms = make_oms(server, ReplayClock(T0), token="tt-WRONG-0000")
    with pytest.raises(TradierAuthError) as err:
        oms.on_order_request(request("r1"))
    message = str(err.value)
    assert "HTTP 401" in message and "TRADIER_ACCESS_TOKEN" in message and "\n" not in message
    assert "tt-WRONG-0000" not in message
    assert len(sim.requests) == 1, "a 401 is not retried"
    # Later entries are refused, and a direct call fails the same way, without asking the venue again.
    assert statuses(oms.on_order_request(request("r2"))) == [("entry", "rejected")]
    with pytest.raises(TradierAuthError, match="HTTP 401"):
        oms.broker.submit_otoco(request("r3"), "r3")
    assert len(sim.requests) == 1
    assert oms.broker.entries_refused() == message


def test_the_composition_root_builds_the_tradier_oms_from_session_config(
        venue: tuple[SimServer, TradierSim]) -> None:
    server, sim = venue
    loaded = load_session_config(environ={
        "DREAMBOT_BROKER": "tradier", "TRADIER_BASE_URL": f"{server.url}/v1", "TRADIER_ACCESS_TOKEN": TRADIER_TOKEN,
        "TRADIER_ACCOUNT_ID": ACCOUNT, "DREAMBOT_BROKER__TRADIER__POLL_INTERVAL_SECS": "0",
        "DREAMBOT_BROKER__TRADIER__RETRY__BUDGET_SECS": "2.5",
    }, use_env_file=False)
    assert loaded.origin(("broker", "tradier", "status_timeout_secs")).endswith("broker.yaml")
    clock = ReplayClock(T0)
    stage = build_oms(loaded.config, clock, default_calendar())
    broker = stage.manager.broker
    assert isinstance(broker, TradierBroker)
    assert broker.config.poll_interval_secs == 0 and broker.config.retry.budget_secs == 2.5
    assert broker.config.status_timeout_secs == 30 and broker.config.environment == "sandbox"
    out = stage.handle("orders", approval_key(loaded.config).sign(request("r1")))  # signed as risk does
    assert [o.event.status for o in out if isinstance(o.event, OrderEvent)][:1] == ["accepted"]
    assert stage.manager.reconciliation.mismatch is None and stage.manager.reconciliation.checks == 1
    assert len(orders_tagged(server, tag_for("r1"))) == 1
    assert [r["path"] for r in sim.requests][:2] == [f"/v1/accounts/{ACCOUNT}/orders",
                                                     f"/v1/accounts/{ACCOUNT}/positions"]
    assert TRADIER_TOKEN not in repr(loaded.config) + repr(broker)
