"""KillSwitch: the session-wide "no new entries, cancel and flatten" flag, kept in the StateStore.

The flag lives under :data:`services.core.keys.KILL_SWITCH` as
:class:`~services.core.shared_state.KillSwitchState` JSON
``{"engaged": bool, "reason": "Manual" | "DailyLossLimit" | ..., "ts": ns, "source": str}``, so an
operator (CLI, console, the TradingSession's ``killSwitch``) can flip it by writing the key and every
stage sees the same truth: risk, the operator and the console decode it with the one shared parser,
equally lenient (``{"engaged": true}`` alone is a manual engage by the operator). The switch re-reads
the key at most once per decision timestamp.

When the store raises (Redis unreachable — any exception counts), :attr:`KillSwitch.error` says
why and the last known state is kept. Engaging still works locally (the caller keeps emitting its
protective commands) and the write is retried once the store answers again; on that resync an
engaged state always wins over a released one, so an outage can never silently release the switch.
"""

from __future__ import annotations

from services.core import keys, shared_state
from services.core.shared_state import MANUAL, RELEASED, KillSwitchState, SharedStateError
from services.core.state import StateStore

__all__ = ["DAILY_LOSS_LIMIT", "MANUAL", "RELEASED", "KillSwitch", "KillSwitchState"]

DAILY_LOSS_LIMIT = "DailyLossLimit"


class KillSwitch:
    """Kill-switch flag backed by a StateStore, tolerant of store outages."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._state = RELEASED
        self._read_ts: int | None = None
        self._dirty = False  # a local engage/release not yet written to the store
        self._announced = False  # engaged-ness last reported by take_change()
        self.error: str | None = None

    @property
    def state(self) -> KillSwitchState:
        """Last known state (the store's, or the local one while the store is unreachable)."""
        return self._state

    @property
    def engaged(self) -> bool:
        return self._state.engaged

    @property
    def available(self) -> bool:
        return self.error is None

    def refresh(self, now_ns: int) -> KillSwitchState:
        """Re-read the key unless it was already read at ``now_ns``; failures set :attr:`error`."""
        if self._read_ts == now_ns:
            return self._state
        self._read_ts = now_ns
        try:
            raw = self._store.get(keys.KILL_SWITCH)
        except Exception as exc:  # any store failure means "unavailable"
            self.error = f"StateStore read failed: {type(exc).__name__}: {exc}"
            return self._state
        try:
            stored = RELEASED if raw is None else shared_state.decode_kill_switch(raw)
        except SharedStateError as exc:
            self.error = f"kill switch is malformed: {exc}"
            return self._state
        self.error = None
        if self._dirty:
            merged = self._state if self._state.engaged or not stored.engaged else stored
            self._state = merged
            self._dirty = merged != stored and not self._write()
        else:
            self._state = stored
        return self._state

    def engage(self, reason: str, now_ns: int, source: str) -> bool:
        """Engage (idempotent). Returns True when this call changed the state."""
        if self._state.engaged:
            return False
        self._state = KillSwitchState(True, reason, now_ns, source)
        self._read_ts = now_ns
        self._dirty = not self._write()
        return True

    def release(self, now_ns: int, source: str) -> bool:
        """Release (idempotent). Returns True when this call changed the state."""
        if not self._state.engaged:
            return False
        self._state = KillSwitchState(False, "", now_ns, source)
        self._read_ts = now_ns
        self._dirty = not self._write()
        return True

    def take_change(self) -> KillSwitchState | None:
        """The current state once after each engage/release, however it happened (command,
        daily loss limit, or an operator writing the key); None when nothing changed since."""
        if self._state.engaged == self._announced:
            return None
        self._announced = self._state.engaged
        return self._state

    def _write(self) -> bool:
        try:
            self._store.set(keys.KILL_SWITCH, shared_state.encode(self._state))
        except Exception as exc:  # any store failure means "unavailable"
            self.error = f"StateStore write failed: {type(exc).__name__}: {exc}"
            return False
        return True
