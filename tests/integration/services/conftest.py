"""Services mode against the real broker and redis-server: shared data, the embedded reference, helpers.

Every test launches the five stage processes with :func:`services.launcher.up` (its own session name,
so its own topics, consumer groups and Redis keys) on the session-wide Kafka broker and redis-server
of ``tests/integration/conftest.py``, replays the bundled real SPY session
(``data/sample/spy_1min_2025-07-09.csv``) and compares what the stages published with what the
embedded runner publishes for the same data.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pydantic import SecretStr

from services import launcher
from services.app.market_data import load_market_data
from services.app.stages import build_replay_feed
from services.backtest.embedded import EmbeddedSession
from services.core import topics
from services.core.datasets import SAMPLE_BARS
from services.core.events import Event, decode_msgpack, encode_msgpack
from services.core.session_config import SessionConfig
from services.core.settings import CONFIG_DIR
from services.oms.audit import MemoryAudit
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.redis_server import RedisServer

DATA = SAMPLE_BARS
SYMBOLS = ("SPY",)
COMPARED = (topics.FEATURES, topics.SIGNALS, topics.ORDERS, topics.RISK_COMMANDS, topics.EXECUTIONS,
            topics.OUTCOMES)
# Every stage reads the same config; the calibration file is left out so a local calibration run
# cannot make the two sides differ.
# Risk and the OMS of both sides sign and check orders with one key, so approved orders are byte-identical.
APPROVAL_KEY = "integration-approval-key-" + "0123456789abcdef" * 2
# Stage log files and the journal of the tests' sessions go to a scratch folder, not the checkout's storage/.
_TEST_STORAGE = tempfile.mkdtemp(prefix="dreambot-services-storage-")
STAGE_ENV = {"DREAMBOT_CONFIG_DIR": str(CONFIG_DIR), "DREAMBOT_CALIBRATION": "none",
             "DREAMBOT_STORAGE_DIR": _TEST_STORAGE,
             "DREAMBOT_APPROVAL_KEY": APPROVAL_KEY,
             "DREAMBOT_KAFKA_PARTITIONS": "2", "DREAMBOT_KAFKA_SESSION_TIMEOUT_MS": "3000",
             "DREAMBOT_LOG_LEVEL": "INFO"}


def event_key(event: Event) -> str:
    """The Kafka key stages use: the underlying (or the symbol of market data and features)."""
    return str(getattr(event, "underlying", None) or getattr(event, "symbol", ""))


@dataclass
class Published:
    """Per topic, per key: the wire bytes of every event, in order."""

    by_topic: dict[str, dict[str, list[bytes]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))

    def add(self, topic: str, key: str, payload: bytes) -> None:
        self.by_topic[topic][key].append(payload)

    def events(self, topic: str) -> list[Event]:
        return [decode_msgpack(v) for values in self.by_topic[topic].values() for v in values]

    def count(self, topic: str, kind: type[Event]) -> int:
        return sum(isinstance(e, kind) for e in self.events(topic))

    def deduplicated(self) -> Published:
        """The same with byte-identical repeats removed (at-least-once redeliveries)."""
        out = Published()
        for topic, keys in self.by_topic.items():
            for key, values in keys.items():
                seen: set[bytes] = set()
                for v in values:
                    if v not in seen:
                        seen.add(v)
                        out.add(topic, key, v)
        return out


@dataclass
class Reference:
    """What the embedded runner publishes for the test data, and its audit records."""

    published: Published
    audit: list[dict[str, object]]
    session: EmbeddedSession


@pytest.fixture(scope="session")
def embedded_reference() -> Reference:
    data = load_market_data(list(SYMBOLS), DATA)
    audit = MemoryAudit()
    session = EmbeddedSession(SessionConfig(symbols=SYMBOLS, config_dir=CONFIG_DIR, calibration={"path": None},
                                            approval_key=SecretStr(APPROVAL_KEY)),
                              audit=audit)
    published = Published()
    for topic in COMPARED:
        session.bus.subscribe(topic, lambda e, t=topic: published.add(t, event_key(e), encode_msgpack(e)),
                              group="reference")
    session.run(build_replay_feed(data.bars, session.state, session.calendar))
    return Reference(published, audit.records, session)


def read_topic(bootstrap: str, qualified: str, timeout_s: float = 60.0) -> list[tuple[str, bytes]]:
    """Every (key, value) of ``qualified`` from the beginning to its current end, per partition in order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False})
    try:
        md = consumer.list_topics(qualified, timeout=10)
        meta = md.topics.get(qualified)
        if meta is None or meta.error is not None:
            return []
        ends = {p: consumer.get_watermark_offsets(TopicPartition(qualified, p), timeout=10)[1] for p in meta.partitions}
        wanted = {p: e for p, e in ends.items() if e > 0}
        if not wanted:
            return []
        consumer.assign([TopicPartition(qualified, p, OFFSET_BEGINNING) for p in wanted])
        got: dict[int, list[tuple[int, str, bytes]]] = defaultdict(list)
        done: dict[int, int] = dict.fromkeys(wanted, 0)
        deadline = time.monotonic() + timeout_s
        while any(done[p] < wanted[p] for p in wanted):
            assert time.monotonic() < deadline, f"could not read {qualified} to its end"
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    continue
                p, off = msg.partition() or 0, msg.offset() or 0
                if off < wanted[p]:
                    got[p].append((off, (msg.key() or b"").decode(), msg.value() or b""))
                    done[p] = max(done[p], off + 1)
        return [(k, v) for p in sorted(got) for _o, k, v in sorted(got[p])]
    finally:
        consumer.close()


