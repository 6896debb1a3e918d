"""The operator's flatten request carried out by the OMS, through a real redis-server.

The operator writes the request with its own client (:class:`dreambot_operator.session_state.SessionState`),
the OMS's hooks read it through the RedisState a stage process uses, publish the flatten command and
record the nonce; handed that command back (as Kafka would), the OMS flattens and its snapshot in
Redis, read again by the operator, says flat.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from dreambot_operator.session_state import SessionState

from services.core import keys, shared_state, topics
from services.core.events import RiskCommand
from services.core.redis_state import RedisState
from tests.harness.redis_server import RedisServer
from tests.unit.oms.service_support import OmsService
from tests.unit.oms.support import NS, SPY_C620, SPY_P615, T0, make_quote, make_request

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_server: RedisServer, session_name: str) -> Iterator[RedisState]:
    state = RedisState(redis_server.url, session_name, retries=1, backoff_cap_s=0.05)  # as ServiceContext builds it
    yield state
    state.close()


def _holding(store: RedisState, audit_dir: Path) -> OmsService:
    audit_dir.mkdir()
    oms = OmsService(store, audit_dir)
    oms.chain(T0, make_quote(SPY_C620, T0, 1.00, 1.05, bid_size=20, ask_size=20),
              make_quote(SPY_P615, T0, 0.80, 0.85, bid_size=20, ask_size=20))
    oms.handle((topics.ORDERS, make_request("r1", SPY_C620, 2, 1.10, 1.50, 0.80, ts=T0 + NS)),
               (topics.ORDERS, make_request("r2", SPY_P615, 1, 0.80, 1.20, 0.60, ts=T0 + 2 * NS)))
    return oms


def _flatten_commands(oms: OmsService) -> list[RiskCommand]:
    return [e for e in oms.publisher.on(topics.RISK_COMMANDS) if isinstance(e, RiskCommand)]


def test_a_flatten_request_in_redis_flattens_the_oms(
    store: RedisState, redis_server: RedisServer, session_name: str, tmp_path: Path
) -> None:
    oms = _holding(store, tmp_path / "first")
    operator = SessionState(redis_server.url, session_name)
    raw = redis.Redis.from_url(redis_server.url)
    try:
        book = operator.book()  # the OMS's real snapshot: 2 calls held, exits and a resting entry working
        assert not book.flat and (book.open_positions, book.working_orders) == (1, 5)

        operator.engage_kill_switch()  # what hold_until_flat does first
        operator.request_flatten("delete-uid-1")
        oms.wall.now += 1.0
        oms.hooks.round_completed(-1, 0)
        (command,) = _flatten_commands(oms)
        assert (command.id, command.action, command.underlying) == ("flatten_request:delete-uid-1", "flatten", "*")
        ack = shared_state.decode_flatten_ack(raw.get(f"{session_name}:{keys.FLATTEN_ACK}") or b"")
        assert (ack.nonce, ack.command) == ("delete-uid-1", command.id)
        assert not operator.book().flat  # published, not yet handled

        oms.deliver()  # Kafka hands the command back to the OMS
        snapshot = shared_state.decode_oms_snapshot(raw.get(f"{session_name}:{keys.POSITIONS}") or b"")
        assert snapshot.flat and snapshot.orders == () and snapshot.positions == ()
        assert operator.book().flat

        # The finalizer asks again every poll with the same nonce: nothing more is published.
        operator.request_flatten("delete-uid-1")
        oms.wall.now += 1.0
        oms.hooks.round_completed(-1, 0)
        assert len(_flatten_commands(oms)) == 1

        # Nor by a restarted OMS: it reads the acknowledged nonce from Redis.
        (tmp_path / "second").mkdir()
        restarted = OmsService(store, tmp_path / "second")
        restarted.wall.now += 1.0
        restarted.hooks.round_completed(-1, 0)
        assert _flatten_commands(restarted) == []
    finally:
        operator.close()
        raw.close()
