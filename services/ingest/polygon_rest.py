"""Polygon.io (Massive) REST client: custom bars -> Bars, option chain snapshot -> ChainSnapshot.

Requests carry the key as ``Authorization: Bearer KEY`` (what the official Python client sends,
github.com/polygon-io/client-python polygon/rest/base.py), never as an ``apiKey`` query parameter, so
URLs (which httpx logs) hold no secret. Pages are followed through ``next_url`` (the official client's
``_paginate_iter`` does the same), and only while it points at the configured host: the bearer key is
never sent anywhere else. Endpoint and field references: :mod:`services.ingest.polygon_parsing`.

Transient failures (connection errors, HTTP 429 and 5xx) are retried ``retries`` times by
:meth:`PolygonRest._get` with exponential backoff, honouring ``Retry-After``. Authentication
errors (401 ``ERROR``/``Unknown API Key``, 403 ``NOT_AUTHORIZED``) raise :class:`PolygonAuthError`
at once with one readable line; the key never appears in an error, a log line or a repr.

Settings: :class:`PolygonRestConfig` (the ``rest:`` section of config/polygon.yaml) and the key from
the environment (``POLYGON_API_KEY``, or ``MASSIVE_API_KEY``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Generator, Iterator
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.events import Bar, ChainSnapshot, OptionQuote
from services.core.settings import ConfigError, describe_validation_error
from services.ingest.polygon_parsing import (
    ChainRows,
    PolygonMessageError,
    parse_aggs_page,
    parse_chain_page,
    parse_error_body,
    timespan_seconds,
)

log = logging.getLogger(__name__)

DEFAULT_REST_URL = "https://api.polygon.io"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
T = TypeVar("T")


class PolygonRestError(RuntimeError):
    """A REST request failed for good (after retries), with a readable reason."""


class PolygonAuthError(PolygonRestError):
    """The API key was refused (missing, unknown, or not entitled to the data)."""


class PolygonCredentials(BaseSettings):
    """The API key, from ``POLYGON_API_KEY`` (or ``MASSIVE_API_KEY``); kept as a SecretStr."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("POLYGON_API_KEY", "MASSIVE_API_KEY"),
        description="Polygon/Massive API key (env POLYGON_API_KEY or MASSIVE_API_KEY).",
    )


def polygon_api_key(explicit: str | SecretStr | None = None) -> SecretStr:
    """The key to use: ``explicit`` if given, else the environment; ConfigError (one line) when none."""
    if explicit is not None:
        key = explicit if isinstance(explicit, SecretStr) else SecretStr(explicit)
    else:
        key = PolygonCredentials().api_key or SecretStr("")
    if not key.get_secret_value().strip():
        raise ConfigError("no Polygon API key: set POLYGON_API_KEY (or MASSIVE_API_KEY) in the environment")
    return key


class PolygonRestConfig(BaseModel):
    """The ``rest:`` section of config/polygon.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(default=DEFAULT_REST_URL, description="REST host (the sim: http://127.0.0.1:PORT).")
    timeout_s: float = Field(default=10.0, gt=0, description="Per-request timeout in seconds.")
    retries: int = Field(default=3, ge=0, description="Retries of a failed request (connection errors, 429, 5xx).")
    backoff_s: float = Field(default=0.5, ge=0, description="First retry delay; doubles per retry.")
    backoff_max_s: float = Field(default=8.0, ge=0, description="Longest retry delay.")
    aggs_page_limit: int = Field(default=50_000, gt=0, le=50_000, description="`limit` of custom-bars requests.")
    chain_page_limit: int = Field(default=250, gt=0, le=250, description="`limit` of chain snapshot requests.")
    max_pages: int = Field(default=10_000, gt=0, description="Stop following next_url after this many pages.")


def _date_or_ms(value: dt.date | dt.datetime | int | str) -> str:
    """A path ``from``/``to``: ``YYYY-MM-DD`` for dates, Unix ms for datetimes and ints."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"datetime {value} needs a time zone")
        return str(int(value.timestamp() * 1000))
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


