"""StateStore: the small key/value + stream surface stages share (Redis in services mode)."""

from __future__ import annotations

from collections import deque
from typing import Protocol


class StateError(RuntimeError):
    """The store answered, but with an error (wrong type, read-only replica, ...)."""


class StateUnavailable(StateError):  # noqa: N818 - the name risk and the docs use
    """The store cannot be reached right now (refused, timed out, loading); retry later."""


class StateStore(Protocol):
    """Session-scoped shared state. Keys are logical; implementations add the session prefix."""

    def get(self, key: str) -> bytes | None:
        """Value of ``key`` or None."""

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Store ``value`` under ``key`` (optionally expiring)."""

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""

    def append(self, stream: str, value: bytes, maxlen: int = 10_000) -> None:
        """Append to a capped stream (oldest entries dropped past ``maxlen``)."""

    def read(self, stream: str, count: int = 100) -> list[bytes]:
        """The newest ``count`` entries of ``stream``, oldest first."""


class MemoryState:
    """In-memory StateStore for the embedded runner; TTLs are measured on an injected clock."""

    def __init__(self, prefix: str = "default", now_s: object = None) -> None:
        self.prefix = prefix
        self._values: dict[str, tuple[bytes, float | None]] = {}
        self._streams: dict[str, deque[bytes]] = {}
        self._now_s = now_s  # callable returning seconds; None means keys never expire

    def _k(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def _now(self) -> float:
        return self._now_s() if callable(self._now_s) else 0.0

    def get(self, key: str) -> bytes | None:
        item = self._values.get(self._k(key))
        if item is None:
            return None
        value, expires = item
        if expires is not None and callable(self._now_s) and self._now() >= expires:
            del self._values[self._k(key)]
            return None
        return value

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        expires = self._now() + ttl_s if ttl_s is not None and callable(self._now_s) else None
        self._values[self._k(key)] = (bytes(value), expires)

    def delete(self, key: str) -> None:
        self._values.pop(self._k(key), None)

    def append(self, stream: str, value: bytes, maxlen: int = 10_000) -> None:
        buf = self._streams.get(self._k(stream))
        if buf is None or buf.maxlen != maxlen:
            buf = deque(buf or (), maxlen=maxlen)
            self._streams[self._k(stream)] = buf
        buf.append(bytes(value))

    def read(self, stream: str, count: int = 100) -> list[bytes]:
        buf = self._streams.get(self._k(stream), deque())
        return list(buf)[-count:] if count else []
