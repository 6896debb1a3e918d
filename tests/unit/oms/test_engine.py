"""OrderManager scenarios on the paper broker, every number worked out by hand in the comments.

Fees (support.TEST_FEES): a buy costs 0.55/contract (0.50 commission + 0.02 ORF + 0.03 OCC), a sell
0.56 (+ 0.01 TAF), no SEC fee. One contract = 100 shares of premium.
"""

from __future__ import annotations

import orjson
import pytest

from services.core.events import ChainSnapshot, SignalIntent, decode_json, encode_json
from services.oms.config import FeeSchedule, StopSyncConfig

from .support import (
    SPXW_C6200,
    SPY_C620,
    SPY_P615,
    Harness,
    make_config,
    make_quote,
    make_request,
    order_events,
    outcomes,
    positions,
    statuses,
)


def test_bracket_passive_entry_partial_fills_then_take_profit_with_oco() -> None:
    h = Harness()
    h.oms.on_signal_intent(
        SignalIntent(ts=h.at(0), id="intent-r1", underlying="SPY", playbook="test_playbook", contract=SPY_C620,
                     right="C", side="buy", quantity=3, limit_price=1.25, take_profit=1.60, stop_loss=0.95,
                     reason="close < vwap_lower_2", features={"rsi_14": 28.0})
    )
    h.quote(0, SPY_C620, 1.20, 1.30, bid_size=10, ask_size=10)
    # Buy 3 at limit 1.25 while the ask is 1.30: not marketable -> accepted x3, entry working.
    out = h.submit(1, make_request("r1", SPY_C620, 3, 1.25, 1.60, 0.95))
    assert [(e.leg, e.status) for e in order_events(out)] == [
        ("entry", "accepted"), ("take_profit", "accepted"), ("stop_loss", "accepted"), ("entry", "working"),
    ]
    # ask 1.26 > 1.25: the market has not traded through the limit -> nothing.
    assert h.quote(2, SPY_C620, 1.22, 1.26, bid_size=10, ask_size=10) == []
    # ask 1.25 <= limit with 2 displayed: fill 2 @ 1.25 (the limit), fees 2 x 0.55 = 1.10.
    # The children start working (they protect the 2 bought); neither triggers (bid 1.21).
    out = h.quote(3, SPY_C620, 1.21, 1.25, bid_size=10, ask_size=2)
    assert [(e.leg, e.status) for e in order_events(out)] == [
        ("entry", "partial"), ("take_profit", "working"), ("stop_loss", "working"),
    ]
    assert h.fills(out) == [(2, 1.25, 1.10)]
    # ask 1.24 <= 1.25: the remaining 1 fills at the limit 1.25 (resting order), fees 0.55.
    out = h.quote(4, SPY_C620, 1.23, 1.24, bid_size=10, ask_size=5)
    assert h.fills(out) == [(1, 1.25, 0.55)]
    pos = positions(out)[-1]
    # avg 1.25; realized so far = -(1.10 + 0.55) = -1.65; mark = mid 1.235 -> (1.235-1.25)*3*100 = -4.50
    assert (pos.quantity, pos.avg_price) == (3, 1.25)
    assert pos.realized_pnl == pytest.approx(-1.65)
    assert pos.unrealized_pnl == pytest.approx(-4.50)
    # bid 1.62 >= take profit 1.60 with 2 displayed: sell 2 @ 1.60, fees 2 x 0.56 = 1.12;
    # OCO: the stop shrinks from 3 to 1 (modified).
    out = h.quote(5, SPY_C620, 1.62, 1.66, bid_size=2, ask_size=5)
    assert h.fills(out) == [(2, 1.60, 1.12)]
    stop_mod = [e for e in order_events(out, "stop_loss")]
    assert [(e.status, e.quantity) for e in stop_mod] == [("modified", 1)]
    # realized = (1.60-1.25)*2*100 - 1.65 - 1.12 = 70 - 2.77 = 67.23
    assert positions(out)[-1].realized_pnl == pytest.approx(67.23)
    # bid 1.65: the last contract sells @ 1.60 (fees 0.56); take profit filled -> stop canceled.
    out = h.quote(6, SPY_C620, 1.65, 1.70, bid_size=10, ask_size=5)
    assert h.fills(out) == [(1, 1.60, 0.56)]
    assert statuses(out, "stop_loss") == ["canceled"]
    (outcome,) = outcomes(out)
    # pnl = 3*1.60*100 - 3*1.25*100 - (1.10 + 0.55 + 1.12 + 0.56) = 480 - 375 - 3.33 = 101.67
    assert outcome.pnl == pytest.approx(101.67)
    assert (outcome.quantity, outcome.exit_reason) == (3, "take_profit")
    assert outcome.entry_price == pytest.approx(1.25) and outcome.exit_price == pytest.approx(1.60)
    assert (outcome.entry_ts, outcome.exit_ts) == (h.at(3), h.at(6))
    # Excursions (running gross PnL): worst after the t=4 fill at mark 1.235 on 3 open:
    # (1.235-1.25)*3*100 = -4.50; best at t=5's mark 1.64 before the sale: (1.64-1.25)*3*100 = 117.
    assert outcome.mae == pytest.approx(-4.50)
    assert outcome.mfe == pytest.approx(117.0)
    assert (outcome.reason, outcome.context, outcome.playbook) == (
        "close < vwap_lower_2", {"rsi_14": 28.0}, "test_playbook")
    assert h.oms.is_flat()
    assert h.oms.snapshot()["realized_pnl"] == pytest.approx(101.67)
    # Fill quality: the first entry fill came 2 s after the order went live (t=1 -> t=3).
    assert h.oms.fill_reports[0].delay_ns == 2_000_000_000
    # The last Position published says flat with the round trip's PnL.
    assert positions(h.events)[-1].quantity == 0
    assert positions(h.events)[-1].realized_pnl == pytest.approx(101.67)


