"""SessionConfig: the one model of a trading session, and where each of its values comes from.

Every runner (``dreambot run|backtest|calibrate|config``, ``python -m services.<stage>.main``, the
launcher) and the operator's rendered ``session.yaml`` go through this model; the composition root
(:mod:`services.app`) builds the system from it.

Sources, highest first:

1. command-line flags (the runner passes them as a nested mapping);
2. the environment: the flat names of ``.env.example`` (``DREAMBOT_SYMBOLS``, ``DREAMBOT_KAFKA_BOOTSTRAP``,
   ``TRADIER_ACCESS_TOKEN``...) and, for any field, ``DREAMBOT_<SECTION>__<FIELD>``
   (e.g. ``DREAMBOT_RISK__MAX_DAILY_LOSS_USD``);
3. a ``.env`` file (``DREAMBOT_ENV_FILE``, default ``.env`` in the working directory), same names;
4. a session file (``--session-file``, ``DREAMBOT_SESSION_FILE``, or ``<config_dir>/session.yaml``
   when it exists): this model's fields as YAML, the way the operator renders it;
5. ``config/*.yaml`` defaults (the broker choice of ``broker.yaml``) and the model's own defaults.

Credentials (Tradier token, Polygon key, risk's approval key) are :class:`~pydantic.SecretStr`, come from
the environment or ``.env`` only (a session file holding one is refused) and print as ``**********``.
Every problem is one :class:`~services.core.settings.ConfigError` line naming the source.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import yaml
from dotenv import dotenv_values
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from services.core.logs import register_secret, register_secrets
from services.core.settings import CONFIG_DIR, PROJECT_ROOT, ConfigError, PlausibleModel, load_yaml

DEFAULT_CALIBRATION: Final = PROJECT_ROOT / "backtests" / "calibration.json"
SESSION_FILE_NAME: Final = "session.yaml"
#: The stages of a session in the embedded bus's subscription order (the lockstep's order too).
PIPELINE_STAGES: Final = ("features", "signals", "risk", "oms")
KNOWN_STAGES: Final = ("ingest", *PIPELINE_STAGES, "learner")
REDACTED: Final = "**********"

_SYMBOL_RE: Final = r"^[A-Z][A-Z0-9.]{0,9}$"
#: The underlyings a session can trade (the CRD's spec.symbols enum lists the same, a test keeps them equal).
SUPPORTED_SYMBOLS: Final = ("SPX", "NDX", "SPY", "QQQ")
_NAME_RE: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_NONE_WORDS: Final = frozenset({"", "none", "null", "off"})


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Finite = Annotated[float, AfterValidator(_finite)]


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _none_word(value: Any) -> Any:
    return None if isinstance(value, str) and value.strip().lower() in _NONE_WORDS else value


class _Section(PlausibleModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class KafkaConfig(_Section):
    """The session's Kafka (services mode)."""

    bootstrap: str = Field(default="127.0.0.1:9092", min_length=1, description="Kafka brokers, host:port[,...].")
    topic_prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$",
                                     description="Topics <prefix>.<name>, groups <prefix>.<stage>; default the name.")
    partitions: int = Field(default=3, ge=1, le=1000, description="Partitions of the topics a stage creates.")
    session_timeout_ms: int = Field(default=10_000, ge=1000, le=300_000, description="Consumer liveness timeout.")
    debug: str | None = Field(default=None, description="librdkafka debug contexts (e.g. cgrp,fetch).")

    _none = field_validator("topic_prefix", "debug", mode="before")(lambda v: _none_word(v))


class RedisConfig(_Section):
    """The session's Redis (shared state in services mode)."""

    url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^(rediss?|unix)://", description="Redis URL.")


class HttpConfig(_Section):
    """A stage process's /healthz /readyz /metrics endpoints."""

    host: str = Field(default="127.0.0.1", min_length=1, max_length=255,
                      description="Listen address: loopback unless set (the operator sets 0.0.0.0 for pods).")
    port: int = Field(default=9100, ge=0, le=65535, description="Port (0: any free one, logged).")


