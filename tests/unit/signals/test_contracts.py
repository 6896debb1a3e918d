"""Contract selection over hand-made records: expiry preference, target, liquidity, tie-break."""

from __future__ import annotations

import datetime as dt

import msgspec
import numpy as np

from services.core.calendar import default_calendar
from services.core.events import occ_symbol
from services.signals.contracts import (
    ContractRecord,
    chain_records,
    nearest_otm,
    occ_root,
    rejection,
    select_contract,
    trading_dte,
)
from services.signals.playbooks import ContractRules, Target

from .builders import NEXT, T0, TODAY, priced_chain, rec, spy_records

DAY = dt.date.fromisoformat(TODAY)
RULES = ContractRules(max_spread=0.10, max_spread_pct=0.10, min_bid=0.05, min_bid_size=5, min_ask_size=5)


def _select(records: list[ContractRecord], right: str = "C", rules: ContractRules = RULES, **kw):
    args = {"right": right, "root": "SPY", "today": DAY, "dte": 0, "max_dte": 2, "rules": rules}
    args.update(kw)
    return select_contract(records, **args)  # type: ignore[arg-type]


def test_picks_the_hand_computed_contract() -> None:
    # calls: |delta - 0.30| = 0.10 (621), 0.01 (622), 0.06 (623); 624 (0.17) is outside 0.20..0.40.
    sel = _select(spy_records())
    assert sel.contract is not None and sel.contract.symbol == "SPY250708C00622000"
    assert (sel.expiry, sel.dte) == (TODAY, 0)
    assert sel.reason == (
        "SPY250708C00622000 (2025-07-08, 0DTE, strike 622, delta 0.31 vs target 0.3±0.1, bid/ask 0.5/0.52, "
        "spread 0.02 = 3.9% of mid, size 50x50, OI 1000; 3 eligible of 7 calls"
    )
    puts = _select(spy_records(), right="P")
    assert puts.contract is not None and puts.contract.symbol == "SPY250708P00617000"  # |delta| 0.29


def test_prob_touch_target() -> None:
    rules = RULES.model_copy(update={"target": Target(metric="prob_touch", value=0.5, band=0.1)})
    # prob_touch = 2|delta| in the builder: 623C -> 0.48 is closest to 0.50.
    sel = _select(spy_records(), rules=rules)
    assert sel.contract is not None and sel.contract.strike == 623


def test_tie_break_spread_then_strike() -> None:
    a = rec(623, "C", 0.25, bid=0.30, ask=0.32)
    b = rec(621, "C", 0.35, bid=0.70, ask=0.71)  # same distance 0.05, tighter spread
    sel = _select([a, b])
    assert sel.contract is b
    c = rec(621, "C", 0.35, bid=0.70, ask=0.72)  # same distance and spread as a: lower strike wins
    assert _select([a, c]).contract is c
    assert _select([c, a]).contract is c


def test_rejects_illiquid_contracts_with_reasons() -> None:
    base = {"bid": 0.50, "ask": 0.52}
    wide_abs = rec(620, "C", 0.30, bid=1.50, ask=1.61)  # 0.11 > 0.10
    wide_pct = rec(621, "C", 0.30, bid=0.20, ask=0.23)  # 0.03 / 0.215 = 14% > 10%
    no_bid = rec(622, "C", 0.30, bid=0.0, ask=0.05)
    thin = rec(623, "C", 0.30, size=4, **base)
    low_oi = rec(624, "C", 0.30, oi=10, **base)
    rules = RULES.model_copy(update={"min_open_interest": 100})
    assert rejection(wide_abs, rules) == "spread > 0.1"
    assert rejection(wide_pct, rules) == "spread > 10% of mid"
    assert rejection(no_bid, rules) == "bid < 0.05 or no two-sided market"
    assert rejection(thin, rules) == "bid size < 5"
    assert rejection(low_oi, rules) == "open interest < 100"
    sel = _select([wide_abs, wide_pct, no_bid, thin, low_oi], rules=rules, max_dte=0)
    assert sel.contract is None
    assert sel.reason == (
        "no eligible contract: 2025-07-08 (0DTE): 5 calls rejected (1 bid < 0.05 or no two-sided market, "
        "1 bid size < 5, 1 open interest < 100, 1 spread > 0.1, 1 spread > 10% of mid)"
    )
    ok = rec(625, "C", 0.30, oi=100, **base)
    assert _select([wide_abs, thin, ok], rules=rules).contract is ok


