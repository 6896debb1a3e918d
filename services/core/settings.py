"""Settings: pydantic-settings classes read from env (DREAMBOT_*) and YAML files under config/.

Every error becomes one :class:`ConfigError` line naming the file or variable and the field, so a
CLI can print it instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "config"

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration problem, phrased as one readable line."""


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """First problem of a pydantic error as ``source: field.path: message``."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{source}: {loc}: {err.get('msg', 'invalid')}{more}"


def load_yaml(path: Path) -> Any:
    """Parse a YAML file; errors become ConfigError naming the file and line."""
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None


def load_model(path: Path, model: type[M]) -> M:
    """Load a YAML file into a pydantic model, or raise one ConfigError line."""
    raw = load_yaml(path)
    try:
        return model.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, str(path))) from None


class RuntimeSettings(BaseSettings):
    """Process-wide settings shared by every stage (env: DREAMBOT_*)."""

    model_config = SettingsConfigDict(env_prefix="DREAMBOT_", extra="ignore", frozen=True)

    session: str = Field("default", description="Session name; prefixes Kafka topics and Redis keys.")
    mode: Literal["paper", "live"] = Field("paper", description="paper (default) or live trading.")
    live_confirm: bool = Field(False, description="Must be true, with mode=live, to send real orders.")
    config_dir: Path = Field(CONFIG_DIR, description="Folder holding broker/playbooks/risk/events YAML.")
    data_dir: Path = Field(
        PROJECT_ROOT.parent / "shared" / "data",
        description="Folder with the real recordings used by tests and benchmarks.",
    )
    storage_dir: Path = Field(PROJECT_ROOT / "storage", description="Where runs write their outputs.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")


def runtime_settings(**overrides: Any) -> RuntimeSettings:
    """RuntimeSettings from env, or one ConfigError line naming the variable."""
    try:
        return RuntimeSettings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err.get("loc", ("?",))[0])
        raise ConfigError(f"environment variable DREAMBOT_{field.upper()}: {err.get('msg')}") from None