class ReplayConfig(_Section):
    """Recorded or synthetic bars replayed through the pipeline."""

    path: Path | None = Field(default=None, description="Bars file (.csv, .parquet, .duckdb) or flat-file folder.")
    table: str | None = Field(default=None, description="DuckDB table of the replay file.")
    tz: str | None = Field(default=None,
                           description="Time zone of naive timestamps (default New York, or UTC if named).")
    interval_s: int | None = Field(default=None, ge=1,
                                   description="Bar length in seconds; unset: read from the data's spacing.")
    seed: int = Field(default=7, description="Seed of synthetic option chains and synthetic bars.")
    sessions: int = Field(default=1, ge=1, le=2000, description="Synthetic sessions when there is no file.")
    lockstep: bool = Field(default=True, description="Services mode: replay in lockstep (embedded-identical results).")
    rate: float = Field(default=0.0, ge=0, description="Most market-data events per second (0: unpaced).")
    lockstep_stages: tuple[str, ...] = Field(default=PIPELINE_STAGES, description="Stages taking part in the lockstep.")

    _none = field_validator("path", "table", "tz", mode="before")(lambda v: _none_word(v))
    _list = field_validator("lockstep_stages", mode="before")(lambda v: _split(v))

    @field_validator("lockstep_stages")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in value if s not in KNOWN_STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(KNOWN_STAGES)}")
        return value


class PolygonConfig(_Section):
    """Polygon (Massive) live feed: endpoints, key, heartbeat, chain polling, reconnects and capture."""

    rest_url: str = Field(default="https://api.polygon.io", pattern=r"^https?://", description="REST endpoint.")
    ws_url: str = Field(default="wss://socket.polygon.io", pattern=r"^wss?://",
                        description="Websocket host; clusters are <ws_url>/stocks and <ws_url>/indices.")
    api_key: SecretStr | None = Field(default=None, description="API key (env POLYGON_API_KEY only).")
    heartbeat_secs: Finite = Field(default=5.0, gt=0, le=3600,
                                   description="Ingest heartbeat period (wall clock, and feed event time).")
    chain_every_s: Finite = Field(default=60.0, gt=0, le=86_400,
                                  description="Event time between two REST chain snapshots of an underlying.")
    chain_strike_pct: Finite = Field(default=0.03, gt=0, le=1,
                                     description="Chain snapshots ask for strikes within this fraction of spot.")
    max_reconnects: int | None = Field(default=20, ge=0,
                                       description="Consecutive failed reconnects before the feed gives up.")
    backoff_s: Finite = Field(default=0.5, ge=0, description="First reconnect delay; doubles per failed attempt.")
    backoff_max_s: Finite = Field(default=30.0, ge=0, description="Longest reconnect delay (plus up to 20% jitter).")
    snapshot_path: Path | None = Field(default=None,
                                       description="JSONL capture of the raw frames (and REST answers); none: off.")
    snapshot_rotate_mb: Finite = Field(default=100.0, gt=0, description="Rotate the capture past this many MiB.")

    _none = field_validator("snapshot_path", "max_reconnects", mode="before")(lambda v: _none_word(v))


class MarketDataConfig(_Section):
    """Where bars, quotes and chains come from."""

    source: Literal["synthetic", "replay", "polygon", "capture"] | None = Field(default=
        None, description="synthetic, replay, polygon (live) or capture (a polygon capture in replay.path); "
                          "unset: replay when replay.path is set, else synthetic.")
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    polygon: PolygonConfig = Field(default_factory=PolygonConfig)

    @model_validator(mode="after")
    def _resolve_source(self) -> MarketDataConfig:
        if self.source is None:
            object.__setattr__(self, "source", "replay" if self.replay.path is not None else "synthetic")
        if self.source in ("replay", "capture") and self.replay.path is None:
            raise ValueError(f"source {self.source} needs replay.path (DREAMBOT_REPLAY_SOURCE or --data)")
        return self


