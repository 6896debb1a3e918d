"""The calibration in force: read at start-up, re-read at each session open when the published file changed.

The nightly job (``python -m ops.nightly_calibration``) publishes ``calibration.json`` by writing a
temporary file beside it and renaming it over the old one, so a reader opening the path sees the old
document or the new one, never a torn one. A stage holding a :class:`CalibrationWatch` calls
:meth:`CalibrationWatch.observe` with the market time of each market-data event it handles; the first
event of a New York date later than the last one seen is a *session open*. At a session open the watch

1. (``reload=True`` only) compares the file's identity (inode, mtime, size) with the one in force and,
   when it differs, reads the bytes once (stat taken on the same open file), hashes them and hands the
   JSON object to the stage's ``parse``. A new content hash that parses is returned to the stage, which
   applies it before the event is handled; an unreadable, half-written, invalid or vanished file is
   refused with one log line and the calibration in force is kept (the stage never stops for it);
2. logs which calibration is in force (its ``inputs`` session range, ``mlflow_run_id``, hash).

Who reloads: services-mode stages (a running session) and an embedded run on the live feed. Embedded
replays and backtests pin the calibration they started with, so a backtest over many sessions is not
changed by a file published while it runs (``reload=False``; the session open is still logged).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from services.core.calendar import ny_date
from services.core.settings import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

Parse = Callable[[Mapping[str, object], str], T]
"""``parse(document, shown_path)``: the stage's values from a calibration JSON object (ConfigError if invalid)."""


class CalibrationFileError(ValueError):
    """The calibration file cannot be read as one JSON object (the message says why, in one line)."""


@dataclass(frozen=True, slots=True)
class CalibrationFile:
    """One read of a published calibration: where, its identity on disk, its content hash and document."""

    shown: str
    identity: tuple[int, int, int]
    """(inode, mtime_ns, size) of the file that was read."""
    sha256: str
    doc: Mapping[str, object]

    def _inputs(self) -> Mapping[str, object]:
        inputs = self.doc.get("inputs")
        return inputs if isinstance(inputs, dict) else {}

    @property
    def first_session(self) -> str:
        return str(self._inputs().get("first_session", ""))

    @property
    def last_session(self) -> str:
        return str(self._inputs().get("last_session", ""))

    @property
    def mlflow_run_id(self) -> str:
        run = self.doc.get("mlflow_run_id")
        return run if isinstance(run, str) else ""

    def describe(self) -> str:
        """One line: path, inputs' session range, MLflow run, hash prefix."""
        span = f"inputs {self.first_session}..{self.last_session}" if self.first_session else "no inputs block"
        run = f", mlflow run {self.mlflow_run_id}" if self.mlflow_run_id else ""
        return f"{self.shown} ({span}{run}, sha256 {self.sha256[:12]})"


def file_identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime_ns, size) of ``path``, or None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def read_calibration_file(path: Path, shown: str) -> CalibrationFile:
    """Read ``path`` once: identity from the open file, bytes, hash, JSON object (FileNotFoundError if absent)."""
    try:
        with path.open("rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CalibrationFileError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CalibrationFileError(f"{shown}: invalid calibration JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CalibrationFileError(f"{shown}: calibration must be a JSON object, got {type(doc).__name__}")
    return CalibrationFile(shown, (st.st_ino, st.st_mtime_ns, st.st_size), hashlib.sha256(data).hexdigest(), doc)


Loaded = Callable[["CalibrationFile | None", float], None]
"""``loaded(file_or_none, wall_time_s)``: told of the calibration put in force (metrics)."""


class CalibrationWatch(Generic[T]):
    """The calibration file of one stage: loaded at start, re-checked at each session open (see the module doc)."""

    def __init__(self, path: Path | None, shown: str, parse: Parse[T], *, stage: str, reload: bool,
                 loaded: Loaded | None = None) -> None:
        self.path = path
        self.shown = shown
        self.parse = parse
        self.stage = stage
        self.reload = reload
        self._loaded = loaded
        self.current: CalibrationFile | None = None
        self._identity: tuple[int, int, int] | None = None
        self._refused: tuple[int, int, int] | None = None
        self._has_refused = False
        self._day: dt.date | None = None
        self.reloads = 0
        self.refusals = 0

    # --- start-up: strict ----------------------------------------------------------------------

    def start(self) -> T | None:
        """The stage's values from the file at start-up (None when there is no file); ConfigError if invalid."""
        if self.path is None:
            self._announce()
            return None
        try:
            read = read_calibration_file(self.path, self.shown)
        except FileNotFoundError:
            self._announce()
            return None
        except CalibrationFileError as exc:
            raise ConfigError(str(exc)) from None
        value = self.parse(read.doc, self.shown)
        self.current, self._identity = read, read.identity
        self._announce()
        return value

    # --- each session open: lenient --------------------------------------------------------------

    def observe(self, ts_ns: int) -> T | None:
        """At the first event of a new New York date: the new calibration's values when one was published
        and parses (the caller applies them before handling the event), else None."""
        day = ny_date(ts_ns)
        if self._day is not None and day <= self._day:
            return None
        self._day = day
        value = self._check() if self.reload and self.path is not None else None
        self._log_in_force(day.isoformat())
        return value

    def _check(self) -> T | None:
        assert self.path is not None
        identity = file_identity(self.path)
        if identity == self._identity:
            return None
        if self._has_refused and identity == self._refused:
            return None  # refused already: told once, not at every session open
        if identity is None:
            self._refuse(None, f"{self.shown}: vanished")
            return None
        try:
            read = read_calibration_file(self.path, self.shown)
            if self.current is not None and read.sha256 == self.current.sha256:
                self._identity = read.identity  # rewritten with the same content: nothing to apply
                return None
            value = self.parse(read.doc, self.shown)
        except FileNotFoundError:
            self._refuse(None, f"{self.shown}: vanished")
            return None
        except (CalibrationFileError, ConfigError) as exc:
            self._refuse(identity, str(exc))
            return None
        self.current, self._identity, self._has_refused = read, read.identity, False
        self.reloads += 1
        log.info("calibration reloaded", extra={"stage": self.stage, "calibration": read.describe()})
        self._announce()
        return value

    def _refuse(self, identity: tuple[int, int, int] | None, reason: str) -> None:
        self._refused, self._has_refused = identity, True
        self.refusals += 1
        kept = self.current.describe() if self.current is not None else "the start-up values"
        log.warning(f"calibration refused: {reason}; keeping {kept}", extra={"stage": self.stage})

    def _announce(self) -> None:
        if self._loaded is not None:
            self._loaded(self.current, time.time())

    def _log_in_force(self, day: str) -> None:
        if self.current is not None:
            what = self.current.describe()
        elif self.path is None:
            what = "none (calibration off): the configured defaults"
        else:
            what = f"none ({self.shown} absent): the configured defaults"
        mode = "reloaded when republished" if self.reload else "pinned for this run"
        log.info(f"session {day}: calibration in force {what}, {mode}",
                 extra={"stage": self.stage, "session_date": day,
                        "first_session": self.current.first_session if self.current else "",
                        "last_session": self.current.last_session if self.current else "",
                        "mlflow_run_id": self.current.mlflow_run_id if self.current else ""})
