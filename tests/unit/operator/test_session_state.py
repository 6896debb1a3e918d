"""Parsing of the Redis values the operator reads and writes (no Redis needed), against what the
stages really write: the OMS's snapshot and the flatten request it acts on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dreambot_operator.session_state import (
    SessionStateError,
    flatten_request_key,
    flatten_request_payload,
    kill_switch_key,
    kill_switch_payload,
    parse_book,
    parse_kill_switch,
    positions_key,
)

from services.core import keys, shared_state, topics
from services.core.events import RiskCommand
from services.core.state import MemoryState
from tests.unit.oms.service_support import OmsService
from tests.unit.oms.support import NS, SPY_C620, SPY_P615, T0, make_quote, make_request


def test_keys_are_prefixed_by_session() -> None:
    assert kill_switch_key("paper-etf") == "paper-etf:dreambot:kill_switch"
    assert positions_key("paper-etf") == "paper-etf:dreambot:positions"
    assert flatten_request_key("paper-etf") == "paper-etf:dreambot:flatten_request"


def test_kill_switch_payload_round_trips() -> None:
    raw = kill_switch_payload(True, "Manual", 1_700_000_000_000_000_000)
    assert json.loads(raw) == {"engaged": True, "reason": "Manual", "ts": 1_700_000_000_000_000_000,
                               "source": "operator"}
    flag = parse_kill_switch(raw)
    assert flag is not None and flag.engaged and flag.source == "operator"
    assert parse_kill_switch(None) is None
    risk = parse_kill_switch(b'{"engaged": true, "reason": "DailyLossLimit", "ts": 5, "source": "risk"}')
    assert risk is not None and (risk.reason, risk.source) == ("DailyLossLimit", "risk")
    # As lenient as risk: the bare flag someone typed is a manual engage by the operator.
    typed = parse_kill_switch(b'{"engaged": true}')
    assert typed == shared_state.KillSwitchState(True, "Manual", 0, "operator")
    with pytest.raises(SessionStateError, match="dreambot:kill_switch: not JSON"):
        parse_kill_switch(b"not json")
    with pytest.raises(SessionStateError, match="Expected `bool`"):
        parse_kill_switch(b'{"engaged": 1}')


def test_flatten_request_payload_is_what_the_oms_decodes() -> None:
    raw = flatten_request_payload("f1", 42)
    assert json.loads(raw) == {"nonce": "f1", "ts": 42, "source": "operator"}
    assert shared_state.decode_flatten_request(raw) == shared_state.FlattenRequest("f1", 42, "operator")


def _leg(status: str, **kw: Any) -> dict[str, Any]:
    leg = {"order_id": "o1", "client_order_id": "r1", "underlying": "SPY", "contract": SPY_C620, "leg": "stop_loss",
           "side": "sell", "status": status, "quantity": 2, "filled_quantity": 0, "limit_price": None,
           "stop_price": 0.8}
    return {**leg, **kw}


def _position(quantity: int) -> dict[str, Any]:
    return {"underlying": "SPY", "contract": SPY_C620, "quantity": quantity, "avg_price": 1.05, "mark": 1.1,
            "realized_pnl": 0.0, "unrealized_pnl": 10.0, "fees": 1.1}


def _snapshot(orders: list[dict[str, Any]], positions: list[dict[str, Any]], **kw: Any) -> bytes:
    doc = {"ts": 1, "broker": "paper", "kill_switch": {"engaged": False, "reason": ""}, "flat": False,
           "orders": orders, "positions": positions, "realized_pnl": 0.0, "unrealized_pnl": 0.0}
    return json.dumps({**doc, **kw}).encode()


def test_book_is_flat_only_without_positions_and_working_orders() -> None:
    assert parse_book(None).flat  # the OMS never wrote a snapshot: it never held anything
    assert parse_book(_snapshot([], [], flat=True)).flat
    assert parse_book(_snapshot([], [_position(0)])).flat
    held = parse_book(_snapshot([], [_position(-2)]))
    assert (held.flat, held.open_positions) == (False, 1)
    working = parse_book(_snapshot([_leg("working"), _leg("accepted"), _leg("partial"), _leg("filled")], []))
    assert (working.flat, working.working_orders) == (False, 3)  # terminal legs do not count
    assert parse_book(_snapshot([_leg("canceled"), _leg("expired"), _leg("rejected")], [])).flat


@pytest.mark.parametrize("raw, match", [
    (b'["not", "a", "snapshot"]', "Expected `object`, got `array`"),
    # The old operator read "open_orders": a snapshot without the OMS's "orders" must never count as flat.
    (b'{"positions": [], "open_orders": []}', "missing required field"),
    (json.dumps({**json.loads(_snapshot([], [])), "orders": None}).encode(), r"at `\$.orders`"),
    (_snapshot([_leg("pending_cancel")], []), r"at `\$.orders\[0\].status`"),
    (_snapshot([], [{"contract": "A", "quantity": 1}]), r"at `\$.positions\[0\]`"),
])
def test_an_unreadable_snapshot_is_an_error_not_a_flat_book(raw: bytes, match: str) -> None:
    with pytest.raises(SessionStateError, match=match) as err:
        parse_book(raw)
    assert "dreambot:positions" in str(err.value) and "\n" not in str(err.value)


def test_the_real_oms_snapshot_is_not_flat_until_the_flatten_request_is_carried_out(tmp_path: Path) -> None:
    state = MemoryState("live-index")
    oms = OmsService(state, tmp_path)
    oms.chain(T0, make_quote(SPY_C620, T0, 1.00, 1.05, bid_size=20, ask_size=20),
              make_quote(SPY_P615, T0, 0.80, 0.85, bid_size=20, ask_size=20))
    # r1 fills at once (2 calls held, take-profit and stop working); r2 rests below the ask.
    oms.handle((topics.ORDERS, make_request("r1", SPY_C620, 2, 1.10, 1.50, 0.80, ts=T0 + NS)),
               (topics.ORDERS, make_request("r2", SPY_P615, 1, 0.80, 1.20, 0.60, ts=T0 + 2 * NS)))
    before = parse_book(state.get(keys.POSITIONS))
    assert not before.flat
    assert (before.open_positions, before.working_orders) == (1, 5)

    # The finalizer's flatten request, as SessionState.request_flatten writes it, read by the OMS's hooks.
    state.set(keys.FLATTEN_REQUEST, flatten_request_payload("delete-uid-1", T0 + 3 * NS))
    oms.wall.now += 1.0
    oms.hooks.round_completed(-1, 0)
    assert parse_book(state.get(keys.POSITIONS)) == before  # published, not handled yet
    (command,) = oms.deliver()  # Kafka hands it back
    assert isinstance(command, RiskCommand) and command.id == "flatten_request:delete-uid-1"

    after = parse_book(state.get(keys.POSITIONS))
    assert after.flat and (after.open_positions, after.working_orders) == (0, 0)
