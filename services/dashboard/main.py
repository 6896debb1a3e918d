"""``python -m services.dashboard.main``: serve the ops console for one session.

Settings come from the environment (the Helm chart's console Deployment sets the first four):

- ``DREAMBOT_SESSION``: the TradingSession shown (Redis keys ``<session>:dreambot:*``, series
  labelled ``session=<session>`` or unlabelled).
- ``DREAMBOT_REDIS_URL``: the session's Redis (``redis://[user:password@]host:port/db``); empty shows
  the Redis panels as unavailable.
- ``DREAMBOT_PROMETHEUS_URL``: Prometheus base URL (``http://host:9090``, optionally with a path prefix
  or ``user:password@``); empty shows the charts as unavailable.
- ``DREAMBOT_DASHBOARD_PORT``: TCP port (default 8050).
- ``DREAMBOT_DASHBOARD_HOST``: listen address; default 127.0.0.1 (the chart sets 0.0.0.0 so its
  Service can reach the pod, and a NetworkPolicy admits only the console port).
- ``DREAMBOT_DASHBOARD_REFRESH_S`` (default 5), ``DREAMBOT_DASHBOARD_WINDOW_S`` (chart span, default
  1800), ``DREAMBOT_DASHBOARD_HEARTBEAT_STALE_S`` (default 30, the chart's stale-data alert).
- ``DREAMBOT_LOG_LEVEL``; the JSON log lines also go to ``<DREAMBOT_STORAGE_DIR>/logs/console.jsonl``,
  rotated like the stages' (``DREAMBOT_LOG_ROTATE_MB``, ``DREAMBOT_LOG_BACKUPS``).

Access (:mod:`services.dashboard.auth`, :mod:`services.dashboard.access`); at least one way in is
required, else the console refuses to start:

- ``DREAMBOT_CONSOLE_USERS``: user entries ``name:role:scrypt$...`` separated by newlines or ``;``;
  role ``viewer`` or ``operator``. Make one with ``python -m services.dashboard.auth hash-password
  --user alice --role operator`` (reads the password from stdin or a prompt).
- ``DREAMBOT_CONSOLE_ADMIN_PASSWORD``: a password for the operator ``admin`` (what the chart generates
  when no users are given); hashed at start, never stored or printed.
- ``DREAMBOT_CONSOLE_SESSION_KEY``: key signing session cookies and CSRF tokens (32+ bytes); empty:
  a random key per process (sessions end when the console restarts).
- ``DREAMBOT_CONSOLE_SESSION_TTL_S``: session lifetime from sign-in (default 28800, 8 h).
- ``DREAMBOT_CONSOLE_ALLOWED_HOSTS``: Host header names accepted (comma-separated; default localhost,
  127.0.0.1, ::1 and the listen address); ``DREAMBOT_CONSOLE_TRUSTED_ORIGINS``: further origins
  (``https://console.example``) whose state-changing requests are accepted, e.g. behind a proxy that
  rewrites Host.
- ``DREAMBOT_CONSOLE_COOKIE_SECURE``: mark cookies Secure (set it when served over HTTPS).
- ``DREAMBOT_CONSOLE_PROXY_USER_HEADER``: trust this header (e.g. ``X-Forwarded-Email`` from an OIDC
  proxy) as the signed-in user, only from ``DREAMBOT_CONSOLE_TRUSTED_PROXIES`` (CIDRs, default
  loopback, i.e. a sidecar); the role comes from the user list (hash ``-``), else
  ``DREAMBOT_CONSOLE_PROXY_DEFAULT_ROLE`` (``none`` refuses them, the default).
- ``DREAMBOT_CONSOLE_CONFIRM_TTL_S``: how long an armed engage/release waits for Confirm (default 60).

A bad setting prints one line naming the variable and exits with status 2; credentials in URLs,
passwords, hashes and keys are never printed, logged or shown on the page.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from werkzeug.serving import make_server

from services.cliutil import OneLineParser
from services.core.logs import configure_stage_logging
from services.core.redis_state import RedisState
from services.core.settings import PROJECT_ROOT, ConfigError
from services.core.state import StateStore
from services.dashboard.access import AccessGuard, AccessPolicy, ProxyLogin, parse_networks
from services.dashboard.app import Console, ConsoleConfig, build_app
from services.dashboard.auth import (
    AuthConfigError,
    PasswordHash,
    Role,
    SessionSigner,
    User,
    UserDirectory,
    hash_password,
)
from services.dashboard.pages.base import Page, PageContext
from services.dashboard.sources import PrometheusSource, SessionSource, strip_credentials

log = logging.getLogger("dreambot.dashboard")

ADMIN_USER = "admin"
CsvList = Annotated[tuple[str, ...], NoDecode]


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value

PROG = "dreambot console"


class ConsoleSettings(BaseSettings):
    """The console's settings (env: DREAMBOT_*)."""

    model_config = SettingsConfigDict(env_prefix="DREAMBOT_", extra="ignore", frozen=True)

    session: str = Field(default="default", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                         description="TradingSession whose Redis keys and series are shown.")
    redis_url: str = Field(default="", description="Redis URL of the session's state; empty: Redis panels unavailable.")
    prometheus_url: str = Field(default="", description="Prometheus base URL; empty: charts unavailable.")
    dashboard_port: int = Field(default=8050, ge=1, le=65535, description="TCP port to serve on.")
    dashboard_host: str = Field(default="", description="Listen address; empty: 127.0.0.1.")
    dashboard_refresh_s: float = Field(default=5.0, gt=0, le=3600, description="Seconds between refreshes.")
    dashboard_window_s: float = Field(default=1800.0, gt=0, le=7 * 86400, description="Span of the charts in seconds.")
    dashboard_heartbeat_stale_s: float = Field(default=30.0, gt=0, description="Heartbeat age shown as stale.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    # Read from the stages' variables (DREAMBOT_STORAGE_DIR, DREAMBOT_LOG_ROTATE_MB, DREAMBOT_LOG_BACKUPS).
    storage_dir: Path = Field(default=PROJECT_ROOT / "storage", description="Its logs/ folder gets console.jsonl.")
    log_rotate_mb: float = Field(default=50.0, gt=0, description="MiB at which console.jsonl is rotated.")
    log_backups: int = Field(default=5, ge=1, description="Rotated console.jsonl files kept.")
    console_users: SecretStr = Field(default=SecretStr(""), description="User entries name:role:scrypt$...")
    console_admin_password: SecretStr = Field(default=SecretStr(""),
                                              description="Password of the operator 'admin' (hashed at start).")
    console_session_key: SecretStr = Field(default=SecretStr(""),
                                           description="Key signing sessions and CSRF tokens; empty: random.")
    console_session_ttl_s: float = Field(default=8 * 3600.0, ge=60, le=7 * 86400,
                                         description="Session lifetime from sign-in, seconds.")
    console_allowed_hosts: CsvList = Field(default=(), description="Host header names accepted.")
    console_trusted_origins: CsvList = Field(default=(), description="Further origins allowed to post.")
    console_cookie_secure: bool = Field(default=False, description="Mark cookies Secure (HTTPS).")
    console_proxy_user_header: str = Field(default="", pattern=r"^[A-Za-z0-9-]*$",
                                           description="Header naming the user, set by an OIDC proxy.")
    console_trusted_proxies: CsvList = Field(default=("127.0.0.1/32", "::1/128"),
                                             description="Addresses whose proxy header is trusted.")
    console_proxy_default_role: Literal["none", "viewer", "operator"] = Field(
        default="none", description="Role of a proxied user not in the user list ('none' refuses them).")
    console_confirm_ttl_s: float = Field(default=60.0, gt=0, le=600,
                                         description="Seconds an armed engage/release waits for Confirm.")
    console_journal: Path | None = Field(default=None, description="Parquet journal the trading pages read.")
    console_backtest_dir: Path | None = Field(default=None,
                                              description="A `dreambot run`/`backtest` output folder to show.")

    @field_validator("console_journal", "console_backtest_dir", mode="before")
    @classmethod
    def _blank_path(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("console_journal")
    @classmethod
    def _journal_dir(cls, value: Path | None) -> Path | None:
        # A live session's journal may not exist yet (the stages create it); a file in its place is a mistake.
        if value is not None and value.exists() and not value.is_dir():
            raise ValueError(f"{str(value)[:120]} is not a folder")
        return value

    @field_validator("console_backtest_dir")
    @classmethod
    def _backtest_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{str(value)[:120]} is not a folder (a `dreambot run` or `dreambot backtest` output)")
        return value

    @field_validator("console_allowed_hosts", "console_trusted_origins", "console_trusted_proxies", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _csv(value)

    @field_validator("console_trusted_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            parts = urlsplit(item)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise ValueError(f"{item[:60]!r} is not an origin like https://console.example")
        return value

    @field_validator("console_trusted_proxies")
    @classmethod
    def _proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_networks(value)
        return value

    @field_validator("console_session_key")
    @classmethod
    def _key_length(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes (python -c 'import secrets; print(secrets.token_urlsafe(48))')")
        return value

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

    def listen_host(self) -> str:
        """The address to bind: the setting, else loopback (also inside a pod)."""
        return self.dashboard_host or "127.0.0.1"

    def allowed_hosts(self) -> tuple[str, ...]:
        """Host names the console answers to: the setting, else loopback names and the listen address."""
        if self.console_allowed_hosts:
            return self.console_allowed_hosts
        hosts = ["localhost", "127.0.0.1", "::1"]
        host = self.listen_host()
        if host not in ("0.0.0.0", "::", *hosts):
            hosts.append(host)
        return tuple(hosts)


def load_settings(**overrides: Any) -> ConsoleSettings:
    """Settings from env, or one ConfigError line naming the variable (never its value)."""
    try:
        return ConsoleSettings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err.get("loc", ("?",))[0])
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        raise ConfigError(f"environment variable DREAMBOT_{name.upper()}: {msg}") from None


def make_users(settings: ConsoleSettings) -> UserDirectory:
    """The user list from DREAMBOT_CONSOLE_USERS plus the 'admin' operator of
    DREAMBOT_CONSOLE_ADMIN_PASSWORD; ConfigError when malformed or when nobody could get in."""
    try:
        listed = UserDirectory.parse(settings.console_users.get_secret_value())
    except AuthConfigError as exc:
        raise ConfigError(f"environment variable DREAMBOT_CONSOLE_USERS: {exc}") from None
    users = list(listed)
    admin = settings.console_admin_password.get_secret_value()
    if admin:
        if ADMIN_USER in listed:
            raise ConfigError("environment variable DREAMBOT_CONSOLE_ADMIN_PASSWORD: DREAMBOT_CONSOLE_USERS "
                              f"already lists {ADMIN_USER!r}")
        if len(admin) < 12:
            raise ConfigError("environment variable DREAMBOT_CONSOLE_ADMIN_PASSWORD: must have at least 12 "
                              "characters")
        users.append(User(ADMIN_USER, "operator", PasswordHash.parse(hash_password(admin))))
    directory = UserDirectory(users)
    if not any(u.password is not None for u in users) and not settings.console_proxy_user_header:
        raise ConfigError("no way to sign in: set DREAMBOT_CONSOLE_USERS (python -m services.dashboard.auth "
                          "hash-password --user NAME --role operator), DREAMBOT_CONSOLE_ADMIN_PASSWORD or "
                          "DREAMBOT_CONSOLE_PROXY_USER_HEADER")
    return directory


def make_access(settings: ConsoleSettings) -> AccessGuard:
    """The access guard for ``settings`` (users, signer, Host/Origin rules, proxy header)."""
    users = make_users(settings)
    key = settings.console_session_key.get_secret_value().encode() or secrets.token_bytes(32)
    proxy = None
    if settings.console_proxy_user_header:
        default: Role | None = None if settings.console_proxy_default_role == "none" else (
            "viewer" if settings.console_proxy_default_role == "viewer" else "operator")
        proxy = ProxyLogin(settings.console_proxy_user_header, parse_networks(settings.console_trusted_proxies),
                           default)
    policy = AccessPolicy(
        users=users,
        signer=SessionSigner(key, settings.console_session_ttl_s),
        allowed_hosts=settings.allowed_hosts(),
        trusted_origins=settings.console_trusted_origins,
        cookie_secure=settings.console_cookie_secure,
        proxy=proxy,
    )
    return AccessGuard(policy, f"DreamBot · {settings.session}")


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
        confirm_ttl_s=settings.console_confirm_ttl_s,
    )
    return Console(config, state, prometheus)


# The trading pages (this package's own) and the ops pages, which are imported when present.
PAGE_MODULES = ("chart", "chain", "pnl", "orders", "learner", "health", "backtest")


def load_pages(names: Sequence[str] = PAGE_MODULES) -> list[Page]:
    """Each ``services.dashboard.pages.<name>.PAGE`` that exists, in ``names`` order."""
    pages: list[Page] = []
    for name in names:
        module_name = f"services.dashboard.pages.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # the page exists but something it needs is missing: say so
                raise
            continue
        page = getattr(module, "PAGE", None)
        if isinstance(page, Page):
            pages.append(page)
    return pages


def page_context(settings: ConsoleSettings, console: Console) -> PageContext:
    """What the pages read: the console's Redis and Prometheus, the journal and the backtest output."""
    store: StateStore | None = console.state.store
    prometheus = console.prometheus if console.prometheus.configured else None
    return PageContext(session=settings.session, store=store, prometheus=prometheus,
                       journal_root=settings.console_journal, backtest_dir=settings.console_backtest_dir,
                       refresh_ms=max(250, int(settings.dashboard_refresh_s * 1000)))


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """Command-line options, as settings overrides (they win over the environment)."""
    parser = OneLineParser(prog=PROG, description="The DreamBot ops console (settings from DREAMBOT_* env).")
    parser.add_argument("--journal", type=Path, metavar="DIR",
                        help="parquet journal the trading pages read (env DREAMBOT_CONSOLE_JOURNAL)")
    parser.add_argument("--backtest-dir", type=Path, metavar="DIR",
                        help="a `dreambot run`/`backtest` output folder (env DREAMBOT_CONSOLE_BACKTEST_DIR); "
                             "its parquet/ is the journal when --journal is not given")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {}
    if args.journal is not None:
        out["console_journal"] = args.journal
    if args.backtest_dir is not None:
        out["console_backtest_dir"] = args.backtest_dir
    return out


class _Stop(Exception):  # noqa: N818 - a signal, not an error
    """SIGTERM: leave serve_forever and close the socket."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise _Stop


def main(argv: Sequence[str] = ()) -> int:
    overrides = parse_args(argv)
    try:
        settings = load_settings(**overrides)
        access = make_access(settings)
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
    configure_stage_logging("console", settings)  # stderr and <storage_dir>/logs/console.jsonl
    if settings.log_level != "DEBUG":  # one access-log line per refresh is noise
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = build_app(console, access, load_pages(), page_context(settings, console))
    with listener:
        server = make_server(host, settings.dashboard_port, app.server, threaded=True, fd=listener.fileno())
    signal.signal(signal.SIGTERM, _on_sigterm)
    log.info("console serving", extra={
        "session": settings.session, "listen": f"http://{host}:{settings.dashboard_port}/",
        "redis": console.config.redis_display or "(not configured)",
        "prometheus": console.config.prometheus_display or "(not configured)",
        "users": len(access.policy.users), "allowed_hosts": ",".join(access.policy.allowed_hosts),
        "proxy_header": access.policy.proxy.header if access.policy.proxy else "(off)",
        "session_key": "configured" if settings.console_session_key.get_secret_value() else "random per process",
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
    sys.exit(main(sys.argv[1:]))