def test_marketable_entry_with_slippage_then_stop_loss_on_index_option() -> None:
    fees = FeeSchedule(commission_per_contract=0.50, orf_per_contract=0.02, occ_per_contract=0.03,
                       taf_per_contract=0.01, sec_fee_rate=0.0, index_fee_per_contract=0.10)
    h = Harness(make_config(fees=fees, slippage_ticks=1))
    # SPXW ticks: 0.05 below $3, 0.10 from $3. Ask 3.80 <= limit 4.00 on arrival: marketable,
    # pays ask + 1 tick = 3.80 + 0.10 = 3.90 (under the 4.00 cap).
    h.quote(0, SPXW_C6200, 3.70, 3.80)
    out = h.submit(1, make_request("r2", SPXW_C6200, 2, 4.00, 5.00, 3.00))
    # buy fees per contract: 0.50 + 0.02 + 0.03 + 0.10 index fee = 0.65 -> 2 x 0.65 = 1.30
    assert h.fills(out) == [(2, 3.90, 1.30)]
    assert statuses(out, "entry") == ["accepted", "filled"]
    assert statuses(out, "stop_loss") == ["accepted", "working"]
    # bid 3.05 > stop 3.00: nothing.
    assert h.fills(h.quote(2, SPXW_C6200, 3.05, 3.20)) == []
    # bid 2.95 <= 3.00: the stop triggers and sells at bid - 1 tick = 2.95 - 0.05 = 2.90;
    # sell fees per contract 0.65 + 0.01 TAF = 0.66 -> 1.32; the take profit is canceled (OCO).
    out = h.quote(3, SPXW_C6200, 2.95, 3.10)
    assert h.fills(out) == [(2, 2.90, 1.32)]
    assert statuses(out, "take_profit") == ["canceled"]
    (outcome,) = outcomes(out)
    # pnl = (2.90 - 3.90) * 2 * 100 - (1.30 + 1.32) = -200 - 2.62 = -202.62
    assert outcome.pnl == pytest.approx(-202.62)
    assert outcome.exit_reason == "stop_loss"
    # Worst running PnL is the exit itself: -200 (gross); never in profit (mark 3.75 at entry < 3.90).
    assert outcome.mae == pytest.approx(-200.0)
    assert outcome.mfe == 0.0


def test_redelivered_order_request_makes_one_order() -> None:
    h = Harness()
    h.quote(0, SPY_C620, 1.20, 1.30)
    req = make_request("dup", SPY_C620, 1, 1.25, 1.60, 0.95)
    first = h.submit(1, req)
    assert len(order_events(first)) == 4
    assert h.submit(2, req) == []  # same id redelivered: nothing new
    # The broker alone is idempotent too: the same client order id returns the existing legs.
    again = h.broker.submit_otoco(req, "dup")
    assert [e.id for e in again] == ["paper-1.2", "paper-2.1", "paper-3.1"]
    assert len(h.broker.open_orders()) == 3
    assert len(h.oms.book.brackets) == 1


