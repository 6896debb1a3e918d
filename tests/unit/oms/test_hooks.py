"""OmsHooks: the snapshot it writes (the shared schema) and how it acts on flatten requests."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from services.core import keys, shared_state, topics
from services.core.events import OrderEvent, RiskCommand
from services.core.shared_state import FlattenRequest
from services.core.state import MemoryState, StateStore, StateUnavailable
from services.oms.hooks import flatten_command
from services.runtime.kafka_bus import BusError
from tests.unit.oms.service_support import OmsService
from tests.unit.oms.support import NS, SPY_C620, SPY_P615, T0, make_quote, make_request


def _request(state: StateStore, nonce: str, ts: int = T0) -> None:
    state.set(keys.FLATTEN_REQUEST, shared_state.encode(FlattenRequest(nonce=nonce, ts=ts, source="operator")))


def _holding(tmp_path: Path, state: MemoryState | None = None) -> OmsService:
    """An OMS holding 2 SPY calls (take-profit and stop working) and a resting put entry."""
    oms = OmsService(state or MemoryState("s"), tmp_path)
    oms.chain(T0, make_quote(SPY_C620, T0, 1.00, 1.05, bid_size=20, ask_size=20),
              make_quote(SPY_P615, T0, 0.80, 0.85, bid_size=20, ask_size=20))
    oms.handle((topics.ORDERS, make_request("r1", SPY_C620, 2, 1.10, 1.50, 0.80, ts=T0 + NS)),
               (topics.ORDERS, make_request("r2", SPY_P615, 1, 0.80, 1.20, 0.60, ts=T0 + 2 * NS)))
    return oms


def _commands(oms: OmsService) -> list[RiskCommand]:
    return [e for e in oms.publisher.on(topics.RISK_COMMANDS) if isinstance(e, RiskCommand)]


def test_the_snapshot_in_redis_is_the_shared_schema(tmp_path: Path) -> None:
    oms = _holding(tmp_path)
    raw = oms.snapshot_bytes()
    assert raw is not None
    snap = shared_state.decode_oms_snapshot(raw)
    assert snap == oms.manager.snapshot_state()  # written after the batch, nothing changed since
    assert raw == shared_state.encode(snap)
    assert oms.manager.snapshot() == json.loads(raw)  # the dict view is the same document
    assert not snap.flat and len(snap.open_positions) == 1 and len(snap.working_orders) == 5
    assert {o.leg for o in snap.orders} == {"entry", "take_profit", "stop_loss"}
    record = oms.state.read(keys.OMS_METRICS_STREAM)[-1]
    assert b'"open_orders":5' in record and b'"positions":1' in record


def test_a_flatten_request_becomes_one_flatten_command_and_the_snapshot_goes_flat(tmp_path: Path) -> None:
    oms = _holding(tmp_path)
    _request(oms.state, "f1")
    oms.wall.now += 1.0
    oms.hooks.round_completed(-1, 0)
    (command,) = _commands(oms)
    assert command == flatten_command(FlattenRequest("f1", T0, "operator"), oms.clock.now_ns())
    assert (command.action, command.underlying, command.id) == ("flatten", "*", "flatten_request:f1")
    assert oms.publisher.flushes >= 1
    ack = shared_state.decode_flatten_ack(oms.state.get(keys.FLATTEN_ACK) or b"")
    assert (ack.nonce, ack.command) == ("f1", command.id)

    # Kafka hands the command back to the OMS: every working leg canceled, the calls sold at the bid.
    oms.deliver()
    events = [e for e in oms.publisher.on(topics.EXECUTIONS) if isinstance(e, OrderEvent)]
    assert ("r2", "entry", "canceled") in [(e.client_order_id, e.leg, e.status) for e in events]
    assert ("flatten", "filled") in [(e.leg, e.status) for e in events]
    snap = shared_state.decode_oms_snapshot(oms.snapshot_bytes() or b"")
    assert snap.flat and snap.orders == () and snap.positions == ()

    # The same nonce is never acted on again, however often the key is read.
    for _ in range(3):
        oms.wall.now += 5.0
        oms.hooks.round_completed(-1, 0)
    assert len(_commands(oms)) == 1


def test_the_request_is_read_at_most_once_a_second(tmp_path: Path) -> None:
    state = MemoryState("s")
    reads: list[str] = []
    get = state.get

    def counting_get(key: str) -> bytes | None:
        reads.append(key)
        return get(key)

    state.get = counting_get  # type: ignore[method-assign]
    oms = OmsService(state, tmp_path)
    assert reads.count(keys.FLATTEN_REQUEST) == 1 and reads.count(keys.FLATTEN_ACK) == 1  # at start
    _request(state, "f1")
    for _ in range(3):
        oms.wall.now += 0.25
        oms.hooks.round_completed(-1, 0)
    assert reads.count(keys.FLATTEN_REQUEST) == 1 and _commands(oms) == []
    oms.wall.now += 0.25
    oms.hooks.round_completed(-1, 0)
    assert reads.count(keys.FLATTEN_REQUEST) == 2 and len(_commands(oms)) == 1
    assert reads.count(keys.FLATTEN_ACK) == 1  # read once, remembered in memory after that


def test_a_restarted_oms_does_not_act_on_the_same_nonce_again(tmp_path: Path) -> None:
    state = MemoryState("s")
    (tmp_path / "a").mkdir()
    first = _holding(tmp_path / "a", state)
    _request(state, "f1")
    first.wall.now += 1.0
    first.hooks.round_completed(-1, 0)
    assert len(_commands(first)) == 1
    (tmp_path / "b").mkdir()
    restarted = OmsService(state, tmp_path / "b")  # reads FLATTEN_ACK at its first check
    restarted.wall.now += 10.0
    restarted.hooks.round_completed(-1, 0)
    assert _commands(restarted) == []
    _request(state, "f2")  # a new nonce is acted on
    restarted.wall.now += 1.0
    restarted.hooks.round_completed(-1, 0)
    assert [c.id for c in _commands(restarted)] == ["flatten_request:f2"]


def test_a_failed_publish_is_not_acknowledged_and_retried(tmp_path: Path) -> None:
    oms = OmsService(MemoryState("s"), tmp_path)
    _request(oms.state, "f1")
    oms.publisher.fail = BusError("1 message(s) not acknowledged by Kafka")
    oms.wall.now += 1.0
    assert oms.hooks.check_flatten_request() is False
    assert oms.state.get(keys.FLATTEN_ACK) is None
    oms.publisher.fail = None
    oms.wall.now += 1.0
    assert oms.hooks.check_flatten_request() is True
    assert oms.state.get(keys.FLATTEN_ACK) is not None


class _DownState(MemoryState):
    down = False

    def get(self, key: str) -> bytes | None:
        if self.down:
            raise StateUnavailable("Redis at 127.0.0.1:6390/0 unreachable: Error 111 connecting")
        return super().get(key)

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        if self.down:
            raise StateUnavailable("Redis at 127.0.0.1:6390/0 unreachable: Error 111 connecting")
        super().set(key, value, ttl_s)


def test_redis_away_delays_the_request_without_stopping_the_oms(tmp_path: Path) -> None:
    state = _DownState("s")
    oms = OmsService(state, tmp_path)
    _request(state, "f1")
    state.down = True
    oms.wall.now += 1.0
    assert oms.hooks.check_flatten_request() is False
    state.down = False
    oms.wall.now += 1.0
    assert oms.hooks.check_flatten_request() is True


def test_a_malformed_request_is_logged_once_and_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    oms = OmsService(MemoryState("s"), tmp_path)
    oms.state.set(keys.FLATTEN_REQUEST, b'{"ts": 5}')
    with caplog.at_level(logging.WARNING, logger="services.oms.hooks"):
        for _ in range(3):
            oms.wall.now += 1.0
            assert oms.hooks.check_flatten_request() is False
    assert [r.getMessage() for r in caplog.records] == ["flatten request ignored: malformed"]
    assert _commands(oms) == []


def test_nothing_is_read_while_rebuilding_or_without_a_participant(tmp_path: Path) -> None:
    oms = OmsService(MemoryState("s"), tmp_path)
    _request(oms.state, "f1")
    oms.audit.muted = True
    oms.wall.now += 1.0
    assert oms.hooks.check_flatten_request() is False
    oms.audit.muted = False
    oms.hooks.participant = None
    oms.wall.now += 1.0
    assert oms.hooks.check_flatten_request() is False
    assert oms.state.get(keys.FLATTEN_ACK) is None


def test_flatten_command_ids_fit_the_wire_limit() -> None:
    command = flatten_command(FlattenRequest(nonce="delete-" + "x" * 80), 7)
    assert len(command.id) <= 64 and command.id.startswith("flatten_request:delete-")
    assert "from unknown" in command.reason
    # The id depends on the nonce alone: the OrderManager handles a nonce once, whoever sends it when.
    again = flatten_command(FlattenRequest(nonce="delete-" + "x" * 80, ts=99, source="operator"), 8)
    assert again.id == command.id