class TradierRetry(_Section):
    """How Tradier requests are retried on 429, 5xx and transport errors (never a POST whose answer was lost)."""

    max_attempts: int = Field(default=4, ge=1, le=50, description="Attempts of one request, the first included.")
    backoff_initial_secs: float = Field(default=0.5, ge=0, le=60,
                                        description="First backoff; doubles per attempt (with jitter).")
    backoff_max_secs: float = Field(default=8.0, ge=0, le=600, description="Longest single backoff.")
    budget_secs: float = Field(default=30.0, gt=0, le=3600,
                               description="Most seconds one request may spend retrying; then the OMS degrades.")
    max_retry_after_secs: float = Field(default=60.0, gt=0, le=3600,
                                        description="Longest 429 Retry-After honoured (a longer one ends the retries).")


class TradierTuning(_Section):
    """The ``tradier:`` timings of broker.yaml (``DREAMBOT_BROKER__TRADIER__<FIELD>`` overrides one)."""

    request_timeout_secs: float = Field(default=10.0, gt=0, le=300, description="Per-request timeout.")
    poll_interval_secs: float = Field(default=1.0, ge=0, le=300,
                                      description="Least wall time between order-status polls while orders live.")
    status_timeout_secs: float = Field(default=30.0, gt=0, le=3600,
                                       description="How long a submit whose answer was lost is looked up by tag.")
    reconcile_interval_secs: float = Field(default=5.0, gt=0, le=3600,
                                           description="While book and venue disagree, how often to look again.")
    retry: TradierRetry = Field(default_factory=TradierRetry)


class BrokerSettings(_Section):
    """Which broker works the orders: paper (simulated fills) or Tradier (sandbox or live)."""

    provider: Literal["paper", "tradier"] = Field(default="paper",
                                                  description="paper or tradier (default: broker.yaml).")
    environment: Literal["sandbox", "live"] = Field(default="sandbox", description="Tradier account: sandbox or live.")
    base_url: str | None = Field(default=None, pattern=r"^https?://",
                                 description="Tradier endpoint override (sandbox).")
    access_token: SecretStr | None = Field(default=None, description="Tradier token (env TRADIER_ACCESS_TOKEN only).")
    account_id: str | None = Field(default=None, description="Tradier account id (env TRADIER_ACCOUNT_ID).")
    tradier: TradierTuning = Field(default_factory=TradierTuning,
                                   description="Tradier timings and retries (broker.yaml's tradier: section).")

    _none = field_validator("base_url", "account_id", mode="before")(lambda v: _none_word(v))


class CalibrationSettings(_Section):
    """The nightly calibration's output, read by signals (PoT threshold) and risk (size multiplier)."""

    path: Path | None = Field(default=DEFAULT_CALIBRATION,
                              description="Calibration JSON (used when it exists); none: off.")

    _none = field_validator("path", mode="before")(lambda v: _none_word(v))


class RiskOverrides(_Section):
    """Session limits merged over ``config/risk.yaml`` (unset: the file's value)."""

    max_daily_loss_usd: Finite | None = Field(default=None, gt=0, le=1e7,
                                              description="Loss that engages the kill switch.")
    max_open_positions: int | None = Field(default=None, ge=1, le=1000,
                                           description="Distinct contracts held or being entered.")
    max_contracts_per_order: int | None = Field(default=None, ge=1, le=10_000, description="Contracts in one order.")
    max_premium_per_symbol_usd: Finite | None = Field(default=None, gt=0, le=1e7,
                                                      description="Premium at risk per underlying.")
    max_premium_total_usd: Finite | None = Field(default=None, gt=0, le=1e7, description="Premium at risk in total.")
    max_orders_per_minute: int | None = Field(default=None, ge=1, description="Order-rate throttle.")

    def as_risk_yaml(self) -> dict[str, Any]:
        """The overrides in ``risk.yaml``'s shape."""
        out: dict[str, Any] = {k: v for k, v in self.model_dump().items()
                               if v is not None and k != "max_orders_per_minute"}
        if self.max_orders_per_minute is not None:
            out["throttle"] = {"max_orders_per_minute": self.max_orders_per_minute}
        return out


class PlaybookSelection(_Section):
    """Which playbooks of ``config/playbooks.yaml`` run, and per-playbook field overrides."""

    enabled: tuple[str, ...] | None = Field(default=None,
                                            description="Playbook names to run; unset: every enabled one.")
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                 description="playbook name -> fields merged over its entry.")

    _list = field_validator("enabled", mode="before")(lambda v: _split(v))


