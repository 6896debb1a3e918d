"""Crash safety: SIGKILL each stage mid-replay, restart the Kafka broker mid-replay; same results.

The replay runs in lockstep while the test kills (``kill -9``) one stage process after another at
chosen points of the session — several of them while the paper broker holds open positions — and
starts it again at once; a second run restarts the broker itself. Each run must complete and end
with exactly the embedded run's intents, orders, fills, positions and outcomes (topics may carry
byte-identical redeliveries, never a differing event), and the OMS audit log — the paper broker's
record of every order — must hold every record exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from services import launcher
from services.core import topics
from services.core.events import OrderEvent, decode_msgpack
from tests.harness.kafka_broker import KafkaBroker
from tests.integration.services.conftest import (
    Launch,
    Published,
    Reference,
    assert_same,
    new_session,
    read_published,
)

pytestmark = pytest.mark.integration

# (bars published on `features`, stage to kill): trades are open around bars 346-356, 376-379,
# 392-400, 413-419 and 422-440 of the session.
KILLS = [(250, "features"), (347, "oms"), (352, "signals"), (378, "risk"), (395, "ingest"), (416, "oms"),
         (430, "risk")]


def _bars_done(bootstrap: str, prefix: str) -> Callable[[], int]:
    """How many FeatureVectors (bars through the features stage) are on the topic so far."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "progress-probe"})
    name = topics.qualified(prefix, topics.FEATURES)
    meta = consumer.list_topics(name, timeout=10).topics[name]
    parts = [TopicPartition(name, p) for p in meta.partitions]

    def count() -> int:
        return sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)

    return count


def _check_run(dep: launcher.Deployment, bootstrap: str, reference: Reference) -> None:
    raw = read_published(bootstrap, dep.prefix)
    # At-least-once: a restarted stage may publish again what it had published; never something else.
    for topic, keys in raw.by_topic.items():
        for key, values in keys.items():
            ids: dict[str, bytes] = {}
            for v in values:
                event = decode_msgpack(v)
                ident = getattr(event, "id", None)
                if ident is not None:
                    assert ids.setdefault(f"{type(event).__name__}:{ident}", v) == v, \
                        f"{topic}[{key}]: two different events with id {ident}"
    published: Published = raw.deduplicated()
    assert_same(published, reference.published.deduplicated())
    fills = [e for e in published.events(topics.EXECUTIONS) if isinstance(e, OrderEvent) and e.status == "filled"]
    assert fills
    # The broker side: every audit record exactly once, equal to the uncrashed run's.
    records = [orjson.loads(line) for line in dep.audit_path.read_bytes().splitlines()]
    expected = [orjson.loads(orjson.dumps(r)) for r in reference.audit]
    assert records == expected
    requests = Counter(r["id"] for r in records if r["kind"] == "order_request")
    assert requests and set(requests.values()) == {1}
    entries = Counter(r["client_order_id"] for r in records
                      if r["kind"] == "order_event" and r["leg"] == "entry" and r["status"] in ("accepted", "rejected"))
    assert entries == requests


def test_kill_each_stage_mid_replay(launch: Launch, broker: KafkaBroker, embedded_reference: Reference) -> None:
    dep = launch(new_session("crash"))
    bars = _bars_done(broker.bootstrap, dep.prefix)
    for at, stage in KILLS:
        deadline = time.monotonic() + 180
        while bars() < at:
            assert time.monotonic() < deadline, f"replay stuck before bar {at}"
            time.sleep(0.005)
        dep.kill(stage)
        dep.start(stage)
    dep.wait_replay(timeout_s=300)
    _check_run(dep, broker.bootstrap, embedded_reference)
    assert set(dep.down().values()) == {0}


def test_broker_restart_mid_replay(launch: Launch, broker: KafkaBroker, embedded_reference: Reference) -> None:
    dep = launch(new_session("broker"))
    bars = _bars_done(broker.bootstrap, dep.prefix)
    deadline = time.monotonic() + 180
    while bars() < 360:
        assert time.monotonic() < deadline, "replay stuck"
        time.sleep(0.01)
    broker.restart()
    dep.wait_replay(timeout_s=300)
    _check_run(dep, broker.bootstrap, embedded_reference)
    assert set(dep.down().values()) == {0}
