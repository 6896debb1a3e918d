"""KafkaBus against a real Apache Kafka broker (KRaft, started by tests/harness/kafka_broker.py).

Covers the wire format, per-key order across partitions, at-least-once with commit-after-output
(a stage process is killed with SIGKILL mid-batch), the DLQ, a broker restart mid-stream, and topic
provisioning. confluent_kafka is imported here only to look at the wire from outside the adapter.
"""

from __future__ import annotations

import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import ConfigResource

from services.core import topics
from services.core.dlq import DeadLetter
from services.core.events import Bar, Event, FeatureVector, decode_msgpack, encode_msgpack
from services.runtime.kafka_bus import BusError, Deduper, KafkaBus, KafkaBusConfig
from tests.harness.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration

SYMBOLS = ("SPX", "NDX", "SPY", "QQQ")

BusFactory = Callable[..., KafkaBus]


@pytest.fixture
def make_bus(kafka: KafkaBroker, session_name: str) -> Iterator[BusFactory]:
    """KafkaBus instances on the test broker for this test's session; closed afterwards."""
    made: list[KafkaBus] = []

    def make(session: str | None = None, **options: object) -> KafkaBus:
        options.setdefault("session_timeout_ms", 3000)
        bus = KafkaBus(KafkaBusConfig(bootstrap=kafka.bootstrap, session=session or session_name,
                                      **options))  # type: ignore[arg-type]
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.close(timeout_s=10)


def bar(symbol: str, ts: int, close: float = 100.0) -> Bar:
    return Bar(ts=ts, symbol=symbol, open=close, high=close + 1, low=close - 1, close=close, volume=10.0)


def raw_messages(bootstrap: str, topic: str, expect: int, timeout_s: float = 30.0) -> list:
    """Read ``expect`` raw messages of ``topic`` from the beginning (no group commits)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            out.extend(m for m in consumer.consume(100, 0.5) if m.error() is None)
    finally:
        consumer.close()
    return out


def collect_until(bus: KafkaBus, done: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for messages")
        bus.poll_once(0.2)


# --- round trip, order, wire format -----------------------------------------------------------------


def test_round_trip_keeps_per_key_order_across_partitions(make_bus: BusFactory, kafka: KafkaBroker,
                                                          session_name: str) -> None:
    producer = make_bus()
    assert producer.ensure_topics(partitions=4)[f"{session_name}.md.bars"] == 4
    sent: dict[str, list[int]] = {s: [] for s in SYMBOLS}
    for i in range(100):  # interleave the symbols; each keeps its own increasing sequence
        symbol = SYMBOLS[i % len(SYMBOLS)]
        ts = 1_000 + i
        sent[symbol].append(ts)
        producer.publish(topics.MD_BARS, symbol, bar(symbol, ts, 100.0 + i))
    producer.flush()

    consumer = make_bus()
    got: dict[str, list[int]] = {s: [] for s in SYMBOLS}
    events: list[Event] = []

    def on_bar(event: Event) -> None:
        assert isinstance(event, Bar)
        events.append(event)
        got[event.symbol].append(event.ts)

    consumer.subscribe(topics.MD_BARS, on_bar, "features")
    collect_until(consumer, lambda: len(events) >= 100)
    assert got == sent
    first = next(e for e in events if e.ts == 1_000)
    assert first == bar("SPX", 1_000, 100.0)  # decoded back to the identical struct

    # Offsets are committed once handled; several partitions were used and nothing is left over.
    committed = consumer.committed("features", topics.MD_BARS)
    assert sum(o for o in committed.values() if o > 0) == 100
    assert sum(1 for o in committed.values() if o > 0) >= 2
    assert consumer.lag("features") and all(v == 0 for v in consumer.lag("features").values())

    # Wire format seen by any Kafka client: key = underlying, msgpack value, type + schema headers.
    raw = raw_messages(kafka.bootstrap, f"{session_name}.md.bars", 100)
    assert len(raw) == 100
    for m in raw:
        headers = dict(m.headers())
        assert headers == {"type": b"bar", "schema": b"1"}
        assert decode_msgpack(m.value()).symbol == m.key().decode()  # type: ignore[union-attr]
    by_key: dict[bytes, set[int]] = {}
    for m in raw:
        by_key.setdefault(m.key(), set()).add(m.partition())
    assert all(len(parts) == 1 for parts in by_key.values())  # one partition per underlying


def test_dedupe_subscription_drops_redelivered_event_ids(make_bus: BusFactory) -> None:
    bus = make_bus()
    bus.ensure_topics(partitions=2, names=[topics.MD_BARS])
    for ts in (1, 2, 2, 3, 1):  # an upstream retry re-sent 2 and 1
        bus.publish(topics.MD_BARS, "SPY", bar("SPY", ts))
    bus.flush()
    seen: list[int] = []
    bus.subscribe(topics.MD_BARS, lambda e: seen.append(e.ts), "features", dedupe=True)
    collect_until(bus, lambda: bus.stats.consumed >= 5)
    assert seen == [1, 2, 3]
    assert bus.stats.duplicates == 2


# --- at-least-once: crash between output and commit ------------------------------------------------

STAGE_SCRIPT = r"""
import signal, sys, threading, time
from services.core import topics
from services.core.events import FeatureVector
from services.runtime.kafka_bus import KafkaBus, KafkaBusConfig