class LearnerSettings(_Section):
    """Whether the learner changes what trades (``--learner``; services/learner, services/core/learner_policy).

    ``off`` (the default, so a backtest replays the playbooks as written): no learner stage in the
    pipeline, no policy, no regimes. ``frozen``: signals applies the policy in ``model`` (written by
    ``python -m mlops.train --policy-output``) and the learner's change-point detector enables the
    playbooks that declare ``regimes:``; nothing is learned during the session. ``walk-forward``: the
    same, but the learner retrains the policy on a schedule from the trades closed so far (in a
    backtest: only data before each retrain) and signals applies every retrain, starting from
    ``model`` when given, else from no policy.
    """

    mode: Literal["off", "frozen", "walk-forward"] = Field(default="off",
                                                          description="off, frozen or walk-forward.")
    model: Path | None = Field(default=None, description="Policy JSON (mlops.train --policy-output); "
                               "required with frozen, the starting policy of walk-forward.")

    _none = field_validator("model", mode="before")(lambda v: _none_word(v))

    @model_validator(mode="after")
    def _frozen_needs_model(self) -> LearnerSettings:
        if self.mode == "frozen" and self.model is None:
            raise ValueError("learner mode frozen needs learner.model (--learner-model, DREAMBOT_LEARNER_MODEL): "
                             "a policy written by python -m mlops.train --policy-output")
        return self


