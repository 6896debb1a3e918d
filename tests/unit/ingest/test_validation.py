"""BarValidator / QuoteValidator: every bad-row kind is refused with its reason and counted, never fixed."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.events import Bar, Quote
from services.ingest.validation import (
    BarValidator,
    QuoteValidator,
    Rejection,
    RejectReason,
    bar_problem,
)
from tests.unit.ingest.strategies import Row, corrupted_rows, valid_ohlcv, valid_rows

SYM = "SPY"


def _check_rows(v: BarValidator, rows: list[Row]) -> list[Rejection | None]:
    return [
        v.check(SYM, r.ts, r.open, r.high, r.low, r.close, r.volume, row=i + 2) for i, r in enumerate(rows)
    ]


def _batch(v: BarValidator, rows: list[Row]) -> np.ndarray:
    a = np.array([r[1:] for r in rows], dtype=np.float64).reshape(len(rows), 5)
    ts = np.array([r.ts for r in rows], dtype=np.int64)
    return v.check_batch(SYM, ts, a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], rows=np.arange(len(rows)) + 2)


@settings(max_examples=80, deadline=None)
@given(corrupted_rows())
def test_each_corruption_is_refused_with_its_reason(case: tuple[list[Row], int, RejectReason]) -> None:
    rows, k, reason = case
    v = BarValidator("t.csv")
    verdicts = _check_rows(v, rows)
    refused = [(i, r) for i, r in enumerate(verdicts) if r is not None]
    assert len(refused) == 1
    i, rej = refused[0]
    assert (i, rej.reason, rej.row, rej.symbol, rej.source) == (k, reason, k + 2, SYM, "t.csv")
    assert v.accepted == len(rows) - 1
    assert v.rejected == 1 and dict(v.counts) == {reason: 1}


@settings(max_examples=80, deadline=None)
@given(corrupted_rows())
def test_batch_gives_the_same_verdicts_as_row_by_row(case: tuple[list[Row], int, RejectReason]) -> None:
    rows, _k, reason = case
    one, many = BarValidator("t"), BarValidator("t")
    single = _check_rows(one, rows)
    mask = _batch(many, rows)
    assert mask.tolist() == [r is None for r in single]
    assert one.report().examples == many.report().examples
    assert dict(many.counts) == {reason: 1}


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.sampled_from([1.0, 2.0, 0.0, -1.0, math.nan, math.inf])),
        min_size=1,
        max_size=40,
    )
)
def test_batch_matches_row_by_row_on_arbitrary_streams(cells: list[tuple[int, float]]) -> None:
    # Random timestamps (repeats, going back) and random bad values, to compare both paths broadly.
    rows = [Row(t * 60_000_000_000, x, max(x, 1.5) if x == x else x, 1.0, 1.0, x) for t, x in cells]
    one, many = BarValidator(), BarValidator()
    assert _batch(many, rows).tolist() == [r is None for r in _check_rows(one, rows)]
    assert one.report() == many.report()


@settings(max_examples=50, deadline=None)
@given(valid_rows())
def test_valid_rows_are_all_accepted(rows: list[Row]) -> None:
    v = BarValidator()
    assert all(r is None for r in _check_rows(v, rows))
    assert _batch(BarValidator(), rows).all()
    assert (v.accepted, v.rejected) == (len(rows), 0)


def test_rejected_rows_do_not_move_the_clock() -> None:
    v = BarValidator()
    assert v.check(SYM, 100, 1, 2, 1, 2, 0) is None
    bad = v.check(SYM, 200, 1, 2, 1, 3, 0)  # close above high
    assert bad is not None and bad.reason is RejectReason.OHLC_OUTSIDE_RANGE
    assert v.check(SYM, 150, 1, 2, 1, 2, 0) is None  # after the last *accepted* row, so fine


def test_order_is_tracked_per_symbol() -> None:
    v = BarValidator()
    assert v.check("SPY", 200, 1, 1, 1, 1, 0) is None
    assert v.check("QQQ", 100, 1, 1, 1, 1, 0) is None
    rej = v.check("SPY", 100, 1, 1, 1, 1, 0)
    assert rej is not None and rej.reason is RejectReason.OUT_OF_ORDER
    dup = v.check("QQQ", 100, 1, 1, 1, 1, 0)
    assert dup is not None and dup.reason is RejectReason.DUPLICATE


def test_missing_or_negative_timestamp_is_bad_timestamp() -> None:
    v = BarValidator()
    for ts in (None, -1):
        rej = v.check(SYM, ts, 1, 1, 1, 1, 0)
        assert rej is not None and rej.reason is RejectReason.BAD_TIMESTAMP and rej.ts is None
    one = np.ones(3)
    mask = v.check_batch(
        SYM,
        np.array([0, 0, 60], dtype=np.int64),
        one,
        one,
        one,
        one,
        np.zeros(3),
        ts_ok=np.array([False, False, True]),
        ts_text=["garbage", None, "x"],
    )
    assert mask.tolist() == [False, False, True]
    assert [e.detail for e in v.report().examples[-2:]] == [
        "timestamp unparseable: 'garbage'",
        "timestamp missing",
    ]


def test_zero_volume_and_flat_bars_are_valid() -> None:
    assert bar_problem(5.0, 5.0, 5.0, 5.0, 0.0) is None


def test_optional_fields_may_be_missing_but_not_infinite() -> None:
    assert bar_problem(1, 1, 1, 1, 0, vwap=math.nan, trades=math.nan) is None
    found = bar_problem(1, 1, 1, 1, 0, vwap=math.inf)
    assert found is not None and found[0] is RejectReason.NAN and "vwap" in found[1]


def test_check_bar_catches_nan_in_an_unchecked_bar() -> None:
    bar = Bar(ts=60, symbol=SYM, open=1.0, high=math.nan, low=1.0, close=1.0, volume=1.0)
    rej = BarValidator().check_bar(bar, row=7)
    assert rej is not None and rej.reason is RejectReason.NAN and rej.row == 7 and "high" in rej.detail


def test_report_counts_all_keeps_first_examples_and_prints() -> None:
    seen: list[Rejection] = []
    v = BarValidator("x.csv", max_examples=2, on_reject=seen.append)
    v.check(SYM, 60_000_000_000, 1, 2, 1, 2, 10)
    for i in range(3):
        v.check(SYM, 60_000_000_000, 1, 2, 1, 2, 10, row=10 + i)  # duplicates
    v.check(SYM, 120_000_000_000, math.nan, 2, 1, 2, 10, row=20)
    rep = v.report()
    assert (rep.accepted, rep.rejected) == (1, 4)
    assert dict(rep.counts) == {RejectReason.DUPLICATE: 3, RejectReason.NAN: 1}
    assert [e.row for e in rep.examples] == [10, 11]
    assert [r.row for r in seen] == [10, 11, 12, 20]
    text = str(rep)
    assert text.splitlines()[0] == "x.csv: 1 accepted, 4 rejected (duplicate 3, nan 1)"
    assert "x.csv:10 SPY 1969-12-31T19:01:00-05:00 duplicate" in text and "2 more" in text
    assert rep.to_dict()["counts"] == {"duplicate": 3, "nan": 1}


def test_reason_values_are_stable_strings() -> None:
    assert {r.value for r in RejectReason} == {
        "bad_timestamp",
        "out_of_order",
        "duplicate",
        "nan",
        "non_positive_price",
        "high_below_low",
        "ohlc_outside_range",
        "negative_volume",
        "crossed_quote",
        "negative_size",
        "implausible",
        "future",
    }


# --- quotes ------------------------------------------------------------------------------------


@st.composite
def quote_case(draw: st.DrawFn) -> tuple[tuple[float, float, float, float], RejectReason | None]:
    bid = draw(st.floats(0.01, 1000.0))
    ask = bid * (1 + draw(st.floats(0.0, 0.1)))
    sizes = [draw(st.floats(0.0, 1e6)), draw(st.floats(0.0, 1e6))]
    q = [bid, ask, *sizes]
    reason = draw(
        st.sampled_from(
            [
                None,
                RejectReason.NAN,
                RejectReason.NON_POSITIVE_PRICE,
                RejectReason.NEGATIVE_SIZE,
                RejectReason.CROSSED_QUOTE,
            ]
        )
    )
    if reason is RejectReason.NAN:
        q[draw(st.integers(0, 3))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    elif reason is RejectReason.NON_POSITIVE_PRICE:
        q[draw(st.integers(0, 1))] = -draw(st.floats(0.0, 10.0))
    elif reason is RejectReason.NEGATIVE_SIZE:
        q[draw(st.integers(2, 3))] = -draw(st.floats(1e-6, 1e6))
    elif reason is RejectReason.CROSSED_QUOTE:
        q[0] = q[1] * (1 + draw(st.floats(1e-6, 0.1)))
    return (q[0], q[1], q[2], q[3]), reason


@settings(max_examples=80, deadline=None)
@given(quote_case())
def test_quote_corruptions_are_refused_with_their_reason(
    case: tuple[tuple[float, float, float, float], RejectReason | None],
) -> None:
    values, reason = case
    v = QuoteValidator("q")
    rej = v.check(SYM, 1_000, *values, row=3)
    assert (rej.reason if rej else None) is reason
    assert v.rejected == (reason is not None)


def test_quotes_may_share_a_timestamp_but_not_go_back() -> None:
    v = QuoteValidator()
    assert v.check(SYM, 100, 1.0, 1.0, 5, 5) is None  # locked, not crossed
    assert v.check(SYM, 100, 1.0, 1.01, 5, 5) is None
    rej = v.check_quote(Quote(ts=99, symbol=SYM, bid=1.0, ask=1.01, bid_size=1, ask_size=1))
    assert rej is not None and rej.reason is RejectReason.OUT_OF_ORDER
    assert v.report().summary() == ": 2 accepted, 1 rejected (out_of_order 1)"


@given(valid_ohlcv())
def test_valid_ohlcv_strategy_is_valid(values: tuple[float, float, float, float, float]) -> None:
    assert bar_problem(*values) is None
