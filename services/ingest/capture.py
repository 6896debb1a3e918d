"""Capture of a live Polygon session: what the feed received, as JSONL, rotated by size.

One line per thing the live feed acted on, in the order it acted on them, so a replay that feeds the
same lines through the same assembly (:class:`services.ingest.polygon_live.MinuteAssembler`) produces
the same events, in the same order, with the same heartbeat writes between them:

- ``{"k":"ws","c":CLUSTER,"n":CONNECTION,"f":FRAME}``: a websocket data frame, raw (the text as
  received); ``n`` is the connection it came on (1, then one more per reconnect);
- ``{"k":"tick"}``: a heartbeat timer tick;
- ``{"k":"chain","sym":SYM,"e":CHAIN}``: the answer to a chain-snapshot request (the ChainSnapshot
  event as JSON, ``null`` when the request failed);
- ``{"k":"backfill","sym":SYM,"e":[BAR,...]}``: the bars a gap backfill fetched over REST.

REST answers are stored normalised (the events they became), websocket frames raw. Files rotate like
the OMS audit log: when the next line would take ``path`` past ``rotate_mb`` MiB it is renamed
``path.1`` (older files shift to ``.2``, ``.3`` ...) and a new ``path`` is started; nothing is deleted
(a capture is data). :func:`read_capture` reads the rotated files oldest first, then ``path``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

MIB = 1024 * 1024
_SUFFIX = re.compile(r"^\.(\d+)$")


class CaptureError(ValueError):
    """A capture file cannot be read back (missing, or a line that is not a capture record)."""


class CaptureWriter:
    """Appends capture lines to ``path``, rotating at ``rotate_mb`` MiB; flushes every line."""

    def __init__(self, path: Path, rotate_mb: float = 100.0) -> None:
        if rotate_mb <= 0:
            raise ValueError(f"rotate_mb must be positive, got {rotate_mb}")
        self.path = path
        self.limit = int(rotate_mb * MIB)
        self.lines = 0
        self.rotations = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = path.open("ab")
        self._size = path.stat().st_size

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record) + b"\n"
        if self._size > 0 and self._size + len(line) > self.limit:
            self._rotate()
        self._file.write(line)
        self._file.flush()
        self._size += len(line)
        self.lines += 1

    def _rotate(self) -> None:
        self._file.close()
        for n in sorted(rotated_numbers(self.path), reverse=True):
            self.path.with_name(f"{self.path.name}.{n}").rename(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("ab")
        self._size = 0
        self.rotations += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def rotated_numbers(path: Path) -> list[int]:
    """The ``N`` of every ``path.N`` beside ``path``."""
    if not path.parent.is_dir():
        return []
    out = []
    for sibling in path.parent.iterdir():
        if sibling.name.startswith(path.name):
            m = _SUFFIX.match(sibling.name[len(path.name):])
            if m:
                out.append(int(m.group(1)))
    return out


def capture_files(path: Path) -> list[Path]:
    """The files of a capture in the order they were written: ``path.N`` ... ``path.1``, then ``path``."""
    files = [path.with_name(f"{path.name}.{n}") for n in sorted(rotated_numbers(path), reverse=True)]
    if path.is_file():
        files.append(path)
    if not files:
        raise CaptureError(f"{path}: no capture file (nor rotated {path.name}.N files)")
    return files


def read_capture(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of a capture, oldest file first; a malformed line raises CaptureError naming it."""
    for file in capture_files(path):
        with file.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise CaptureError(f"{file}:{number}: not JSON ({exc})") from None
                if not isinstance(record, dict) or not isinstance(record.get("k"), str):
                    raise CaptureError(f"{file}:{number}: not a capture record (no \"k\")")
                yield record
