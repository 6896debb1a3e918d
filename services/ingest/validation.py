"""Bad-row validation for market data: every refused row is recorded with its reason, never fixed.

Validators are stateful per symbol (they remember the last accepted timestamp), count rejections
by :class:`RejectReason` and keep the first few as examples in a printable
:class:`RejectionReport`. An optional ``on_reject`` callback sees every rejection, which is how a
service forwards malformed input to the ``dlq`` topic.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from services.core.calendar import NS_PER_S, MarketCalendar, default_calendar, iso_ny, ny_date
from services.core.events import Bar, Quote

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _when(ts: int) -> str:
    # New York time for people; whole microseconds, as datetime cannot hold nanoseconds.
    return iso_ny(ts - ts % 1000)


class RejectReason(StrEnum):
    """Why a row was refused; the values are stable strings (metric labels, DLQ reasons)."""

    BAD_TIMESTAMP = "bad_timestamp"
    OUT_OF_ORDER = "out_of_order"
    DUPLICATE = "duplicate"
    NAN = "nan"
    NON_POSITIVE_PRICE = "non_positive_price"
    HIGH_BELOW_LOW = "high_below_low"
    OHLC_OUTSIDE_RANGE = "ohlc_outside_range"
    NEGATIVE_VOLUME = "negative_volume"
    CROSSED_QUOTE = "crossed_quote"
    NEGATIVE_SIZE = "negative_size"
    IMPLAUSIBLE = "implausible"
    FUTURE = "future"


#: Default plausibility bounds of a bar: price (USD per share or index point) and volume per bar.
MAX_PRICE: Final = 1_000_000.0
MAX_VOLUME: Final = 1e12


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused row: where it came from (``row`` is the CSV line or 1-based table row), and why."""

    source: str
    row: int | None
    symbol: str
    ts: int | None
    reason: RejectReason
    detail: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.row}" if self.row is not None else self.source
        when = _when(self.ts) if self.ts is not None else "no timestamp"
        return f"{where} {self.symbol} {when} {self.reason.value}: {self.detail}"


@dataclass(frozen=True)
class RejectionReport:
    """Accepted/rejected totals, counts by reason and the first rejections, ready to print."""

    source: str
    accepted: int
    rejected: int
    counts: Mapping[RejectReason, int]
    examples: tuple[Rejection, ...]

    def summary(self) -> str:
        """One line, e.g. ``x.csv: 2814 accepted, 2 rejected (duplicate 1, nan 1)``."""
        by_reason = ", ".join(f"{r.value} {n}" for r, n in sorted(self.counts.items()))
        tail = f" ({by_reason})" if by_reason else ""
        return f"{self.source}: {self.accepted} accepted, {self.rejected} rejected{tail}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON logs and run reports."""
        return {
            "source": self.source,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "counts": {r.value: n for r, n in sorted(self.counts.items())},
            "examples": [
                {
                    "source": e.source,
                    "row": e.row,
                    "symbol": e.symbol,
                    "ts": e.ts,
                    "reason": e.reason.value,
                    "detail": e.detail,
                }
                for e in self.examples
            ],
        }

    def __str__(self) -> str:
        lines = [self.summary()]
        lines.extend(f"  {e}" for e in self.examples)
        if self.rejected > len(self.examples):
            lines.append(f"  ... {self.rejected - len(self.examples)} more")
        return "\n".join(lines)


RejectHook = Callable[[Rejection], None]