class PolygonRest:
    """Synchronous client; use as a context manager or call :meth:`close`. Async callers run it in a
    thread (``asyncio.to_thread``)."""

    def __init__(
        self,
        config: PolygonRestConfig | None = None,
        api_key: str | SecretStr | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config or PolygonRestConfig()
        self._key = polygon_api_key(api_key)
        base = urlsplit(self.config.base_url)
        if base.scheme not in ("http", "https") or not base.netloc:
            raise ConfigError(f"polygon rest base_url {self.config.base_url!r} is not an http(s) URL")
        self._origin = (base.scheme, base.netloc)
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.config.base_url,
            timeout=self.config.timeout_s,
            transport=transport or httpx.HTTPTransport(),
            headers={"Accept": "application/json"},
            auth=_Bearer(self._key),
        )
        self.requests = 0

    def __repr__(self) -> str:
        return f"PolygonRest(base_url={self.config.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PolygonRest:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- endpoints ----------------------------------------------------------------------------

    def iter_aggregates(
        self,
        ticker: str,
        multiplier: int,
        timespan: str,
        start: dt.date | dt.datetime | int | str,
        end: dt.date | dt.datetime | int | str,
        *,
        adjusted: bool = True,
        sort: Literal["asc", "desc"] = "asc",
    ) -> Iterator[Bar]:
        """Bars of ``ticker`` from ``start`` to ``end`` (dates inclusive, or Unix ms), page by page."""
        interval_s = timespan_seconds(multiplier, timespan)
        path = (
            f"/v2/aggs/ticker/{quote(ticker, safe=':')}/range/{multiplier}/{timespan}/"
            f"{_date_or_ms(start)}/{_date_or_ms(end)}"
        )
        params: dict[str, Any] = {
            "adjusted": str(adjusted).lower(),
            "sort": sort,
            "limit": self.config.aggs_page_limit,
        }

        def parse(payload: bytes) -> tuple[list[Bar], str | None]:
            try:
                return parse_aggs_page(payload, ticker, interval_s)
            except PolygonMessageError as exc:
                raise PolygonRestError(f"Polygon aggregates for {ticker}: {exc}") from None

        for bars in self._paginate(path, params, parse):
            yield from bars

    def aggregates(
        self,
        ticker: str,
        multiplier: int,
        timespan: str,
        start: dt.date | dt.datetime | int | str,
        end: dt.date | dt.datetime | int | str,
        *,
        adjusted: bool = True,
        sort: Literal["asc", "desc"] = "asc",
    ) -> list[Bar]:
        """All bars of the range as a list (see :meth:`iter_aggregates`)."""
        return list(self.iter_aggregates(ticker, multiplier, timespan, start, end, adjusted=adjusted, sort=sort))

    def option_chain(
        self,
        underlying: str,
        *,
        expiration_date: dt.date | str | None = None,
        expiration_gte: dt.date | str | None = None,
        expiration_lte: dt.date | str | None = None,
        strike_gte: float | None = None,
        strike_lte: float | None = None,
        contract_type: Literal["call", "put"] | None = None,
    ) -> ChainSnapshot:
        """Every quoted contract of ``underlying`` matching the filters, all pages, as one ChainSnapshot
        (``ts``: the newest quote's time)."""
        params: dict[str, Any] = {"limit": self.config.chain_page_limit}
        filters: dict[str, dt.date | str | float | None] = {
            "expiration_date": expiration_date,
            "expiration_date.gte": expiration_gte,
            "expiration_date.lte": expiration_lte,
            "strike_price.gte": strike_gte,
            "strike_price.lte": strike_lte,
            "contract_type": contract_type,
        }
        for name, value in filters.items():
            if value is not None:
                params[name] = value.isoformat() if isinstance(value, dt.date) else value

        def parse(payload: bytes) -> tuple[ChainRows, str | None]:
            try:
                rows = parse_chain_page(payload, underlying)
            except PolygonMessageError as exc:
                raise PolygonRestError(f"Polygon option chain for {underlying}: {exc}") from None
            return rows, rows.next_url

        quotes: list[OptionQuote] = []
        spot: float | None = None
        for rows in self._paginate(f"/v3/snapshot/options/{quote(underlying, safe=':')}", params, parse):
            quotes.extend(rows.quotes)
            spot = spot if spot is not None else rows.underlying_price
        if not quotes or spot is None:
            raise PolygonRestError(f"Polygon option chain for {underlying}: no quoted contracts matched")
        return ChainSnapshot(
            ts=max(q.ts for q in quotes), underlying=underlying, underlying_price=spot, quotes=tuple(quotes)
        )

    # -- transport ----------------------------------------------------------------------------

    def _paginate(
        self, path: str, params: dict[str, Any], parse: Callable[[bytes], tuple[T, str | None]]
    ) -> Iterator[T]:
        """Parsed pages: the first from ``path``, then each ``next_url`` (same host only)."""
        url, query = path, params
        for _ in range(self.config.max_pages):
            page, next_url = parse(self._get(url, query))
            yield page
            if next_url is None:
                return
            url, query = self._follow(next_url), {}
        raise PolygonRestError(f"Polygon {path}: more than {self.config.max_pages} pages; narrow the request")

    def _follow(self, next_url: str) -> str:
        parts = urlsplit(next_url)
        if (parts.scheme, parts.netloc) != self._origin:
            raise PolygonRestError(
                f"refusing to follow next_url to {parts.scheme}://{parts.netloc} (configured host is "
                f"{self._origin[0]}://{self._origin[1]}); the API key is only sent to the configured host"
            )
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def _get(self, url: str, params: dict[str, Any]) -> bytes:
        where = urlsplit(url).path
        delay = self.config.backoff_s
        for attempt in range(self.config.retries + 1):
            self.requests += 1
            try:
                response = self._http.get(url, params=params or None)
            except httpx.TransportError as exc:
                if attempt == self.config.retries:
                    raise PolygonRestError(f"Polygon {where}: {type(exc).__name__}: {exc}") from None
                self._sleep(min(delay, self.config.backoff_max_s))
                delay *= 2
                continue
            if response.status_code == 200:
                return response.content
            if response.status_code in _RETRY_STATUSES and attempt < self.config.retries:
                wait = _retry_after(response) or min(delay, self.config.backoff_max_s)
                log.warning(
                    "polygon request retried", extra={"path": where, "status": response.status_code, "wait_s": wait}
                )
                self._sleep(wait)
                delay *= 2
                continue
            raise self._error(where, response)
        raise PolygonRestError(f"Polygon {where}: gave up after {self.config.retries + 1} attempts")

    def _error(self, where: str, response: httpx.Response) -> PolygonRestError:
        body = parse_error_body(response.content)
        status = body.status if body is not None else ""
        text = body.text if body is not None else response.text[:200]
        text = text.replace(self._key.get_secret_value(), "***")
        line = f"Polygon {where}: HTTP {response.status_code} {status}: {text}".replace("  ", " ")
        if response.status_code in (401, 403) or status == "NOT_AUTHORIZED":
            return PolygonAuthError(f"{line} (check POLYGON_API_KEY and your plan's entitlements)")
        return PolygonRestError(line)


class _Bearer(httpx.Auth):
    """Adds ``Authorization: Bearer KEY`` to each request; holds the key as a SecretStr."""

    def __init__(self, key: SecretStr) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "_Bearer(***)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._key.get_secret_value()}"
        yield request


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def load_rest_config(raw: dict[str, Any] | None, source: str = "config/polygon.yaml") -> PolygonRestConfig:
    """The ``rest:`` section as a PolygonRestConfig, or one ConfigError line naming the field."""
    try:
        return PolygonRestConfig.model_validate(raw or {})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, f"{source} rest")) from None