def test_kill_switch_cancels_working_orders_flattens_at_bid_and_blocks_entries() -> None:
    h = Harness()
    h.quote(0, SPY_C620, 1.00, 1.05, bid_size=20, ask_size=20)
    h.quote(0, SPY_P615, 0.80, 0.85, bid_size=20, ask_size=20)
    # r1 fills at once: ask 1.05 <= 1.10 -> 2 @ 1.05 (slippage 0), fees 1.10.
    h.submit(1, make_request("r1", SPY_C620, 2, 1.10, 1.50, 0.80))
    # r2 rests: ask 0.85 > limit 0.80.
    h.submit(2, make_request("r2", SPY_P615, 1, 0.80, 1.20, 0.60))
    h.quote(3, SPY_C620, 1.10, 1.12, bid_size=20, ask_size=20)
    out = h.command(4, "k1", "engage_kill_switch")
    ev = order_events(out)
    # r1's take profit and stop, r2's entry (its held children go with it), then r1 is sold at market.
    assert [(e.client_order_id, e.leg, e.status) for e in ev] == [
        ("r1", "take_profit", "canceled"),
        ("r1", "stop_loss", "canceled"),
        ("r2", "entry", "canceled"),
        ("r2", "take_profit", "canceled"),
        ("r2", "stop_loss", "canceled"),
        ("r1.flat1", "flatten", "accepted"),
        ("r1.flat1", "flatten", "filled"),
    ]
    # Flattened at the bid 1.10 (slippage 0): pnl = (1.10 - 1.05) * 2 * 100 - 1.10 - 2 x 0.56
    #                                             = 10 - 1.10 - 1.12 = 7.78
    assert h.fills(out) == [(2, 1.10, 1.12)]
    (outcome,) = outcomes(out)
    assert outcome.exit_reason == "kill_switch"
    assert outcome.pnl == pytest.approx(7.78)
    assert h.oms.is_flat()
    assert h.oms.snapshot()["kill_switch"]["engaged"] is True
    # While engaged, new requests are rejected without reaching the broker.
    out = h.submit(5, make_request("r3", SPY_C620, 1, 1.15, 1.50, 0.80))
    assert [(e.order_id, e.status) for e in order_events(out)] == [("r3", "rejected")]
    assert "kill switch" in order_events(out)[0].reason
    h.command(6, "k2", "release_kill_switch")
    out = h.submit(7, make_request("r4", SPY_C620, 1, 1.15, 1.50, 0.80))
    assert statuses(out, "entry") == ["accepted", "filled"]


def test_kill_switch_flatten_waits_for_a_bid_and_fills_by_displayed_size() -> None:
    h = Harness()
    h.quote(0, SPY_C620, 1.00, 1.05, bid_size=10, ask_size=10)
    h.submit(1, make_request("r1", SPY_C620, 3, 1.05, 1.50, 0.80))
    # No bid now: the flatten order works until one appears.
    h.quote(2, SPY_C620, 0.0, 0.10)
    out = h.command(3, "k1", "engage_kill_switch")
    assert statuses(out, "flatten") == ["accepted", "working"]
    # bid 0.70 for 2: sells 2 @ 0.70 (the stop was canceled by the kill switch, so no stop exit).
    out = h.quote(4, SPY_C620, 0.70, 0.80, bid_size=2)
    assert h.fills(out, "flatten") == [(2, 0.70, 1.12)]
    out = h.quote(5, SPY_C620, 0.65, 0.75, bid_size=5)
    assert h.fills(out, "flatten") == [(1, 0.65, 0.56)]
    (outcome,) = outcomes(out)
    # pnl = (2*0.70 + 0.65 - 3*1.05) * 100 - (3*0.55 + 1.12 + 0.56) = (2.05 - 3.15)*100 - 3.33 = -113.33
    assert outcome.pnl == pytest.approx(-113.33)
    assert outcome.exit_reason == "kill_switch"
    assert outcome.exit_price == pytest.approx((2 * 0.70 + 0.65) / 3)


