"""The order audit trail: one JSON object per line for every order event, rotated by size.

:class:`AuditLog` appends to ``OMS_AUDIT_PATH`` and rotates once the next line would push the file
past ``OMS_AUDIT_ROTATE_MB`` (``audit.jsonl`` -> ``audit.jsonl.1`` -> ``.2`` ..., keeping
``OMS_AUDIT_BACKUPS`` files; the oldest is deleted). Every record passes through the log redactor
first, so a value under a key that looks like a credential (token, secret, password, api key,
authorization) is written as ``***`` and bearer tokens inside strings are masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

import msgspec
import orjson

from services.core.events import Event
from services.core.logs import redact
from services.oms.config import AuditSettings, audit_settings

MIB = 1024 * 1024


class AuditSink(Protocol):
    """Where the OMS sends audit records (the only I/O the engine performs)."""

    def write(self, record: Mapping[str, Any]) -> None:
        """Persist one record."""


def event_record(kind: str, event: Event, **extra: Any) -> dict[str, Any]:
    """An audit record of ``event``: its fields plus ``kind`` and any ``extra`` fields."""
    record: dict[str, Any] = {"kind": kind}
    record.update(msgspec.to_builtins(event))
    record.update(extra)
    return record


class MemoryAudit:
    """Keeps records in a list (embedded runs and tests); redacts like the file log."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: Mapping[str, Any]) -> None:
        self.records.append(redact(dict(record)))


class AuditLog:
    """Size-rotated JSONL file writer."""

    def __init__(self, path: Path | str, rotate_bytes: int = 50 * MIB, backups: int = 5) -> None:
        if rotate_bytes <= 0:
            raise ValueError("rotate_bytes must be positive")
        if backups < 1:
            raise ValueError("backups must be at least 1")
        self.path = Path(path)
        self.rotate_bytes = rotate_bytes
        self.backups = backups
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] | None = None
        self._size = 0

    @classmethod
    def from_settings(cls, settings: AuditSettings | None = None) -> AuditLog:
        """An AuditLog configured from OMS_AUDIT_PATH / OMS_AUDIT_ROTATE_MB / OMS_AUDIT_BACKUPS."""
        s = settings or audit_settings()
        return cls(s.path, max(int(s.rotate_mb * MIB), 1), s.backups)

    def backup_path(self, n: int) -> Path:
        """Path of the ``n``-th rotated file (1 is the newest)."""
        return self.path.with_name(f"{self.path.name}.{n}")

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            self._fh = self.path.open("ab")
            self._size = self._fh.tell()
        return self._fh

    def _rotate(self) -> None:
        self.close()
        oldest = self.backup_path(self.backups)
        if oldest.exists():
            oldest.unlink()
        for n in range(self.backups - 1, 0, -1):
            src = self.backup_path(n)
            if src.exists():
                src.rename(self.backup_path(n + 1))
        if self.path.exists():
            self.path.rename(self.backup_path(1))

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one redacted record, rotating first if it would overflow the size limit."""
        line = orjson.dumps(redact(dict(record)), option=orjson.OPT_SORT_KEYS) + b"\n"
        fh = self._open()
        if self._size > 0 and self._size + len(line) > self.rotate_bytes:
            self._rotate()
            fh = self._open()
        fh.write(line)
        fh.flush()
        self._size += len(line)

    def close(self) -> None:
        """Close the current file (the next write reopens it)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
