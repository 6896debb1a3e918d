"""StopSync rules in isolation: steps of k x ATR, breakeven then trail, tick rounding, never loosen."""

from __future__ import annotations

from services.oms.config import StopSyncConfig
from services.oms.stop_sync import StopSync


def _long(sync: StopSync) -> None:
    # Long call bought at 2.00 with the stop at 1.50 and the underlying at 100.00.
    sync.track("t", position_dir=1, exposure=1, entry_price=2.00, stop=1.50, entry_underlying=100.0)


def test_breakeven_after_one_step_then_trail_after_two() -> None:
    sync = StopSync(StopSyncConfig(k_atr=2.0, trail_fraction=0.5))
    _long(sync)
    # One step = 2 x ATR 0.5 = 1.00. +0.90: no step.
    assert sync.propose("t", close=100.9, atr=0.5, bid=2.5, ask=2.6, tick=0.05) is None
    # +1.00: breakeven 2.00.
    assert sync.propose("t", close=101.0, atr=0.5, bid=2.5, ask=2.6, tick=0.05) == 2.00
    sync.on_stop_changed("t", 2.00)
    sync.on_mark("t", 3.10)
    # +2.00: trail = 2.00 + 0.5 * (3.10 - 2.00) = 2.55 -> already on the 0.05 grid.
    assert sync.propose("t", close=102.0, atr=0.5, bid=3.0, ask=3.1, tick=0.05) == 2.55
    sync.on_stop_changed("t", 2.55)
    # Same inputs again: not tighter -> None.
    assert sync.propose("t", close=102.0, atr=0.5, bid=3.0, ask=3.1, tick=0.05) is None
    # Marks falling do not lower the best mark, and a lower candidate never loosens the stop.
    sync.on_mark("t", 2.20)
    assert sync.propose("t", close=101.1, atr=0.5, bid=2.2, ask=2.3, tick=0.05) is None


def test_rounds_away_from_the_market_and_respects_the_bid() -> None:
    sync = StopSync(StopSyncConfig(k_atr=1.0, trail_fraction=0.5))
    _long(sync)
    sync.on_mark("t", 2.37)
    # trail = 2.00 + 0.5 * 0.37 = 2.185 -> down to the 0.05 grid: 2.15
    assert sync.propose("t", close=102.0, atr=1.0, bid=2.3, ask=2.4, tick=0.05) == 2.15
    # The bid at/below the candidate would trigger the stop at once: no proposal.
    assert sync.propose("t", close=102.0, atr=1.0, bid=2.15, ask=2.2, tick=0.05) is None
    assert sync.propose("t", close=102.0, atr=1.0, bid=None, ask=None, tick=0.05) is None


def test_puts_and_short_positions_mirror() -> None:
    sync = StopSync(StopSyncConfig(k_atr=1.0))
    # Long put: gains when the underlying falls (exposure -1).
    sync.track("p", position_dir=1, exposure=-1, entry_price=1.00, stop=0.70, entry_underlying=100.0)
    assert sync.propose("p", close=101.0, atr=1.0, bid=1.2, ask=1.3, tick=0.01) is None
    assert sync.propose("p", close=99.0, atr=1.0, bid=1.2, ask=1.3, tick=0.01) == 1.00
    # Short call sold at 1.00, buy stop at 1.40: favour when the underlying falls; the stop comes
    # down to breakeven 1.00, which must stay above the ask.
    sync.track("s", position_dir=-1, exposure=-1, entry_price=1.00, stop=1.40, entry_underlying=100.0)
    assert sync.propose("s", close=99.0, atr=1.0, bid=0.70, ask=0.75, tick=0.01) == 1.00
    sync.on_stop_changed("s", 1.00)
    sync.on_mark("s", 0.40)
    # two steps: 1.00 - 0.5 * (1.00 - 0.40) = 0.70 (rounded up on the grid)
    assert sync.propose("s", close=98.0, atr=1.0, bid=0.40, ask=0.45, tick=0.01) == 0.70


def test_baseline_from_first_print_and_disabled() -> None:
    sync = StopSync(StopSyncConfig(k_atr=1.0))
    sync.track("t", position_dir=1, exposure=1, entry_price=2.00, stop=1.50, entry_underlying=None)
    assert sync.propose("t", close=100.0, atr=1.0, bid=2.5, ask=2.6, tick=0.05) is None  # baseline
    assert sync.propose("t", close=101.0, atr=1.0, bid=2.5, ask=2.6, tick=0.05) == 2.00
    assert sync.propose("t", close=101.0, atr=0.0, bid=2.5, ask=2.6, tick=0.05) is None
    off = StopSync(StopSyncConfig(enabled=False))
    _long(off)
    assert off.propose("t", close=110.0, atr=1.0, bid=5.0, ask=5.1, tick=0.05) is None
    sync.forget("t")
    assert sync.propose("t", close=110.0, atr=1.0, bid=5.0, ask=5.1, tick=0.05) is None