def test_cancel_modify_and_flatten_commands() -> None:
    h = Harness()
    h.quote(0, SPY_C620, 1.00, 1.05)
    h.submit(1, make_request("r1", SPY_C620, 1, 0.95, 1.50, 0.70))
    # Cancel the bracket while nothing is filled: the entry and its held children go.
    out = h.command(2, "c1", "cancel", order_id="r1")
    assert [(e.leg, e.status) for e in order_events(out)] == [
        ("entry", "canceled"), ("take_profit", "canceled"), ("stop_loss", "canceled")]
    assert outcomes(out) == []  # nothing was bought: no round trip
    assert h.command(3, "c1", "cancel", order_id="r1") == []  # redelivered command: ignored
    h.submit(4, make_request("r2", SPY_C620, 1, 1.05, 1.50, 0.70))  # fills @ 1.05
    out = h.command(5, "m1", "modify", order_id="r2", stop_price=0.85)
    assert [(e.leg, e.status, e.stop_price) for e in order_events(out)] == [("stop_loss", "modified", 0.85)]
    h.quote(6, SPY_C620, 1.20, 1.25)
    out = h.command(7, "f1", "flatten", underlying="SPY")
    # Exits canceled, then a market sell at the bid 1.20:
    # pnl = (1.20 - 1.05) * 100 - 0.55 - 0.56 = 15 - 1.11 = 13.89
    assert [(e.leg, e.status) for e in order_events(out)] == [
        ("take_profit", "canceled"), ("stop_loss", "canceled"), ("flatten", "accepted"), ("flatten", "filled")]
    (outcome,) = outcomes(out)
    assert (outcome.exit_reason, outcome.pnl) == ("flatten", pytest.approx(13.89))
    assert h.command(8, "m2", "modify", order_id="r2", stop_price=0.9) == []  # nothing left to modify
    assert any(r.get("kind") == "command_ignored" for r in h.audit.records)


def test_cancel_after_partial_entry_keeps_exits_for_what_was_bought() -> None:
    h = Harness()
    h.quote(0, SPY_C620, 1.00, 1.05, ask_size=2)
    h.submit(1, make_request("r1", SPY_C620, 5, 1.05, 1.50, 0.70))  # 2 of 5 fill on arrival
    out = h.command(2, "c1", "cancel", order_id="r1")
    # Entry canceled at 2 of 5; both exits shrink to 2 (modified), still protecting the 2 held.
    assert [(e.leg, e.status, e.quantity) for e in order_events(out)] == [
        ("entry", "canceled", 5), ("take_profit", "modified", 2), ("stop_loss", "modified", 2)]
    out = h.quote(3, SPY_C620, 1.55, 1.60)
    assert h.fills(out, "take_profit") == [(2, 1.50, 1.12)]
    (outcome,) = outcomes(out)
    # pnl = (1.50 - 1.05) * 2 * 100 - 2 x 0.55 - 2 x 0.56 = 90 - 2.22 = 87.78
    assert outcome.pnl == pytest.approx(87.78)
    assert outcome.quantity == 2


def test_stop_sync_tightens_by_modify_and_never_loosens() -> None:
    h = Harness(make_config(stop_sync=StopSyncConfig(enabled=True, k_atr=1.0, trail_fraction=0.5)))
    h.quote(0, SPY_C620, 0.98, 1.00, underlying_price=620.0)
    h.submit(1, make_request("r1", SPY_C620, 1, 1.00, 2.00, 0.70))  # 1 @ 1.00; underlying 620.00
    # Underlying +0.50 with ATR 1.00: less than one step (k x ATR = 1.00) -> no change.
    h.quote(2, SPY_C620, 1.15, 1.17)
    assert h.features(3, "SPY", 620.5, 1.0) == []
    # +1.00 = one step: stop to breakeven 1.00 (below the bid 1.30, tighter than 0.70).
    h.quote(4, SPY_C620, 1.30, 1.32)
    out = h.features(5, "SPY", 621.0, 1.0)
    assert [(e.leg, e.status, e.stop_price) for e in order_events(out)] == [("stop_loss", "modified", 1.00)]
    # Best mark rises to 1.51; +2.10 = two steps: trail = 1.00 + 0.5 * (1.51 - 1.00) = 1.255 -> 1.25 (tick).
    h.quote(6, SPY_C620, 1.50, 1.52)
    out = h.features(7, "SPY", 622.1, 1.0)
    assert [(e.status, e.stop_price) for e in order_events(out)] == [("modified", 1.25)]
    # The underlying falls back (0 steps): a stop is never loosened.
    assert h.features(8, "SPY", 620.2, 1.0) == []
    # Risk moves the stop higher by hand; stop sync's 1.25 would be looser -> it stays at 1.40.
    h.command(9, "m1", "modify", order_id="r1", stop_price=1.40)
    assert h.features(10, "SPY", 622.5, 1.0) == []
    stop = h.oms.book.legs[h.oms.book.brackets["r1"].stop_loss_id or ""]
    assert stop.stop_price == 1.40
    # bid 1.38 <= 1.40: stopped out at the bid. pnl = (1.38 - 1.00) * 100 - 0.55 - 0.56 = 36.89
    out = h.quote(11, SPY_C620, 1.38, 1.42)
    (outcome,) = outcomes(out)
    assert (outcome.exit_reason, outcome.pnl) == ("stop_loss", pytest.approx(36.89))


