"""A local Tradier brokerage API: orders (OTOCO, single-option market), modify, cancel, quotes.

``python -m services.sim.tradier --port P --token T --account A``

Base path ``/v1`` like https://sandbox.tradier.com/v1 (formats and sources:
:mod:`services.oms.brokers.tradier_parsing`):

- every request needs ``Authorization: Bearer T``, else HTTP 401 with Tradier's plain-text body
  ``Invalid Access Token``; responses are JSON only (``Accept: application/json``; anything else is
  answered 406, where Tradier would send XML);
- ``POST /v1/accounts/{A}/orders`` (form): ``class=otoco`` with three indexed legs (limit entry, then a
  limit and a stop exit on the same ``option_symbol``), or ``class=option`` ``type=market``; the
  documented validations answer HTTP 400 ``{"errors":{"error":[...]}}``; ``preview=true`` validates and
  prices without placing; a ``tag`` must be letters, digits and ``-`` (at most 255). Like Tradier,
  the sim does NOT deduplicate by tag: posting the same tag twice places two orders (the client's
  own tag discipline is what keeps a submission single);
- ``GET /v1/accounts/{A}/orders`` (``{"orders":"null"}`` when empty, a bare object for one order, like
  Tradier's XML-converted JSON) and ``GET /orders/{id}``; ``tag`` only with ``includeTags=true``;
- ``PUT /v1/accounts/{A}/orders/{leg id}`` (``type``, ``duration``, ``stop``) moves a stop leg;
  ``DELETE /v1/accounts/{A}/orders/{id}`` cancels a leg, or every live leg of a parent id;
  requests on finished orders answer HTTP 200 with ``errors`` (how Tradier reports downstream refusals);
- ``GET /v1/accounts/{A}/positions``: ``{"positions":{"position":[{"cost_basis","date_acquired","id",
  "quantity","symbol"}]}}`` (a bare object for one, ``"null"`` for none), from the sim's fills plus the
  positions seeded with ``/sim/positions`` (held "outside" DreamBot);
- ``GET|POST /v1/markets/quotes?symbols=...`` from the quotes posted to the admin endpoint.

Faults (``POST /sim/faults``, a fault or a list; ``DELETE /sim/faults`` clears, ``GET`` lists the rest):
``{"endpoint": "place"|"orders"|"order"|"modify"|"cancel"|"positions"|"quotes"|"any", "status": 429 |
500..599 | "timeout", "accept": "before"|"after"|"never", "times": N, "retry_after": S, "delay_s": S}``.
The next N matching API requests (after the token check) are answered with the fault: ``429`` is
refused before anything happens, with ``Retry-After: S`` and Tradier's ``X-Ratelimit-*`` headers
(Allowed, Used, Available, Expiry in ms); a 5xx runs the request first when ``accept`` is ``before``
(the venue accepted the order and the answer says otherwise) and answers
``{"fault":{"faultstring":..}}``; ``timeout`` holds the answer ``delay_s`` seconds, having run the
request ``before`` (accepted, the answer never arrives in time) or running it ``after`` the delay (a
late acceptance: the order appears only once the client has given up waiting), or ``never``.

Fills come from :class:`~services.oms.brokers.paper.PaperBroker` (its rules: fill on quotes, OTOCO
children held until the entry fills, one-cancels-other). Held children show ``pending``, working legs
``open``. The clock is event time: it moves with posted quotes (``/sim/clock`` moves it by hand).

Admin (tests): ``POST /sim/quotes`` (an OptionQuote as :func:`services.core.events.encode_json` writes
it, or a list), ``POST /sim/underlying {"symbol","price","ts"}``, ``POST /sim/close {"ts","settle"}``,
``POST /sim/clock {"ts"}``, ``GET /sim/requests`` (every API request: method, path, query, form
fields in order, and the fault it met), ``POST /sim/positions {"symbol","quantity","cost_basis"}``
(a position the account holds outside DreamBot; quantity 0 removes it).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from aiohttp import web

from services.cliutil import OneLineParser, fail
from services.core.clock import ReplayClock
from services.core.events import EventDecodeError, OptionQuote, OrderEvent, OrderRequest, Side, decode_json
from services.oms.brokers.base import BrokerError
from services.oms.brokers.paper import PaperBroker
from services.oms.brokers.tradier_parsing import is_valid_tag, iso_time
from services.oms.config import PaperConfig
from services.oms.fees import FeeModel
from services.sim import LOOPBACK, serve

INVALID_TOKEN: Final = "Invalid Access Token"
OPTION_SIDES: Final = frozenset({"buy_to_open", "buy_to_close", "sell_to_open", "sell_to_close"})
DURATIONS: Final = frozenset({"day", "gtc", "pre", "post"})
ENDPOINTS: Final = frozenset({"place", "orders", "order", "modify", "cancel", "positions", "quotes", "any"})
RATE_LIMIT_ALLOWED: Final = 60  # sandbox: 60 standard requests a minute


@dataclass(slots=True)
class Fault:
    """How the next ``times`` requests to ``endpoint`` are answered (see the module doc)."""

    endpoint: str
    status: int | Literal["timeout"]
    accept: Literal["before", "after", "never"] = "never"
    times: int = 1
    retry_after: float = 1.0
    delay_s: float = 1.0

    @classmethod
    def parse(cls, doc: dict[str, Any]) -> Fault:
        endpoint = str(doc.get("endpoint", "any"))
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {', '.join(sorted(ENDPOINTS))}, got {endpoint!r}")
        raw = doc.get("status")
        status: int | Literal["timeout"]
        if raw == "timeout":
            status = "timeout"
        elif isinstance(raw, int) and (raw == 429 or 500 <= raw <= 599):
            status = raw
        else:
            raise ValueError(f"status must be 429, a 5xx or 'timeout', got {raw!r}")
        accept = doc.get("accept", "never")
        if accept not in ("before", "after", "never") or (accept == "after" and status != "timeout"):
            raise ValueError("accept is before, never, or (for a timeout) after")
        times = int(doc.get("times", 1))
        if times < 1:
            raise ValueError("times must be at least 1")
        return cls(endpoint, status, accept, times, float(doc.get("retry_after", 1.0)),
                   float(doc.get("delay_s", 1.0)))

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "status": self.status, "accept": self.accept, "times": self.times,
                "retry_after": self.retry_after, "delay_s": self.delay_s}


@dataclass(slots=True)
class _Leg:
    """One Tradier order (or OTOCO leg) mirrored from the paper broker's events."""

    tid: int
    paper_id: str
    type: str
    symbol: str
    option_symbol: str
    side: str
    quantity: float
    duration: str
    price: float | None
    stop_price: float | None
    held: bool
    create_date: str
    status: str = "pending"
    avg_fill_price: float = 0.0
    exec_quantity: float = 0.0
    last_fill_price: float = 0.0
    last_fill_quantity: float = 0.0
    transaction_date: str = ""
    reason_description: str = ""
    tag: str | None = None

    def to_json(self, include_tags: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.tid,
            "type": self.type,
            "symbol": self.symbol,
            "side": self.side,
            "quantity": self.quantity,
            "status": self.status,
            "duration": self.duration,
            "avg_fill_price": self.avg_fill_price,
            "exec_quantity": self.exec_quantity,
            "last_fill_price": self.last_fill_price,
            "last_fill_quantity": self.last_fill_quantity,
            "remaining_quantity": max(self.quantity - self.exec_quantity, 0.0),
            "create_date": self.create_date,
            "transaction_date": self.transaction_date or self.create_date,
            "class": "option",
            "option_symbol": self.option_symbol,
        }
        if self.price is not None:
            doc["price"] = self.price
        if self.stop_price is not None:
            doc["stop_price"] = self.stop_price
        if self.reason_description:
            doc["reason_description"] = self.reason_description
        if include_tags and self.tag:
            doc["tag"] = self.tag
        return doc


