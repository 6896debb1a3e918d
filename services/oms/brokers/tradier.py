"""TradierBroker: the Broker interface (services/oms/brokers/base.py) on Tradier's brokerage REST API.

Orders
- ``submit_otoco`` places ``class=otoco`` (leg 0 the limit entry, leg 1 the take-profit limit, leg 2 the
  stop; form fields in :func:`~services.oms.brokers.tradier_parsing.otoco_form`); ``submit_market``
  closes with ``class=option``, ``type=market``; ``cancel`` is ``DELETE /orders/{id}``; ``modify_stop``
  is ``PUT /orders/{id}`` on the stop leg (``type=stop``, ``duration``, ``stop``).
- Every order carries the deterministic tag of its client order id
  (:func:`~services.oms.brokers.tradier_parsing.tag_for`: ``db-<id>`` or ``dbx-<hex>``, decodable back
  to the id). Tradier does not deduplicate tags, so single submission is ours: a tracked client id
  returns its latest events; before any POST the day's orders are searched for the tag
  (``GET /orders?includeTags=true``), so a resubmission after a restart adopts the order.
- A POST is sent once. If its answer is lost (a timeout, a dropped connection or a 5xx: the venue may
  have accepted it) the tag is looked up every ``poll_interval_secs`` until the order shows up or
  ``status_timeout_secs`` pass. An order still not found then is *unresolved*: it is never sent again,
  every poll keeps looking for it (a late acceptance is adopted when it appears), and entries are
  refused until it is resolved. Only a POST that provably never reached the venue (connection refused,
  or answered 429 by the rate limiter) is sent again.

Retries and degradation (``retry`` settings): reads, cancels and modifies are retried on transport
errors, 429 and 5xx with exponential backoff and jitter (tenacity), a 429 waiting as its
``Retry-After`` says (else Tradier's ``X-Ratelimit-Expiry``), within ``max_attempts`` and
``budget_secs``. Past the budget a request raises :class:`~services.oms.brokers.base.VenueUnavailableError`
and the broker is degraded: :meth:`TradierBroker.entries_refused` says why until a request succeeds
again; cancels, modifies and flattens are still attempted, and polls keep trying. A 401 is one
:class:`TradierAuthError` line, never retried; the broker remembers it and refuses every later request
itself, so a wrong token costs the venue exactly one request.

State
- Order state comes from polling (``GET /orders/{id}``, no account-events stream: the stream needs a
  session per connection and still has to be reconciled by polling after a gap, so polling alone is
  the one path): :meth:`TradierBroker.poll` turns every change into OrderEvents through
  :class:`~services.oms.brokers.tradier_parsing.LegTracker`. The market-data hooks poll at most every
  ``poll_interval_secs`` while orders are live (or submissions are unresolved); fees are computed with
  the configured FeeModel (Tradier's order responses carry no fees). Expiry settlement is the venue's
  business and is not synthesised.
- :meth:`TradierBroker.account_state` reads the live orders and the positions
  (``GET /positions``; a response without a positions document is an error, never "flat") for the
  OMS's start-up reconciliation; :meth:`TradierBroker.adopt` tracks an own order found there.

Errors are classified for metrics: every failed attempt (retried or not) and every order the venue
refused is reported once to :attr:`TradierBroker.on_error` with its kind (:data:`ERROR_KINDS`:
``timeout``, ``transport``, ``http_429``, ``http_5xx``, ``http_4xx``, ``auth``, ``protocol``,
``rejected``); the OMS service counts them in ``dreambot_broker_errors_total``.

Environments: ``sandbox`` (https://sandbox.tradier.com/v1, the default) and ``live``
(https://api.tradier.com/v1). Live trading needs BOTH the explicit confirmation (``live_confirm`` or
env ``TRADIER_LIVE_CONFIRM=true``) AND the credentials from the environment (``TRADIER_ACCESS_TOKEN``,
``TRADIER_ACCOUNT_ID``); otherwise construction fails with one readable :class:`TradierConfigError`.
Every request sends ``Authorization: Bearer TOKEN`` and ``Accept: application/json``.

The access token is a SecretStr: it is never logged, never part of an error message (response text
is scrubbed of it), and not in any repr. Protocol references: :mod:`services.oms.brokers.tradier_parsing`.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

import httpx
from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random,
)

from services.core.clock import Clock
from services.core.events import OptionQuote, OrderEvent, OrderRequest, Side
from services.core.settings import ConfigError
from services.oms.brokers.base import (
    AccountState,
    BrokerError,
    UnknownOrderError,
    VenueOrder,
    VenueUnavailableError,
)
from services.oms.brokers.tradier_parsing import (
    TERMINAL_TRADIER,
    LegTracker,
    LegView,
    TradierProtocolError,
    WireLeg,
    WireOrder,
    client_order_id_of,
    error_messages,
    is_own_tag,
    market_form,
    otoco_form,
    parse_order,
    parse_orders,
    parse_placed,
    parse_positions,
    parse_quotes,
    request_of,
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
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
#: Transport errors raised before the request left this process: the venue never saw it.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

RequestKind = Literal["read", "place"]
ErrorKind = Literal["timeout", "transport", "http_429", "http_5xx", "http_4xx", "auth", "protocol", "rejected"]
ERROR_KINDS: Final[tuple[ErrorKind, ...]] = (
    "timeout", "transport", "http_429", "http_5xx", "http_4xx", "auth", "protocol", "rejected")


def _no_report(kind: ErrorKind) -> None:
    """The default error sink (a broker outside the OMS service has no metrics)."""


class TradierConfigError(ConfigError):
    """Tradier cannot be used as configured (one readable line)."""


class TradierAuthError(BrokerError):
    """Tradier refused the access token (HTTP 401)."""


class TradierRequestError(BrokerError):
    """A request Tradier answered with an error, or that could not be completed."""


class TradierUnavailableError(VenueUnavailableError, TradierRequestError):
    """Tradier kept answering 429/5xx, or could not be reached, for the whole retry budget."""


class _TransientError(Exception):
    """One failed attempt worth retrying (429, 5xx, transport error on an idempotent request)."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


