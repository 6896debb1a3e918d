"""Event schema: round trips, typed decode errors naming the field, immutability."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core import events as ev


def _bar(**over: object) -> ev.Bar:
    base: dict[str, object] = dict(ts=1_751_981_400_000_000_000, symbol="SPY", open=620.0, high=621.0,
                                   low=619.5, close=620.5, volume=1000.0)
    base.update(over)
    return ev.Bar(**base)  # type: ignore[arg-type]


def _samples() -> list[ev.Event]:
    oq = ev.OptionQuote(ts=1, symbol="SPY250708C00620000", underlying="SPY", expiry="2025-07-08",
                        strike=620.0, right="C", bid=1.2, ask=1.25, bid_size=10, ask_size=12)
    return [
        _bar(),
        ev.Quote(ts=2, symbol="SPY", bid=620.0, ask=620.01, bid_size=300, ask_size=200),
        ev.Trade(ts=3, symbol="SPY", price=620.0, size=100),
        oq,
        ev.ChainSnapshot(ts=4, underlying="SPY", underlying_price=620.1, quotes=(oq,)),
        ev.Heartbeat(ts=5, source="ingest", seq=7),
        ev.FeatureVector(ts=6, symbol="SPY", values={"vwap": 620.2, "atr_14": 0.4}),
        ev.SignalIntent(ts=7, id="i1", underlying="SPY", playbook="vwap_reversion", contract=oq.symbol,
                        right="C", side="buy", quantity=2, limit_price=1.25, take_profit=1.9,
                        stop_loss=0.85, reason="close < vwap_lower_2"),
        ev.OrderRequest(ts=8, id="o1", intent_id="i1", underlying="SPY", contract=oq.symbol, side="buy",
                        quantity=2, limit_price=1.25, take_profit=1.9, stop_loss=0.85),
        ev.RiskRejection(ts=9, intent_id="i1", underlying="SPY", rule="max_positions", reason="3 >= 3"),
        ev.RiskCommand(ts=10, id="c1", underlying="SPY", action="flatten", reason="kill switch"),
        ev.OrderEvent(ts=11, id="e1", order_id="o1", client_order_id="o1", underlying="SPY",
                      contract=oq.symbol, leg="entry", side="buy", status="filled", quantity=2,
                      filled_quantity=2, fill_price=1.25, fees=1.3),
        ev.Position(ts=12, underlying="SPY", contract=oq.symbol, quantity=2, avg_price=1.25,
                    realized_pnl=0.0, unrealized_pnl=-5.0),
        ev.TradeOutcome(ts=13, id="t1", underlying="SPY", playbook="p", contract=oq.symbol, entry_ts=8,
                        exit_ts=13, entry_price=1.25, exit_price=1.9, quantity=2, pnl=128.7, mae=-10.0,
                        mfe=130.0, exit_reason="take_profit", reason="r"),
        ev.LearnerUpdate(ts=14, underlying="SPY", model="bandit", version=3, gates={"p": 0.6}),
        ev.RegimeChange(ts=15, underlying="SPY", regime="trend", previous="range", score=4.2),
    ]


@pytest.mark.parametrize("event", _samples(), ids=lambda e: type(e).__name__)
def test_json_and_msgpack_round_trip(event: ev.Event) -> None:
    assert ev.decode_json(ev.encode_json(event)) == event
    assert ev.decode_msgpack(ev.encode_msgpack(event)) == event


def test_every_event_type_is_covered() -> None:
    assert {type(e) for e in _samples()} == set(ev.EVENT_TYPES)


def test_events_are_immutable() -> None:
    with pytest.raises(AttributeError):
        _bar().close = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(open=-1.0), "$.open"),
        (lambda d: d.update(volume=-5), "$.volume"),
        (lambda d: d.pop("symbol"), "$.symbol"),
        (lambda d: d.update(high="abc"), "$.high"),
        (lambda d: d.update(ts=-1), "$.ts"),
        (lambda d: d.update(close=float("nan")), "$.close"),
        (lambda d: d.update(vwap=float("inf")), "$.vwap"),
        (lambda d: d.update(schema=99), "$.schema"),
    ],
)
def test_malformed_payload_names_the_field(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    doc = msgspec.to_builtins(_bar())
    mutate(doc)
    with pytest.raises(ev.EventDecodeError) as info:
        ev.decode_msgpack(msgspec.msgpack.encode(doc))
    assert info.value.field == field
    assert field in str(info.value)


def test_garbage_bytes_and_unknown_type() -> None:
    with pytest.raises(ev.EventDecodeError):
        ev.decode_json(b"{not json")
    with pytest.raises(ev.EventDecodeError) as info:
        ev.decode_json(b'{"type": "bogus", "ts": 1}')
    assert "bogus" in str(info.value)


def test_nested_chain_quote_error_names_path() -> None:
    doc = msgspec.to_builtins(_samples()[4])
    doc["quotes"][0]["right"] = "X"
    with pytest.raises(ev.EventDecodeError) as info:
        ev.decode_json(msgspec.json.encode(doc))
    assert info.value.field == "$.quotes[0].right"


def test_feature_values_must_be_finite() -> None:
    doc = {"type": "features", "ts": 1, "symbol": "SPY", "values": {"x": float("nan")}}
    with pytest.raises(ev.EventDecodeError) as info:
        ev.decode_msgpack(msgspec.msgpack.encode(doc))
    assert info.value.field == "$.values.x"


@given(
    o=st.floats(0.01, 1e5), h=st.floats(0.01, 1e5), v=st.floats(0, 1e9), ts=st.integers(0, 2**62)
)
def test_round_trip_is_lossless(o: float, h: float, v: float, ts: int) -> None:
    bar = ev.Bar(ts=ts, symbol="QQQ", open=o, high=h, low=o, close=h, volume=v)
    back = ev.decode_json(ev.encode_json(bar))
    assert back == bar and all(math.isfinite(x) for x in (back.open, back.volume))


def test_occ_symbol() -> None:
    assert ev.occ_symbol("SPXW", "2025-07-08", "C", 6200.0) == "SPXW250708C06200000"
    assert ev.occ_symbol("SPY", "2024-06-07", "P", 512.5) == "SPY240607P00512500"