class _Ledger:
    """Counting and example-keeping shared by the validators."""

    def __init__(self, source: str, max_examples: int, on_reject: RejectHook | None) -> None:
        self.source = source
        self.accepted = 0
        self._max_examples = max_examples
        self._on_reject = on_reject
        self._counts: dict[RejectReason, int] = {}
        self._examples: list[Rejection] = []
        self._last_ts: dict[str, int] = {}

    @property
    def rejected(self) -> int:
        return sum(self._counts.values())

    @property
    def counts(self) -> Mapping[RejectReason, int]:
        return MappingProxyType(self._counts)

    def last_ts(self, symbol: str) -> int | None:
        """Timestamp of the last accepted row of ``symbol``."""
        return self._last_ts.get(symbol)

    def accept(self, symbol: str, ts: int, count: int = 1) -> None:
        """Count ``count`` accepted rows of ``symbol``, the last one at ``ts``."""
        self._last_ts[symbol] = ts
        self.accepted += count

    def reject(
        self,
        source: str | None,
        row: int | None,
        symbol: str,
        ts: int | None,
        reason: RejectReason,
        detail: str,
    ) -> Rejection:
        rejection = Rejection(source or self.source, row, symbol, ts, reason, detail)
        self._counts[reason] = self._counts.get(reason, 0) + 1
        if len(self._examples) < self._max_examples:
            self._examples.append(rejection)
        if self._on_reject is not None:
            self._on_reject(rejection)
        return rejection

    def order_problem(self, symbol: str, ts: int, *, allow_equal: bool) -> tuple[RejectReason, str] | None:
        last = self._last_ts.get(symbol)
        if last is None or ts > last:
            return None
        if ts == last and allow_equal:
            return None
        if ts == last:
            return RejectReason.DUPLICATE, "same timestamp as the previous accepted row"
        return RejectReason.OUT_OF_ORDER, f"before the previous accepted row ({_when(last)})"

    def report(self) -> RejectionReport:
        """Snapshot of the counts so far."""
        return RejectionReport(
            self.source, self.accepted, self.rejected, dict(self._counts), tuple(self._examples)
        )


def _bad_ts(ts: int | None) -> bool:
    return ts is None or ts < 0


def bar_problem(
    open_: float,
    high: float,
    low: float,
    close: float,
    volume: float,
    vwap: float | None = None,
    trades: float | None = None,
) -> tuple[RejectReason, str] | None:
    """The first content problem of a bar's fields (NaN first, then prices, range, volume), or None.

    The optional ``vwap`` and ``trades`` may be missing (None or NaN) but not infinite.
    """
    values = (("open", open_), ("high", high), ("low", low), ("close", close), ("volume", volume))
    bad = [name for name, v in values if not math.isfinite(v)]
    bad += [name for name, v in (("vwap", vwap), ("trades", trades)) if v is not None and math.isinf(v)]
    if bad:
        return RejectReason.NAN, f"not a finite number: {', '.join(bad)}"
    nonpos = [name for name, v in values[:4] if v <= 0.0]
    if nonpos:
        return RejectReason.NON_POSITIVE_PRICE, f"price <= 0: {', '.join(nonpos)}"
    if high < low:
        return RejectReason.HIGH_BELOW_LOW, f"high {high!r} < low {low!r}"
    outside = [name for name, v in (("open", open_), ("close", close)) if not low <= v <= high]
    if outside:
        shown = ", ".join(f"{n} {v!r}" for n, v in (("open", open_), ("close", close)) if n in outside)
        return RejectReason.OHLC_OUTSIDE_RANGE, f"{shown} outside [low {low!r}, high {high!r}]"
    if volume < 0.0:
        return RejectReason.NEGATIVE_VOLUME, f"volume {volume!r} < 0"
    return None


def _bar_problem_mask(
    o: FloatArray,
    h: FloatArray,
    lo: FloatArray,
    c: FloatArray,
    v: FloatArray,
    vwap: FloatArray | None,
    trades: FloatArray | None,
) -> BoolArray:
    # Vectorised superset test of bar_problem (NaN compares False, so the finiteness term covers it);
    # the flagged rows are then explained one by one by bar_problem, the single source of truth.
    finite = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & np.isfinite(v)
    for extra in (vwap, trades):
        if extra is not None:
            finite &= ~np.isinf(extra)
    problem = ~finite
    problem |= (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0)
    problem |= h < lo
    problem |= (o < lo) | (o > h) | (c < lo) | (c > h)
    problem |= v < 0
    return problem