def test_stop_sync_never_sets_a_stop_through_the_market() -> None:
    h = Harness(make_config(stop_sync=StopSyncConfig(enabled=True, k_atr=1.0)))
    h.quote(0, SPY_C620, 0.98, 1.00, underlying_price=620.0)
    h.submit(1, make_request("r1", SPY_C620, 1, 1.00, 2.00, 0.70))
    # One step in favour but the option decayed: bid 0.95 < breakeven 1.00 -> no modify.
    h.quote(2, SPY_C620, 0.95, 0.97)
    assert h.features(3, "SPY", 621.5, 1.0) == []


def test_expiry_cash_settles_spxw_at_intrinsic() -> None:
    h = Harness()
    h.quote(0, SPXW_C6200, 4.90, 5.00)
    h.submit(1, make_request("r1", SPXW_C6200, 2, 5.00, 9.00, 2.00))  # 2 @ 5.00, fees 1.10
    out = h.session_close({"SPX": 6212.34})
    # Exits expire with the contract; the position cash-settles at 6212.34 - 6200 = 12.34.
    assert statuses(out, "take_profit") == ["expired"] and statuses(out, "stop_loss") == ["expired"]
    settle = [e for e in order_events(out, "flatten") if e.status == "filled"]
    assert [(e.fill_price, e.filled_quantity, e.fees) for e in settle] == [(12.34, 2, 0.0)]
    assert settle[0].reason.startswith("expiry:cash_settled")
    (outcome,) = outcomes(out)
    # pnl = (12.34 - 5.00) * 2 * 100 - 1.10 = 1468 - 1.10 = 1466.90
    assert outcome.pnl == pytest.approx(1466.90)
    assert outcome.exit_reason == "expiry" and outcome.exit_price == pytest.approx(12.34)
    assert h.oms.is_flat()


def test_spy_options_expire_exercised_itm_and_worthless_otm() -> None:
    h = Harness()
    h.quote(0, SPY_C620, 1.00, 1.05)
    h.quote(0, SPY_P615, 0.40, 0.45)
    h.submit(1, make_request("call", SPY_C620, 1, 1.05, 3.00, 0.50))  # 1 @ 1.05
    h.submit(2, make_request("put", SPY_P615, 1, 0.45, 1.00, 0.20))  # 1 @ 0.45
    out = h.session_close({"SPY": 621.50})
    by_id = {o.id: o for o in outcomes(out)}
    # Call ITM: exercised, valued at intrinsic 621.50 - 620 = 1.50 -> (1.50 - 1.05)*100 - 0.55 = 44.45
    assert by_id["call"].pnl == pytest.approx(44.45)
    # Put OTM (615 < 621.50): worthless -> (0 - 0.45)*100 - 0.55 = -45.55
    assert by_id["put"].pnl == pytest.approx(-45.55)
    reasons = sorted(e.reason.split(" ")[0] for e in order_events(out, "flatten") if e.status == "filled")
    assert reasons == ["expiry:exercised", "expiry:worthless"]


def test_events_are_wire_valid_and_audited() -> None:
    h = Harness()
    h.quote(0, SPY_C620, 1.00, 1.05)
    h.submit(1, make_request("r1", SPY_C620, 1, 1.05, 1.50, 0.70))
    h.quote(2, SPY_C620, 1.55, 1.60)
    for event in h.events:
        assert decode_json(encode_json(event)) == event
    kinds = [r["kind"] for r in h.audit.records]
    assert kinds.count("order_event") == len(order_events(h.events))
    assert "order_request" in kinds and "trade_outcome" in kinds
    fill_records = [r for r in h.audit.records if r.get("fill_delay_ns") is not None]
    assert [r["fill_delay_ns"] for r in fill_records] == [0, 1_000_000_000]


