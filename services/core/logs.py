"""Structured JSON logs (one object per line) with secrets redacted before they are written.

:func:`redact` masks, in every message, ``extra=`` field, audit record and exception text:

- values under keys that look secret (``token``, ``password``, ``api_key`` ...);
- bearer tokens, the password of a URL (``redis://:pw@host``, ``https://user:pw@host``) and secret
  query or ``key=value`` parameters (``apiKey=...``, ``access_token=...``, ``password=...``);
- by value, every secret registered with :func:`register_secret` (SessionConfig's credentials are,
  when the config is loaded), wherever it appears, even bare.

:func:`configure_logging` writes those lines to stderr and, given ``log_file``, also to a size-rotated
file (``<storage_dir>/logs/<stage>.jsonl``, see :func:`stage_log_file`), formatted and redacted alike.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

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
        # stderr and the log file share this formatter: redact and encode each record once, not per handler.
        cached = record.__dict__.get("_json_line")
        if cached is not None and cached[0] is self:
            return str(cached[1])
        line = self._format(record)
        record.__dict__["_json_line"] = (self, line)
        return line

    def _format(self, record: logging.LogRecord) -> str:
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


MIB = 1024 * 1024
log = logging.getLogger("dreambot.logs")


def stage_log_file(storage_dir: Path, stage: str) -> Path:
    """Where stage ``stage`` keeps its JSON log lines: ``<storage_dir>/logs/<stage>.jsonl``."""
    return Path(storage_dir) / "logs" / f"{stage}.jsonl"


class _JsonFileHandler(logging.handlers.RotatingFileHandler):
    """The log file: rotated by size; a failing write (disk full, folder removed) is reported once, on stderr."""

    def __init__(self, path: Path, max_bytes: int, backups: int, errors_to: Any) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._errors_to = errors_to
        self._failed = False
        self._size = os.path.getsize(self.baseFilename)  # appending to what an earlier run wrote

    def emit(self, record: logging.LogRecord) -> None:
        # RotatingFileHandler formats every record twice and stats the file per line; this formats once
        # and counts the bytes it wrote. A file never passes max_bytes (unless one line alone does).
        try:
            text = self.format(record) + self.terminator
            size = len(text.encode("utf-8"))
            if self.stream is None:  # closed (e.g. by a failed rollover): reopen and append
                self.stream = self._open()
                self._size = os.path.getsize(self.baseFilename)
            if self._size > 0 and self._size + size > self.maxBytes:
                self.doRollover()  # renames <name> -> <name>.1 ... and opens a new, empty <name>
                self._size = 0
            self.stream.write(text)
            self.stream.flush()
            self._size += size
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        # logging's default prints a traceback per record; one line is enough, stderr keeps every record.
        if not self._failed:
            self._failed = True
            exc = sys.exc_info()[1]
            self._errors_to.write(f"dreambot: writing log file {self.baseFilename} failed ({exc}); "
                                  "further failures are not reported, stderr has every line\n")


def _open_log_file(path: Path, max_bytes: int, backups: int, errors_to: Any) -> _JsonFileHandler | str:
    """The file handler, or why it could not be opened."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _JsonFileHandler(path, max_bytes, backups, errors_to)
    except OSError as exc:
        return exc.strerror or str(exc)


def configure_logging(level: str = "INFO", stream: Any = None, *, log_file: Path | None = None,
                      max_bytes: int = 50 * MIB, backups: int = 5) -> None:
    """Route the root logger to JSON lines on ``stream`` (stderr by default) and, given ``log_file``,
    to that file too, rotated once it would pass ``max_bytes`` with ``backups`` older files kept
    (``<name>.1`` the newest). A file that cannot be opened is one warning line on the stream, then
    the stream alone. Calling it again replaces the handlers it installed (closing the old file)."""
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    if backups < 1:
        raise ValueError("backups must be at least 1")
    formatter = JsonFormatter()
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handlers: list[logging.Handler] = [handler]
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, _JsonFileHandler):  # closed first: the new handler may reopen the same file
            old.close()
    unavailable = None
    if log_file is not None:
        opened = _open_log_file(Path(log_file), max_bytes, backups, out)
        if isinstance(opened, str):
            unavailable = opened
        else:
            opened.setFormatter(formatter)
            handlers.append(opened)
    root.handlers[:] = handlers
    root.setLevel(level)
    if unavailable is not None:  # handed to the stream directly: shown whatever the level
        handler.handle(log.makeRecord(log.name, logging.WARNING, __file__, 0,
                                      "log file unavailable; logging to stderr only", (), None,
                                      extra={"log_file": str(log_file), "error": unavailable}))


class LogSettings(Protocol):
    """What :func:`configure_stage_logging` reads (SessionConfig and the console's settings have it)."""

    @property
    def log_level(self) -> str: ...
    @property
    def storage_dir(self) -> Path: ...
    @property
    def log_rotate_mb(self) -> float: ...
    @property
    def log_backups(self) -> int: ...


def configure_stage_logging(stage: str, settings: LogSettings) -> None:
    """:func:`configure_logging` for process ``stage``: stderr and ``<storage_dir>/logs/<stage>.jsonl``."""
    configure_logging(settings.log_level, log_file=stage_log_file(settings.storage_dir, stage),
                      max_bytes=max(int(settings.log_rotate_mb * MIB), 1), backups=settings.log_backups)
