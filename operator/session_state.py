"""The session's shared state in Redis, as the operator touches it: the kill-switch flag, the OMS's
positions snapshot (is the book flat?) and one-shot flatten requests.

Keys are ``<session>:<key>`` with the logical keys from :mod:`services.core.keys`, the same layout
the stages' Redis StateStore uses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import redis

from services.core import keys

SOURCE: Final = "operator"
FLATTEN_REQUEST: Final = "dreambot:flatten_request"  # JSON {"nonce": str, "ts": ns, "source": "operator"}


class SessionStateError(RuntimeError):
    """Redis could not be reached or answered something unreadable."""


@dataclass(frozen=True)
class KillSwitchFlag:
    engaged: bool
    reason: str
    ts: int
    source: str


@dataclass(frozen=True)
class Book:
    """Open positions (non-zero quantity) and working orders from the OMS's snapshot."""

    open_positions: int
    working_orders: int

    @property
    def flat(self) -> bool:
        return self.open_positions == 0 and self.working_orders == 0


def kill_switch_key(session: str) -> str:
    return f"{session}:{keys.KILL_SWITCH}"


def positions_key(session: str) -> str:
    return f"{session}:{keys.POSITIONS}"


def flatten_request_key(session: str) -> str:
    return f"{session}:{FLATTEN_REQUEST}"


def kill_switch_payload(engaged: bool, reason: str, ts_ns: int) -> bytes:
    """The flag's JSON: {"engaged", "reason", "ts", "source": "operator"}."""
    return json.dumps({"engaged": engaged, "reason": reason, "ts": ts_ns, "source": SOURCE},
                      separators=(",", ":")).encode()


def parse_kill_switch(raw: bytes | None) -> KillSwitchFlag | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return KillSwitchFlag(engaged=bool(data.get("engaged", False)), reason=str(data.get("reason", "")),
                              ts=int(data.get("ts", 0)), source=str(data.get("source", "")))
    except (ValueError, TypeError, AttributeError) as exc:
        raise SessionStateError(f"unreadable kill-switch flag: {exc}") from None


def parse_book(raw: bytes | None) -> Book:
    """Read the OMS's snapshot ``{"positions": [{"quantity": n, ...}], "open_orders": [...]}``.

    No snapshot means the OMS never held anything: flat. ``positions`` may also be a mapping of
    contract -> position.
    """
    if raw is None:
        return Book(0, 0)
    try:
        data: Any = json.loads(raw)
        positions = data.get("positions") or []
        if isinstance(positions, dict):
            positions = list(positions.values())
        open_positions = sum(1 for p in positions if int(p.get("quantity", 0)) != 0)
        return Book(open_positions=open_positions, working_orders=len(data.get("open_orders") or []))
    except (ValueError, TypeError, AttributeError) as exc:
        raise SessionStateError(f"unreadable positions snapshot: {exc}") from None


class SessionState:
    """One session's keys in the Redis at ``url``; every call raises SessionStateError on trouble."""

    def __init__(self, url: str, session: str, *, timeout_s: float = 2.0,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.session = session
        self._clock_ns = clock_ns
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> SessionState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, key: str) -> bytes | None:
        try:
            value = self._redis.get(key)
        except redis.RedisError as exc:
            raise SessionStateError(f"redis GET {key}: {exc}") from None
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    def _set(self, key: str, value: bytes) -> None:
        try:
            self._redis.set(key, value)
        except redis.RedisError as exc:
            raise SessionStateError(f"redis SET {key}: {exc}") from None

    def kill_switch(self) -> KillSwitchFlag | None:
        return parse_kill_switch(self._get(kill_switch_key(self.session)))

    def engage_kill_switch(self, reason: str = "Manual") -> None:
        """Set the flag (idempotent: an engaged flag keeps its original reason and time)."""
        current = self.kill_switch()
        if current is not None and current.engaged:
            return
        self._set(kill_switch_key(self.session), kill_switch_payload(True, reason, self._clock_ns()))

    def release_kill_switch(self) -> bool:
        """Release a flag the operator engaged. A flag engaged by a stage (e.g. risk's
        DailyLossLimit) stays engaged. Returns True when the flag was released."""
        current = self.kill_switch()
        if current is None or not current.engaged or current.source != SOURCE:
            return False
        self._set(kill_switch_key(self.session), kill_switch_payload(False, "Manual", self._clock_ns()))
        return True

    def book(self) -> Book:
        return parse_book(self._get(positions_key(self.session)))

    def request_flatten(self, nonce: str) -> None:
        """Ask the OMS to flatten every position once (it acts on a nonce it has not seen)."""
        payload = json.dumps({"nonce": nonce, "ts": self._clock_ns(), "source": SOURCE},
                             separators=(",", ":")).encode()
        self._set(flatten_request_key(self.session), payload)
