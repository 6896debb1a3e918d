"""Hypothesis strategies for bar rows: valid ones, and one-corruption variants with the reason expected."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from hypothesis import strategies as st

from services.core.calendar import NS_PER_MIN
from services.ingest.validation import RejectReason

# 2001-09-09 .. 2026-05-28: far from the int64 limits, and in the past (a recorded file's bars stamped
# after the wall clock are refused as from the future).
TS_MIN = 1_000_000_000 * 1_000_000_000
TS_MAX = 1_780_000_000 * 1_000_000_000


class Row(NamedTuple):
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float


def _between(low: float, high: float, frac: float) -> float:
    return min(max(low + (high - low) * frac, low), high)


@st.composite
def valid_ohlcv(draw: st.DrawFn) -> tuple[float, float, float, float, float]:
    """open, high, low, close, volume satisfying every bar rule."""
    low = draw(st.floats(0.01, 10_000.0, allow_nan=False, allow_infinity=False))
    spread = draw(st.one_of(st.just(0.0), st.floats(0.0, 0.25)))
    high = low * (1.0 + spread)
    o = _between(low, high, draw(st.floats(0.0, 1.0)))
    c = _between(low, high, draw(st.floats(0.0, 1.0)))
    volume = draw(st.one_of(st.just(0.0), st.integers(0, 10**9).map(float), st.floats(0.0, 1e9)))
    return o, high, low, c, volume


@st.composite
def valid_rows(draw: st.DrawFn, min_size: int = 1, max_size: int = 30) -> list[Row]:
    """Rows of one symbol, strictly increasing whole-minute timestamps."""
    n = draw(st.integers(min_size, max_size))
    start = draw(st.integers(TS_MIN // NS_PER_MIN, TS_MAX // NS_PER_MIN)) * NS_PER_MIN
    steps = draw(st.lists(st.integers(1, 600), min_size=n, max_size=n))
    rows, ts = [], start
    for step in steps:
        ts += step * NS_PER_MIN
        rows.append(Row(ts, *draw(valid_ohlcv())))
    return rows


CONTENT_REASONS = (
    RejectReason.NAN,
    RejectReason.NON_POSITIVE_PRICE,
    RejectReason.HIGH_BELOW_LOW,
    RejectReason.OHLC_OUTSIDE_RANGE,
    RejectReason.NEGATIVE_VOLUME,
)
ORDER_REASONS = (RejectReason.DUPLICATE, RejectReason.OUT_OF_ORDER)
BAR_REASONS = CONTENT_REASONS + ORDER_REASONS
_PRICES = ("open", "high", "low", "close")


def _with(row: Row, field: str, value: float) -> Row:
    changes: dict[str, Any] = {field: value}
    return row._replace(**changes)


def corrupt(draw: st.DrawFn, rows: list[Row], k: int, reason: RejectReason) -> list[Row]:
    """A copy of ``rows`` whose row ``k`` breaks exactly the rule named by ``reason``."""
    r = rows[k]
    if reason is RejectReason.NAN:
        field = draw(st.sampled_from((*_PRICES, "volume")))
        bad = _with(r, field, draw(st.sampled_from((math.nan, math.inf, -math.inf))))
    elif reason is RejectReason.NON_POSITIVE_PRICE:
        field = draw(st.sampled_from(_PRICES))
        bad = _with(r, field, draw(st.one_of(st.just(0.0), st.floats(-1e6, -1e-6))))
    elif reason is RejectReason.HIGH_BELOW_LOW:
        frac = draw(st.floats(1e-6, 0.5))
        high = r.low * (1.0 - frac)
        bad = r._replace(high=high, open=high, close=high)
    elif reason is RejectReason.OHLC_OUTSIDE_RANGE:
        frac = draw(st.floats(1e-6, 0.5))
        field = draw(st.sampled_from(("open", "close")))
        above = draw(st.booleans())
        bad = _with(r, field, r.high * (1.0 + frac) if above else r.low * (1.0 - frac))
    elif reason is RejectReason.NEGATIVE_VOLUME:
        bad = r._replace(volume=-draw(st.floats(1e-3, 1e9)))
    elif reason is RejectReason.DUPLICATE:
        bad = r._replace(ts=rows[k - 1].ts)
    elif reason is RejectReason.OUT_OF_ORDER:
        bad = r._replace(ts=rows[k - 1].ts - draw(st.integers(1, 600)) * NS_PER_MIN)
    else:
        raise AssertionError(reason)
    return [*rows[:k], bad, *rows[k + 1 :]]


@st.composite
def corrupted_rows(draw: st.DrawFn) -> tuple[list[Row], int, RejectReason]:
    """Valid rows with one corruption injected at row ``k``, and the reason it must be refused for."""
    rows = draw(valid_rows(min_size=2, max_size=20))
    reason = draw(st.sampled_from(BAR_REASONS))
    lo = 1 if reason in ORDER_REASONS else 0
    k = draw(st.integers(lo, len(rows) - 1))
    return corrupt(draw, rows, k, reason), k, reason