def test_same_inputs_give_the_same_outputs() -> None:
    def run() -> list[bytes]:
        h = Harness()
        h.quote(0, SPY_C620, 1.00, 1.05, ask_size=1)
        h.submit(1, make_request("r1", SPY_C620, 3, 1.05, 1.50, 0.70))
        h.quote(2, SPY_C620, 1.00, 1.04, ask_size=1, bid_size=1)
        h.quote(3, SPY_C620, 0.60, 0.65, ask_size=5, bid_size=1)
        h.command(4, "f", "flatten", underlying="*")
        h.quote(5, SPY_C620, 0.55, 0.60, bid_size=5)
        return [encode_json(e) for e in h.events]

    first = run()
    assert first == run()
    assert any(b'"type":"outcome"' in line for line in first)


def test_stale_or_repeated_quotes_are_ignored() -> None:
    h = Harness()
    h.quote(5, SPY_C620, 1.00, 1.05, ask_size=1)
    h.submit(6, make_request("r1", SPY_C620, 2, 1.05, 1.50, 0.70))  # 1 of 2 on arrival
    q = make_quote(SPY_C620, h.at(5), 1.00, 1.05, ask_size=1)
    # The same quote redelivered must not fill the remainder against the same displayed size again,
    # and an older quote arriving late is stale.
    assert h.oms.on_option_quote(q) == []
    assert h.oms.on_option_quote(make_quote(SPY_C620, h.at(4), 0.90, 0.95, ask_size=9)) == []
    assert h.oms.positions.positions[SPY_C620].quantity == 1
    # A genuinely new quote fills the remaining contract.
    assert h.fills(h.quote(7, SPY_C620, 1.00, 1.05, ask_size=1)) == [(1, 1.05, 0.55)]


def test_chain_snapshot_fills_and_underlying_stop_exits() -> None:
    h = Harness(make_config(stop_on_underlying=True))
    other = make_quote(SPY_P615, h.at(0), 0.40, 0.45)
    ours = make_quote(SPY_C620, h.at(0), 1.00, 1.05)
    h.events += h.oms.on_chain(ChainSnapshot(ts=h.at(0), underlying="SPY", underlying_price=620.40,
                                             quotes=(other, ours)))
    # Long call, underlying stop 619.50: bought 1 @ 1.05 against the chain's quote.
    out = h.submit(1, make_request("r1", SPY_C620, 1, 1.05, 1.60, 0.50, underlying_stop=619.50))
    assert h.fills(out) == [(1, 1.05, 0.55)]
    # The next chain: the option is still above its 0.50 stop, but SPY prints 619.40 <= 619.50,
    # so the stop fires and sells at that chain's bid 0.90.
    ours = make_quote(SPY_C620, h.at(2), 0.90, 0.95)
    out = h.oms.on_chain(ChainSnapshot(ts=h.at(2), underlying="SPY", underlying_price=619.40, quotes=(ours,)))
    h.events += out
    assert h.fills(out, "stop_loss") == [(1, 0.90, 0.56)]
    (outcome,) = outcomes(out)
    # pnl = (0.90 - 1.05) * 100 - 0.55 - 0.56 = -15 - 1.11 = -16.11
    assert (outcome.exit_reason, outcome.pnl) == ("stop_loss", pytest.approx(-16.11))
    snap = h.oms.snapshot()
    assert orjson.loads(orjson.dumps(snap))["flat"] is True
    assert snap["orders"] == [] and snap["positions"] == []


def test_snapshot_lists_working_orders_and_positions() -> None:
    h = Harness()
    h.quote(0, SPY_C620, 1.00, 1.05)
    h.submit(1, make_request("r1", SPY_C620, 2, 1.05, 1.60, 0.50))
    h.quote(2, SPY_C620, 1.10, 1.12)
    snap = orjson.loads(orjson.dumps(h.oms.snapshot()))
    assert not snap["flat"]
    assert sorted(o["leg"] for o in snap["orders"]) == ["stop_loss", "take_profit"]
    (pos,) = snap["positions"]
    # 2 @ 1.05, mark mid 1.11: unrealized (1.11 - 1.05) * 2 * 100 = 12.00; realized = -fees 1.10
    assert (pos["quantity"], pos["avg_price"]) == (2, 1.05)
    assert pos["unrealized_pnl"] == pytest.approx(12.0) and pos["realized_pnl"] == pytest.approx(-1.10)