def test_no_greeks_is_not_eligible() -> None:
    bad = ContractRecord(symbol="SPY250708C00622000", expiry=TODAY, strike=622, right="C", bid=0.5, ask=0.52)
    assert rejection(bad, RULES) == "no greeks"


def test_next_listed_expiry_when_preferred_is_absent_or_empty() -> None:
    tomorrow = spy_records(expiry=NEXT)
    sel = _select(tomorrow)  # no 0DTE listed
    assert (sel.expiry, sel.dte) == (NEXT, 1)
    assert sel.contract is not None and sel.contract.symbol == "SPY250709C00622000"
    illiquid_today = [rec(622, "C", 0.31, bid=0.50, ask=0.80)]
    sel = _select(illiquid_today + tomorrow)
    assert sel.expiry == NEXT
    assert sel.reason.endswith("; skipped 2025-07-08 (0DTE): 1 calls rejected (1 spread > 0.1)")
    assert _select(tomorrow, max_dte=0).contract is None
    one_dte = _select(spy_records() + tomorrow, dte=1)
    assert one_dte.expiry == NEXT


def test_nothing_listed_in_range() -> None:
    sel = _select(spy_records(expiry="2025-07-14"), max_dte=2)
    assert sel.contract is None
    assert sel.reason == "no SPY calls expiry with 0..2DTE listed (listed: 2025-07-14 (4DTE))"


def test_spx_uses_spxw_root() -> None:
    spxw = rec(6210, "C", 0.31, bid=6.0, ask=6.1, root="SPXW")
    am = rec(6200, "C", 0.30, bid=6.0, ask=6.05, root="SPX")
    rules = ContractRules()
    sel = _select([am, spxw], root="SPXW", rules=rules)
    assert sel.contract is spxw
    assert occ_root("O:SPXW250708C06210000") == "SPXW"
    assert occ_root(am.symbol) == "SPX"


def test_trading_dte_with_and_without_calendar() -> None:
    friday = dt.date(2025, 7, 3)  # 2025-07-04 is a holiday
    monday = dt.date(2025, 7, 7)
    assert trading_dte(friday, friday) == 0
    assert trading_dte(friday, monday, default_calendar()) == 1
    assert trading_dte(friday, monday) == 2  # weekdays only: the holiday counts
    assert trading_dte(DAY, dt.date(2025, 7, 9)) == 1


def test_nearest_otm() -> None:
    recs = spy_records()
    call = nearest_otm(recs, right="C", spot=620.0, expiry=TODAY)
    put = nearest_otm(recs, right="P", spot=620.0, expiry=TODAY)
    assert call is not None and call.strike == 621
    assert put is not None and put.strike == 619
    assert nearest_otm(recs, right="C", spot=630.0, expiry=TODAY) is None


def test_records_from_the_real_chain_analysis() -> None:
    vol = 0.15
    chain = priced_chain(vol=vol)
    quotes = list(chain.quotes)
    no_quote = occ_symbol("SPY", TODAY, "C", 640)
    quotes.append(msgspec.structs.replace(quotes[0], symbol=no_quote, strike=640, bid=0.0, ask=0.0))
    snapshot = msgspec.structs.replace(chain, quotes=tuple(quotes))
    records = chain_records(snapshot, T0, calendar=default_calendar())
    assert [r.symbol for r in records] == [q.symbol for q in quotes]
    by_symbol = {r.symbol: r for r in records}
    assert by_symbol[no_quote].status == "no_quote"
    call = by_symbol[occ_symbol("SPY", TODAY, "C", 622)]
    assert (call.bid_size, call.ask_size, call.open_interest, call.status) == (20.0, 30.0, 500.0, "ok")
    assert 0.0 < call.delta < 0.5 and abs(call.iv - vol) < 0.02
    assert by_symbol[occ_symbol("SPY", TODAY, "P", 618)].delta < 0.0

    rules = ContractRules(max_spread_pct=1.0, min_bid=0.01)
    for right in ("C", "P"):
        sel = _select(records, right=right, rules=rules)
        assert sel.contract is not None
        eligible = [r for r in records if r.right == right and rejection(r, rules) is None]
        best = min(abs(abs(r.delta) - 0.30) for r in eligible)
        assert abs(abs(sel.contract.delta) - 0.30) == best
        assert 0.20 <= abs(sel.contract.delta) <= 0.40
        assert np.isfinite(sel.contract.prob_touch) and sel.contract.prob_touch > abs(sel.contract.delta)
