"""TradierBroker: the Broker interface (services/oms/brokers/base.py) on Tradier's brokerage REST API.

- ``submit_otoco`` places ``class=otoco`` (leg 0 the limit entry, leg 1 the take-profit limit, leg 2 the
  stop; form fields in :func:`~services.oms.brokers.tradier_parsing.otoco_form`) with ``tag`` = the
  client order id (:func:`~services.oms.brokers.tradier_parsing.tag_for`). Tradier does not deduplicate
  tags, so idempotency is ours: a client order id already tracked returns its latest events, and
  before any POST the day's orders are searched for the tag (``GET /orders?includeTags=true``) so a
  resubmission after a restart or a lost response adopts the existing order instead of doubling it.
  A POST is never retried blindly: after a transport failure the tag search decides.
- ``cancel`` is ``DELETE /orders/{id}``; ``modify_stop`` is ``PUT /orders/{id}`` on the stop leg
  (``type=stop``, ``duration``, ``stop``); ``submit_market`` closes with ``class=option``, ``type=market``.
- Order state comes from polling (``GET /orders/{id}``): :meth:`TradierBroker.poll` turns every change
  into OrderEvents through :class:`~services.oms.brokers.tradier_parsing.LegTracker`. The market-data
  hooks (``on_option_quote``, ``on_underlying``) poll at most every ``poll_interval_s`` while orders are
  live, which is how fills reach the OMS; fees are computed with the configured FeeModel (Tradier's
  order responses carry no fees). Expiry settlement is the venue's business and is not synthesised.

Environments: ``sandbox`` (https://sandbox.tradier.com/v1, the default) and ``live``
(https://api.tradier.com/v1). Live trading needs BOTH the explicit confirmation (``live_confirm`` or
env ``TRADIER_LIVE_CONFIRM=true``) AND the credentials from the environment (``TRADIER_ACCESS_TOKEN``,
``TRADIER_ACCOUNT_ID``); otherwise construction fails with one readable :class:`TradierConfigError`.
Every request sends ``Authorization: Bearer TOKEN`` and ``Accept: application/json``.

The access token is a SecretStr: it is never logged, never part of an error message (response text
is scrubbed of it), and not in any repr. Protocol references: :mod:`services.oms.brokers.tradier_parsing`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import httpx
from pydantic import SecretStr

from services.core.clock import Clock
from services.core.events import OptionQuote, OrderEvent, OrderRequest, Side
from services.core.settings import ConfigError
from services.oms.brokers.base import BrokerError, UnknownOrderError
from services.oms.brokers.tradier_parsing import (
    LegTracker,
    LegView,
    TradierProtocolError,
    WireLeg,
    WireOrder,
    error_messages,
    market_form,
    otoco_form,
    parse_order,
    parse_orders,
    parse_placed,
    parse_quotes,
    side_of,
    stop_modify_form,
    tag_for,
)
from services.oms.config import TradierConfig
from services.oms.fees import FeeModel
from services.oms.orders import LegKind

log = logging.getLogger(__name__)
_T = TypeVar("_T")

SANDBOX_URL: Final = "https://sandbox.tradier.com/v1"
LIVE_URL: Final = "https://api.tradier.com/v1"
_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_TRUE: Final = frozenset({"1", "true", "yes", "on"})


class TradierConfigError(ConfigError):
    """Tradier cannot be used as configured (one readable line)."""


class TradierAuthError(BrokerError):
    """Tradier refused the access token (HTTP 401)."""


class TradierRequestError(BrokerError):
    """A request Tradier answered with an error, or that could not be completed."""


@dataclass(frozen=True, slots=True)
class TradierConnection:
    """Where and as whom to connect (resolved by :func:`resolve_connection`)."""

    base_url: str
    account_id: str
    token: SecretStr
    environment: str

    def __repr__(self) -> str:
        return f"TradierConnection({self.environment}, {self.base_url}, account={self.account_id})"


def resolve_connection(
    config: TradierConfig,
    *,
    access_token: str | SecretStr | None = None,
    account_id: str | None = None,
    env: Mapping[str, str] | None = None,
) -> TradierConnection:
    """Credentials and URL for ``config``; refuses live trading unless confirmed and env-configured."""
    environ = os.environ if env is None else env
    env_token = environ.get("TRADIER_ACCESS_TOKEN", "").strip()
    env_account = environ.get("TRADIER_ACCOUNT_ID", "").strip()
    if config.environment == "live":
        confirmed = config.live_confirm or environ.get("TRADIER_LIVE_CONFIRM", "").strip().lower() in _TRUE
        problems = []
        if not confirmed:
            problems.append("set TRADIER_LIVE_CONFIRM=true (or tradier.live_confirm) to confirm real-money trading")
        if not env_token or not env_account:
            problems.append("put the live credentials in TRADIER_ACCESS_TOKEN and TRADIER_ACCOUNT_ID")
        if access_token is not None or account_id is not None:
            problems.append("live credentials are read from the environment only, not passed in")
        if config.base_url not in (None, LIVE_URL):
            problems.append(f"live trading only talks to {LIVE_URL}")
        if problems:
            raise TradierConfigError("Tradier live trading refused: " + "; ".join(problems))
        return TradierConnection(LIVE_URL, env_account, SecretStr(env_token), "live")
    token = access_token if access_token is not None else env_token
    secret = token if isinstance(token, SecretStr) else SecretStr(token)
    account = account_id if account_id is not None else env_account
    if not secret.get_secret_value().strip() or not account:
        raise TradierConfigError(
            "Tradier sandbox needs an access token and an account id: set TRADIER_ACCESS_TOKEN and TRADIER_ACCOUNT_ID"
        )
    base = config.base_url or environ.get("TRADIER_BASE_URL", "").strip() or SANDBOX_URL
    return TradierConnection(base.rstrip("/"), account, secret, "sandbox")


class _Bearer(httpx.Auth):
    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "_Bearer(***)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        yield request


@dataclass(slots=True)
class _Tracked:
    """An order DreamBot placed (or adopted by tag) and its legs, entry first."""

    client_order_id: str
    tag: str
    parent_id: str
    underlying: str
    contract: str
    legs: dict[str, LegTracker] = field(default_factory=dict)

    def live(self) -> bool:
        return any(not leg.is_terminal for leg in self.legs.values())

    def latest(self) -> list[OrderEvent]:
        return [leg.last_event for leg in self.legs.values() if leg.last_event is not None]


class TradierBroker:
    """Tradier as a Broker: requests are synchronous and return the OrderEvents they caused."""

    name: Final = "tradier"

    def __init__(
        self,
        config: TradierConfig,
        clock: Clock,
        fees: FeeModel | None = None,
        *,
        access_token: str | SecretStr | None = None,
        account_id: str | None = None,
        env: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self.fees = fees or FeeModel()
        self.connection = resolve_connection(config, access_token=access_token, account_id=account_id, env=env)
        self._sleep = sleep
        self._monotonic = monotonic
        self._last_poll = -math.inf
        self._http = httpx.Client(
            base_url=self.connection.base_url,
            timeout=config.timeout_s,
            transport=transport or httpx.HTTPTransport(),
            headers={"Accept": "application/json"},
            auth=_Bearer(self.connection.token),
        )
        self._orders: dict[str, _Tracked] = {}
        self._legs: dict[str, tuple[_Tracked, LegTracker]] = {}
        self._rejected = 0
        self.requests = 0

    def __repr__(self) -> str:
        return f"TradierBroker({self.connection!r})"

    def close(self) -> None:
        self._http.close()

    # -- Broker interface ---------------------------------------------------------------------

    def submit_otoco(self, request: OrderRequest, client_order_id: str) -> list[OrderEvent]:
        """Place the bracket once per client order id (adopting an existing order with its tag)."""
        known = self._orders.get(client_order_id)
        if known is not None:
            return known.latest()
        now = self.clock.now_ns()
        tag = tag_for(client_order_id)
        existing = self._find_by_tag(tag)
        if existing is not None:
            log.info("tradier order adopted by tag", extra={"tag": tag, "order_id": existing.id})
            return self._track(existing, client_order_id, tag, request.underlying, request.contract, now)
        form = otoco_form(request, tag, self.config.entry_duration, self.config.exit_duration)
        placed = self._place(form, tag)
        if isinstance(placed, WireOrder):
            return self._track(placed, client_order_id, tag, request.underlying, request.contract, now)
        if isinstance(placed, list):
            return self._refused(client_order_id, request, placed, now)
        order = self._get_order(placed)
        return self._track(order, client_order_id, tag, request.underlying, request.contract, now)

    def submit_market(
        self,
        client_order_id: str,
        underlying: str,
        contract: str,
        side: Side,
        quantity: int,
        leg: LegKind = "flatten",
    ) -> list[OrderEvent]:
        """Close ``quantity`` contracts at market (idempotent on the client order id, like OTOCOs)."""
        known = self._orders.get(client_order_id)
        if known is not None:
            return known.latest()
        now = self.clock.now_ns()
        tag = tag_for(client_order_id)
        existing = self._find_by_tag(tag)
        if existing is not None:
            return self._track(existing, client_order_id, tag, underlying, contract, now, single_leg=leg)
        placed = self._place(market_form(tag, underlying, contract, side, quantity), tag)
        if isinstance(placed, WireOrder):
            return self._track(placed, client_order_id, tag, underlying, contract, now, single_leg=leg)
        if isinstance(placed, list):
            tracker = self._new_rejected(client_order_id, underlying, contract, leg, side, quantity)
            return [tracker.synthetic("rejected", now, "; ".join(placed) or "refused by Tradier")]
        order = self._get_order(placed)
        return self._track(order, client_order_id, tag, underlying, contract, now, single_leg=leg)

    def cancel(self, order_id: str) -> list[OrderEvent]:
        """Cancel one leg (``DELETE /orders/{id}``); a terminal leg yields no events."""
        tracked, leg = self._leg(order_id)
        if leg.is_terminal:
            return []
        now = self.clock.now_ns()
        response = self._request("DELETE", self._path(f"orders/{order_id}"), retry=True)
        errors = error_messages(response.content)
        out = self._sync(tracked, now, venue_time=False)
        if errors and not leg.is_terminal:
            raise TradierRequestError(f"Tradier refused to cancel order {order_id}: {'; '.join(errors)}")
        return out

    def modify_stop(self, order_id: str, stop_price: float) -> list[OrderEvent]:
        """Move a stop leg (``PUT /orders/{id}``); a terminal stop yields no events."""
        tracked, leg = self._leg(order_id)
        if leg.state.leg != "stop_loss":
            raise BrokerError(f"order {order_id} is a {leg.state.leg} leg, not a stop")
        if not (stop_price > 0 and math.isfinite(stop_price)):
            raise BrokerError(f"stop price must be a positive number, got {stop_price}")
        if leg.is_terminal:
            return []
        now = self.clock.now_ns()
        form = stop_modify_form(stop_price, self.config.exit_duration)
        response = self._request("PUT", self._path(f"orders/{order_id}"), data=form, retry=True)
        errors = error_messages(response.content)
        out = self._sync(tracked, now, venue_time=False)
        if errors and not leg.is_terminal:
            raise TradierRequestError(f"Tradier refused to modify order {order_id}: {'; '.join(errors)}")
        return out

    def on_option_quote(self, quote: OptionQuote) -> list[OrderEvent]:
        """Poll the venue (throttled) while an order on this contract is live."""
        if not any(t.live() and t.contract == quote.symbol for t in self._orders.values()):
            return []
        return self._poll_throttled()

    def on_underlying(self, symbol: str, price: float, ts: int) -> list[OrderEvent]:
        """Poll the venue (throttled) while an order on this underlying is live."""
        if not any(t.live() and t.underlying == symbol for t in self._orders.values()):
            return []
        return self._poll_throttled()

    def on_session_close(self, ts: int, settle_prices: Mapping[str, float]) -> list[OrderEvent]:
        """The venue expires and settles on its own; report what it did."""
        return self.poll()

    def open_orders(self) -> list[OrderEvent]:
        """The latest event of every live leg, oldest order first."""
        return [
            leg.last_event
            for tracked in self._orders.values()
            for leg in tracked.legs.values()
            if not leg.is_terminal and leg.last_event is not None
        ]

    # -- polling and queries ------------------------------------------------------------------

    def poll(self) -> list[OrderEvent]:
        """Fetch every live order and return the events its changes imply."""
        self._last_poll = self._monotonic()
        now = self.clock.now_ns()
        out: list[OrderEvent] = []
        for tracked in list(self._orders.values()):
            if tracked.live() and not tracked.parent_id.startswith("rejected-"):
                out.extend(self._sync(tracked, now, venue_time=True))
        return out

    def quotes(self, symbols: Sequence[str]) -> list[OptionQuote]:
        """Option quotes for OCC ``symbols`` (``GET /markets/quotes``); stock symbols are skipped."""
        if not symbols:
            return []
        response = self._request("GET", "/markets/quotes", params={"symbols": ",".join(symbols)}, retry=True)
        return self._parsed(parse_quotes, response.content, self.clock.now_ns())

    def preview_otoco(self, request: OrderRequest, client_order_id: str) -> dict[str, Any]:
        """Tradier's preview of the bracket (``preview=true``): cost, fees, validation; nothing is placed."""
        form = [*otoco_form(request, tag_for(client_order_id), self.config.entry_duration, self.config.exit_duration)]
        form.append(("preview", "true"))
        response = self._request("POST", self._path("orders"), data=form, retry=False)
        errors = error_messages(response.content)
        if errors:
            raise TradierRequestError(f"Tradier preview refused: {'; '.join(errors)}")
        doc: dict[str, Any] = response.json()
        return dict(doc.get("order") or {})

    # -- internals ----------------------------------------------------------------------------

    def _path(self, tail: str) -> str:
        return f"/accounts/{self.connection.account_id}/{tail}"

    def _leg(self, order_id: str) -> tuple[_Tracked, LegTracker]:
        found = self._legs.get(order_id)
        if found is None:
            raise UnknownOrderError(f"no Tradier order with id {order_id!r} is tracked by this broker")
        return found

    def _poll_throttled(self) -> list[OrderEvent]:
        if self._monotonic() - self._last_poll < self.config.poll_interval_s:
            return []
        return self.poll()

    def _find_by_tag(self, tag: str) -> WireOrder | None:
        response = self._request("GET", self._path("orders"), params={"includeTags": "true"}, retry=True)
        orders = self._parsed(parse_orders, response.content)
        matches = [o for o in orders if o.tag == tag or any(leg.tag == tag for leg in o.legs())]
        return matches[0] if matches else None

    def _get_order(self, order_id: int) -> WireOrder:
        response = self._request("GET", self._path(f"orders/{order_id}"), params={"includeTags": "true"}, retry=True)
        return self._parsed(parse_order, response.content)

    def _place(self, form: list[tuple[str, str]], tag: str) -> int | list[str] | WireOrder:
        """POST an order: its id, the venue's error messages, or (after a lost response) the order
        found by its tag."""
        try:
            response = self._request("POST", self._path("orders"), data=form, retry=False)
        except TradierRequestError as exc:
            if not isinstance(exc.__cause__, httpx.TransportError):
                raise
            found = self._find_by_tag(tag)
            if found is not None:
                return found
            raise TradierRequestError(f"{exc}; no order with tag {tag} exists, so it is safe to submit again") from None
        order_id, errors = self._parsed(parse_placed, response.content)
        if errors:
            return errors
        assert order_id is not None  # parse_placed guarantees an id or errors
        return order_id

    def _track(
        self,
        order: WireOrder,
        client_order_id: str,
        tag: str,
        underlying: str,
        contract: str,
        now: int,
        single_leg: LegKind | None = None,
    ) -> list[OrderEvent]:
        tracked = _Tracked(client_order_id, tag, str(order.id), underlying, contract)
        legs = order.legs()
        kinds = _leg_kinds(legs) if single_leg is None else [single_leg]
        if len(kinds) != len(legs):
            raise TradierRequestError(
                f"Tradier order {order.id} (tag {tag}) has {len(legs)} legs; expected {len(kinds)}"
            )
        for wire, kind in zip(legs, kinds, strict=True):
            quantity = round(wire.quantity)
            tracker = LegTracker.new(
                str(wire.id),
                client_order_id,
                underlying,
                wire.option_symbol or contract,
                kind,
                side_of(wire.side),
                quantity,
                self.fees.fill,
            )
            tracked.legs[str(wire.id)] = tracker
            self._legs[str(wire.id)] = (tracked, tracker)
        self._orders[client_order_id] = tracked
        return self._apply(tracked, legs, now)

    def _sync(self, tracked: _Tracked, now: int, *, venue_time: bool) -> list[OrderEvent]:
        order = self._get_order(int(tracked.parent_id))
        return self._apply(tracked, order.legs(), now, venue_time=venue_time)

    def _apply(self, tracked: _Tracked, legs: list[WireLeg], now: int, *, venue_time: bool = False) -> list[OrderEvent]:
        first: list[OrderEvent] = []
        rest: list[OrderEvent] = []
        for wire in legs:
            tracker = tracked.legs.get(str(wire.id))
            if tracker is None:
                continue
            fresh = tracker.state.status == "pending"
            try:
                events = tracker.observe(LegView.of(wire), now, venue_time)
            except TradierProtocolError as exc:
                raise TradierRequestError(str(exc)) from None
            if fresh and events:
                first.append(events[0])
                rest.extend(events[1:])
            else:
                rest.extend(events)
        return first + rest

    def _new_rejected(
        self, client_order_id: str, underlying: str, contract: str, kind: LegKind, side: Side, quantity: int
    ) -> LegTracker:
        self._rejected += 1
        order_id = f"rejected-{self._rejected}-{kind}-{tag_for(client_order_id)}"
        tracker = LegTracker.new(order_id, client_order_id, underlying, contract, kind, side, quantity, self.fees.fill)
        tracked = self._orders.setdefault(
            client_order_id,
            _Tracked(client_order_id, tag_for(client_order_id), f"rejected-{self._rejected}", underlying, contract),
        )
        tracked.legs[order_id] = tracker
        self._legs[order_id] = (tracked, tracker)
        return tracker

    def _refused(self, client_order_id: str, request: OrderRequest, errors: list[str], now: int) -> list[OrderEvent]:
        reason = "; ".join(errors) or "refused by Tradier"
        exit_side: Side = "sell" if request.side == "buy" else "buy"
        legs: list[tuple[LegKind, Side]] = [
            ("entry", request.side),
            ("take_profit", exit_side),
            ("stop_loss", exit_side),
        ]
        out = []
        for kind, side in legs:
            tracker = self._new_rejected(
                client_order_id, request.underlying, request.contract, kind, side, request.quantity
            )
            out.append(tracker.synthetic("rejected", now, reason))
        return out

    def _parsed(self, parse: Callable[..., _T], *args: Any) -> _T:
        try:
            return parse(*args)
        except TradierProtocolError as exc:
            raise TradierRequestError(self._scrub(str(exc))) from None

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        data: list[tuple[str, str]] | None = None,
        retry: bool,
    ) -> httpx.Response:
        attempts = self.config.retries + 1 if retry else 1
        delay = self.config.backoff_s
        for attempt in range(attempts):
            self.requests += 1
            try:
                response = self._http.request(method, path, params=params, data=_form(data))
            except httpx.TransportError as exc:
                if attempt + 1 < attempts:
                    self._sleep(delay)
                    delay *= 2
                    continue
                raise TradierRequestError(
                    f"Tradier {method} {path}: {type(exc).__name__}: {self._scrub(str(exc))}"
                ) from exc
            if response.status_code in _RETRY_STATUSES and attempt + 1 < attempts:
                log.warning("tradier request retried", extra={"path": path, "status": response.status_code})
                self._sleep(delay)
                delay *= 2
                continue
            if response.status_code == 401:
                text = self._scrub(response.text.strip()[:200]) or "Unauthorized"
                raise TradierAuthError(
                    f"Tradier refused the access token (HTTP 401: {text}); check TRADIER_ACCESS_TOKEN and that it "
                    f"belongs to the {self.connection.environment} environment"
                )
            if response.status_code >= 400:
                detail = "; ".join(error_messages(response.content)) or response.text.strip()[:200]
                raise TradierRequestError(
                    f"Tradier {method} {path}: HTTP {response.status_code}: {self._scrub(detail)}"
                )
            return response
        raise TradierRequestError(f"Tradier {method} {path}: gave up after {attempts} attempts")

    def _scrub(self, text: str) -> str:
        token = self.connection.token.get_secret_value()
        return text.replace(token, "***") if token else text


def _form(data: list[tuple[str, str]] | None) -> dict[str, str] | None:
    """Form fields as a dict (they are unique by construction; httpx encodes them in order)."""
    return dict(data) if data is not None else None


def _leg_kinds(legs: list[WireLeg]) -> list[LegKind]:
    """Entry, take-profit, stop for an OTOCO's three legs (exits told apart by order type)."""
    if len(legs) != 3:
        return []
    exits: list[LegKind] = ["stop_loss" if leg.type in ("stop", "stop_limit") else "take_profit" for leg in legs[1:]]
    return ["entry", *exits]
