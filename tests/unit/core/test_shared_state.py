"""The shared-state schema: round trips, the one place leniency is decided, and its errors."""

from __future__ import annotations

import json
from collections.abc import Callable

import msgspec
import pytest

from services.core import keys
from services.core.shared_state import (
    RELEASED,
    TERMINAL_ORDER_STATUSES,
    FlattenAck,
    FlattenRequest,
    IngestHeartbeat,
    KillSwitchState,
    OmsKillSwitch,
    OmsSnapshot,
    OrderLegState,
    PositionState,
    SharedStateError,
    SharedValue,
    decode_flatten_ack,
    decode_flatten_request,
    decode_heartbeat,
    decode_kill_switch,
    decode_oms_snapshot,
    encode,
)

Decode = Callable[[bytes | str], object]

LEG = OrderLegState(order_id="paper-2", client_order_id="r1", underlying="SPY", contract="SPY250708C00620000",
                    leg="stop_loss", side="sell", status="working", quantity=2, filled_quantity=0, limit_price=None,
                    stop_price=0.8)
POSITION = PositionState(underlying="SPY", contract="SPY250708C00620000", quantity=2, avg_price=1.05, mark=1.11,
                         realized_pnl=-1.1, unrealized_pnl=12.0, fees=1.1)
SNAPSHOT = OmsSnapshot(ts=5, broker="paper", kill_switch=OmsKillSwitch(engaged=False, reason=""), flat=False,
                       orders=(LEG, msgspec.structs.replace(LEG, order_id="paper-1", leg="entry", status="filled")),
                       positions=(POSITION, msgspec.structs.replace(POSITION, contract="X", quantity=0)),
                       realized_pnl=-1.1, unrealized_pnl=12.0)


@pytest.mark.parametrize("value, decode", [
    (KillSwitchState(True, "DailyLossLimit", 7, "risk"), decode_kill_switch),
    (IngestHeartbeat(ts=1_700_000_000_000_000_000, seq=42), decode_heartbeat),
    (SNAPSHOT, decode_oms_snapshot),
    (FlattenRequest(nonce="delete-uid", ts=9, source="operator"), decode_flatten_request),
    (FlattenAck(nonce="delete-uid", command="flatten_request:delete-uid", ts=10), decode_flatten_ack),
])
def test_every_value_round_trips(value: SharedValue, decode: Decode) -> None:
    raw = encode(value)
    assert decode(raw) == value
    assert decode(raw.decode()) == value  # str works too


def test_encoding_is_compact_json_in_field_order() -> None:
    assert encode(KillSwitchState(True, "Manual", 5, "console")) == (
        b'{"engaged":true,"reason":"Manual","ts":5,"source":"console"}')
    assert encode(IngestHeartbeat(ts=3, seq=1)) == b'{"ts":3,"seq":1}'
    doc = json.loads(encode(SNAPSHOT))
    assert list(doc) == ["ts", "broker", "kill_switch", "flat", "orders", "positions", "realized_pnl",
                         "unrealized_pnl"]
    assert list(doc["orders"][0]) == ["order_id", "client_order_id", "underlying", "contract", "leg", "side",
                                      "status", "quantity", "filled_quantity", "limit_price", "stop_price"]
    assert doc["positions"][1]["mark"] == 1.11 and doc["orders"][0]["limit_price"] is None


def test_the_typed_kill_switch_an_operator_may_write() -> None:
    assert decode_kill_switch(b'{"engaged": true}') == KillSwitchState(True, "Manual", 0, "operator")
    assert decode_kill_switch(b'{"engaged": false}') == KillSwitchState(False, "", 0, "operator")
    nulls = b'{"engaged": true, "reason": null, "source": null, "ts": 3}'
    assert decode_kill_switch(nulls) == KillSwitchState(True, "Manual", 3, "operator")
    empty = b'{"engaged": true, "reason": "", "source": "", "extra": [1]}'  # unknown fields are ignored
    assert decode_kill_switch(empty) == KillSwitchState(True, "Manual", 0, "operator")
    assert decode_kill_switch(b'{"engaged": false, "reason": "Manual", "ts": 1, "source": "console"}').source == (
        "console")
    assert KillSwitchState(False) == RELEASED


