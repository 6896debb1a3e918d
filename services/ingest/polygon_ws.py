"""Polygon.io (Massive) websocket client: connect, authenticate, subscribe, reconnect with backoff.

The protocol (sources in :mod:`services.ingest.polygon_parsing`): connect to a cluster
(``wss://socket.polygon.io/stocks`` or ``/options``; Massive serves the same at
``wss://socket.massive.com``), send ``{"action":"auth","params":KEY}``, wait for
``[{"ev":"status","status":"auth_success",...}]`` (``auth_failed`` is fatal: the official Go client
closes and reports it, so do we), then ``{"action":"subscribe","params":"AM.SPY,Q.SPY,T.SPY"}``.
Data arrives as JSON arrays of ``AM``/``A``/``Q``/``T`` objects.

:meth:`PolygonStream.events` yields :data:`StreamItem` values: Bar, Quote, Trade or OptionQuote
events, and :class:`~services.ingest.polygon_parsing.PolygonMessageError` *values* for malformed
elements (typed, with the raw payload) so the ingest stage can dead-letter them and keep streaming.
A dropped connection (network error, server close) is retried with exponential backoff (jittered)
and the subscriptions are sent again after re-authenticating; ``max_reconnects`` bounds it.

The API key is only ever written into the auth frame: it is a SecretStr everywhere else, errors and
log lines never carry it, and the websockets library logs through ``services.ingest.polygon_ws.wire``,
which is pinned at WARNING so its DEBUG frame dumps (which would include the auth frame) never run.

Settings: :class:`PolygonStreamConfig` is the ``websocket:`` section of config/polygon.yaml
(:func:`load_polygon_config`); the key comes from ``POLYGON_API_KEY``/``MASSIVE_API_KEY``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from services.core.settings import CONFIG_DIR, load_model
from services.ingest.polygon_parsing import (
    Market,
    ParsedFrame,
    PolygonMessageError,
    StatusMessage,
    StreamEvent,
    parse_frame,
)
from services.ingest.polygon_rest import PolygonRestConfig, polygon_api_key

log = logging.getLogger(__name__)
_wire_log = logging.getLogger(f"{__name__}.wire")
_wire_log.setLevel(logging.WARNING)  # websockets logs whole frames (the auth frame too) at DEBUG

POLYGON_YAML = CONFIG_DIR / "polygon.yaml"
DEFAULT_STOCKS_URL = "wss://socket.polygon.io/stocks"

StreamItem = StreamEvent | PolygonMessageError


class PolygonStreamError(RuntimeError):
    """The stream cannot continue (reconnects exhausted, protocol broken)."""


class PolygonStreamAuthError(PolygonStreamError):
    """The server answered ``auth_failed``: the key is wrong or not entitled to this cluster."""


class PolygonStreamConfig(BaseModel):
    """The ``websocket:`` section of config/polygon.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(default=DEFAULT_STOCKS_URL, description="Cluster URL, ending /stocks or /options.")
    subscriptions: tuple[str, ...] = Field(
        default=(), description="Channels to subscribe after auth, e.g. AM.SPY, Q.SPY, T.SPY (AM.* for all)."
    )
    open_timeout_s: float = Field(default=10.0, gt=0, description="Connect (TCP + websocket handshake) timeout.")
    auth_timeout_s: float = Field(default=10.0, gt=0, description="How long to wait for the auth answer.")
    ping_interval_s: float | None = Field(default=20.0, gt=0, description="Keepalive ping period (None: off).")
    backoff_s: float = Field(default=0.5, ge=0, description="First reconnect delay; doubles per failed attempt.")
    backoff_max_s: float = Field(default=30.0, ge=0, description="Longest reconnect delay.")
    jitter: float = Field(default=0.2, ge=0, le=1, description="Random extra delay, as a fraction of the delay.")
    max_reconnects: int | None = Field(
        default=None, ge=0, description="Consecutive failed reconnects before giving up (None: never)."
    )
    max_queue: int = Field(default=1024, gt=0, description="Frames buffered before the socket applies backpressure.")

    @property
    def market(self) -> Market:
        """``options`` for an /options cluster, else ``stocks``."""
        return "options" if urlsplit(self.url).path.rstrip("/").endswith("options") else "stocks"