class BarValidator:
    """Accepts or rejects OHLCV rows; state is the last accepted timestamp per symbol.

    Besides the content checks, a row whose high exceeds ``max_price`` or whose volume exceeds
    ``max_volume`` is refused as ``implausible`` (a 1e12 price is a corrupt row, not a bar), before the
    ordering check, so it never becomes the "last accepted" row.
    """

    def __init__(
        self, source: str = "", *, max_examples: int = 20, on_reject: RejectHook | None = None,
        max_price: float = MAX_PRICE, max_volume: float = MAX_VOLUME, not_after_ns: int | None = None,
    ) -> None:
        self._ledger = _Ledger(source, max_examples, on_reject)
        self.max_price = max_price
        self.max_volume = max_volume
        #: A row stamped after this (e.g. the wall clock plus a tolerance, for a recorded file) is from
        #: the future: refused as ``future`` before the ordering check (None: no such bound).
        self.not_after_ns = not_after_ns

    def _plausibility(self, high: float, volume: float, ts: int | None = None) -> tuple[RejectReason, str] | None:
        if ts is not None and self.not_after_ns is not None and ts > self.not_after_ns:
            return RejectReason.FUTURE, f"stamped after {_when(self.not_after_ns)}: a bar from the future"
        if high > self.max_price:
            return RejectReason.IMPLAUSIBLE, f"price {high!r} above the {self.max_price:g} bound"
        if volume > self.max_volume:
            return RejectReason.IMPLAUSIBLE, f"volume {volume!r} above the {self.max_volume:g} bound"
        return None

    @property
    def accepted(self) -> int:
        return self._ledger.accepted

    @property
    def rejected(self) -> int:
        return self._ledger.rejected

    @property
    def counts(self) -> Mapping[RejectReason, int]:
        return self._ledger.counts

    def report(self, source: str | None = None) -> RejectionReport:
        """Counts and examples so far (``source`` overrides the validator's name in the summary)."""
        rep = self._ledger.report()
        return (
            rep
            if source is None
            else RejectionReport(source, rep.accepted, rep.rejected, rep.counts, rep.examples)
        )

    def check(
        self,
        symbol: str,
        ts: int | None,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        *,
        vwap: float | None = None,
        trades: float | None = None,
        row: int | None = None,
        source: str | None = None,
    ) -> Rejection | None:
        """Validate one row; returns its Rejection (already recorded) or None when accepted."""
        led = self._ledger
        if _bad_ts(ts):
            return led.reject(source, row, symbol, None, RejectReason.BAD_TIMESTAMP, f"timestamp {ts!r}")
        assert ts is not None
        problem = bar_problem(open, high, low, close, volume, vwap, trades)
        if problem is None:
            problem = self._plausibility(high, volume, ts)
        if problem is None:
            problem = led.order_problem(symbol, ts, allow_equal=False)
        if problem is not None:
            return led.reject(source, row, symbol, ts, *problem)
        led.accept(symbol, ts)
        return None

    def check_bar(self, bar: Bar, *, row: int | None = None, source: str | None = None) -> Rejection | None:
        """Validate an already-built Bar (built unchecked, so it may carry NaN)."""
        return self.check(
            bar.symbol,
            bar.ts,
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume,
            vwap=bar.vwap,
            trades=bar.trades,
            row=row,
            source=source,
        )

    def check_batch(
        self,
        symbol: str,
        ts: IntArray,
        open: FloatArray,
        high: FloatArray,
        low: FloatArray,
        close: FloatArray,
        volume: FloatArray,
        *,
        ts_ok: BoolArray | None = None,
        ts_text: Sequence[object] | None = None,
        vwap: FloatArray | None = None,
        trades: FloatArray | None = None,
        rows: IntArray | None = None,
        source: str | None = None,
    ) -> BoolArray:
        """Validate rows in order (same verdicts as :meth:`check` row by row); returns the accept mask.

        ``ts_ok`` marks rows whose timestamp parsed; ``ts_text`` (raw cells) only feeds messages.
        """
        led = self._ledger
        good_ts = (ts >= 0) if ts_ok is None else (ts_ok & (ts >= 0))
        problem = _bar_problem_mask(open, high, low, close, volume, vwap, trades)
        accept = good_ts & ~problem
        # Refusals are collected first and recorded in row order, so examples and the on_reject
        # hook see them exactly as the row-by-row path would.
        refused: list[tuple[int, int | None, RejectReason, str]] = []
        for i in np.flatnonzero(~good_ts).tolist():
            raw = ts_text[i] if ts_text is not None else int(ts[i])
            missing = raw is None or raw != raw  # NaN and NaT are the blank cells of a frame
            detail = "timestamp missing" if missing else f"timestamp unparseable: {raw!r}"
            refused.append((i, None, RejectReason.BAD_TIMESTAMP, detail))
        for i in np.flatnonzero(good_ts & problem).tolist():
            found = bar_problem(
                float(open[i]),
                float(high[i]),
                float(low[i]),
                float(close[i]),
                float(volume[i]),
                None if vwap is None else float(vwap[i]),
                None if trades is None else float(trades[i]),
            )
            if found is None:
                accept[i] = True
            else:
                refused.append((i, int(ts[i]), *found))
        implausible = (high > self.max_price) | (volume > self.max_volume)
        if self.not_after_ns is not None:
            implausible |= ts > self.not_after_ns
        for i in np.flatnonzero(accept & implausible).tolist():
            found = self._plausibility(float(high[i]), float(volume[i]), int(ts[i]))
            assert found is not None
            accept[i] = False
            refused.append((i, int(ts[i]), *found))

        candidates = np.flatnonzero(accept)
        cand_ts = ts[candidates]
        last = led.last_ts(symbol)
        # Fast path: the usual clean file is strictly increasing and starts after the last accepted row.
        if (
            candidates.size
            and bool(np.all(np.diff(cand_ts) > 0))
            and (last is None or int(cand_ts[0]) > last)
        ):
            led.accept(symbol, int(cand_ts[-1]), int(candidates.size))
        else:
            for i, t in zip(candidates.tolist(), cand_ts.tolist(), strict=True):
                order = led.order_problem(symbol, t, allow_equal=False)
                if order is None:
                    led.accept(symbol, t)
                else:
                    accept[i] = False
                    refused.append((i, t, *order))
        refused.sort(key=lambda item: item[0])
        for i, t_or_none, reason, detail in refused:
            row = int(rows[i]) if rows is not None else i + 1
            led.reject(source, row, symbol, t_or_none, reason, detail)
        return accept


