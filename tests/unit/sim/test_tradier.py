"""The real TradierBroker against the local Tradier sim: OTOCO form, idempotency, fills, modify, cancel,
status mapping (checked against the PaperBroker itself), auth errors and live-mode refusal."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import httpx
import pytest

from services.core.clock import ReplayClock
from services.core.events import OptionQuote, OrderEvent, OrderRequest, Position, encode_json
from services.core.session_config import TradierRetry
from services.oms.brokers.base import BrokerError, UnknownOrderError
from services.oms.brokers.paper import PaperBroker
from services.oms.brokers.tradier import (
    LIVE_URL,
    TradierAuthError,
    TradierBroker,
    TradierConfig,
    TradierConfigError,
    resolve_connection,
)
from services.oms.brokers.tradier_parsing import LegTracker, LegView, parse_orders, tag_for
from services.oms.config import PaperConfig
from services.oms.engine import OrderManager
from services.oms.fees import FeeModel
from services.oms.orders import OrderBook
from services.sim import SimServer
from services.sim.tradier import TradierSim

from .conftest import ACCOUNT, TRADIER_TOKEN, SimProcess, leaked

NS = 1_000_000_000
T0 = int(dt.datetime(2025, 7, 9, 14, 0, tzinfo=dt.UTC).timestamp()) * NS  # 10:00 New York
C620 = "SPY250709C00620000"


def broker(server: SimServer, clock: ReplayClock, token: str = TRADIER_TOKEN, **kw: Any) -> TradierBroker:
    retry = TradierRetry(backoff_initial_secs=0)
    config = TradierConfig(base_url=f"{server.url}/v1", poll_interval_secs=0, retry=retry, **kw)
    return TradierBroker(config, clock, access_token=token, account_id=ACCOUNT, env={})


def request(rid: str = "r1", qty: int = 2, limit: float = 1.50, tp: float = 2.00, sl: float = 1.00) -> OrderRequest:
    return OrderRequest(
        ts=T0,
        id=rid,
        intent_id=f"i-{rid}",
        underlying="SPY",
        contract=C620,
        side="buy",
        quantity=qty,
        limit_price=limit,
        take_profit=tp,
        stop_loss=sl,
    )


def quote(s: float, bid: float, ask: float, size: float = 10.0) -> OptionQuote:
    return OptionQuote(
        ts=T0 + int(s * NS),
        symbol=C620,
        underlying="SPY",
        expiry="2025-07-09",
        strike=620.0,
        right="C",
        bid=bid,
        ask=ask,
        bid_size=size,
        ask_size=size,
        underlying_price=620.1,
    )


def post_quote(server: SimServer, q: OptionQuote) -> None:
    assert httpx.post(f"{server.url}/sim/quotes", content=encode_json(q)).status_code == 200


def posts(sim: TradierSim) -> list[dict[str, Any]]:
    return [r for r in sim.requests if r["method"] == "POST"]


def by_leg(events: list[OrderEvent]) -> dict[str, list[OrderEvent]]:
    out: dict[str, list[OrderEvent]] = defaultdict(list)
    for e in events:
        out[e.leg].append(e)
    return out


def checked(book: OrderBook, events: list[OrderEvent]) -> list[OrderEvent]:
    """Apply events to an independent OMS order book: it refuses any illegal transition or fill."""
    for e in events:
        if not book.seen(e):
            book.apply(e)
    return events


def test_submit_otoco_sends_the_exact_form(tradier: tuple[SimServer, TradierSim]) -> None:
    server, sim = tradier
    events = broker(server, ReplayClock(T0)).submit_otoco(request(), "r1")
    (post,) = posts(sim)
    assert post["path"] == f"/v1/accounts/{ACCOUNT}/orders"
    assert post["form"] == [
        ["class", "otoco"],
        ["tag", "db-r1"],
        ["symbol[0]", "SPY"],
        ["option_symbol[0]", C620],
        ["side[0]", "buy_to_open"],
        ["quantity[0]", "2"],
        ["type[0]", "limit"],
        ["price[0]", "1.50"],
        ["duration[0]", "day"],
        ["symbol[1]", "SPY"],
        ["option_symbol[1]", C620],
        ["side[1]", "sell_to_close"],
        ["quantity[1]", "2"],
        ["type[1]", "limit"],
        ["price[1]", "2.00"],
        ["duration[1]", "gtc"],
        ["symbol[2]", "SPY"],
        ["option_symbol[2]", C620],
        ["side[2]", "sell_to_close"],
        ["quantity[2]", "2"],
        ["type[2]", "stop"],
        ["stop[2]", "1.00"],
        ["duration[2]", "gtc"],
    ]
    assert [(e.leg, e.status) for e in events] == [
        ("entry", "accepted"),
        ("take_profit", "accepted"),
        ("stop_loss", "accepted"),
        ("entry", "working"),
    ]
    assert [e.limit_price for e in events[:2]] == [1.50, 2.00] and events[2].stop_price == 1.00
    assert all(e.client_order_id == "r1" and e.ts == T0 for e in events)
    checked(OrderBook(), events)
    order = sim.orders[int(sim.legs[int(events[0].order_id)][0].tid)]
    assert [leg.status for leg in order.legs] == ["open", "pending", "pending"]


def test_resubmitting_a_client_order_id_never_places_a_second_order(tradier: tuple[SimServer, TradierSim]) -> None:
    server, sim = tradier
    clock = ReplayClock(T0)
    first = broker(server, clock)
    placed = first.submit_otoco(request(), "r1")
    again = first.submit_otoco(request(), "r1")
    assert {e.order_id for e in again} == {e.order_id for e in placed}
    # A restarted process (new broker, empty memory) finds the order by its tag instead of posting.
    restarted = broker(server, clock)
    adopted = restarted.submit_otoco(request(), "r1")
    assert len(posts(sim)) == 1
    assert [(e.order_id, e.leg, e.status) for e in adopted] == [(e.order_id, e.leg, e.status) for e in placed]
    assert restarted.open_orders() and len(sim.orders) == 1


def test_a_lost_post_response_is_recovered_by_tag(tradier: tuple[SimServer, TradierSim]) -> None:
    server, sim = tradier

    class LosesFirstPostResponse(httpx.HTTPTransport):
        lost = False

        def handle_request(self, req: httpx.Request) -> httpx.Response:
            response = super().handle_request(req)
            if req.method == "POST" and not self.lost:
                self.lost = True
                response.close()
                raise httpx.ReadTimeout("response lost", request=req)
            return response

    config = TradierConfig(base_url=f"{server.url}/v1", poll_interval_secs=0)
    b = TradierBroker(
        config,
        ReplayClock(T0),
        access_token=TRADIER_TOKEN,
        account_id=ACCOUNT,
        env={},
        transport=LosesFirstPostResponse(),
    )
    events = b.submit_otoco(request(), "cid.with~odd/chars")
    assert len(posts(sim)) == 1 and len(sim.orders) == 1
    assert [e.status for e in events] == ["accepted", "accepted", "accepted", "working"]
    assert posts(sim)[0]["form"][1] == ["tag", tag_for("cid.with~odd/chars")]


def test_fills_from_quotes_match_the_paper_broker_leg_by_leg(tradier: tuple[SimServer, TradierSim]) -> None:
    """The same bracket and quotes straight through a PaperBroker and through Tradier (the sim) give the
    same states, quantities, fill prices and fees on every leg."""
    server, _ = tradier
    clock = ReplayClock(T0)
    remote = broker(server, clock)
    local = PaperBroker(ReplayClock(T0), PaperConfig(), FeeModel())
    book = OrderBook()
    got = checked(book, remote.submit_otoco(request(qty=5), "r1"))
    want = local.submit_otoco(request(qty=5), "r1")
    script = [
        quote(1, 1.40, 1.48, size=2),
        quote(2, 1.45, 1.50, size=10),
        quote(3, 1.80, 1.90),
        quote(4, 2.05, 2.10, size=3),
        quote(5, 2.10, 2.20),
    ]
    for q in script:
        post_quote(server, q)
        clock.advance_to(q.ts)
        got += checked(book, remote.poll())
        want += local.on_option_quote(q)

    def story(events: list[OrderEvent]) -> dict[str, list[tuple[Any, ...]]]:
        return {
            leg: [(e.status, e.quantity, e.filled_quantity, e.fill_price, e.fees, e.stop_price) for e in evs]
            for leg, evs in by_leg(events).items()
        }

    assert story(got) == story(want)
    legs = by_leg(got)
    assert [e.status for e in legs["entry"]] == ["accepted", "working", "partial", "filled"]
    assert [e.status for e in legs["take_profit"]][-2:] == ["partial", "filled"]
    assert legs["stop_loss"][-1].status == "canceled"
    fill_ts = [e.ts for e in got if e.status in ("partial", "filled")]
    assert fill_ts == sorted(fill_ts) and fill_ts[0] == T0 + NS  # fills carry the venue's times
    assert remote.open_orders() == []


def test_modify_stop_puts_the_stop_and_reports_modified(tradier: tuple[SimServer, TradierSim]) -> None:
    server, sim = tradier
    clock = ReplayClock(T0)
    b = broker(server, clock)
    book = OrderBook()
    placed = checked(book, b.submit_otoco(request(), "r1"))
    stop = next(e for e in placed if e.leg == "stop_loss")
    clock.advance_to(T0 + 5 * NS)
    (modified,) = checked(book, b.modify_stop(stop.order_id, 1.2))
    put = [r for r in sim.requests if r["method"] == "PUT"][-1]
    assert put["path"] == f"/v1/accounts/{ACCOUNT}/orders/{stop.order_id}"
    assert put["form"] == [["type", "stop"], ["duration", "gtc"], ["stop", "1.20"]]
    assert (modified.status, modified.stop_price, modified.ts) == ("modified", 1.2, T0 + 5 * NS)
    assert sim.legs[int(stop.order_id)][1].stop_price == 1.2
    tp = next(e for e in placed if e.leg == "take_profit")
    with pytest.raises(BrokerError, match="not a stop"):
        b.modify_stop(tp.order_id, 1.3)
    with pytest.raises(UnknownOrderError):
        b.modify_stop("999999", 1.3)
    # Entry fills, then the stop triggers and fills: a finished stop yields no events and no request.
    post_quote(server, quote(6, 1.45, 1.50))
    post_quote(server, quote(7, 1.10, 1.15))
    checked(book, b.poll())
    assert book.legs[stop.order_id].status == "filled" and book.legs[stop.order_id].avg_fill_price == 1.10
    before = len(sim.requests)
    assert b.modify_stop(stop.order_id, 1.05) == [] and len(sim.requests) == before


def test_cancel_the_entry_cancels_the_held_exits(tradier: tuple[SimServer, TradierSim]) -> None:
    server, sim = tradier
    b = broker(server, ReplayClock(T0))
    book = OrderBook()
    placed = checked(book, b.submit_otoco(request(), "r1"))
    entry = placed[0]
    events = checked(book, b.cancel(entry.order_id))
    delete = [r for r in sim.requests if r["method"] == "DELETE"][-1]
    assert delete["path"] == f"/v1/accounts/{ACCOUNT}/orders/{entry.order_id}"
    assert sorted((e.leg, e.status) for e in events) == [
        ("entry", "canceled"),
        ("stop_loss", "canceled"),
        ("take_profit", "canceled"),
    ]
    assert b.cancel(entry.order_id) == [] and b.open_orders() == []
    (order,) = parse_orders(
        httpx.get(
            f"{server.url}/v1/accounts/{ACCOUNT}/orders",
            headers={"Authorization": f"Bearer {TRADIER_TOKEN}", "Accept": "application/json"},
        ).content
    )
    assert order.status == "canceled" and order.num_legs == 3


def test_flatten_at_market_after_the_entry_fills(tradier: tuple[SimServer, TradierSim]) -> None:
    server, sim = tradier
    clock = ReplayClock(T0)
    b = broker(server, clock)
    book = OrderBook()
    checked(book, b.submit_otoco(request(), "r1"))
    post_quote(server, quote(1, 1.45, 1.50))
    clock.advance_to(T0 + NS)
    checked(book, b.poll())
    events = checked(book, b.submit_market("r1.flat1", "SPY", C620, "sell", 2))
    assert posts(sim)[-1]["form"] == [
        ["class", "option"],
        ["tag", tag_for("r1.flat1")],
        ["symbol", "SPY"],
        ["option_symbol", C620],
        ["side", "sell_to_close"],
        ["quantity", "2"],
        ["type", "market"],
        ["duration", "day"],
    ]
    assert [(e.leg, e.status, e.filled_quantity, e.fill_price) for e in events] == [
        ("flatten", "accepted", 0, None),
        ("flatten", "filled", 2, 1.45),
    ]
    assert b.submit_market("r1.flat1", "SPY", C620, "sell", 2)[-1].status == "filled"
    assert len(posts(sim)) == 2


def test_a_bracket_the_venue_rejects_is_three_rejected_legs(tradier: tuple[SimServer, TradierSim]) -> None:
    server, _ = tradier
    b = broker(server, ReplayClock(T0))
    events = checked(OrderBook(), b.submit_otoco(request(limit=1.50, tp=1.40, sl=1.00), "bad"))
    assert [(e.leg, e.status) for e in events] == [
        ("entry", "rejected"),
        ("take_profit", "rejected"),
        ("stop_loss", "rejected"),
    ]
    assert "bracket prices out of order" in events[0].reason


def test_order_errors_in_a_200_body_become_rejections() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.method == "GET":
            return httpx.Response(200, json={"orders": "null"})
        return httpx.Response(200, json={"errors": {"error": ["DayTradingBuyingPowerExceeded"]}})

    config = TradierConfig()
    b = TradierBroker(
        config, ReplayClock(T0), access_token="x", account_id=ACCOUNT, env={}, transport=httpx.MockTransport(handler)
    )
    events = b.submit_otoco(request(), "r1")
    assert [e.status for e in events] == ["rejected"] * 3
    assert events[0].reason == "DayTradingBuyingPowerExceeded"
    assert b.open_orders() == [] and b.poll() == []


def test_quotes_endpoint(tradier: tuple[SimServer, TradierSim]) -> None:
    server, _ = tradier
    post_quote(server, quote(1, 1.45, 1.50, size=7))
    (q,) = broker(server, ReplayClock(T0)).quotes([C620, "NOPE"])
    assert (q.symbol, q.bid, q.ask, q.bid_size, q.right, q.strike, q.expiry) == (
        C620,
        1.45,
        1.50,
        7.0,
        "C",
        620.0,
        "2025-07-09",
    )
    assert q.ts == T0 + NS


def test_sim_enforces_the_documented_validations(tradier: tuple[SimServer, TradierSim]) -> None:
    server, _ = tradier
    headers = {"Authorization": f"Bearer {TRADIER_TOKEN}", "Accept": "application/json"}
    base = dict(
        b.split("=")
        for b in [
            "class=otoco",
            "symbol[0]=SPY",
            f"option_symbol[0]={C620}",
            "side[0]=buy_to_open",
            "quantity[0]=1",
            "type[0]=limit",
            "price[0]=1.5",
            "symbol[1]=SPY",
            f"option_symbol[1]={C620}",
            "side[1]=sell_to_close",
            "quantity[1]=1",
            "type[1]=limit",
            "price[1]=2",
            "symbol[2]=SPY",
            f"option_symbol[2]={C620}",
            "side[2]=sell_to_close",
            "quantity[2]=1",
            "type[2]=stop",
            "stop[2]=1",
            "duration=day",
        ]
    )
    url = f"{server.url}/v1/accounts/{ACCOUNT}/orders"
    same_type = httpx.post(url, data={**base, "type[2]": "limit", "price[2]": "1.1"}, headers=headers)
    assert same_type.status_code == 400
    assert same_type.json() == {"errors": {"error": ["Second and third orders must always have a different type"]}}
    bad_tag = httpx.post(url, data={**base, "tag": "not_valid!"}, headers=headers)
    assert bad_tag.status_code == 400 and "Invalid tag" in bad_tag.json()["errors"]["error"][0]
    preview = httpx.post(url, data={**base, "preview": "true"}, headers=headers).json()["order"]
    assert preview["result"] is True and preview["class"] == "otoco"
    assert httpx.get(url, headers=headers).json() == {"orders": "null"}  # nothing was placed
    xml = httpx.get(url, headers={"Authorization": f"Bearer {TRADIER_TOKEN}"})
    assert xml.status_code == 406


def test_wrong_token_is_one_readable_error_without_the_token(
    tradier: tuple[SimServer, TradierSim], all_logs: pytest.LogCaptureFixture
) -> None:
    server, _ = tradier
    wrong = "tt-WRONG-1c2d3e4f5a6b"
    b = broker(server, ReplayClock(T0), token=wrong)
    with pytest.raises(TradierAuthError) as err:
        b.submit_otoco(request(), "r1")
    text = str(err.value)
    assert text.startswith("Tradier refused the access token (HTTP 401: Invalid Access Token)")
    assert "TRADIER_ACCESS_TOKEN" in text and "\n" not in text
    for blob in (text, repr(err.value), repr(b), repr(b.connection), repr(b.config)):
        assert wrong not in blob
    assert leaked(wrong, all_logs) == []
    raw = httpx.get(f"{server.url}/v1/accounts/{ACCOUNT}/orders", headers={"Authorization": f"Bearer {wrong}"})
    assert (raw.status_code, raw.text) == (401, "Invalid Access Token")


def test_the_token_never_reaches_logs_during_normal_trading(
    tradier: tuple[SimServer, TradierSim], all_logs: pytest.LogCaptureFixture
) -> None:
    server, _ = tradier
    clock = ReplayClock(T0)
    b = broker(server, clock)
    placed = b.submit_otoco(request(), "r1")
    post_quote(server, quote(1, 1.45, 1.50))
    b.poll()
    b.modify_stop(placed[2].order_id, 1.1)
    assert all_logs.records
    assert leaked(TRADIER_TOKEN, all_logs) == []


def test_live_mode_needs_the_flag_and_env_credentials() -> None:
    live = TradierConfig(environment="live")
    env = {"TRADIER_ACCESS_TOKEN": "live-SECRET-token", "TRADIER_ACCOUNT_ID": "6YB00000"}
    with pytest.raises(TradierConfigError) as err:
        resolve_connection(live, env=env)
    assert str(err.value) == (
        "Tradier live trading refused: set TRADIER_LIVE_CONFIRM=true (or tradier.live_confirm) to confirm "
        "real-money trading"
    )
    with pytest.raises(TradierConfigError, match="put the live credentials in TRADIER_ACCESS_TOKEN"):
        resolve_connection(live, env={"TRADIER_LIVE_CONFIRM": "true"})
    with pytest.raises(TradierConfigError, match="read from the environment only"):
        resolve_connection(
            live, access_token="live-SECRET-token", account_id="6YB00000", env={**env, "TRADIER_LIVE_CONFIRM": "true"}
        )
    with pytest.raises(TradierConfigError, match=f"only talks to {LIVE_URL}"):
        resolve_connection(
            TradierConfig(environment="live", live_confirm=True, base_url="http://127.0.0.1:1/v1"), env=env
        )
    ok = resolve_connection(TradierConfig(environment="live", live_confirm=True), env=env)
    assert (ok.base_url, ok.account_id, ok.environment) == (LIVE_URL, "6YB00000", "live")
    assert "live-SECRET-token" not in repr(ok)
    flagged = resolve_connection(live, env={**env, "TRADIER_LIVE_CONFIRM": "true"})
    assert flagged.token.get_secret_value() == "live-SECRET-token"
    with pytest.raises(TradierConfigError, match="sandbox needs an access token"):
        TradierBroker(TradierConfig(), ReplayClock(T0), env={})
    sandbox = resolve_connection(TradierConfig(), env=env)
    assert sandbox.base_url == "https://sandbox.tradier.com/v1"


def test_order_manager_trades_through_tradier(tradier: tuple[SimServer, TradierSim]) -> None:
    server, _ = tradier
    clock = ReplayClock(T0)
    oms = OrderManager(broker(server, clock), clock)
    out = oms.on_order_request(request())
    assert [e.status for e in out if isinstance(e, OrderEvent)][:3] == ["accepted"] * 3
    for q in (quote(1, 1.45, 1.50), quote(2, 2.05, 2.10)):
        post_quote(server, q)
        clock.advance_to(q.ts)
        out += oms.on_option_quote(q)
    fills = [(f.leg, f.quantity, f.price) for f in oms.fill_reports]
    assert fills == [("entry", 2, 1.50), ("take_profit", 2, 2.00)]
    assert oms.is_flat()
    assert any(isinstance(e, Position) and e.quantity == 0 for e in out)


def test_cli_sim_takes_orders() -> None:
    proc = SimProcess("services.sim.tradier", "--token", TRADIER_TOKEN, "--account", ACCOUNT)
    try:
        config = TradierConfig(base_url=f"{proc.url}/v1", poll_interval_secs=0)
        b = TradierBroker(config, ReplayClock(T0), access_token=TRADIER_TOKEN, account_id=ACCOUNT, env={})
        events = b.submit_otoco(request(), "r1")
        seen = httpx.get(f"{proc.url}/sim/requests").json()
    finally:
        proc.stop()
    assert [e.status for e in events] == ["accepted", "accepted", "accepted", "working"]
    assert [r["method"] for r in seen] == ["GET", "POST", "GET"]


def test_every_tradier_status_maps_to_a_legal_order_event() -> None:
    def view(status: str, filled: int = 0, avg: float = 0.0, last: tuple[float, int] | None = None) -> LegView:
        px, qty = last if last else (None, 0)
        return LegView(
            "7", status, 3, filled, avg, px, qty, 1.5, None, T0 + filled, "why" if status == "rejected" else ""
        )

    leg = LegTracker.new("7", "c1", "SPY", C620, "entry", "buy", 3, FeeModel().fill)
    book = OrderBook()
    steps = [
        view("pending"),
        view("open"),
        view("partially_filled", 1, 1.5, (1.5, 1)),
        view("partially_filled", 1, 1.5, (1.5, 1)),  # nothing new
        view("expired", 2, 1.55, (1.6, 1)),  # a last fill, then the expiry
    ]
    got = [[(e.status, e.filled_quantity, e.fill_price) for e in checked(book, leg.observe(v, T0))] for v in steps]
    assert got == [
        [("accepted", 0, None)],
        [("working", 0, None)],
        [("partial", 1, 1.5)],
        [],
        [("partial", 2, 1.6), ("expired", 2, None)],
    ]
    several = LegTracker.new("8", "c2", "SPY", C620, "entry", "buy", 3, FeeModel().fill)
    events = several.observe(view("filled", 3, 1.6, (1.7, 1)), T0)  # two fills between polls: priced from the average
    assert [(e.status, e.fill_price) for e in events] == [("accepted", None), ("filled", 1.6)]
    refused = LegTracker.new("9", "c3", "SPY", C620, "entry", "buy", 3, FeeModel().fill)
    (rejected,) = refused.observe(view("rejected"), T0)
    assert (rejected.status, rejected.reason) == ("rejected", "why")


def test_preview_places_nothing(tradier: tuple[SimServer, TradierSim]) -> None:
    server, sim = tradier
    preview = broker(server, ReplayClock(T0)).preview_otoco(request(), "r1")
    assert preview["status"] == "ok" and preview["result"] is True and preview["quantity"] == 2
    assert posts(sim)[-1]["form"][-1] == ["preview", "true"] and sim.orders == {}