class PolygonConfig(BaseModel):
    """config/polygon.yaml: the websocket stream and the REST client."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    websocket: PolygonStreamConfig = Field(default_factory=PolygonStreamConfig, description="Streaming client.")
    rest: PolygonRestConfig = Field(default_factory=PolygonRestConfig, description="REST client.")


def load_polygon_config(path: Path | None = None) -> PolygonConfig:
    """Load config/polygon.yaml (or ``path``); problems raise one ConfigError line."""
    return load_model(path or POLYGON_YAML, PolygonConfig)


@dataclass(frozen=True, slots=True)
class RawFrame:
    """One websocket data frame as received, and the number of the connection it arrived on."""

    connection: int
    data: str


@dataclass(slots=True)
class StreamStats:
    """Counters a stage exports as metrics."""

    connects: int = 0
    disconnects: int = 0
    frames: int = 0
    events: int = 0
    malformed: int = 0
    statuses: int = 0


class PolygonStream:
    """One websocket connection to one cluster, re-established as needed; iterate :meth:`events`."""

    def __init__(
        self,
        config: PolygonStreamConfig | None = None,
        api_key: str | SecretStr | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or PolygonStreamConfig()
        self._key = polygon_api_key(api_key)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._subs: list[str] = list(dict.fromkeys(self.config.subscriptions))
        self._ws: ClientConnection | None = None
        self._closing = False
        self.stats = StreamStats()
        self.last_status: StatusMessage | None = None

    def __repr__(self) -> str:
        return f"PolygonStream(url={self.config.url!r}, subscriptions={self._subs!r})"

    @property
    def subscriptions(self) -> tuple[str, ...]:
        return tuple(self._subs)

    async def subscribe(self, *params: str) -> None:
        """Add channels (``AM.SPY``...); sent now when connected, and after every reconnect."""
        new = [p for p in params if p not in self._subs]
        self._subs.extend(new)
        if new and self._ws is not None:
            await self._ws.send(json.dumps({"action": "subscribe", "params": ",".join(new)}))

    async def unsubscribe(self, *params: str) -> None:
        """Drop channels."""
        gone = [p for p in params if p in self._subs]
        self._subs = [p for p in self._subs if p not in gone]
        if gone and self._ws is not None:
            await self._ws.send(json.dumps({"action": "unsubscribe", "params": ",".join(gone)}))

    async def close(self) -> None:
        """Stop: the running :meth:`events` iteration ends after the socket closes."""
        self._closing = True
        if self._ws is not None:
            await self._ws.close()

    async def frames(self) -> AsyncIterator[RawFrame]:
        """Data frames as received (text, unparsed), across reconnects, until closed.

        Each carries the number of the connection it came on (1, then +1 per reconnect), so a consumer
        knows when a gap may have opened. The handshake's frames (``connected``, auth) are not included;
        everything after it is, status frames too (:meth:`events` reads them)."""
        failures = 0
        while not self._closing:
            reason = "closed by server"
            try:
                async with connect(
                    self.config.url,
                    open_timeout=self.config.open_timeout_s,
                    ping_interval=self.config.ping_interval_s,
                    max_queue=self.config.max_queue,
                    logger=_wire_log,
                ) as ws:
                    self._ws = ws
                    await self._authenticate(ws)
                    self.stats.connects += 1
                    failures = 0
                    if self._subs:
                        await ws.send(json.dumps({"action": "subscribe", "params": ",".join(self._subs)}))
                    log.info("polygon stream connected", extra={"url": self.config.url, "subscriptions": self._subs})
                    async for frame in ws:
                        self.stats.frames += 1
                        yield RawFrame(self.stats.connects, frame if isinstance(frame, str) else frame.decode())
            except PolygonStreamAuthError:
                raise
            except (OSError, TimeoutError, WebSocketException) as exc:
                reason = f"{type(exc).__name__}: {self._scrub(str(exc))}"
            finally:
                self._ws = None
            if self._closing:
                return
            self.stats.disconnects += 1
            failures += 1
            if self.config.max_reconnects is not None and failures > self.config.max_reconnects:
                raise PolygonStreamError(
                    f"polygon stream {self.config.url}: gave up after {failures - 1} reconnects ({reason})"
                )
            delay = min(self.config.backoff_s * 2 ** (failures - 1), self.config.backoff_max_s)
            delay *= 1.0 + self.config.jitter * self._rng.random()
            log.warning(
                "polygon stream disconnected; reconnecting",
                extra={"url": self.config.url, "reason": reason, "attempt": failures, "delay_s": round(delay, 3)},
            )
            await self._sleep(delay)

    async def events(self) -> AsyncIterator[StreamItem]:
        """Events (and malformed-message errors) in arrival order, across reconnects, until closed."""
        market = self.config.market
        async for raw in self.frames():
            parsed = self.parse(raw.data, market)
            for error in parsed.errors:
                yield error
            for event in parsed.events:
                yield event

    def parse(self, frame: str, market: Market | None = None) -> ParsedFrame:
        """Decode one data frame, counting and logging what it holds (status messages included)."""
        parsed = parse_frame(frame, market or self.config.market)
        for status in parsed.statuses:
            self._on_status(status)
        self.stats.malformed += len(parsed.errors)
        self.stats.events += len(parsed.events)
        return parsed

    async def _authenticate(self, ws: ClientConnection) -> None:
        await ws.send(json.dumps({"action": "auth", "params": self._key.get_secret_value()}))
        async with asyncio.timeout(self.config.auth_timeout_s):
            while True:
                parsed = parse_frame(await ws.recv(), self.config.market)
                for status in parsed.statuses:
                    self._on_status(status)
                    if status.status == "auth_success":
                        return
                    if status.status == "auth_failed":
                        raise PolygonStreamAuthError(
                            f"polygon stream {self.config.url} refused the API key ({status.status}: "
                            f"{self._scrub(status.message)}); check POLYGON_API_KEY and the plan's clusters"
                        )

    def _on_status(self, status: StatusMessage) -> None:
        self.stats.statuses += 1
        self.last_status = status
        # auth_failed is raised as PolygonStreamAuthError (one line for the caller), so it is not logged twice.
        level = logging.WARNING if status.status in ("error", "max_connections") else logging.DEBUG
        log.log(level, "polygon status", extra={"status": status.status, "detail": self._scrub(status.message)})

    def _scrub(self, text: str) -> str:
        key = self._key.get_secret_value()
        return text.replace(key, "***") if key else text


def stream_from_config(config: PolygonConfig | None = None, **overrides: Any) -> PolygonStream:
    """A PolygonStream from config/polygon.yaml (``overrides`` replace fields of its websocket section)."""
    section = (config or load_polygon_config()).websocket
    return PolygonStream(section.model_copy(update=overrides) if overrides else section)