def quote_problem(
    bid: float, ask: float, bid_size: float, ask_size: float
) -> tuple[RejectReason, str] | None:
    """The first content problem of a quote (NaN, prices, sizes, crossed), or None."""
    values = (("bid", bid), ("ask", ask), ("bid_size", bid_size), ("ask_size", ask_size))
    bad = [name for name, v in values if not math.isfinite(v)]
    if bad:
        return RejectReason.NAN, f"not a finite number: {', '.join(bad)}"
    nonpos = [name for name, v in values[:2] if v <= 0.0]
    if nonpos:
        return RejectReason.NON_POSITIVE_PRICE, f"price <= 0: {', '.join(nonpos)}"
    negative = [name for name, v in values[2:] if v < 0.0]
    if negative:
        return RejectReason.NEGATIVE_SIZE, f"size < 0: {', '.join(negative)}"
    if bid > ask:
        return RejectReason.CROSSED_QUOTE, f"bid {bid!r} > ask {ask!r}"
    return None


class QuoteValidator:
    """Accepts or rejects top-of-book quotes; equal timestamps are fine, earlier ones are not."""

    def __init__(
        self, source: str = "", *, max_examples: int = 20, on_reject: RejectHook | None = None
    ) -> None:
        self._ledger = _Ledger(source, max_examples, on_reject)

    @property
    def accepted(self) -> int:
        return self._ledger.accepted

    @property
    def rejected(self) -> int:
        return self._ledger.rejected

    @property
    def counts(self) -> Mapping[RejectReason, int]:
        return self._ledger.counts

    def report(self) -> RejectionReport:
        """Counts and examples so far."""
        return self._ledger.report()

    def check(
        self,
        symbol: str,
        ts: int | None,
        bid: float,
        ask: float,
        bid_size: float,
        ask_size: float,
        *,
        row: int | None = None,
        source: str | None = None,
    ) -> Rejection | None:
        """Validate one quote; returns its Rejection (already recorded) or None when accepted."""
        led = self._ledger
        if _bad_ts(ts):
            return led.reject(source, row, symbol, None, RejectReason.BAD_TIMESTAMP, f"timestamp {ts!r}")
        assert ts is not None
        # Several quote updates can share one timestamp, so only going backwards is refused.
        problem = quote_problem(bid, ask, bid_size, ask_size) or led.order_problem(
            symbol, ts, allow_equal=True
        )
        if problem is not None:
            return led.reject(source, row, symbol, ts, *problem)
        led.accept(symbol, ts)
        return None

    def check_quote(
        self, quote: Quote, *, row: int | None = None, source: str | None = None
    ) -> Rejection | None:
        """Validate an already-built Quote."""
        return self.check(
            quote.symbol,
            quote.ts,
            quote.bid,
            quote.ask,
            quote.bid_size,
            quote.ask_size,
            row=row,
            source=source,
        )