@dataclass(slots=True)
class _Order:
    tid: int
    order_class: str
    tag: str | None
    legs: list[_Leg] = field(default_factory=list)

    def status(self) -> str:
        states = [leg.status for leg in self.legs]
        if self.order_class != "otoco":
            return states[0]
        entry = states[0]
        if any(s in ("open", "pending", "partially_filled") for s in states):
            return "partially_filled" if entry == "partially_filled" else "open"
        if entry == "rejected":
            return "rejected"
        if any(s == "filled" for s in states[1:]):
            return "filled"
        return entry if entry in ("canceled", "expired") else "canceled"

    def to_json(self, include_tags: bool) -> dict[str, Any]:
        head = self.legs[0].to_json(include_tags)
        if self.order_class != "otoco":
            return head
        doc = {**head, "id": self.tid, "status": self.status(), "class": "otoco", "num_legs": len(self.legs)}
        doc["strategy"] = "oto"
        doc.pop("option_symbol", None)
        doc["leg"] = [leg.to_json(include_tags) for leg in self.legs]
        if not include_tags:
            doc.pop("tag", None)
        elif self.tag:
            doc["tag"] = self.tag
        return doc


class _InvalidRequestError(ValueError):
    """A request that fails Tradier's validations (HTTP 400)."""


class TradierSim:
    """State and handlers of one sim account (build the aiohttp app with :meth:`app`)."""

    def __init__(self, token: str, account: str, paper: PaperConfig | None = None) -> None:
        self.token = token
        self.account = account
        self.clock = ReplayClock(0)
        self.paper = PaperBroker(self.clock, paper or PaperConfig(), FeeModel())
        self.orders: dict[int, _Order] = {}
        self.legs: dict[int, tuple[_Order, _Leg]] = {}
        self.by_paper_id: dict[str, _Leg] = {}
        self.faults: list[Fault] = []
        self.outside: dict[str, tuple[float, float]] = {}  # positions held outside DreamBot: qty, cost
        self.quotes: dict[str, OptionQuote] = {}
        self.underlying_px: dict[str, tuple[float, int]] = {}
        self.requests: list[dict[str, Any]] = []
        self._ids = itertools.count(1001)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        base = "/v1/accounts/{account}/orders"
        app.router.add_post(base, self._place)
        app.router.add_get(base, self._list)
        app.router.add_get(base + "/{order_id}", self._get)
        app.router.add_put(base + "/{order_id}", self._modify)
        app.router.add_delete(base + "/{order_id}", self._cancel)
        app.router.add_get("/v1/accounts/{account}/positions", self._positions)
        app.router.add_get("/v1/markets/quotes", self._quotes)
        app.router.add_post("/v1/markets/quotes", self._quotes)
        app.router.add_post("/sim/quotes", self._admin_quotes)
        app.router.add_post("/sim/underlying", self._admin_underlying)
        app.router.add_post("/sim/close", self._admin_close)
        app.router.add_post("/sim/clock", self._admin_clock)
        app.router.add_get("/sim/requests", self._admin_requests)
        app.router.add_post("/sim/faults", self._admin_add_faults)
        app.router.add_get("/sim/faults", self._admin_list_faults)
        app.router.add_delete("/sim/faults", self._admin_clear_faults)
        app.router.add_post("/sim/positions", self._admin_positions)
        return app

    # -- middleware: auth, content negotiation, request log --------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/sim/"):
            response: web.StreamResponse = await handler(request)
            return response
        form = [[k, str(v)] for k, v in (await request.post()).items()] if request.can_read_body else []
        record: dict[str, Any] = {"method": request.method, "path": request.path, "query": dict(request.query),
                                  "form": form}
        self.requests.append(record)
        if request.headers.get("Authorization", "") != f"Bearer {self.token}":
            return web.Response(status=401, text=INVALID_TOKEN, content_type="text/plain")
        if "application/json" not in request.headers.get("Accept", ""):
            return web.Response(status=406, text="the Tradier sim answers JSON only: send Accept: application/json")
        account = request.match_info.get("account")
        if account is not None and account != self.account:
            return _errors(400, f"Invalid account number: {account}")
        fault = self._take_fault(request)
        if fault is None:
            return await self._answer(handler, request)
        record["fault"] = fault.to_json()
        if fault.status == 429:
            return self._rate_limited(fault)
        if fault.status == "timeout":
            if fault.accept == "before":
                await self._answer(handler, request)
            await asyncio.sleep(fault.delay_s)  # the client has stopped waiting by now
            if fault.accept == "after":
                await self._answer(handler, request)
            return web.json_response({"fault": {"faultstring": "Gateway Timeout"}}, status=504)
        if fault.accept == "before":
            await self._answer(handler, request)
        return web.json_response({"fault": {"faultstring": "Internal Server Error",
                                            "detail": {"errorcode": "sim.fault"}}}, status=fault.status)

    @staticmethod
    async def _answer(handler: Any, request: web.Request) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except _InvalidRequestError as exc:
            return _errors(400, str(exc))
        return response

    def _take_fault(self, request: web.Request) -> Fault | None:
        endpoint = _endpoint(request)
        for fault in self.faults:
            if fault.endpoint in ("any", endpoint):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _rate_limited(fault: Fault) -> web.Response:
        expiry_ms = int((time.time() + fault.retry_after) * 1000)
        headers = {
            "Retry-After": f"{fault.retry_after:g}",
            "X-Ratelimit-Allowed": str(RATE_LIMIT_ALLOWED),
            "X-Ratelimit-Used": str(RATE_LIMIT_ALLOWED + 1),
            "X-Ratelimit-Available": "0",
            "X-Ratelimit-Expiry": str(expiry_ms),
        }
        return web.Response(status=429, text="Rate limit exceeded", content_type="text/plain", headers=headers)

    # -- orders -------------------------------------------------------------------------------

    async def _place(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        tag = form.get("tag")
        if tag is not None and not is_valid_tag(tag):
            raise _InvalidRequestError("Invalid tag: use letters, numbers and - (at most 255 characters)")
        kind = form.get("class")
        if kind == "otoco":
            legs = self._otoco_legs(form)
            if form.get("preview") == "true":
                return web.json_response({"order": self._preview(legs, "otoco")})
            order = self._submit_otoco(legs, tag)
        elif kind == "option":
            leg = self._single_leg(form)
            if form.get("preview") == "true":
                return web.json_response({"order": self._preview([leg], "option")})
            order = self._submit_market(leg, tag)
        else:
            raise _InvalidRequestError(f"the sim places class=otoco or class=option orders, not {kind!r}")
        return web.json_response({"order": {"id": order.tid, "status": "ok", "partner_id": f"sim-{order.tid}"}})

    def _otoco_legs(self, form: dict[str, str]) -> list[dict[str, Any]]:
        legs = [self._leg_fields(form, f"[{i}]", form.get("duration")) for i in range(3)]
        if legs[0]["type"] != "limit":
            raise _InvalidRequestError("the sim's OTOCO entry (leg 0) must be a limit order")
        if legs[1]["option_symbol"] != legs[2]["option_symbol"]:
            raise _InvalidRequestError("If all option orders, second and third orders must have the same option_symbol")
        if legs[1]["type"] == legs[2]["type"]:
            raise _InvalidRequestError("Second and third orders must always have a different type")
        if legs[1]["duration"] != legs[2]["duration"]:
            raise _InvalidRequestError(
                "If sending duration per leg, second and third orders must have the same duration"
            )
        if {legs[1]["type"], legs[2]["type"]} != {"limit", "stop"}:
            raise _InvalidRequestError("the sim's OTOCO exits are one limit and one stop order")
        if len({leg["quantity"] for leg in legs}) != 1 or len({leg["option_symbol"] for leg in legs}) != 1:
            raise _InvalidRequestError("the sim's OTOCO legs trade the same contract and quantity")
        return legs

    def _single_leg(self, form: dict[str, str]) -> dict[str, Any]:
        leg = self._leg_fields(form, "", form.get("duration"))
        if leg["type"] != "market":
            raise _InvalidRequestError("the sim places single-option market orders only")
        return leg

    @staticmethod
    def _leg_fields(form: dict[str, str], ix: str, duration: str | None) -> dict[str, Any]:
        def need(name: str) -> str:
            value = form.get(f"{name}{ix}")
            if not value:
                raise _InvalidRequestError(f"Missing required parameter: {name}{ix}")
            return value

        kind = need("type")
        side = need("side")
        if side not in OPTION_SIDES:
            raise _InvalidRequestError(f"Invalid side{ix}: {side}; option orders use {', '.join(sorted(OPTION_SIDES))}")
        leg_duration = form.get(f"duration{ix}", duration) if ix else duration
        if leg_duration not in DURATIONS:
            raise _InvalidRequestError(f"Invalid duration{ix}: {leg_duration}")
        try:
            quantity = float(need("quantity"))
            price = float(form[f"price{ix}"]) if f"price{ix}" in form else None
            stop = float(form[f"stop{ix}"]) if f"stop{ix}" in form else None
        except ValueError as exc:
            raise _InvalidRequestError(f"Invalid number: {exc}") from None
        if quantity <= 0 or not quantity.is_integer():
            raise _InvalidRequestError(f"Quantity should be between 1 and the maximum, got quantity{ix}={quantity}")
        if kind in ("limit", "stop_limit") and price is None:
            raise _InvalidRequestError(f"Missing required parameter: price{ix}")
        if kind in ("stop", "stop_limit") and stop is None:
            raise _InvalidRequestError(f"Missing required parameter: stop{ix}")
        return {
            "type": kind,
            "symbol": need("symbol"),
            "option_symbol": need("option_symbol"),
            "side": side,
            "quantity": quantity,
            "duration": leg_duration,
            "price": price if kind in ("limit", "stop_limit") else None,
            "stop": stop if kind in ("stop", "stop_limit") else None,
        }

    def _preview(self, legs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
        entry = legs[0]
        quote = self.quotes.get(entry["option_symbol"])
        price = entry["price"] or (quote.ask if quote else 0.0)
        qty = int(entry["quantity"])
        fees = self.paper.fees.fill("", "buy" if entry["side"].startswith("buy") else "sell", qty, price)
        return {
            "status": "ok",
            "commission": round(self.paper.fees.schedule.commission_per_contract * qty, 2),
            "cost": round(price * qty * 100 + fees, 2),
            "fees": fees,
            "symbol": entry["symbol"],
            "quantity": entry["quantity"],
            "side": entry["side"],
            "type": entry["type"],
            "duration": entry["duration"],
            "result": True,
            "order_cost": round(price * qty * 100, 2),
            "margin_change": 0.0,
            "request_date": iso_time(self.clock.now_ns()),
            "extended_hours": False,
            "class": kind,
            "strategy": "oto" if kind == "otoco" else "option",
            "day_trades": 0,
        }

    def _new_order(self, kind: str, tag: str | None, legs: list[dict[str, Any]], events: list[OrderEvent]) -> _Order:
        order = _Order(next(self._ids), kind, tag)
        now = iso_time(self.clock.now_ns())
        paper_ids = list(dict.fromkeys(e.order_id for e in events))
        for i, (fields_, paper_id) in enumerate(zip(legs, paper_ids, strict=True)):
            leg = _Leg(
                tid=order.tid if kind != "otoco" else next(self._ids),
                paper_id=paper_id,
                type=fields_["type"],
                symbol=fields_["symbol"],
                option_symbol=fields_["option_symbol"],
                side=fields_["side"],
                quantity=fields_["quantity"],
                duration=fields_["duration"],
                price=fields_["price"],
                stop_price=fields_["stop"],
                held=kind == "otoco" and i > 0,
                create_date=now,
                tag=tag,
            )
            order.legs.append(leg)
            self.by_paper_id[paper_id] = leg
            self.legs[leg.tid] = (order, leg)
        self.orders[order.tid] = order
        self._apply(events)
        return order

    def _submit_otoco(self, legs: list[dict[str, Any]], tag: str | None) -> _Order:
        entry = legs[0]
        tp = next(leg for leg in legs[1:] if leg["type"] == "limit")
        sl = next(leg for leg in legs[1:] if leg["type"] == "stop")
        side: Side = "buy" if entry["side"].startswith("buy") else "sell"
        ordered = [entry, tp, sl]
        request = OrderRequest(
            ts=self.clock.now_ns(),
            id=f"sim-{len(self.orders) + 1}",
            intent_id=tag or "sim",
            underlying=entry["symbol"],
            contract=entry["option_symbol"],
            side=side,
            quantity=int(entry["quantity"]),
            limit_price=entry["price"],
            take_profit=tp["price"],
            stop_loss=sl["stop"],
        )
        # The paper broker is idempotent per client id; the venue is not, so every POST is its own order.
        events = self.paper.submit_otoco(request, f"sim-order-{len(self.orders) + 1}")
        order = self._new_order("otoco", tag, ordered, events)
        positions = [0, legs.index(tp), legs.index(sl)]  # legs as submitted: the exits may come either way
        order.legs = [leg for _, leg in sorted(zip(positions, order.legs, strict=True), key=lambda p: p[0])]
        return order

    def _submit_market(self, leg: dict[str, Any], tag: str | None) -> _Order:
        side: Side = "buy" if leg["side"].startswith("buy") else "sell"
        cid = f"sim-order-{len(self.orders) + 1}"
        events = self.paper.submit_market(cid, leg["symbol"], leg["option_symbol"], side, int(leg["quantity"]))
        return self._new_order("option", tag, [leg], events)

    def _apply(self, events: list[OrderEvent]) -> None:
        for ev in events:
            leg = self.by_paper_id.get(ev.order_id)
            if leg is None:
                continue
            leg.quantity = float(ev.quantity)
            if ev.filled_quantity > leg.exec_quantity and ev.fill_price is not None:
                delta = ev.filled_quantity - leg.exec_quantity
                leg.avg_fill_price = round(
                    (leg.avg_fill_price * leg.exec_quantity + ev.fill_price * delta) / ev.filled_quantity, 6
                )
                leg.exec_quantity = float(ev.filled_quantity)
                leg.last_fill_price = ev.fill_price
                leg.last_fill_quantity = float(delta)
            if ev.stop_price is not None and leg.stop_price is not None:
                leg.stop_price = ev.stop_price
            leg.status = _tradier_status(ev, leg)
            if ev.status == "rejected":
                leg.reason_description = ev.reason
            leg.transaction_date = iso_time(ev.ts)

    async def _list(self, request: web.Request) -> web.Response:
        tags = request.query.get("includeTags") == "true"
        orders = [o.to_json(tags) for o in self.orders.values()]
        if not orders:
            return web.json_response({"orders": "null"})
        return web.json_response({"orders": {"order": orders[0] if len(orders) == 1 else orders}})

    def _find(self, request: web.Request) -> tuple[_Order, _Leg | None] | None:
        try:
            tid = int(request.match_info["order_id"])
        except ValueError:
            return None
        if tid in self.orders:
            order = self.orders[tid]
            return order, (order.legs[0] if order.order_class != "otoco" else None)
        if tid in self.legs:
            return self.legs[tid]
        return None

    async def _get(self, request: web.Request) -> web.Response:
        found = self._find(request)
        if found is None:
            return _errors(404, "Order not found")
        order, leg = found
        tags = request.query.get("includeTags") == "true"
        doc = order.to_json(tags) if leg is None or order.order_class != "otoco" else leg.to_json(tags)
        return web.json_response({"order": doc})

    async def _modify(self, request: web.Request) -> web.Response:
        found = self._find(request)
        if found is None:
            return _errors(404, "Order not found")
        order, leg = found
        if leg is None:
            raise _InvalidRequestError("the sim modifies one leg at a time: PUT the leg's id")
        form = {k: str(v) for k, v in (await request.post()).items()}
        if "price" in form:
            raise _InvalidRequestError("the sim modifies stop prices only (PaperBroker has no limit modification)")
        if leg.type != "stop" or "stop" not in form:
            raise _InvalidRequestError("Missing required parameter: stop (only stop legs can be modified in the sim)")
        if form.get("type", "stop") != "stop":
            raise _InvalidRequestError("the sim does not change an order's type")
        try:
            stop = float(form["stop"])
            events = self.paper.modify_stop(leg.paper_id, stop)
        except (ValueError, BrokerError) as exc:
            raise _InvalidRequestError(str(exc)) from None
        if not events:
            return _errors(200, f"Order is not in an open state: {leg.status}")
        self._apply(events)
        if "duration" in form:
            leg.duration = form["duration"]
        return web.json_response({"order": {"id": leg.tid, "status": "ok", "partner_id": f"sim-{order.tid}"}})

    async def _cancel(self, request: web.Request) -> web.Response:
        found = self._find(request)
        if found is None:
            return _errors(404, "Order not found")
        order, leg = found
        targets = [leg] if leg is not None else order.legs
        events: list[OrderEvent] = []
        for target in targets:
            if target.status in ("pending", "open", "partially_filled"):
                events.extend(self.paper.cancel(target.paper_id))
                self._apply(events)
        if not events:
            return _errors(200, "Order is not in an open state")
        tid = leg.tid if leg is not None else order.tid
        return web.json_response({"order": {"id": tid, "status": "ok"}})

    async def _quotes(self, request: web.Request) -> web.Response:
        raw = request.query.get("symbols") or str((await request.post()).get("symbols", ""))
        found: list[dict[str, Any]] = []
        unmatched: list[str] = []
        for symbol in [s.strip() for s in raw.split(",") if s.strip()]:
            if symbol in self.quotes:
                found.append(_option_quote_json(self.quotes[symbol]))
            elif symbol in self.underlying_px:
                price, ts = self.underlying_px[symbol]
                found.append({"symbol": symbol, "type": "etf", "last": price, "trade_date": ts // 1_000_000})
            else:
                unmatched.append(symbol)
        body: dict[str, Any] = {}
        if found:
            body["quote"] = found[0] if len(found) == 1 else found
        if unmatched:
            body["unmatched_symbols"] = {"symbol": unmatched[0] if len(unmatched) == 1 else unmatched}
        return web.json_response({"quotes": body or "null"})

    async def _positions(self, _request: web.Request) -> web.Response:
        rows = [
            {"cost_basis": round(cost, 2), "date_acquired": acquired, "id": _position_id(symbol),
             "quantity": qty, "symbol": symbol}
            for symbol, (qty, cost, acquired) in sorted(self.positions().items())
        ]
        if not rows:
            return web.json_response({"positions": "null"})
        return web.json_response({"positions": {"position": rows[0] if len(rows) == 1 else rows}})

    def positions(self) -> dict[str, tuple[float, float, str]]:
        """Option symbol -> (signed quantity, cost basis, date acquired): the sim's fills plus the
        positions held outside DreamBot."""
        held: dict[str, list[Any]] = {}
        for order in self.orders.values():
            for leg in order.legs:
                if leg.exec_quantity <= 0:
                    continue
                sign = 1.0 if leg.side.startswith("buy") else -1.0
                row = held.setdefault(leg.option_symbol, [0.0, 0.0, leg.transaction_date or leg.create_date])
                row[0] += sign * leg.exec_quantity
                row[1] += sign * leg.exec_quantity * leg.avg_fill_price * 100
        now = iso_time(self.clock.now_ns())
        for symbol, (qty, cost) in self.outside.items():
            row = held.setdefault(symbol, [0.0, 0.0, now])
            row[0] += qty
            row[1] += cost
        return {s: (q, c, d) for s, (q, c, d) in held.items() if abs(q) > 1e-9}

    # -- admin --------------------------------------------------------------------------------

    async def _admin_quotes(self, request: web.Request) -> web.Response:
        doc = await request.json()
        items = doc if isinstance(doc, list) else [doc]
        applied = 0
        for item in items:
            try:
                quote = decode_json(json.dumps(item))
            except EventDecodeError as exc:
                return web.json_response({"error": str(exc)}, status=400)
            if not isinstance(quote, OptionQuote):
                return web.json_response({"error": "expected an option_quote event"}, status=400)
            self.clock.advance_to(quote.ts)
            self.quotes[quote.symbol] = quote
            if quote.underlying_price is not None:
                self.underlying_px[quote.underlying] = (quote.underlying_price, quote.ts)
            events = self.paper.on_option_quote(quote)
            self._apply(events)
            applied += len(events)
        return web.json_response({"events": applied})

    async def _admin_underlying(self, request: web.Request) -> web.Response:
        doc = await request.json()
        ts = int(doc["ts"])
        self.clock.advance_to(ts)
        self.underlying_px[str(doc["symbol"])] = (float(doc["price"]), ts)
        events = self.paper.on_underlying(str(doc["symbol"]), float(doc["price"]), ts)
        self._apply(events)
        return web.json_response({"events": len(events)})

    async def _admin_close(self, request: web.Request) -> web.Response:
        doc = await request.json()
        ts = int(doc["ts"])
        self.clock.advance_to(ts)
        events = self.paper.on_session_close(ts, {str(k): float(v) for k, v in doc.get("settle", {}).items()})
        self._apply(events)
        return web.json_response({"events": len(events)})

    async def _admin_clock(self, request: web.Request) -> web.Response:
        doc = await request.json()
        self.clock.advance_to(int(doc["ts"]))
        return web.json_response({"ts": self.clock.now_ns()})

    async def _admin_requests(self, _request: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def _admin_add_faults(self, request: web.Request) -> web.Response:
        doc = await request.json()
        try:
            faults = [Fault.parse(item) for item in (doc if isinstance(doc, list) else [doc])]
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.faults.extend(faults)
        return web.json_response({"faults": [f.to_json() for f in self.faults]})

    async def _admin_list_faults(self, _request: web.Request) -> web.Response:
        return web.json_response({"faults": [f.to_json() for f in self.faults]})

    async def _admin_clear_faults(self, _request: web.Request) -> web.Response:
        self.faults.clear()
        return web.json_response({"faults": []})

    async def _admin_positions(self, request: web.Request) -> web.Response:
        doc = await request.json()
        try:
            symbol, qty = str(doc["symbol"]), float(doc["quantity"])
            cost = float(doc.get("cost_basis", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": f"need symbol, quantity (and cost_basis): {exc}"}, status=400)
        if qty == 0:
            self.outside.pop(symbol, None)
        else:
            self.outside[symbol] = (qty, cost)
        return web.json_response({"outside": {k: v[0] for k, v in self.outside.items()}})


def _endpoint(request: web.Request) -> str:
    """Which API call a request is, as fault rules name it."""
    path = request.path.rstrip("/")
    if path.endswith("/positions"):
        return "positions"
    if "/markets/quotes" in path:
        return "quotes"
    if path.endswith("/orders"):
        return "place" if request.method == "POST" else "orders"
    return {"PUT": "modify", "DELETE": "cancel"}.get(request.method, "order")


def _position_id(symbol: str) -> int:
    return zlib.crc32(symbol.encode()) % 900_000 + 100_000


def _tradier_status(ev: OrderEvent, leg: _Leg) -> str:
    if ev.status == "accepted":
        return "pending" if leg.held else "open"
    if ev.status == "working":
        leg.held = False
        return "open"
    if ev.status == "partial":
        return "partially_filled"
    if ev.status == "modified":
        if leg.exec_quantity > 0:
            return "partially_filled"
        return "pending" if leg.held else "open"
    return str(ev.status)  # filled, canceled, rejected, expired: same words at Tradier


def _errors(status: int, *messages: str) -> web.Response:
    return web.json_response({"errors": {"error": list(messages)}}, status=status)


def _option_quote_json(q: OptionQuote) -> dict[str, Any]:
    stamp = q.ts // 1_000_000
    return {
        "symbol": q.symbol,
        "description": f"{q.underlying} {q.expiry} {q.strike:g} {'Call' if q.right == 'C' else 'Put'}",
        "exch": "Z",
        "type": "option",
        "last": None,
        "change": None,
        "volume": 0,
        "open": None,
        "high": None,
        "low": None,
        "close": None,
        "bid": q.bid,
        "ask": q.ask,
        "underlying": q.underlying,
        "strike": q.strike,
        "change_percentage": None,
        "average_volume": 0,
        "last_volume": 0,
        "trade_date": 0,
        "prevclose": None,
        "week_52_high": 0.0,
        "week_52_low": 0.0,
        "bidsize": int(q.bid_size),
        "bidexch": "X",
        "bid_date": stamp,
        "asksize": int(q.ask_size),
        "askexch": "X",
        "ask_date": stamp,
        "open_interest": int(q.open_interest),
        "contract_size": 100,
        "expiration_date": q.expiry,
        "expiration_type": "standard",
        "option_type": "call" if q.right == "C" else "put",
        "root_symbol": q.symbol[: len(q.symbol) - 15],
    }


# --- CLI ----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m services.sim.tradier", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    p.add_argument("--token", default=None, help="accepted access token (default: env TRADIER_ACCESS_TOKEN)")
    p.add_argument("--account", default=None, help="account id (default: env TRADIER_ACCOUNT_ID)")
    p.add_argument("--host", default=LOOPBACK, help="listen address (loopback only by default)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    prog = "python -m services.sim.tradier"
    token = args.token or os.environ.get("TRADIER_ACCESS_TOKEN", "")
    account = args.account or os.environ.get("TRADIER_ACCOUNT_ID", "")
    if not token or not account:
        fail(prog, "pass --token and --account (or set TRADIER_ACCESS_TOKEN and TRADIER_ACCOUNT_ID)")
    sys.stderr.write(f"tradier sim: account {account} on {args.host}:{args.port}\n")
    serve(TradierSim(token, account).app(), args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