def test_minimal_heartbeat_and_flatten_request() -> None:
    assert decode_heartbeat(b'{"ts": 12}') == IngestHeartbeat(ts=12, seq=0)
    assert decode_flatten_request(b'{"nonce": "f1"}') == FlattenRequest(nonce="f1", ts=0, source="")


def test_snapshot_views() -> None:
    assert [o.order_id for o in SNAPSHOT.working_orders] == ["paper-2"]
    assert [p.contract for p in SNAPSHOT.open_positions] == ["SPY250708C00620000"]
    assert {"filled", "canceled", "rejected", "expired"} == TERMINAL_ORDER_STATUSES
    assert all(msgspec.structs.replace(LEG, status=s).working is (s not in TERMINAL_ORDER_STATUSES)
               for s in ("pending", "accepted", "working", "partial", "modified", "filled", "canceled"))


def _snapshot_doc(**changes: object) -> bytes:
    return json.dumps({**json.loads(encode(SNAPSHOT)), **changes}).encode()


@pytest.mark.parametrize("decode, raw, message", [
    (decode_kill_switch, b"yes please", "dreambot:kill_switch: not JSON (invalid character (byte 0))"),
    (decode_kill_switch, b"", "dreambot:kill_switch: not JSON (Input data was truncated)"),
    (decode_kill_switch, b"\xff", "dreambot:kill_switch: not JSON (invalid character (byte 0))"),
    (decode_kill_switch, b"[true]", "dreambot:kill_switch: Expected `object`, got `array`"),
    (decode_kill_switch, b"{}", "dreambot:kill_switch: Object missing required field `engaged`"),
    (decode_kill_switch, b'{"engaged": "yes"}', "dreambot:kill_switch: Expected `bool`, got `str` - at `$.engaged`"),
    (decode_kill_switch, b'{"engaged": true, "ts": -1}',
     "dreambot:kill_switch: Expected `int` >= 0 - at `$.ts`"),
    (decode_kill_switch, b'{"engaged": true, "ts": true}',
     "dreambot:kill_switch: Expected `int`, got `bool` - at `$.ts`"),
    (decode_kill_switch, b'{"engaged": true, "reason": 3}',
     "dreambot:kill_switch: Expected `str | null`, got `int` - at `$.reason`"),
    (decode_heartbeat, b'{"seq": 1}', "dreambot:ingest_heartbeat: Object missing required field `ts`"),
    (decode_heartbeat, b'{"ts": 1.5}', "dreambot:ingest_heartbeat: Expected `int`, got `float` - at `$.ts`"),
    (decode_oms_snapshot, b'{"positions": [], "open_orders": []}',
     "dreambot:positions: Object missing required field `ts`"),
    (decode_oms_snapshot, _snapshot_doc(orders=None),
     "dreambot:positions: Expected `array`, got `null` - at `$.orders`"),
    (decode_oms_snapshot, _snapshot_doc(orders=[{"order_id": "x"}]),
     "dreambot:positions: Object missing required field `client_order_id` - at `$.orders[0]`"),
    (decode_oms_snapshot, _snapshot_doc(realized_pnl="lots"),
     "dreambot:positions: Expected `float`, got `str` - at `$.realized_pnl`"),
    (decode_flatten_request, b'{"nonce": ""}',
     "dreambot:flatten_request: Expected `str` of length >= 1 - at `$.nonce`"),
    (decode_flatten_ack, b'{"nonce": "f1"}', "dreambot:flatten_ack: Object missing required field `command`"),
])
def test_errors_are_one_line_and_name_the_key(decode: Decode, raw: bytes, message: str) -> None:
    with pytest.raises(SharedStateError) as err:
        decode(raw)
    assert str(err.value) == message
    assert isinstance(err.value, ValueError) and err.value.key.startswith("dreambot:")
    assert err.value.key in (keys.KILL_SWITCH, keys.INGEST_HEARTBEAT, keys.POSITIONS, keys.FLATTEN_REQUEST,
                             keys.FLATTEN_ACK)


def test_an_unknown_order_status_is_refused() -> None:
    leg = {**msgspec.structs.asdict(LEG), "status": "pending_cancel"}
    with pytest.raises(SharedStateError, match=r"at `\$\.orders\[0\]\.status`"):
        decode_oms_snapshot(_snapshot_doc(orders=[leg]))
