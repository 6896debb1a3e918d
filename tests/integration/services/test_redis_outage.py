"""Redis outage: entries halt, open positions stay protected, and everything recovers.

The replay runs in lockstep. Near the session's first entry the ingest is paused (SIGSTOP: the
lockstep waits for it) and let go one bar at a time until the entry has filled; then redis-server is
stopped and the ingest resumed. While Redis is
away risk must refuse the next intent with ``state_unavailable``, the OMS must go on working the open
bracket from option quotes (its exit fills), and no stage may stop. Redis is then started again: the
next intents are approved, the OMS writes its snapshot again, and the session completes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from services import launcher
from services.core import keys, topics
from services.core.events import OrderEvent, OrderRequest, RiskRejection, decode_msgpack
from services.core.redis_state import RedisState
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.redis_server import RedisServer
from tests.integration.services.conftest import Launch, new_session, read_topic

pytestmark = pytest.mark.integration


def _watch(bootstrap: str, prefix: str) -> Callable[[], int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "progress-probe"})
    name = topics.qualified(prefix, topics.FEATURES)
    parts = [TopicPartition(name, p) for p in consumer.list_topics(name, timeout=10).topics[name].partitions]
    return lambda: sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)


def _events(bootstrap: str, prefix: str, topic: str) -> list[object]:
    return [decode_msgpack(v) for _, v in read_topic(bootstrap, topics.qualified(prefix, topic))]


def _wait(what: str, check: Callable[[], bool], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _paused(dep: launcher.Deployment, action: Callable[[], None]) -> None:
    """Run ``action`` with the ingest frozen (the lockstep waits for it meanwhile)."""
    pid = dep.processes["ingest"].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        action()
    finally:
        os.kill(pid, signal.SIGCONT)


def _step_until(dep: launcher.Deployment, bars: Callable[[], int], done: Callable[[], bool],
                max_steps: int = 15) -> None:
    """With the ingest frozen, let it go one bar at a time until ``done()`` (the paper broker's latency
    means an entry fills on a later quote than the one it was sent on, so the fill may be bars away)."""
    pid = dep.processes["ingest"].pid
    for _ in range(max_steps):
        try:
            _wait("the pipeline to settle", done, 5)
            return
        except AssertionError:
            pass
        before = bars()
        os.kill(pid, signal.SIGCONT)
        try:
            _wait("one more bar", lambda before=before: bars() > before, 60)
        finally:
            os.kill(pid, signal.SIGSTOP)
    raise AssertionError(f"still not done after {max_steps} more bars")


def test_redis_outage_halts_entries_keeps_protection_and_recovers(
        launch: Launch, broker: KafkaBroker, redis: RedisServer) -> None:
    session = new_session("redis")
    dep = launch(session)
    bars = _watch(broker.bootstrap, dep.prefix)
    boot = broker.bootstrap

    def entry_filled() -> list[OrderEvent]:
        return [e for e in _events(boot, dep.prefix, topics.EXECUTIONS)
                if isinstance(e, OrderEvent) and e.leg == "entry" and e.status == "filled"]

    # Freeze the replay as soon as the first entry has filled, then take Redis away.
    _wait("the first entry", lambda: bars() >= 346)
    _paused(dep, lambda: (_step_until(dep, bars, lambda: bool(entry_filled())), redis.stop()))
    entry = entry_filled()[0]
    outage_started = bars()
    try:
        def refused() -> list[RiskRejection]:
            return [e for e in _events(boot, dep.prefix, topics.ORDERS)
                    if isinstance(e, RiskRejection) and e.rule == "state_unavailable"]

        def exit_filled() -> list[OrderEvent]:
            return [e for e in _events(boot, dep.prefix, topics.EXECUTIONS)
                    if isinstance(e, OrderEvent) and e.client_order_id == entry.client_order_id
                    and e.leg in ("stop_loss", "take_profit") and e.status == "filled"]

        _wait("an entry refused for state_unavailable and the open bracket's exit",
              lambda: bool(refused()) and bool(exit_filled()))
        assert launcher.http_status(dep.processes["risk"].url("/readyz")) == 503
        assert launcher.http_status(dep.processes["oms"].url("/readyz")) == 503
        assert all(p.running for p in dep.processes.values())
        refusal = refused()[0]
        exit_fill = exit_filled()[0]
    finally:
        _paused(dep, redis.start)
    outage_ended = bars()

    dep.wait_replay(timeout_s=300)
    orders = _events(boot, dep.prefix, topics.ORDERS)
    # Protection: the bracket's exit filled while Redis was away, after its entry.
    assert entry.ts <= exit_fill.ts
    assert outage_started < outage_ended
    # Entries halted during the outage, and resumed after it.
    approved_after = [e for e in orders if isinstance(e, OrderRequest) and e.ts > refusal.ts]
    assert approved_after, "no entry approved after Redis came back"
    assert not [e for e in orders if isinstance(e, RiskRejection) and e.rule == "state_unavailable"
                and e.ts > approved_after[0].ts]
    # The OMS wrote its state again, as of the end of the session.
    state = RedisState(redis.url, session)
    try:
        snapshot = orjson.loads(state.get(keys.POSITIONS) or b"{}")
        assert snapshot["ts"] >= approved_after[-1].ts
    finally:
        state.close()
    metrics = launcher.http_text(dep.processes["oms"].url("/metrics"))
    assert 'dreambot_state_failures_total{op="oms snapshot",stage="oms"}' in metrics
    assert launcher.http_status(dep.processes["risk"].url("/readyz")) == 200
    assert set(dep.down().values()) == {0}
