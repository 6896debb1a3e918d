"""``python -m services.dashboard.main``: serve the ops console for one session.

Settings come from the environment (the Helm chart's console Deployment sets the first four):

- ``DREAMBOT_SESSION``: the TradingSession shown (Redis keys ``<session>:dreambot:*``, series
  labelled ``session=<session>`` or unlabelled).
- ``DREAMBOT_REDIS_URL``: the session's Redis (``redis://[user:password@]host:port/db``); empty shows
  the Redis panels as unavailable.
- ``DREAMBOT_PROMETHEUS_URL``: Prometheus base URL (``http://host:9090``, optionally with a path prefix
  or ``user:password@``); empty shows the charts as unavailable.
- ``DREAMBOT_DASHBOARD_PORT``: TCP port (default 8050).
- ``DREAMBOT_DASHBOARD_HOST``: listen address; default 127.0.0.1, or 0.0.0.0 inside a Kubernetes pod
  (``KUBERNETES_SERVICE_HOST`` set) so the Service can reach it.
- ``DREAMBOT_DASHBOARD_REFRESH_S`` (default 5), ``DREAMBOT_DASHBOARD_WINDOW_S`` (chart span, default
  1800), ``DREAMBOT_DASHBOARD_HEARTBEAT_STALE_S`` (default 30, the chart's stale-data alert).

A bad setting prints one line naming the variable and exits with status 2; credentials in URLs are
never printed or shown on the page.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from werkzeug.serving import make_server

from services.core.logs import configure_logging
from services.core.redis_state import RedisState
from services.core.settings import ConfigError
from services.dashboard.app import Console, ConsoleConfig, build_app
from services.dashboard.sources import PrometheusSource, SessionSource, strip_credentials

log = logging.getLogger("dreambot.dashboard")

PROG = "dreambot console"


class ConsoleSettings(BaseSettings):
    """The console's settings (env: DREAMBOT_*)."""

    model_config = SettingsConfigDict(env_prefix="DREAMBOT_", extra="ignore", frozen=True)

    session: str = Field(default="default", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                         description="TradingSession whose Redis keys and series are shown.")
    redis_url: str = Field(default="", description="Redis URL of the session's state; empty: Redis panels unavailable.")
    prometheus_url: str = Field(default="", description="Prometheus base URL; empty: charts unavailable.")
    dashboard_port: int = Field(default=8050, ge=1, le=65535, description="TCP port to serve on.")
    dashboard_host: str = Field(default="", description="Listen address; empty: 127.0.0.1, or 0.0.0.0 in a pod.")
    dashboard_refresh_s: float = Field(default=5.0, gt=0, le=3600, description="Seconds between refreshes.")
    dashboard_window_s: float = Field(default=1800.0, gt=0, le=7 * 86400, description="Span of the charts in seconds.")
    dashboard_heartbeat_stale_s: float = Field(default=30.0, gt=0, description="Heartbeat age shown as stale.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        value = value.strip()
        if value and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("prometheus_url")
    @classmethod
    def _prometheus_scheme(cls, value: str) -> str:
        value = value.strip()
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL with a host")
        return value

    def listen_host(self, environ: Mapping[str, str] | None = None) -> str:
        """The address to bind: the setting, else 0.0.0.0 in a Kubernetes pod, else loopback."""
        if self.dashboard_host:
            return self.dashboard_host
        env = os.environ if environ is None else environ
        return "0.0.0.0" if env.get("KUBERNETES_SERVICE_HOST") else "127.0.0.1"


def load_settings(**overrides: Any) -> ConsoleSettings:
    """Settings from env, or one ConfigError line naming the variable (never its value)."""
    try:
        return ConsoleSettings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err.get("loc", ("?",))[0])
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        raise ConfigError(f"environment variable DREAMBOT_{name.upper()}: {msg}") from None


def make_console(settings: ConsoleSettings) -> Console:
    """Wire the sources for ``settings`` (nothing is contacted until the first refresh)."""
    try:
        store = RedisState(settings.redis_url, settings.session) if settings.redis_url else None
    except ValueError as exc:
        raise ConfigError(f"environment variable DREAMBOT_REDIS_URL: {exc}") from None
    redis_display = strip_credentials(settings.redis_url)
    state = SessionSource(store, clock_ns=time.time_ns, stale_after_s=settings.dashboard_heartbeat_stale_s)
    prometheus = PrometheusSource(settings.prometheus_url)
    config = ConsoleConfig(
        session=settings.session,
        refresh_s=settings.dashboard_refresh_s,
        window_s=settings.dashboard_window_s,
        redis_display=redis_display,
        prometheus_display=prometheus.display_url,
    )
    return Console(config, state, prometheus)


class _Stop(Exception):  # noqa: N818 - a signal, not an error
    """SIGTERM: leave serve_forever and close the socket."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise _Stop


def main() -> int:
    try:
        settings = load_settings()
        console = make_console(settings)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    host = settings.listen_host()
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, settings.dashboard_port), family=family, backlog=128)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else (exc.strerror or str(exc))
        print(f"{PROG}: cannot listen on {host}:{settings.dashboard_port}: {reason}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level)
    if settings.log_level != "DEBUG":  # one access-log line per refresh is noise
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = build_app(console)
    with listener:
        server = make_server(host, settings.dashboard_port, app.server, threaded=True, fd=listener.fileno())
    signal.signal(signal.SIGTERM, _on_sigterm)
    log.info("console serving", extra={
        "session": settings.session, "listen": f"http://{host}:{settings.dashboard_port}/",
        "redis": console.config.redis_display or "(not configured)",
        "prometheus": console.config.prometheus_display or "(not configured)",
    })
    try:
        server.serve_forever()
    except (KeyboardInterrupt, _Stop):
        log.info("console stopping")
    finally:
        server.server_close()
        console.prometheus.close()
        if console.state.store is not None and hasattr(console.state.store, "close"):
            console.state.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
