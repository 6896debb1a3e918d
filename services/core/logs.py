"""Structured JSON logs (one object per line) with secrets redacted before they are written.

:func:`redact` masks, in every message, ``extra=`` field, audit record and exception text:

- values under keys that look secret (``token``, ``password``, ``api_key`` ...);
- bearer tokens, the password of a URL (``redis://:pw@host``, ``https://user:pw@host``) and secret
  query or ``key=value`` parameters (``apiKey=...``, ``access_token=...``, ``password=...``);
- by value, every secret registered with :func:`register_secret` (SessionConfig's credentials are,
  when the config is loaded), wherever it appears, even bare.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import orjson

_SECRET_KEYS = re.compile(r"(token|secret|password|api[_-]?key|authorization)", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._\-]+")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^\s/:@]*:)[^\s/@]+(@)", re.IGNORECASE)
_SECRET_PARAM = re.compile(
    r"((?:api[_-]?key|apikey|access[_-]?token|token|secret|password|passwd|auth)\s*[=:]\s*)([^&\s\"',;)]+)",
    re.IGNORECASE)
MASK = "***"
_MIN_SECRET_CHARS = 6  # shorter values would mask ordinary words
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask ``value`` by value in everything redacted from now on (values under 6 characters are not)."""
    global _secret_pattern
    if value is None or len(value.strip()) < _MIN_SECRET_CHARS:
        return
    with _secrets_lock:
        if value.strip() in _secrets:
            return
        _secrets.add(value.strip())
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(v) for v in ordered))


def register_secrets(values: Iterable[str | None]) -> None:
    """:func:`register_secret` for each value."""
    for value in values:
        register_secret(value)


def redact_text(text: str) -> str:
    """``text`` with registered secrets, bearer tokens, URL passwords and secret parameters masked."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _BEARER.sub(r"\1***", text)
    text = _URL_PASSWORD.sub(r"\1***\2", text)
    return _SECRET_PARAM.sub(r"\1***", text)
_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def redact(value: Any, key: str = "") -> Any:
    """Mask values whose key looks secret, and secrets inside strings and exceptions (:func:`redact_text`)."""
    if key and _SECRET_KEYS.search(key):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value  # numbers, paths...: written by the JSON encoder, whose fallback redacts their text


class JsonFormatter(logging.Formatter):
    """Formats a record as a JSON line: ts, level, logger, msg and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                doc[k] = redact(v, k)
        if record.exc_info:
            doc["exc"] = redact_text(self.formatException(record.exc_info))
        elif record.exc_text:
            doc["exc"] = redact_text(record.exc_text)
        return orjson.dumps(doc, default=lambda o: redact_text(str(o))).decode()


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Route the root logger to JSON lines on ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