def read_published(bootstrap: str, prefix: str) -> Published:
    out = Published()
    for topic in COMPARED:
        for key, value in read_topic(bootstrap, topics.qualified(prefix, topic)):
            out.add(topic, key, value)
    return out


def assert_same(actual: Published, expected: Published, topic_names: tuple[str, ...] = COMPARED) -> None:
    """Byte-identical per topic and key, with a readable first difference."""
    for topic in topic_names:
        exp, act = expected.by_topic.get(topic, {}), actual.by_topic.get(topic, {})
        assert sorted(act) == sorted(exp), f"{topic}: keys {sorted(act)} != {sorted(exp)}"
        for key in exp:
            e, a = exp[key], act[key]
            for i, (x, y) in enumerate(zip(e, a, strict=False)):
                if x != y:
                    pytest.fail(f"{topic}[{key}] #{i} differs:\n services: {decode_msgpack(y)}\n embedded: "
                                f"{decode_msgpack(x)}")
            assert len(a) == len(e), f"{topic}[{key}]: {len(a)} events through Kafka, {len(e)} embedded"


@pytest.fixture(scope="module")
def broker(kafka_broker: KafkaBroker) -> KafkaBroker:
    """The session broker, (re)started if an earlier test left it down."""
    if kafka_broker.proc is None or kafka_broker.proc.poll() is not None:
        kafka_broker.start()
    return kafka_broker


@pytest.fixture(scope="module")
def redis(redis_server: RedisServer) -> RedisServer:
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    return redis_server


Launch = Callable[..., launcher.Deployment]


@pytest.fixture
def launch(broker: KafkaBroker, redis: RedisServer, tmp_path: Path) -> Iterator[Launch]:
    """Start a session's stage processes (stopped after the test, logs under ``tmp_path``)."""
    started: list[launcher.Deployment] = []

    def start(session: str, **options: object) -> launcher.Deployment:
        env = dict(STAGE_ENV)
        env.update(options.pop("env", {}) or {})  # type: ignore[call-overload]
        dep = launcher.up(session, SYMBOLS, DATA, kafka_bootstrap=broker.bootstrap, redis_url=redis.url,
                          storage=tmp_path / "services", env=env, **options)  # type: ignore[arg-type]
        started.append(dep)
        return dep

    yield start
    for dep in started:
        dep.down(timeout_s=20)


def new_session(stem: str) -> str:
    return f"it-{stem}-{uuid.uuid4().hex[:8]}"
