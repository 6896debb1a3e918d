"""Protocol-faithful local stand-ins for the venues DreamBot talks to (no network needed).

- :mod:`services.sim.polygon`: Polygon.io (Massive) websocket clusters (``/stocks``, ``/options``) and
  REST (custom bars, option chain snapshot) served from a bar file.
- :mod:`services.sim.tradier`: Tradier's brokerage REST API (orders incl. OTOCO, modify, cancel,
  quotes) with fills from the project's PaperBroker.

Each runs as ``python -m services.sim.<name> --port P ...`` or, in tests, in a background thread via
:class:`SimServer`. They listen on 127.0.0.1 only and speak the real wire formats, so the real
clients (``services.ingest.polygon_*``, ``services.oms.brokers.tradier``) are what get tested.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")

LOOPBACK = "127.0.0.1"


class SimServer:
    """An aiohttp application served on ``host:port`` from a background thread with its own loop.

    ``port=0`` picks a free port (read it back from :attr:`port`). Use as a context manager or call
    :meth:`start` / :meth:`stop`.
    """

    def __init__(self, app: web.Application, host: str = LOOPBACK, port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sim-server", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://host:port`` of the running server."""
        return f"ws://{self.host}:{self.port}"

    def start(self) -> SimServer:
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the server's loop and return its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def stop(self) -> None:
        if self._runner is not None:
            self.call(self._runner.cleanup())
            self._runner = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` in the foreground until SIGINT/SIGTERM (the sims' CLI entry points)."""
    web.run_app(app, host=host, port=port, print=None, access_log=None, shutdown_timeout=1.0)
