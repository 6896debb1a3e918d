"""The console's kill-switch rules, decided on the server.

- :class:`Confirmations`: an engage or release is armed per signed-in session and kept here, with the
  flag as it was when armed; Confirm acts only on what this session armed, within ``ttl_s``, and only
  if the flag has not changed since. Nothing the browser sends can stand in for an armed action.
- :func:`release_refusal` (from :mod:`services.core.kill_switch_rules`, shared with ``dreambot
  kill-switch``): a kill switch engaged for ``DailyLossLimit`` cannot be released from the console
  before the next trading session.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from services.core.kill_switch_rules import DAILY_LOSS_LIMIT, next_session_date, release_refusal
from services.core.shared_state import AuditAction, KillSwitchState

__all__ = ["DAILY_LOSS_LIMIT", "Armed", "Confirmations", "next_session_date", "release_refusal"]

NS_PER_S: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Armed:
    """An action one session armed: what, why (the person's words), when, and the flag it saw."""

    action: AuditAction
    why: str
    armed_ns: int
    flag: KillSwitchState


class Confirmations:
    """Armed actions by session id, each good for ``ttl_s`` seconds and for one Confirm."""

    def __init__(self, ttl_s: float, clock_ns: Callable[[], int]) -> None:
        self.ttl_s = ttl_s
        self.clock_ns = clock_ns
        self._armed: dict[str, Armed] = {}
        self._lock = threading.Lock()

    def arm(self, sid: str, armed: Armed) -> None:
        with self._lock:
            now = self.clock_ns()
            self._armed = {k: v for k, v in self._armed.items() if not self._expired(v, now)}
            self._armed[sid] = armed

    def _expired(self, armed: Armed, now_ns: int) -> bool:
        return now_ns - armed.armed_ns > self.ttl_s * NS_PER_S

    def take(self, sid: str) -> Armed | None:
        """The action ``sid`` armed (removed: one Confirm per arm), or None when none or expired."""
        with self._lock:
            armed = self._armed.pop(sid, None)
        if armed is None or self._expired(armed, self.clock_ns()):
            return None
        return armed

    def cancel(self, sid: str) -> bool:
        with self._lock:
            return self._armed.pop(sid, None) is not None