class _AnswerLostError(Exception):
    """A POST reached the venue (or may have) and its answer did not come back."""


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


def retry_after_s(response: httpx.Response, now: Callable[[], float] = time.time) -> float | None:
    """Seconds a 429 asks to wait: ``Retry-After`` (seconds or an HTTP date), else Tradier's
    ``X-Ratelimit-Expiry`` (epoch milliseconds of the window's end); None when neither is readable."""
    raw = response.headers.get("Retry-After", "").strip()
    if raw:
        try:
            return max(float(raw), 0.0)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(when.timestamp() - now(), 0.0)
    expiry = response.headers.get("X-Ratelimit-Expiry", "").strip()
    if expiry:
        try:
            return max(float(expiry) / 1000.0 - now(), 0.0)
        except ValueError:
            return None
    return None


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


@dataclass(frozen=True, slots=True)
class _Unresolved:
    """A submission whose answer was lost and whose order has not (yet) been found by its tag."""

    client_order_id: str
    tag: str
    underlying: str
    contract: str
    single_leg: LegKind | None
    since: float


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
        self.on_error: Callable[[ErrorKind], None] = _no_report  # the OMS service counts these
        self._last_poll = -math.inf
        self._http = httpx.Client(
            base_url=self.connection.base_url,
            timeout=config.request_timeout_secs,
            transport=transport or httpx.HTTPTransport(),
            headers={"Accept": "application/json"},
            auth=_Bearer(self.connection.token),
        )
        self._orders: dict[str, _Tracked] = {}
        self._legs: dict[str, tuple[_Tracked, LegTracker]] = {}
        self._unresolved: dict[str, _Unresolved] = {}
        self._rejected = 0
        self._venue_trouble: str | None = None
        self._auth_failure: str | None = None
        self.requests = 0
        self.retries = 0
        r = config.retry
        # Exponential from backoff_initial_secs, capped, plus up to one initial step of jitter.
        self._backoff = wait_exponential(multiplier=r.backoff_initial_secs, max=r.backoff_max_secs) + wait_random(
            0, r.backoff_initial_secs)

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
        tag = tag_for(client_order_id)
        if tag in self._unresolved:
            return self._resolve(self._unresolved[tag])
        now = self.clock.now_ns()
        existing = self._find_by_tag(tag)
        if existing is not None:
            log.info("tradier order adopted by tag", extra={"tag": tag, "order_id": existing.id})
            return self._track(existing, client_order_id, tag, request.underlying, request.contract, now)
        form = otoco_form(request, tag, self.config.entry_duration, self.config.exit_duration)
        pending = _Unresolved(client_order_id, tag, request.underlying, request.contract, None, self._monotonic())
        placed = self._place(form, pending)
        if isinstance(placed, WireOrder):
            return self._track(placed, client_order_id, tag, request.underlying, request.contract, now)
        if isinstance(placed, list):
            return self._refused(client_order_id, request, placed, now)
        return []

    def submit_market(
        self,
        client_order_id: str,
        underlying: str,
        contract: str,
        side: Side,
        quantity: int,
        leg: LegKind = "flatten",
    ) -> list[OrderEvent]:
        """Close ``quantity`` contracts at market (single submission per client order id, like OTOCOs)."""
        known = self._orders.get(client_order_id)
        if known is not None:
            return known.latest()
        tag = tag_for(client_order_id)
        if tag in self._unresolved:
            return self._resolve(self._unresolved[tag])
        now = self.clock.now_ns()
        existing = self._find_by_tag(tag)
        if existing is not None:
            return self._track(existing, client_order_id, tag, underlying, contract, now, single_leg=leg)
        pending = _Unresolved(client_order_id, tag, underlying, contract, leg, self._monotonic())
        placed = self._place(market_form(tag, underlying, contract, side, quantity), pending)
        if isinstance(placed, WireOrder):
            return self._track(placed, client_order_id, tag, underlying, contract, now, single_leg=leg)
        if isinstance(placed, list):
            self.on_error("rejected")
            tracker = self._new_rejected(client_order_id, underlying, contract, leg, side, quantity)
            return [tracker.synthetic("rejected", now, "; ".join(placed) or "refused by Tradier")]
        return []

    def cancel(self, order_id: str) -> list[OrderEvent]:
        """Cancel one leg (``DELETE /orders/{id}``); a terminal leg yields no events."""
        tracked, leg = self._leg(order_id)
        if leg.is_terminal:
            return []
        now = self.clock.now_ns()
        response = self._request("DELETE", self._path(f"orders/{order_id}"))
        errors = error_messages(response.content)
        out = self._sync(tracked, now, venue_time=False)
        if errors and not leg.is_terminal:
            self.on_error("rejected")
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
        response = self._request("PUT", self._path(f"orders/{order_id}"), data=form)
        errors = error_messages(response.content)
        out = self._sync(tracked, now, venue_time=False)
        if errors and not leg.is_terminal:
            self.on_error("rejected")
            raise TradierRequestError(f"Tradier refused to modify order {order_id}: {'; '.join(errors)}")
        return out

    def on_option_quote(self, quote: OptionQuote) -> list[OrderEvent]:
        """Poll the venue (throttled) while an order on this contract is live or unresolved."""
        if not self._unresolved and not any(t.live() and t.contract == quote.symbol for t in self._orders.values()):
            return []
        return self._poll_throttled()

    def on_underlying(self, symbol: str, price: float, ts: int) -> list[OrderEvent]:
        """Poll the venue (throttled) while an order on this underlying is live or unresolved."""
        if not self._unresolved and not any(t.live() and t.underlying == symbol for t in self._orders.values()):
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

    def entries_refused(self) -> str | None:
        """Why entries must wait: a submission whose outcome is unknown, or Tradier unavailable."""
        if self._unresolved:
            tags = ", ".join(sorted(self._unresolved))
            return (f"the outcome of {len(self._unresolved)} Tradier submission(s) is unknown (tag {tags}); "
                    "they are looked up, never sent again")
        return self._auth_failure or self._venue_trouble

    def account_state(self) -> AccountState:
        """Live orders (own ones decoded from their tags) and positions, read from Tradier."""
        orders = self._parsed(parse_orders, self._request("GET", self._path("orders"),
                                                          params={"includeTags": "true"}).content)
        positions = self._parsed(parse_positions, self._request("GET", self._path("positions")).content)
        now = self.clock.now_ns()
        live: list[VenueOrder] = []
        for order in orders:
            legs = order.legs()
            if all(leg.status in TERMINAL_TRADIER for leg in legs) or order.status in TERMINAL_TRADIER:
                continue
            tag = order.tag or next((leg.tag for leg in legs if leg.tag), None)
            own = is_own_tag(tag)
            coid = client_order_id_of(tag) if own else None
            contracts = tuple(dict.fromkeys(leg.option_symbol or leg.symbol for leg in legs))
            live.append(VenueOrder(
                order_id=str(order.id), tag=tag, order_class=order.order_class, status=order.status,
                underlying=order.symbol or (legs[0].symbol if legs else ""), contracts=contracts, own=own,
                client_order_id=coid, request=request_of(order, coid, now) if coid is not None else None,
            ))
        held: dict[str, int] = {}
        for position in positions:
            held[position.symbol] = held.get(position.symbol, 0) + round(position.quantity)
        return AccountState(tuple(live), {k: v for k, v in held.items() if v})

    def adopt(self, order: VenueOrder, client_order_id: str) -> list[OrderEvent]:
        """Track an own order found at the venue (its current state as events)."""
        known = self._orders.get(client_order_id)
        if known is not None:
            return known.latest()
        wire = self._get_order(int(order.order_id))
        single: LegKind | None = None if wire.order_class == "otoco" else "flatten"
        contract = order.contracts[0] if order.contracts else ""
        tag = order.tag or tag_for(client_order_id)
        return self._track(wire, client_order_id, tag, order.underlying, contract, self.clock.now_ns(),
                           single_leg=single)

    # -- polling and queries ------------------------------------------------------------------

    def poll(self) -> list[OrderEvent]:
        """Fetch every live order (and look for unresolved submissions); the events their changes imply.
        Venue trouble past the retry budget is reported by :meth:`entries_refused`, not raised."""
        self._last_poll = self._monotonic()
        now = self.clock.now_ns()
        out: list[OrderEvent] = []
        try:
            for pending in list(self._unresolved.values()):
                out.extend(self._resolve(pending))
            for tracked in list(self._orders.values()):
                if tracked.live() and not tracked.parent_id.startswith("rejected-"):
                    out.extend(self._sync(tracked, now, venue_time=True))
        except VenueUnavailableError as exc:
            log.warning("tradier poll failed; retried at the next poll", extra={"error": str(exc)})
        return out

    def quotes(self, symbols: Sequence[str]) -> list[OptionQuote]:
        """Option quotes for OCC ``symbols`` (``GET /markets/quotes``); stock symbols are skipped."""
        if not symbols:
            return []
        response = self._request("GET", "/markets/quotes", params={"symbols": ",".join(symbols)})
        return self._parsed(parse_quotes, response.content, self.clock.now_ns())

    def preview_otoco(self, request: OrderRequest, client_order_id: str) -> dict[str, Any]:
        """Tradier's preview of the bracket (``preview=true``): cost, fees, validation; nothing is placed."""
        form = [*otoco_form(request, tag_for(client_order_id), self.config.entry_duration, self.config.exit_duration)]
        form.append(("preview", "true"))
        response = self._request("POST", self._path("orders"), data=form)
        errors = error_messages(response.content)
        if errors:
            raise TradierRequestError(f"Tradier preview refused: {'; '.join(errors)}")
        doc: dict[str, Any] = response.json()
        return dict(doc.get("order") or {})

    def unresolved(self) -> list[str]:
        """Tags of submissions whose outcome is not known yet."""
        return sorted(self._unresolved)

    # -- internals ----------------------------------------------------------------------------

    def _path(self, tail: str) -> str:
        return f"/accounts/{self.connection.account_id}/{tail}"

    def _leg(self, order_id: str) -> tuple[_Tracked, LegTracker]:
        found = self._legs.get(order_id)
        if found is None:
            raise UnknownOrderError(f"no Tradier order with id {order_id!r} is tracked by this broker")
        return found

    def _poll_throttled(self) -> list[OrderEvent]:
        if self._monotonic() - self._last_poll < self.config.poll_interval_secs:
            return []
        return self.poll()

    def _find_by_tag(self, tag: str) -> WireOrder | None:
        response = self._request("GET", self._path("orders"), params={"includeTags": "true"})
        orders = self._parsed(parse_orders, response.content)
        matches = [o for o in orders if o.tag == tag or any(leg.tag == tag for leg in o.legs())]
        if len(matches) > 1:
            log.error("tradier holds several orders with one tag", extra={"tag": tag, "count": len(matches)})
        return matches[0] if matches else None

    def _get_order(self, order_id: int) -> WireOrder:
        response = self._request("GET", self._path(f"orders/{order_id}"), params={"includeTags": "true"})
        return self._parsed(parse_order, response.content)

    def _place(self, form: list[tuple[str, str]], pending: _Unresolved) -> WireOrder | list[str] | None:
        """POST an order once: the placed order, the venue's error messages, or None when the answer
        was lost and the tag lookup did not find the order within ``status_timeout_secs`` (the
        submission is then unresolved)."""
        try:
            response = self._request("POST", self._path("orders"), data=form, kind="place")
        except _AnswerLostError as lost:
            log.warning("tradier order answer lost; looking the tag up", extra={"tag": pending.tag, "why": str(lost)})
            return self._await_tag(pending)
        order_id, errors = self._parsed(parse_placed, response.content)
        if errors:
            return errors
        assert order_id is not None  # parse_placed guarantees an id or errors
        try:
            return self._get_order(order_id)
        except VenueUnavailableError:
            # Placed, but its state cannot be read now: the next poll finds it by its tag.
            self._unresolved[pending.tag] = pending
            return None

    def _await_tag(self, pending: _Unresolved) -> WireOrder | None:
        deadline = self._monotonic() + self.config.status_timeout_secs
        while True:
            try:
                found = self._find_by_tag(pending.tag)
            except VenueUnavailableError:
                found = None
            if found is not None:
                return found
            if self._monotonic() + self.config.poll_interval_secs > deadline:
                break
            self._sleep(self.config.poll_interval_secs)
        self._unresolved[pending.tag] = pending
        log.error("tradier submission unresolved: never re-sent, looked up at every poll",
                  extra={"tag": pending.tag, "status_timeout_secs": self.config.status_timeout_secs})
        return None

    def _resolve(self, pending: _Unresolved) -> list[OrderEvent]:
        """Look an unresolved submission up once; track it (and return its events) when it appears."""
        found = self._find_by_tag(pending.tag)
        if found is None:
            return []
        del self._unresolved[pending.tag]
        log.info("tradier submission resolved by tag", extra={"tag": pending.tag, "order_id": found.id})
        return self._track(found, pending.client_order_id, pending.tag, pending.underlying, pending.contract,
                           self.clock.now_ns(), single_leg=pending.single_leg)

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
                self.on_error("protocol")
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
        self.on_error("rejected")
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
            self.on_error("protocol")
            raise TradierRequestError(self._scrub(str(exc))) from None

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        data: list[tuple[str, str]] | None = None,
        kind: RequestKind = "read",
    ) -> httpx.Response:
        """One request with retries (see the module doc). ``kind="place"``: a POST placing an order,
        re-sent only when the venue provably never took it; a lost answer raises :class:`_AnswerLostError`."""
        if self._auth_failure is not None:  # a refused token stays refused: no request storm (nor a count)
            raise TradierAuthError(self._auth_failure)
        r = self.config.retry
        retrying = Retrying(
            stop=stop_after_attempt(r.max_attempts) | stop_before_delay(r.budget_secs),
            wait=self._wait,
            retry=retry_if_exception_type(_TransientError),
            sleep=self._sleep,
            before_sleep=self._before_retry(method, path),
            reraise=True,
        )
        try:
            response = retrying(self._attempt, method, path, params, data, kind)
        except _TransientError as exc:
            self._venue_trouble = (f"Tradier unavailable: {method} {path} failed for the whole retry budget "
                                   f"({r.max_attempts} attempts, {r.budget_secs:g}s): {exc}")
            raise TradierUnavailableError(self._venue_trouble) from None
        self._venue_trouble = None
        return response

    def _attempt(
        self, method: str, path: str, params: dict[str, str] | None, data: list[tuple[str, str]] | None,
        kind: RequestKind,
    ) -> httpx.Response:
        self.requests += 1
        try:
            response = self._http.request(method, path, params=params, data=_form(data))
        except _NOT_SENT as exc:
            self.on_error("timeout" if isinstance(exc, httpx.TimeoutException) else "transport")
            raise _TransientError(f"{type(exc).__name__}: {self._scrub(str(exc))}") from None
        except httpx.TransportError as exc:
            self.on_error("timeout" if isinstance(exc, httpx.TimeoutException) else "transport")
            detail = f"{type(exc).__name__}: {self._scrub(str(exc))}"
            if kind == "place":
                raise _AnswerLostError(detail) from None
            raise _TransientError(detail) from None
        status = response.status_code
        if status == 429:
            self.on_error("http_429")
            raise _TransientError("HTTP 429 (rate limited)", retry_after_s(response))
        if status >= 500:
            self.on_error("http_5xx")
            if kind == "place":
                raise _AnswerLostError(f"HTTP {status}")
            raise _TransientError(f"HTTP {status}")
        if status == 401:
            self.on_error("auth")
            text = self._scrub(response.text.strip()[:200]) or "Unauthorized"
            self._auth_failure = (
                f"Tradier refused the access token (HTTP 401: {text}); check TRADIER_ACCESS_TOKEN and that it "
                f"belongs to the {self.connection.environment} environment"
            )
            log.error("tradier refused the access token", extra={"environment": self.connection.environment})
            raise TradierAuthError(self._auth_failure)
        if status >= 400 and not (kind == "place" and error_messages(response.content)):
            self.on_error("http_4xx")
            detail = "; ".join(error_messages(response.content)) or response.text.strip()[:200]
            raise TradierRequestError(f"Tradier {method} {path}: HTTP {status}: {self._scrub(detail)}")
        return response

    def _wait(self, state: RetryCallState) -> float:
        r = self.config.retry
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _TransientError) and exc.retry_after is not None:
            if exc.retry_after > r.max_retry_after_secs:
                return r.budget_secs + 1.0  # longer than the budget: stop_before_delay ends the retries
            return exc.retry_after
        return float(self._backoff(state))

    def _before_retry(self, method: str, path: str) -> Callable[[RetryCallState], None]:
        def note(state: RetryCallState) -> None:
            self.retries += 1
            exc = state.outcome.exception() if state.outcome is not None else None
            log.warning("tradier request retried", extra={
                "method": method, "path": path, "attempt": state.attempt_number, "error": str(exc),
                "wait_s": round(state.upcoming_sleep, 3)})
        return note

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
