"""The session's shared state in Redis, as the operator touches it: the kill-switch flag, the OMS's
positions snapshot (is the book flat?) and one-shot flatten requests.

Keys are ``<session>:<key>`` with the logical keys from :mod:`services.core.keys`, the same layout
the stages' Redis StateStore uses; values are encoded and decoded by :mod:`services.core.shared_state`,
the schema the stages (risk, the OMS, the console) use, so the operator is exactly as lenient as they
are and reads the OMS's real snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import redis

from services.core import keys, shared_state
from services.core.shared_state import OPERATOR, FlattenRequest, KillSwitchState, SharedStateError

SOURCE: Final = OPERATOR


class SessionStateError(RuntimeError):
    """Redis could not be reached or answered something unreadable."""


@dataclass(frozen=True)
class Book:
    """Open positions (non-zero quantity) and working orders (not in a terminal status) in the
    OMS's snapshot."""

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
    return f"{session}:{keys.FLATTEN_REQUEST}"


def kill_switch_payload(engaged: bool, reason: str, ts_ns: int) -> bytes:
    """The flag's JSON: {"engaged", "reason", "ts", "source": "operator"}."""
    return shared_state.encode(KillSwitchState(engaged, reason, ts_ns, SOURCE))


def flatten_request_payload(nonce: str, ts_ns: int) -> bytes:
    """The flatten request's JSON: {"nonce", "ts", "source": "operator"}."""
    return shared_state.encode(FlattenRequest(nonce=nonce, ts=ts_ns, source=SOURCE))


def parse_kill_switch(raw: bytes | None) -> KillSwitchState | None:
    """The flag, None when the key is absent; SessionStateError when it is unreadable."""
    if raw is None:
        return None
    try:
        return shared_state.decode_kill_switch(raw)
    except SharedStateError as exc:
        raise SessionStateError(f"unreadable kill-switch flag: {exc}") from None


def parse_book(raw: bytes | None) -> Book:
    """Count what the OMS's snapshot (:class:`~services.core.shared_state.OmsSnapshot`) still holds:
    working orders are its ``orders`` not in a terminal status, open positions its ``positions`` with
    a non-zero quantity. No snapshot means the OMS never held anything: flat. A snapshot that does not
    decode (e.g. without ``orders``) raises SessionStateError rather than count as flat.
    """
    if raw is None:
        return Book(0, 0)
    try:
        snap = shared_state.decode_oms_snapshot(raw)
    except SharedStateError as exc:
        raise SessionStateError(f"unreadable positions snapshot: {exc}") from None
    return Book(open_positions=len(snap.open_positions), working_orders=len(snap.working_orders))


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

    def kill_switch(self) -> KillSwitchState | None:
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
        """Ask the OMS to flatten every position once (it acts on a nonce it has not acted on before,
        see :meth:`services.oms.hooks.OmsHooks.check_flatten_request`)."""
        self._set(flatten_request_key(self.session), flatten_request_payload(nonce, self._clock_ns()))