class SessionConfig(BaseSettings):
    """One trading session: what it trades, in which mode, with what data, broker, bus and limits."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", validate_default=True)

    name: str = Field(default="default", pattern=_NAME_RE, description="Session name: prefixes Redis keys and topics.")
    mode: Literal["paper", "live"] = Field(default="paper", description="paper (default) or live trading.")
    live_confirm: bool = Field(default=False, description="Must be true, with mode live, to send real orders.")
    symbols: tuple[Annotated[str, Field(pattern=_SYMBOL_RE)], ...] = Field(default=
        ("SPY",), min_length=1, max_length=16, description="Underlyings, e.g. SPY,QQQ.")
    config_dir: Path = Field(default=CONFIG_DIR, description="Folder of playbooks/risk/events/broker YAML.")
    storage_dir: Path = Field(default=PROJECT_ROOT / "storage", description="Where runs write their outputs.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    journal: bool = Field(default=True, description="Services mode: the features and OMS stages write the "
                          "session's parquet journal (storage_dir/parquet).")
    log_rotate_mb: float = Field(default=50.0, gt=0, description="MiB at which <storage_dir>/logs/<stage>.jsonl "
                                 "is rotated.")
    log_backups: int = Field(default=5, ge=1, description="Rotated log files kept per stage (the oldest is deleted).")
    chain_every_s: float = Field(default=300.0, gt=0, le=86_400, description="Least event time between chain analyses.")
    market_data: MarketDataConfig = Field(default_factory=MarketDataConfig)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    calibration: CalibrationSettings = Field(default_factory=CalibrationSettings)
    risk: RiskOverrides = Field(default_factory=RiskOverrides)
    playbooks: PlaybookSelection = Field(default_factory=PlaybookSelection)
    learner: LearnerSettings = Field(default_factory=LearnerSettings)
    approval_key: SecretStr | None = Field(
        default=None, description="Key of risk's HMAC approval of every order (env DREAMBOT_APPROVAL_KEY only); "
        "required in services mode, a random in-process key for an embedded session without one.")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The layers are merged by load_session_config (which also records where each value came
        # from); the model itself only validates what it is given.
        return (init_settings,)

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, value: Any) -> Any:
        value = _split(value)
        if isinstance(value, list | tuple):
            return tuple(dict.fromkeys(str(s).strip().upper() for s in value))
        return value

    @field_validator("symbols")
    @classmethod
    def _supported(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in value if s not in SUPPORTED_SYMBOLS]
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a supported underlying (supported: "
                             f"{', '.join(SUPPORTED_SYMBOLS)})")
        return value

    @model_validator(mode="after")
    def _money_safety(self) -> SessionConfig:
        b = self.broker
        if self.mode == "live":
            if not self.live_confirm:
                raise ValueError("mode live sends real orders: set live_confirm "
                                 "(DREAMBOT_LIVE_CONFIRM=true) to confirm")
            if b.provider == "paper":
                raise ValueError("mode live with the paper broker sends no real orders: "
                                 "set broker.provider tradier (broker: tradier in broker.yaml)")
        elif b.provider == "tradier" and b.environment == "live":
            raise ValueError("mode paper with a live Tradier account would trade real money: "
                             "use broker.environment sandbox, or mode live with its confirmation")
        return self

    @property
    def topic_prefix(self) -> str:
        return self.kafka.topic_prefix or self.name

    def session_file_dict(self) -> dict[str, Any]:
        """This config as a session file (JSON-safe, credentials left out)."""
        data: dict[str, Any] = self.model_dump(mode="json", exclude={
            "broker": {"access_token"}, "market_data": {"polygon": {"api_key"}}, "approval_key": True})
        return data


# --- sources ---------------------------------------------------------------------------------------

#: Flat environment (and .env) names -> field paths. Any field is also DREAMBOT_<A>__<B>.
ENV_NAMES: Final[Mapping[str, tuple[str, ...]]] = {
    "DREAMBOT_SESSION": ("name",),
    "DREAMBOT_MODE": ("mode",),
    "DREAMBOT_LIVE_CONFIRM": ("live_confirm",),
    "DREAMBOT_SYMBOLS": ("symbols",),
    "DREAMBOT_CONFIG_DIR": ("config_dir",),
    "DREAMBOT_STORAGE_DIR": ("storage_dir",),
    "DREAMBOT_LOG_LEVEL": ("log_level",),
    "DREAMBOT_JOURNAL": ("journal",),
    "DREAMBOT_LOG_ROTATE_MB": ("log_rotate_mb",),
    "DREAMBOT_LOG_BACKUPS": ("log_backups",),
    "DREAMBOT_CHAIN_EVERY_S": ("chain_every_s",),
    "DREAMBOT_CALIBRATION": ("calibration", "path"),
    "DREAMBOT_MARKET_DATA": ("market_data", "source"),
    "DREAMBOT_REPLAY_SOURCE": ("market_data", "replay", "path"),
    "DREAMBOT_REPLAY_TABLE": ("market_data", "replay", "table"),
    "DREAMBOT_REPLAY_TZ": ("market_data", "replay", "tz"),
    "DREAMBOT_REPLAY_SEED": ("market_data", "replay", "seed"),
    "DREAMBOT_REPLAY_SESSIONS": ("market_data", "replay", "sessions"),
    "DREAMBOT_REPLAY_LOCKSTEP": ("market_data", "replay", "lockstep"),
    "DREAMBOT_REPLAY_RATE": ("market_data", "replay", "rate"),
    "DREAMBOT_LOCKSTEP_STAGES": ("market_data", "replay", "lockstep_stages"),
    "POLYGON_API_KEY": ("market_data", "polygon", "api_key"),
    "POLYGON_BASE_URL": ("market_data", "polygon", "rest_url"),
    "POLYGON_WS_URL": ("market_data", "polygon", "ws_url"),
    "POLYGON_HEARTBEAT_SECS": ("market_data", "polygon", "heartbeat_secs"),
    "POLYGON_CHAIN_EVERY_S": ("market_data", "polygon", "chain_every_s"),
    "POLYGON_CHAIN_STRIKE_PCT": ("market_data", "polygon", "chain_strike_pct"),
    "POLYGON_MAX_RECONNECTS": ("market_data", "polygon", "max_reconnects"),
    "POLYGON_BACKOFF_S": ("market_data", "polygon", "backoff_s"),
    "POLYGON_BACKOFF_MAX_S": ("market_data", "polygon", "backoff_max_s"),
    "POLYGON_SNAPSHOT_PATH": ("market_data", "polygon", "snapshot_path"),
    "POLYGON_SNAPSHOT_ROTATE_MB": ("market_data", "polygon", "snapshot_rotate_mb"),
    "DREAMBOT_BROKER": ("broker", "provider"),
    "TRADIER_ENVIRONMENT": ("broker", "environment"),
    "TRADIER_BASE_URL": ("broker", "base_url"),
    "TRADIER_ACCESS_TOKEN": ("broker", "access_token"),
    "TRADIER_ACCOUNT_ID": ("broker", "account_id"),
    "DREAMBOT_KAFKA_BOOTSTRAP": ("kafka", "bootstrap"),
    "DREAMBOT_KAFKA_TOPIC_PREFIX": ("kafka", "topic_prefix"),
    "DREAMBOT_KAFKA_PARTITIONS": ("kafka", "partitions"),
    "DREAMBOT_KAFKA_SESSION_TIMEOUT_MS": ("kafka", "session_timeout_ms"),
    "DREAMBOT_KAFKA_DEBUG": ("kafka", "debug"),
    "DREAMBOT_REDIS_URL": ("redis", "url"),
    "DREAMBOT_HTTP_PORT": ("http", "port"),
    "DREAMBOT_HTTP_HOST": ("http", "host"),
    "DREAMBOT_LEARNER": ("learner", "mode"),
    "DREAMBOT_LEARNER_MODEL": ("learner", "model"),
    "DREAMBOT_APPROVAL_KEY": ("approval_key",),
}
#: Variables that name where to look rather than a field.
LOCATOR_NAMES: Final = frozenset({"DREAMBOT_SESSION_FILE", "DREAMBOT_ENV_FILE"})
SECRET_PATHS: Final = frozenset({("broker", "access_token"), ("market_data", "polygon", "api_key"),
                                 ("approval_key",)})

Tree = dict[str, Any]


@dataclass(frozen=True)
class Layer:
    """One source's values as a nested mapping, and the label of each leaf's origin."""

    values: Tree
    origins: dict[tuple[str, ...], str]


def _put(tree: Tree, path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def _leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value and path != ("playbooks", "overrides"):
            out.extend(_leaves(value, path))
        else:
            out.append((path, value))
    return out


def _env_path(name: str) -> tuple[str, ...] | None:
    if name in ENV_NAMES:
        return ENV_NAMES[name]
    if name.startswith("DREAMBOT_") and "__" in name:
        return tuple(p.lower() for p in name.removeprefix("DREAMBOT_").split("__") if p)
    return None


def env_layer(environ: Mapping[str, str | None], label: str) -> Layer:
    """The session's variables in ``environ`` (the flat names, then ``DREAMBOT_<A>__<B>``)."""
    values: Tree = {}
    origins: dict[tuple[str, ...], str] = {}
    for name in sorted(environ):
        raw = environ[name]
        path = _env_path(name)
        if path is None or raw is None:
            continue
        if raw.strip() == "":
            continue  # an empty variable means "not set", as in .env.example
        _put(values, path, raw)
        origins[path] = f"{label} {name}"
    return Layer(values, origins)