bootstrap, session, pause_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
bus = KafkaBus(KafkaBusConfig(bootstrap=bootstrap, session=session, batch_size=20, session_timeout_ms=3000))
handled = 0

def on_bar(bar):
    global handled
    out = FeatureVector(ts=bar.ts, symbol=bar.symbol, values={"close": bar.close})
    bus.publish(topics.FEATURES, bar.symbol, out)
    handled += 1
    if handled == pause_at:
        bus.flush()  # this batch's outputs are in Kafka; its input offsets are not committed
        print("PAUSED", handled, flush=True)
        while True:
            time.sleep(1)  # the test sends SIGKILL here

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
bus.subscribe(topics.MD_BARS, on_bar, "features", dedupe=True)
print("READY", flush=True)
bus.run(stop)
bus.close()
print("CLOSED", handled, flush=True)
"""


class StageProcess:
    """A stage in its own Python process, with its stdout lines readable with a timeout."""

    def __init__(self, bootstrap: str, session: str, pause_at: int, log: Path) -> None:
        # The package is installed (editable); run outside the checkout so its top-level `operator/`
        # folder cannot shadow the standard library's `operator` module.
        self.log = log
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", STAGE_SCRIPT, bootstrap, session, str(pause_at)],
                cwd=log.parent, stdout=subprocess.PIPE, stderr=err, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, prefix: str, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if line.startswith(prefix):
                return line
        tail = self.log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"stage never printed {prefix!r} (exit code {self.proc.poll()}):\n{tail}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def test_crash_mid_batch_redelivers_uncommitted_and_dedupe_yields_exactly_once(
    make_bus: BusFactory, kafka: KafkaBroker, session_name: str, tmp_path: Path
) -> None:
    n, pause_at = 120, 50
    source = make_bus()
    source.ensure_topics(partitions=3, names=[topics.MD_BARS, topics.FEATURES])
    for i in range(n):
        symbol = SYMBOLS[i % 3]
        source.publish(topics.MD_BARS, symbol, bar(symbol, 10_000 + i, 50.0 + i))
    source.flush()

    first = StageProcess(kafka.bootstrap, session_name, pause_at, tmp_path / "stage1.log")
    try:
        first.expect("PAUSED")
        committed_at_crash = sum(o for o in source.committed("features", topics.MD_BARS).values() if o > 0)
        # The batch holding event #50 was handled and its outputs flushed, but not committed.
        assert committed_at_crash < pause_at
        first.kill()  # SIGKILL: no close(), no commit
    finally:
        first.kill()

    second = StageProcess(kafka.bootstrap, session_name, 0, tmp_path / "stage2.log")
    try:
        second.expect("READY")
        verify = make_bus()
        dedupe = Deduper()
        raw: list[FeatureVector] = []
        unique: list[FeatureVector] = []

        def on_features(event: Event) -> None:
            assert isinstance(event, FeatureVector)
            raw.append(event)
            if dedupe.first_time(event.event_id):
                unique.append(event)

        verify.subscribe(topics.FEATURES, on_features, "verify")
        expected_raw = pause_at + (n - committed_at_crash)  # the uncommitted tail is handled twice
        collect_until(verify, lambda: len(raw) >= expected_raw, timeout_s=90)
        verify.drain(idle_s=1.0)
        assert len(raw) == expected_raw
        assert len(raw) - len(unique) == pause_at - committed_at_crash >= 1
        assert sorted(e.ts for e in unique) == [10_000 + i for i in range(n)]  # nothing lost
        for symbol in SYMBOLS[:3]:  # per-key order holds after dedupe
            seq = [e.ts for e in unique if e.symbol == symbol]
            assert seq == sorted(seq)

        deadline = time.monotonic() + 30
        while sum(o for o in source.committed("features", topics.MD_BARS).values() if o > 0) < n:
            assert time.monotonic() < deadline, "restarted stage never committed the whole input"
            time.sleep(0.2)
        second.proc.send_signal(signal.SIGTERM)  # graceful: flush, commit, leave the group
        assert second.expect("CLOSED", 30).startswith("CLOSED")
        assert second.proc.wait(30) == 0
    finally:
        second.kill()


def test_outputs_not_acknowledged_means_inputs_not_committed(make_bus: BusFactory) -> None:
    source = make_bus()
    source.ensure_topics(partitions=1, names=[topics.FEATURES])  # `signals` does not exist yet
    for ts in (1, 2, 3):
        source.publish(topics.FEATURES, "SPY", FeatureVector(ts=ts, symbol="SPY", values={"x": 1.0}))
    source.flush()

    stage = make_bus(producer={"message.timeout.ms": 1500}, flush_timeout_s=10)
    handled: list[int] = []

    def to_signal(event: Event) -> None:
        handled.append(event.ts)
        stage.publish(topics.SIGNALS, "SPY", bar("SPY", event.ts))

    stage.subscribe(topics.FEATURES, to_signal, "signals", dedupe=True)
    with pytest.raises(BusError, match="not delivered"):
        collect_until(stage, lambda: False, timeout_s=30)
    assert stage.committed("signals", topics.FEATURES) == {0: -1001}  # nothing committed
    assert stage.stats.rewinds == 1

    source.ensure_topics(partitions=1, names=[topics.SIGNALS])
    collect_until(stage, lambda: stage.committed("signals", topics.FEATURES) == {0: 3})
    # The rewound events were handled again (not skipped as duplicates) and their outputs sent.
    assert handled == [1, 2, 3, 1, 2, 3]
    outputs: list[int] = []
    reader = make_bus()
    reader.subscribe(topics.SIGNALS, lambda e: outputs.append(e.ts), "reader")
    collect_until(reader, lambda: len(outputs) >= 3)
    assert outputs == [1, 2, 3]


class TransientOutageError(Exception):
    pass


def test_retryable_handler_errors_are_retried_not_dead_lettered(make_bus: BusFactory) -> None:
    bus = make_bus(retry_on=(TransientOutageError,))
    bus.ensure_topics(partitions=1, names=[topics.MD_BARS])
    for ts in (1, 2, 3, 4, 5):
        bus.publish(topics.MD_BARS, "SPY", bar("SPY", ts))
    bus.flush()
    failures = [2]  # the handler fails twice on ts=3 (say Redis is down), then recovers
    seen: list[int] = []

    def on_bar(event: Event) -> None:
        if event.ts == 3 and failures[0] > 0:
            failures[0] -= 1
            raise TransientOutageError("state store unreachable")
        seen.append(event.ts)

    bus.subscribe(topics.MD_BARS, on_bar, "risk", dedupe=True)
    retries = 0
    deadline = time.monotonic() + 30
    while len(seen) < 5:
        assert time.monotonic() < deadline
        try:
            bus.poll_once(0.2)
        except BusError as exc:
            assert "retry" in str(exc) and "TransientOutageError" in str(exc)
            retries += 1
            if retries == 1:  # what came before the failing event is committed already
                assert bus.committed("risk", topics.MD_BARS) == {0: 2}
    assert seen == [1, 2, 3, 4, 5]
    assert retries == 2 and bus.stats.retries == 2
    assert bus.stats.dead_letters == 0
    assert bus.committed("risk", topics.MD_BARS) == {0: 5}


# --- dead letters ----------------------------------------------------------------------------------


def test_malformed_messages_go_to_dlq_and_the_stage_continues(make_bus: BusFactory, kafka: KafkaBroker,
                                                              session_name: str) -> None:
    bus = make_bus()
    bus.ensure_topics(partitions=1, names=[topics.MD_BARS])
    topic = f"{session_name}.md.bars"
    good = [bar("SPY", t) for t in (1, 2, 3, 4)]
    bad_price = msgspec.msgpack.encode({"type": "bar", "ts": 5, "symbol": "SPY", "open": -1.0, "high": 1.0,
                                        "low": 1.0, "close": 1.0, "volume": 1.0})
    unknown_type = msgspec.msgpack.encode({"type": "teleport", "ts": 6})
    raw = Producer({"bootstrap.servers": kafka.bootstrap})
    sequence: list[tuple[bytes, bytes | None]] = [
        (b"SPY", encode_msgpack(good[0])),
        (b"SPY", b"\xc1\xff not msgpack"),
        (b"SPY", encode_msgpack(good[1])),
        (b"SPY", bad_price),
        (b"SPY", unknown_type),
        (b"SPY", None),
        (b"SPY", encode_msgpack(good[2])),
        (b"SPY", encode_msgpack(good[3])),  # its handler raises: a handler error is dead-lettered too
    ]
    for key, value in sequence:
        raw.produce(topic, value=value, key=key, headers=[("origin", b"test")])
    assert raw.flush(10) == 0

    seen: list[int] = []

    def on_bar(event: Event) -> None:
        if event.ts == 4:
            raise RuntimeError("boom on 4")
        seen.append(event.ts)

    bus.subscribe(topics.MD_BARS, on_bar, "features")
    collect_until(bus, lambda: bus.stats.consumed >= len(sequence))
    assert seen == [1, 2, 3]
    assert bus.stats.dead_letters == 5

    letters: list[DeadLetter] = []
    reader = make_bus()
    reader.subscribe_dead_letters(letters.append, "dlq-reader")
    collect_until(reader, lambda: len(letters) >= 5)
    by_offset = {d.offset: d for d in letters}
    assert sorted(by_offset) == [1, 3, 4, 5, 7]
    for d in letters:
        assert (d.topic, d.partition, d.stage, d.key) == (topic, 0, "features", "SPY")
        assert d.headers == {"origin": "test"}
    assert by_offset[1].reason == "decode_error" and "msgpack" in by_offset[1].detail
    assert by_offset[1].payload == b"\xc1\xff not msgpack"
    assert by_offset[3].reason == "decode_error" and by_offset[3].field == "$.open"
    assert by_offset[3].payload == bad_price
    assert by_offset[4].reason == "decode_error" and "teleport" in by_offset[4].detail
    assert by_offset[5].reason == "empty_payload" and by_offset[5].payload == b""
    assert by_offset[7].reason == "handler_error" and "boom on 4" in by_offset[7].detail

    dlq_raw = raw_messages(kafka.bootstrap, f"{session_name}.dlq", 5)
    headers = dict(dlq_raw[0].headers())
    assert headers["dlq.reason"] == b"decode_error"
    assert headers["dlq.topic"] == topic.encode() and headers["dlq.offset"] == b"1"
    # Every input was handled or dead-lettered, then committed: nothing is re-read.
    assert bus.committed("features", topics.MD_BARS) == {0: len(sequence)}


# --- broker restart --------------------------------------------------------------------------------


@pytest.mark.parametrize("crash", [False, True], ids=["graceful-restart", "kill-9-restart"])
def test_broker_restart_mid_stream_loses_nothing(make_bus: BusFactory, kafka: KafkaBroker,
                                                 crash: bool) -> None:
    n = 400
    source = make_bus()
    source.ensure_topics(partitions=3, names=[topics.MD_BARS, topics.FEATURES])

    stage = make_bus(batch_size=50)

    def to_features(event: Event) -> None:
        assert isinstance(event, Bar)
        stage.publish(topics.FEATURES, event.symbol,
                      FeatureVector(ts=event.ts, symbol=event.symbol, values={"close": event.close}))

    stage.subscribe(topics.MD_BARS, to_features, "features", dedupe=True)
    stop = threading.Event()
    stage_errors: list[BaseException] = []

    def run_stage() -> None:
        try:
            stage.run(stop)
        except BaseException as exc:
            stage_errors.append(exc)

    stage_thread = threading.Thread(target=run_stage, daemon=True)
    stage_thread.start()

    published = threading.Event()
    progress = [0]

    def publish_all() -> None:
        for i in range(n):
            symbol = SYMBOLS[i % len(SYMBOLS)]
            source.publish(topics.MD_BARS, symbol, bar(symbol, 20_000 + i, 10.0 + i))
            progress[0] = i + 1
            time.sleep(0.01)
        source.flush(120)
        published.set()

    producer_thread = threading.Thread(target=publish_all, daemon=True)
    producer_thread.start()

    verify = make_bus()
    dedupe = Deduper()
    unique: list[FeatureVector] = []

    def on_features(event: Event) -> None:
        assert isinstance(event, FeatureVector)
        if dedupe.first_time(event.event_id):
            unique.append(event)

    verify.subscribe(topics.FEATURES, on_features, "verify")
    collect_until(verify, lambda: len(unique) >= n // 4)
    sent_before_restart = progress[0]
    kafka.restart(graceful=not crash)  # mid-stream: producer and stage keep going through it
    assert n // 4 <= sent_before_restart < n
    try:
        collect_until(verify, lambda: len(unique) >= n, timeout_s=120)
        assert published.wait(60)
    finally:
        stop.set()
        stage_thread.join(60)
        producer_thread.join(60)
    assert not stage_errors
    assert sorted(e.ts for e in unique) == [20_000 + i for i in range(n)]
    for symbol in SYMBOLS:
        seq = [e.ts for e in unique if e.symbol == symbol]
        assert seq == sorted(seq)


# --- provisioning ----------------------------------------------------------------------------------


def test_ensure_topics_is_idempotent_and_applies_partitions_and_retention(make_bus: BusFactory,
                                                                           session_name: str) -> None:
    bus = make_bus()
    first = bus.ensure_topics(partitions=5, retention_ms=3_600_000)
    assert first == {f"{session_name}.{t}": 5 for t in topics.ALL_TOPICS}
    assert bus.ensure_topics(partitions=5, retention_ms=3_600_000) == first
    # An existing topic keeps its partitions (adding some would move keys between partitions).
    assert bus.ensure_topics(partitions=2) == first

    resource = ConfigResource("topic", f"{session_name}.md.bars")
    configs = bus.admin().describe_configs([resource])[resource].result(10)
    assert configs["retention.ms"].value == "3600000"

    fresh = make_bus(session=f"{session_name}-rf")
    with pytest.raises(BusError, match="replication factor"):
        fresh.ensure_topics(partitions=1, replication_factor=3, names=[topics.SIGNALS])


def test_publish_without_topic_fails_readably_on_flush(make_bus: BusFactory) -> None:
    bus = make_bus(producer={"message.timeout.ms": 2000})
    bus.publish(topics.SIGNALS, "SPY", bar("SPY", 1))
    with pytest.raises(BusError, match=r"not delivered|not acknowledged"):
        bus.flush(10)


# --- continuous run (latency printed for information; bench/ measures it) ---


def test_publish_to_handler_latency(make_bus: BusFactory, capsys: pytest.CaptureFixture[str]) -> None:
    source = make_bus()
    source.ensure_topics(partitions=3, names=[topics.MD_QUOTES])
    stage = make_bus(poll_timeout_s=0.05)
    latencies_ms: list[float] = []
    stage.subscribe(topics.MD_QUOTES, lambda e: latencies_ms.append((time.time_ns() - e.ts) / 1e6), "lat")
    stage.drain(idle_s=0.3)  # joined the group before timing starts
    stop = threading.Event()
    runner = threading.Thread(target=stage.run, args=(stop,), daemon=True)
    runner.start()
    try:
        for _ in range(300):
            source.publish(topics.MD_QUOTES, "SPY", bar("SPY", time.time_ns()))
            time.sleep(0.005)
        source.flush()
        deadline = time.monotonic() + 30
        while len(latencies_ms) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join(30)
    assert len(latencies_ms) == 300
    q = statistics.quantiles(latencies_ms, n=100)
    with capsys.disabled():
        print(f"\nKafkaBus publish->handler latency over 300 events: p50 {q[49]:.1f} ms, "
              f"p99 {q[98]:.1f} ms, max {max(latencies_ms):.1f} ms")