# --- bar spacing -------------------------------------------------------------------------------

DEFAULT_INTERVAL_S = 60


@dataclass(frozen=True)
class BarSpacing:
    """The bar interval of a series and how regular its spacing is (spacing within one New York date).

    ``interval_source`` says where the interval came from: ``data`` (the most common spacing between
    consecutive bars of one date; ties go to the shorter), ``given`` (the caller, e.g. ``--interval``)
    or ``default`` (fewer than two bars on any date: 60 s). ``gaps`` counts spacings longer than the
    interval, ``off_grid`` spacings that are not a whole number of intervals and ``overlapping``
    spacings shorter than it. ``missing_regular`` counts interval slots of regular hours, inside the
    span the data covers, that have no bar (real gaps in the feed).
    """

    interval_s: int
    interval_source: str
    spacings: Mapping[int, int]
    gaps: int
    off_grid: int
    overlapping: int
    missing_regular: int

    @property
    def regular(self) -> bool:
        """True when no spacing inside a date differs from the interval."""
        return self.gaps == 0 and self.off_grid == 0 and self.overlapping == 0

    def summary(self) -> str:
        """One line, e.g. ``interval 60 s (from the data); 16 gaps, 9 regular-hours bars missing``."""
        origin = {"data": "read from the data", "given": "given", "default": "default, too few bars to read"}
        parts = [f"interval {self.interval_s} s ({origin.get(self.interval_source, self.interval_source)})"]
        if self.regular:
            parts.append("evenly spaced")
        else:
            irregular = [f"{n} {name}" for name, n in (("gaps", self.gaps), ("off-grid spacings", self.off_grid),
                                                       ("overlapping bars", self.overlapping)) if n]
            parts.append("irregular spacing: " + ", ".join(irregular))
        parts.append(f"{self.missing_regular} regular-hours bars missing")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "interval_source": self.interval_source,
            "regular": self.regular,
            "gaps": self.gaps,
            "off_grid": self.off_grid,
            "overlapping": self.overlapping,
            "missing_regular_bars": self.missing_regular,
            "spacings_s": {str(k): v for k, v in sorted(self.spacings.items())},
        }


def bar_spacing(
    ts: Sequence[int] | IntArray, interval_s: int | None = None, calendar: MarketCalendar | None = None
) -> BarSpacing:
    """Interval (read from the data unless ``interval_s`` is given) and spacing of increasing bar starts."""
    t = np.asarray(ts, dtype=np.int64)
    cal = calendar if calendar is not None else default_calendar()
    days = np.array([ny_date(int(x)).toordinal() for x in t], dtype=np.int64) if t.size else np.zeros(0, np.int64)
    same_day = days[1:] == days[:-1]
    diffs_s = (np.diff(t)[same_day] // NS_PER_S).astype(np.int64)
    values, counts = np.unique(diffs_s, return_counts=True)
    spacings = {int(v): int(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)}
    if interval_s is not None:
        iv, source = int(interval_s), "given"
    elif values.size:
        iv, source = int(values[int(np.argmax(counts))]), "data"  # argmax takes the first (shortest) tie
    else:
        iv, source = DEFAULT_INTERVAL_S, "default"
    if iv < 1:
        raise ValueError(f"bar interval must be >= 1 s, got {iv}")
    gaps = int(np.sum((diffs_s > iv) & (diffs_s % iv == 0)))
    off_grid = int(np.sum((diffs_s > iv) & (diffs_s % iv != 0)))
    overlapping = int(np.sum(diffs_s < iv))
    missing = 0
    if t.size:
        iv_ns = iv * NS_PER_S
        first, last = int(t[0]), int(t[-1])
        for ordinal in np.unique(days).tolist():
            day = dt.date.fromordinal(ordinal)
            # A date outside the calendar's range has no known session, so no known slots.
            session = cal.session(day) if cal.first <= day <= cal.last else None
            if session is None:
                continue
            slots = np.arange(session.open_ns, session.close_ns, iv_ns, dtype=np.int64)
            slots = slots[(slots >= first) & (slots <= last)]
            present = np.isin(slots, t[days == ordinal])
            missing += int(slots.size - int(np.sum(present)))
    return BarSpacing(iv, source, spacings, gaps, off_grid, overlapping, missing)
