"""StopSync: tighten a bracket's stop as the underlying moves in the trade's favour; never loosen it.

Per open bracket it remembers the entry (average option price, underlying price at the entry fill,
current stop) and the best option mark since. On each FeatureVector of the underlying
(``close`` and ``atr_14``)::

    favour = (close - entry_underlying) * exposure        # exposure +1 long call/short put, -1 otherwise
    steps  = floor(favour / (k_atr * atr_14))
    steps >= 1:  candidate = entry price (breakeven)
    steps >= 2:  candidate = entry + trail_fraction * (best mark - entry)   (long; mirrored for short)

The candidate is rounded to the tick away from the market (down for a long's sell stop) and proposed
only if it is tighter than the current stop (higher for a long) and still on the right side of the
market (below the bid for a sell stop, above the ask for a buy stop); otherwise nothing happens.
The OMS turns a proposal into a broker modify, whose ``modified`` event updates the current stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.oms.config import StopSyncConfig


@dataclass(slots=True)
class TrailState:
    """What StopSync remembers about one bracket."""

    position_dir: int
    exposure: int
    entry_price: float
    stop: float
    entry_underlying: float | None
    best_mark: float


class StopSync:
    """Proposes tighter stop prices for open brackets (pure: no broker calls)."""

    def __init__(self, config: StopSyncConfig | None = None) -> None:
        self.config = config or StopSyncConfig()
        self.states: dict[str, TrailState] = {}

    def track(
        self,
        bracket_id: str,
        *,
        position_dir: int,
        exposure: int,
        entry_price: float,
        stop: float,
        entry_underlying: float | None,
    ) -> None:
        """Start (or refresh after another entry fill) tracking ``bracket_id``."""
        state = self.states.get(bracket_id)
        if state is None:
            self.states[bracket_id] = TrailState(
                position_dir, exposure, entry_price, stop, entry_underlying, entry_price
            )
            return
        state.entry_price = entry_price
        if state.entry_underlying is None:
            state.entry_underlying = entry_underlying

    def forget(self, bracket_id: str) -> None:
        """Stop tracking (the trade closed or its stop is gone)."""
        self.states.pop(bracket_id, None)

    def on_mark(self, bracket_id: str, mark: float) -> None:
        """Fold an option mark into the best mark since entry."""
        state = self.states.get(bracket_id)
        if state is None:
            return
        better = mark > state.best_mark if state.position_dir > 0 else mark < state.best_mark
        if better:
            state.best_mark = mark

    def on_stop_changed(self, bracket_id: str, stop: float) -> None:
        """The broker confirmed a new stop price (from us or from a risk command)."""
        state = self.states.get(bracket_id)
        if state is not None:
            state.stop = stop

    def propose(
        self,
        bracket_id: str,
        *,
        close: float,
        atr: float,
        bid: float | None,
        ask: float | None,
        tick: float,
    ) -> float | None:
        """A tighter stop for ``bracket_id`` given the underlying ``close`` and ``atr``, or None."""
        state = self.states.get(bracket_id)
        if state is None or not self.config.enabled:
            return None
        if state.entry_underlying is None:
            state.entry_underlying = close  # first underlying print after the entry is the baseline
            return None
        if not (atr > 0 and math.isfinite(atr) and math.isfinite(close)):
            return None
        favour = (close - state.entry_underlying) * state.exposure
        steps = math.floor(favour / (self.config.k_atr * atr) + 1e-9)
        if steps < 1:
            return None
        entry, frac = state.entry_price, self.config.trail_fraction
        if state.position_dir > 0:
            candidate = entry
            if steps >= 2:
                candidate = max(candidate, entry + frac * (state.best_mark - entry))
            candidate = round(math.floor(candidate / tick + 1e-9) * tick, 2)
            if candidate <= state.stop or bid is None or candidate >= bid:
                return None
        else:
            candidate = entry
            if steps >= 2:
                candidate = min(candidate, entry - frac * (entry - state.best_mark))
            candidate = round(math.ceil(candidate / tick - 1e-9) * tick, 2)
            if candidate >= state.stop or ask is None or ask <= 0 or candidate <= ask:
                return None
        return candidate
