"""YAML config loading (files under config/) and the one-line ConfigError; the session's settings
themselves are :mod:`services.core.session_config`.

Every error becomes one :class:`ConfigError` line naming the file or variable and the field, so a
CLI can print it instead of a traceback.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "config"

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration problem, phrased as one readable line."""


def _accepts_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return any(_accepts_bool(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return any(isinstance(a, bool) for a in typing.get_args(annotation))
    return False


class PlausibleModel(BaseModel):
    """Base of configuration models: numbers are finite (``.inf``/``.nan`` refused) and a YAML
    ``true``/``false`` is never taken as a number (``max_daily_loss_usd: true`` is not $1)."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            if field is not None and not _accepts_bool(field.annotation):
                raise ValueError(f"{str(value).lower()} is a yes/no, not a value for this setting")
        return value


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
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text (UTF-8) YAML file: byte {exc.start} is 0x{exc.object[exc.start]:02x}") \
            from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
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