def file_layer(path: Path) -> Layer:
    """A session file: this model's fields as YAML (credentials refused)."""
    raw = load_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a session file is a mapping of settings, got {type(raw).__name__}")
    label = f"session file {path}"
    origins = {leaf: label for leaf, _ in _leaves(raw)}
    for leaf in origins:
        if leaf in SECRET_PATHS:
            raise ConfigError(f"{path}: {'.'.join(leaf)}: credentials are read from the environment "
                              "(or a Kubernetes Secret), never from a session file")
    return Layer(raw, origins)


def broker_yaml_layer(config_dir: Path) -> Layer:
    """The broker choice in ``<config_dir>/broker.yaml`` (its ``broker`` and ``tradier`` keys)."""
    path = config_dir / "broker.yaml"
    if not path.is_file():
        return Layer({}, {})
    raw = load_yaml(path) or {}
    if not isinstance(raw, dict):
        return Layer({}, {})  # the OMS's own loader reports a malformed file in full
    values: Tree = {}
    origins: dict[tuple[str, ...], str] = {}
    label = str(path)
    if "broker" in raw:
        _put(values, ("broker", "provider"), raw["broker"])
        origins[("broker", "provider")] = label
    tradier = raw.get("tradier")
    if isinstance(tradier, dict):
        for key in ("environment", "base_url"):
            if tradier.get(key) is not None:
                _put(values, ("broker", key), tradier[key])
                origins[("broker", key)] = label
        tuning = {k: v for k, v in tradier.items() if k in TradierTuning.model_fields and v is not None}
        for leaf, value in _leaves(tuning, ("broker", "tradier")):
            _put(values, leaf, value)
            origins[leaf] = label
    return Layer(values, origins)


def cli_layer(values: Mapping[str, Any]) -> Layer:
    """Command-line flags as a nested mapping (None values mean "flag not given")."""
    tree: Tree = {}
    origins: dict[tuple[str, ...], str] = {}
    for path, value in _leaves(values):
        if value is None:
            continue
        _put(tree, path, value)
        origins[path] = "command line"
    return Layer(tree, origins)


def _merge(base: Tree, top: Mapping[str, Any]) -> Tree:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and key != "overrides":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class LoadedConfig:
    """A validated SessionConfig and, per field path, the source that set it (absent: default)."""

    config: SessionConfig
    origins: dict[tuple[str, ...], str]

    def origin(self, path: tuple[str, ...]) -> str:
        return self.origins.get(path, "default")


def _pick(layers: list[Layer], path: tuple[str, ...]) -> Any:
    for layer in layers:  # highest first
        node: Any = layer.values
        for part in path:
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None:
            return node
    return None


def load_session_config(
    cli: Mapping[str, Any] | None = None,
    *,
    session_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    use_env_file: bool = True,
) -> LoadedConfig:
    """Merge every source (see the module doc) and validate, or raise one ConfigError line."""
    env = dict(os.environ if environ is None else environ)
    layers: list[Layer] = [cli_layer(cli or {}), env_layer(env, "environment variable")]
    if use_env_file:
        dot = env_file or Path(env.get("DREAMBOT_ENV_FILE") or ".env")
        if dot.is_file():
            try:
                parsed = dotenv_values(dot)
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{dot}: unreadable .env file: {exc}") from None
            layers.append(env_layer(parsed, f"{dot}:"))
        elif env_file is not None or env.get("DREAMBOT_ENV_FILE"):
            raise ConfigError(f"{dot}: .env file not found")
    explicit = session_file or (Path(env["DREAMBOT_SESSION_FILE"]) if env.get("DREAMBOT_SESSION_FILE") else None)
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"{explicit}: session file not found")
        layers.append(file_layer(explicit))
    else:
        folder = Path(str(_pick(layers, ("config_dir",)) or CONFIG_DIR))
        implicit = folder / SESSION_FILE_NAME
        if implicit.is_file():
            layers.append(file_layer(implicit))
    config_dir = Path(str(_pick(layers, ("config_dir",)) or CONFIG_DIR))
    layers.append(broker_yaml_layer(config_dir))

    merged: Tree = {}
    origins: dict[tuple[str, ...], str] = {}
    for layer in reversed(layers):
        merged = _merge(merged, layer.values)
        origins.update(layer.origins)
    try:
        config = SessionConfig(**merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origins)) from None
    register_secrets(s.get_secret_value() for s in (config.broker.access_token, config.market_data.polygon.api_key,
                                                     config.approval_key) if s is not None)
    register_secret(_url_password(config.redis.url))
    return LoadedConfig(config, origins)


def _url_password(url: str) -> str | None:
    """The password of a URL such as ``redis://:pw@host:6379/0`` (None without one)."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _describe(exc: ValidationError, origins: Mapping[tuple[str, ...], str]) -> str:
    err = exc.errors()[0]
    loc = tuple(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown setting"
    source = None
    for n in range(len(loc), 0, -1):
        source = origins.get(loc[:n])
        if source is not None:
            break
    where = ".".join(p for p in loc if not p.isdigit()) or "session"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    prefix = f"{source}: " if source else ""
    return f"{prefix}{where}: {msg}{more}"


def describe(loaded: LoadedConfig) -> list[str]:
    """``dreambot config``'s lines: ``path = value  (source)``, credentials redacted."""
    data = loaded.config.model_dump(mode="json")
    lines: list[str] = []
    for path, value in _leaves(data):
        if path in SECRET_PATHS:
            text = REDACTED if value is not None else "null"
        else:
            text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"{'.'.join(path)} = {text}  ({loaded.origin(path)})")
    return lines
