"""Replay lockstep: a replay through Kafka that hands every stage its inputs in the embedded order.

Why a barrier between bars is not enough
----------------------------------------
The embedded bus (:class:`services.core.bus.InProcessBus`) queues events FIFO over the whole bus and
drains each injected event completely before the next one is injected. One injected event and
everything it causes is a *step*; within a step the queue is a breadth-first walk of the event's
cascade: first the root, then everything the root's handlers published (depth 1), then what those
caused (depth 2), ... and within one depth the children of an earlier event come before those of a
later one, siblings ordered by the subscribing stage (:data:`services.app.stages.STAGE_ORDER`) and then
by their position in the handler's output list.

"Publish the next bar only when every consumer group has zero lag" reproduces the order *between*
steps, but not *inside* one. A stage reads several topics, and Kafka orders messages only within a
partition: whether the OMS sees a RiskCommand (``risk_commands``) before an OrderRequest
(``orders``) of the same step, or risk an OrderEvent (``executions``) before the SignalIntent
(``signals``) the embedded bus delivered first, is up to the fetcher — even when one producer wrote
both. Holding each stage to "one input at a time" would not help either: the right next input may
not have been produced yet.

Rounds
------
So the pipeline advances in *rounds* (bulk-synchronous supersteps), numbered 0, 1, 2, ... In round
``n`` each *active* participant handles exactly the events produced in round ``n - 1`` on its input
topics, sorted by their *lineage path*, publishes what they cause, flushes it (broker-acknowledged),
and then appends a :class:`Done` record to the control topic ``<prefix>.lockstep``: the round, the
stage, and for each output its topic, the digest of its wire bytes and its path. The control topic has
one partition, so every participant reads the same records in the same order, and
:class:`RoundLog` — a pure function of that log — tells each of them the same story: who is active in
which round, which events each has to handle, and when a round is over (every active participant's
Done is in). A participant is active in round ``n + 1`` when round ``n`` produced something on one
of its inputs. When round ``n`` produced nothing for anyone, the step is over and the *injector* is
the only active participant of round ``n + 1``: it publishes the next root event (the ingest: the
next market-data event of the replay; once the feed is exhausted each stage in turn, in
:data:`~services.app.stages.STAGE_ORDER`, for its ``finish()`` outputs, one root per step, as
:meth:`services.backtest.embedded.EmbeddedSession.run` does). When the last injector has nothing
left, the replay is complete and every stage carries on as a free-running consumer.

The *path* of a root is empty; an event a stage published while handling an event with path ``p``
has path ``p + (stage index, output index)``. All events of one round are at the same depth of the
same step, so ordering them by path is exactly the breadth-first order of the embedded queue
restricted to that round. Each stage therefore handles the same events, in the same order, with the
same clock (below) as in the embedded run, and, being deterministic, publishes the same events byte
for byte. The barrier "a step is over" is the quiescence condition — nothing in flight anywhere — read
from the control log rather than from consumer-group lag, which cannot tell "handled" from
"received" and is racy to poll.

Clocks: the embedded runner shares one ReplayClock, advanced to each injected event's time and by the
risk and OMS stages to each event they handle. Each Done carries its stage's clock; at the start of
a round a stage advances its own clock to the largest clock reported in earlier rounds (the
ingest's is the root's time), so a stage decides at the same "now" as the embedded one. (Within one
round the embedded clock can also move by the other clocked stage's events of that round; the replay
feed never makes an event of a step later than its step's root clock except the FeatureVector of a
bar, which risk and the OMS both receive in the same round, so this does not arise.)

Crash safety
------------
Consumers do not rely on committed offsets in lockstep mode: the control log says what each stage
handled. A restarted participant reads the whole control log, reads the full history of its input
topics, and re-handles every round it had completed (outputs suppressed, side effects muted through
:meth:`Hooks.replaying`), which rebuilds its in-memory state exactly; then it resumes with the round
in progress, re-publishing whatever it may have published before the crash. Those duplicates carry
the same bytes and path, so consumers hand each one over once (events are matched by digest and
counted, copies beyond what a round expects are never handled). A participant whose Done was not
acknowledged redoes the round; one whose Done is in the log never redoes it.

Events nobody announced (an operator's command during a replay, a manual injection) are handled once
the replay is complete, in arrival order. Malformed messages never reach a stage: the Kafka adapter
dead-letters them. A handler that raises on an announced event has that event dead-lettered here,
and the round goes on.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import msgspec
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined]

from services.core import topics
from services.core.clock import ReplayClock
from services.core.dlq import InputRefusedError, Reason, dead_letter, dead_letter_headers, encode_dead_letter
from services.core.events import Event, EventDecodeError, decode_msgpack, encode_msgpack
from services.core.stage import Output, Stage
from services.runtime.kafka_bus import Deduper

log = logging.getLogger(__name__)
client_log = logging.getLogger("librdkafka")

SOURCE: Final = "ingest"
CONTROL_NAME: Final = "lockstep"
ROOT_PATH: Final = b""
_PATH_STEP = struct.Struct(">BI")


class LockstepError(RuntimeError):
    """The lockstep cannot go on (control log unreadable, history incomplete, control write lost)."""


# --- identities ---------------------------------------------------------------------------------


def child_path(parent: bytes, stage_index: int, output_index: int) -> bytes:
    """Path of the ``output_index``-th event stage ``stage_index`` published for an event at ``parent``."""
    return parent + _PATH_STEP.pack(stage_index, output_index)


def wire_digest(payload: bytes) -> str:
    """Identity of one message value (equal bytes, equal digest)."""
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def event_digest(event: Event) -> str:
    """Digest of ``event`` as a consumer sees it (its msgpack encoding)."""
    return wire_digest(encode_msgpack(event))


def output_digest(event: Event) -> str:
    """Digest of ``event`` as its consumers will compute it: after one decode, so a value a producer
    built loosely (an int where the schema says float) gets the form every reader sees."""
    return wire_digest(encode_msgpack(decode_msgpack(encode_msgpack(event))))


def control_topic(prefix: str) -> str:
    """The control topic of a session's lockstep."""
    return f"{prefix}.{CONTROL_NAME}"


# --- control records ----------------------------------------------------------------------------


class Produced(msgspec.Struct, frozen=True, array_like=True):
    """One event a participant published in a round: topic (unqualified), digest and lineage path."""

    topic: str
    digest: str
    path: bytes


class Done(msgspec.Struct, frozen=True, kw_only=True):
    """A participant finished a round; everything it published in it is acknowledged by the broker.

    ``injected``: the round was the participant's injector turn (``produced`` holds the step's root,
    or nothing and ``finished`` when it has no more roots). ``end_ts``: the clock the stages' finish()
    runs at (sent by the source with its ``finished``). ``clock``: the participant's clock after
    the round; ``wall_ns``: when it finished (wall time, for latency metrics only).
    """

    round: int
    stage: str
    produced: tuple[Produced, ...] = ()
    clock: int = 0
    wall_ns: int = 0
    injected: bool = False
    finished: bool = False
    end_ts: int | None = None
    version: int = 1


_done_encoder = msgspec.json.Encoder()
_done_decoder = msgspec.json.Decoder(Done)


def encode_done(done: Done) -> bytes:
    return _done_encoder.encode(done)


def decode_done(payload: bytes) -> Done:
    return _done_decoder.decode(payload)


# --- topology and the round log -----------------------------------------------------------------


@dataclass(frozen=True)
class Topology:
    """Who takes part: the stages in embedded order with their input topics, and the source."""

    stages: tuple[str, ...]
    inputs: Mapping[str, frozenset[str]]
    source: str = SOURCE

    @classmethod
    def of(cls, inputs: Mapping[str, Iterable[str]], stages: Sequence[str], order: Sequence[str]) -> Topology:
        """``stages`` (a subset of ``order``, the embedded subscription order) reading ``inputs``."""
        unknown = [s for s in stages if s not in order]
        if unknown:
            raise ValueError(f"unknown lockstep stage(s) {', '.join(unknown)}; known: {', '.join(order)}")
        ordered = tuple(s for s in order if s in stages)
        return cls(ordered, {s: frozenset(inputs[s]) for s in ordered})

    @property
    def injectors(self) -> tuple[str, ...]:
        return (self.source, *self.stages)

    def index(self, stage: str) -> int:
        """Position of ``stage`` in embedded order (the stage part of a lineage path)."""
        return self.stages.index(stage)

    def consumers(self, topic: str) -> list[str]:
        return [s for s in self.stages if topic in self.inputs[s]]


@dataclass
class Round:
    """One round: who must report, who reported, whose injector turn it is, the clock floor."""

    number: int
    active: frozenset[str]
    injector: str | None
    clock_floor: int
    dones: dict[str, Done] = field(default_factory=dict)

    @property
    def closed(self) -> bool:
        return len(self.dones) == len(self.active)

    def produced(self, order: Sequence[str]) -> list[Produced]:
        return [p for s in order if s in self.dones for p in self.dones[s].produced]


class RoundLog:
    """The lockstep's state, a pure function of the control records fed in log order.

    ``rounds`` holds the rounds still kept (a restarted participant replays all of them; afterwards
    :meth:`prune` drops all but the last few, so a long replay does not grow memory).
    """

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        first = topology.injectors[0]
        self.rounds: list[Round] = [Round(0, frozenset({first}), first, 0)]
        self.injector_index = 0
        self.max_clock = 0
        self.end_ts: int | None = None
        self.complete = False
        self.roots: Counter[str] = Counter()
        self.root_wall_ns = 0
        self.ignored = 0

    @property
    def current(self) -> Round:
        return self.rounds[-1]

    def feed(self, done: Done) -> bool:
        """Take one record; False when it changes nothing (a repeat or a stale record)."""
        r = self.current
        if self.complete or done.round != r.number or done.stage not in r.active or done.stage in r.dones:
            self.ignored += 1
            return False
        r.dones[done.stage] = done
        if r.closed:
            self._close(r)
        return True

    def _close(self, r: Round) -> None:
        order = self.topology.injectors
        for d in r.dones.values():
            self.max_clock = max(self.max_clock, d.clock)
        if r.injector is not None:
            d = r.dones[r.injector]
            if d.produced:
                self.roots[r.injector] += 1
                self.root_wall_ns = d.wall_ns
            if d.finished:
                if r.injector == self.topology.source:
                    self.end_ts = d.end_ts if d.end_ts is not None else self.max_clock
                self.injector_index += 1
        produced = r.produced(order)
        active = frozenset(s for p in produced for s in self.topology.consumers(p.topic))
        injector: str | None = None
        if not active:
            if self.injector_index >= len(order):
                self.complete = True
                return
            injector = order[self.injector_index]
            active = frozenset({injector})
        self.rounds.append(Round(r.number + 1, active, injector, self.max_clock))

    def expected(self, stage: str, number: int) -> list[Produced]:
        """Events ``stage`` handles in round ``number``, in lineage order."""
        if number == 0:
            return []
        previous = self.round(number - 1)
        wanted = self.topology.inputs.get(stage, frozenset())
        return sorted((p for p in previous.produced(self.topology.injectors) if p.topic in wanted),
                      key=lambda p: p.path)

    def round(self, number: int) -> Round:
        """Round ``number`` (it must not have been pruned)."""
        first = self.rounds[0].number
        if not first <= number <= self.current.number:
            raise LockstepError(f"round {number} is not kept (rounds {first}..{self.current.number})")
        return self.rounds[number - first]

    def prune(self, keep: int = 4) -> None:
        """Forget all but the newest ``keep`` rounds."""
        if len(self.rounds) > keep:
            del self.rounds[:-keep]


# --- Kafka I/O of the lockstep ------------------------------------------------------------------


def _conf(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "logger": client_log}


def _kafka_error(exc: BaseException) -> str:
    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    return err.str() if err is not None else str(exc)


#: Seconds a control record may go unacknowledged before it is sent again from a fresh producer.
STUCK_SEND_S: Final = 30.0
#: Seconds without any lockstep progress after which a participant replaces its control reader.
STUCK_READ_S: Final = 30.0


class ControlChannel:
    """Reads and appends the control log ``<prefix>.lockstep``; also writes the stage's dead letters."""

    def __init__(self, bootstrap: str, prefix: str, client_id: str, *, replication_factor: int = 1) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.topic = control_topic(prefix)
        self.replication_factor = replication_factor
        self._errors: list[str] = []
        self._client_id = client_id
        self._producer = self._new_producer()
        self._consumer = self._new_consumer()
        self._assigned = False
        self._next_offset = OFFSET_BEGINNING
        self._abandoned: list[Producer] = []

    def _new_producer(self) -> Producer:
        return Producer({
            "bootstrap.servers": self.bootstrap, "client.id": f"{self._client_id}-lockstep",
            "enable.idempotence": True, "acks": "all", "linger.ms": 0, "reconnect.backoff.max.ms": 1000,
            "socket.nagle.disable": True, "logger": client_log,
        })

    def _new_consumer(self) -> Consumer:
        return Consumer({
            "bootstrap.servers": self.bootstrap, "client.id": f"{self._client_id}-lockstep",
            "group.id": f"{self.prefix}.lockstep-reader", "enable.auto.commit": False,
            "enable.auto.offset.store": False, "fetch.wait.max.ms": 100, "reconnect.backoff.max.ms": 1000,
            "socket.nagle.disable": True,
            # A reset (e.g. the broker restarting) re-reads the log; repeated records change nothing.
            "auto.offset.reset": "earliest",
            "logger": client_log,
        })

    def reconnect_reader(self) -> None:
        """Replace the consumer with a fresh client that resumes after the last record read.

        librdkafka clients have been seen to stay silent for good after a broker restart; a new
        client costs one connection, and records read twice change nothing (see :meth:`RoundLog.feed`).
        """
        old, self._consumer = self._consumer, self._new_consumer()
        self._assigned = False
        try:
            old.close()
        except KafkaException as exc:
            log.warning("old lockstep consumer did not close cleanly", extra={"error": _kafka_error(exc)})

    def ensure(self, timeout_s: float = 30.0) -> None:
        """Create the control topic (one partition: one total order) if it does not exist."""
        admin = AdminClient(_conf(self.bootstrap))
        futures = admin.create_topics([NewTopic(self.topic, num_partitions=1,
                                                replication_factor=self.replication_factor)],
                                      request_timeout=timeout_s, operation_timeout=timeout_s)
        for fut in futures.values():
            try:
                fut.result()
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if err is None or err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise LockstepError(f"cannot create {self.topic} on {self.bootstrap}: {_kafka_error(exc)}") from exc
        deadline = time.monotonic() + timeout_s
        while True:
            md = admin.list_topics(self.topic, timeout=max(1.0, deadline - time.monotonic()))
            t = md.topics.get(self.topic)
            if t is not None and t.error is None and t.partitions and all(p.leader >= 0 for p in t.partitions.values()):
                return
            if time.monotonic() > deadline:
                raise LockstepError(f"{self.topic} has no leader on {self.bootstrap} after {timeout_s:.0f}s")
            time.sleep(0.1)

    def _assign(self) -> None:
        if not self._assigned:
            self._consumer.assign([TopicPartition(self.topic, 0, self._next_offset)])
            self._assigned = True

    def read_existing(self, timeout_s: float = 60.0) -> list[Done]:
        """Every record already in the log (up to its end as of this call)."""
        self._assign()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                _low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=5.0)
                break
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise LockstepError(f"cannot read the end of {self.topic}: {_kafka_error(exc)}") from exc
                time.sleep(0.2)
        out: list[Done] = []
        seen = 0
        while seen < high:
            if time.monotonic() > deadline:
                raise LockstepError(f"read {seen} of {high} records of {self.topic} in {timeout_s:.0f}s")
            for msg in self._consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    continue
                seen = max(seen, (msg.offset() or 0) + 1)
                self._next_offset = max(self._next_offset, seen)
                done = self._decode(msg.value())
                if done is not None:
                    out.append(done)
        return out

    def poll(self, timeout_s: float) -> list[Done]:
        """Records appended since the last read (waits up to ``timeout_s`` for the first)."""
        self._assign()
        out: list[Done] = []
        first = self._consumer.poll(timeout_s)
        if first is None:
            return out
        for msg in [first, *self._consumer.consume(1000, 0)]:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise LockstepError(f"control consumer failed: {err.str()}")
                continue
            self._next_offset = max(self._next_offset, (msg.offset() or 0) + 1)
            done = self._decode(msg.value())
            if done is not None:
                out.append(done)
        return out

    def _decode(self, value: bytes | None) -> Done | None:
        try:
            return decode_done(value or b"")
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            log.warning("unreadable lockstep record skipped", extra={"topic": self.topic, "error": str(exc)})
            return None

    def send(self, done: Done) -> None:
        """Append ``done`` and wait until the broker acknowledged it (a broker restart only delays this)."""
        payload, key = encode_done(done), done.stage.encode()
        self._producer.produce(self.topic, value=payload, key=key, on_delivery=self._on_delivery)
        waited = 0.0
        while self._producer.flush(5.0):
            waited += 5.0
            log.warning("lockstep record not acknowledged yet", extra={"topic": self.topic, "waited_s": waited})
            if waited % STUCK_SEND_S == 0.0:
                # A producer stuck after a broker restart does not recover by waiting: send the record
                # again from a fresh client (a repeated record changes nothing). The old client is
                # kept, never polled again, so its delivery reports never reach us.
                log.warning("lockstep producer replaced", extra={"topic": self.topic, "waited_s": waited})
                self._abandoned.append(self._producer)
                self._producer = self._new_producer()
                self._errors.clear()
                self._producer.produce(self.topic, value=payload, key=key, on_delivery=self._on_delivery)
        self._raise_errors("lockstep record")

    def dead_letter(self, stage: str, topic: str, event: Event, reason_detail: str,
                    reason: Reason = "handler_error", field: str | None = None) -> None:
        """Send an event a handler failed on (or refused) to ``<prefix>.dlq``."""
        letter = dead_letter(reason=reason, detail=reason_detail, stage=stage,
                             topic=topics.qualified(self.prefix, topic), partition=-1, offset=-1,
                             payload=encode_msgpack(event), field=field)
        headers: list[tuple[str, str | bytes | None]] = list(dead_letter_headers(letter))
        self._producer.produce(topics.qualified(self.prefix, topics.DLQ), value=encode_dead_letter(letter),
                               headers=headers, on_delivery=self._on_delivery)
        self._wait("dead letter")

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._errors.append(err.str())

    def _wait(self, what: str) -> None:
        waited = 0.0
        while self._producer.flush(5.0):
            waited += 5.0
            log.warning(f"{what} not acknowledged yet", extra={"topic": self.topic, "waited_s": waited})
        self._raise_errors(what)

    def _raise_errors(self, what: str) -> None:
        if self._errors:
            errors, self._errors = self._errors, []
            raise LockstepError(f"{what} to {self.bootstrap} not delivered: {'; '.join(errors)}")

    def close(self) -> None:
        self._producer.flush(10.0)
        self._consumer.close()


@dataclass(frozen=True)
class HistoryItem:
    """One input message read back for a rebuild."""

    topic: str
    partition: int
    offset: int
    event: Event


def read_history(bootstrap: str, prefix: str, names: Iterable[str], *, timeout_s: float = 120.0) -> list[HistoryItem]:
    """Every readable event of ``<prefix>.<name>`` for each name, from the beginning to the current end;
    per topic, per partition, in offset order. Undecodable messages are skipped (they were
    dead-lettered when first consumed)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}.history-reader",
                         "enable.auto.commit": False, "enable.auto.offset.store": False,
                         "fetch.max.bytes": 52_428_800, "logger": client_log})
    try:
        admin = AdminClient(_conf(bootstrap))
        wanted = {topics.qualified(prefix, n): n for n in names}
        md = admin.list_topics(timeout=30.0)
        ends: dict[tuple[str, int], int] = {}
        for qualified in wanted:
            t = md.topics.get(qualified)
            if t is None or t.error is not None:
                continue
            for p in t.partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(qualified, p), timeout=10.0)
                if high > 0:
                    ends[(qualified, p)] = high
        out: list[HistoryItem] = []
        if not ends:
            return out
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        position = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + timeout_s
        while any(position[k] < ends[k] for k in ends):
            if time.monotonic() > deadline:
                missing = {f"{t}[{p}]": ends[(t, p)] - position[(t, p)] for t, p in ends
                           if position[(t, p)] < ends[(t, p)]}
                raise LockstepError(f"history of {prefix} not read in {timeout_s:.0f}s; left: {missing}")
            for msg in consumer.consume(500, 0.5):
                if msg.error() is not None:
                    continue
                key = (msg.topic() or "", msg.partition() or 0)
                offset = msg.offset() or 0
                if key not in ends or offset >= ends[key]:
                    continue
                position[key] = max(position[key], offset + 1)
                try:
                    event = decode_msgpack(msg.value() or b"")
                except EventDecodeError:
                    continue
                out.append(HistoryItem(wanted[key[0]], key[1], offset, event))
        out.sort(key=lambda h: (h.topic, h.partition, h.offset))
        return out
    finally:
        consumer.close()


def pipeline_lag(bootstrap: str, prefix: str, inputs: Mapping[str, Iterable[str]],
                 timeout_s: float = 10.0) -> dict[tuple[str, str], int]:
    """Messages not yet committed per (stage, input topic): committed offsets of each stage's consumer
    group ``<prefix>.<stage>`` against the partitions' end offsets (AdminClient). All zero means every
    stage has consumed everything (in free-running mode: handled it and flushed its outputs)."""
    admin = AdminClient(_conf(bootstrap))
    md = admin.list_topics(timeout=timeout_s)
    parts: dict[str, list[TopicPartition]] = {}
    for names in inputs.values():
        for name in names:
            qualified = topics.qualified(prefix, name)
            t = md.topics.get(qualified)
            if t is not None and t.error is None:
                parts[name] = [TopicPartition(qualified, p) for p in sorted(t.partitions)]
    latest: dict[tuple[str, int], int] = {}
    wanted = {tp: OffsetSpec.latest() for tps in parts.values() for tp in tps}  # type: ignore[no-untyped-call]
    if wanted:
        for tp, fut in admin.list_offsets(wanted, request_timeout=timeout_s).items():
            latest[(tp.topic, tp.partition)] = fut.result().offset
    out: dict[tuple[str, str], int] = {}
    for stage, names in inputs.items():
        group = f"{prefix}.{stage}"
        request = [tp for name in names for tp in parts.get(name, [])]
        committed: dict[tuple[str, int], int] = {}
        if request:
            futs = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, request)],
                                                     request_timeout=timeout_s)
            for tp in futs[group].result().topic_partitions or []:
                committed[(tp.topic, tp.partition)] = tp.offset
        for name in names:
            lag = 0
            for tp in parts.get(name, []):
                end = latest.get((tp.topic, tp.partition), 0)
                done = committed.get((tp.topic, tp.partition), -1)
                lag += max(0, end - max(done, 0))
            out[(stage, name)] = lag
    return out


def read_round_log(bootstrap: str, prefix: str, topology: Topology) -> RoundLog:
    """The lockstep state of a session as its control log tells it (for tools and tests)."""
    channel = ControlChannel(bootstrap, prefix, f"dreambot-{prefix}-inspect")
    try:
        rounds = RoundLog(topology)
        for done in channel.read_existing():
            rounds.feed(done)
        return rounds
    finally:
        channel.close()


# --- a participant ------------------------------------------------------------------------------


class Publisher(Protocol):
    """The part of the Kafka bus a participant publishes through."""

    def publish(self, topic: str, key: str, event: Event) -> None: ...

    def flush(self, timeout_s: float | None = None) -> None: ...


class Hooks:
    """What a participant tells its service (metrics, side effects); every method is optional."""

    def handled(self, topic: str, event: Event, outputs: list[Output], seconds: float) -> None:
        """An input was handled live and its outputs published."""

    def injected(self, root: Output) -> None:
        """The source published a market-data event."""

    def duplicate(self) -> None:
        """A redelivered copy of an input was dropped."""

    def dead_lettered(self) -> None:
        """An input a handler failed on went to the dead-letter topic."""

    def round_completed(self, number: int, root_wall_ns: int) -> None:
        """A lockstep round (or a free-running batch, ``number`` -1) is finished and acknowledged."""

    def replaying(self, active: bool) -> None:
        """A rebuild starts (True) or ends (False): mute side effects (audit, state writes) meanwhile."""


DataPoll = Callable[[float], int]
Refetch = Callable[[Iterable[str]], Sequence[HistoryItem]]


class Participant:
    """Drives one stage (or the source) through the lockstep, then as a free-running consumer.

    ``receive`` is the Kafka handler of every input topic. In lockstep mode it only collects events;
    :meth:`step` handles them round by round. Without a control channel (or once the replay is
    complete) ``receive`` hands each event to the stage at once, dropping redelivered copies.
    """

    def __init__(
        self,
        name: str,
        *,
        publisher: Publisher,
        stage: Stage | None = None,
        source: Iterator[Output] | None = None,
        clock: ReplayClock | None = None,
        channel: ControlChannel | None = None,
        topology: Topology | None = None,
        hooks: Hooks | None = None,
        refetch: Refetch | None = None,
        refetch_after_s: float = 10.0,
        on_stall: Callable[[], None] | None = None,
        dedupe_capacity: int = 500_000,
    ) -> None:
        if (stage is None) == (source is None):
            raise ValueError("a participant drives either a stage or a source")
        self.name = name
        self.publisher = publisher
        self.stage = stage
        self._source = source
        self.clock = clock
        self.channel = channel
        self.hooks = hooks or Hooks()
        self.log = RoundLog(topology) if channel is not None and topology is not None else None
        if self.log is not None and name not in self.log.topology.injectors:
            raise ValueError(f"{name!r} is not a lockstep participant ({', '.join(self.log.topology.injectors)})")
        self._index = self.log.topology.index(name) if self.log is not None and stage is not None else 0
        self._buffer: dict[tuple[str, str], deque[Event]] = {}
        self._arrivals: deque[tuple[str, str]] = deque()
        self.handled = Deduper(dedupe_capacity)
        self._batch: list[str] = []
        self._roots: Iterator[Output] | None = source
        self._finish_called = False
        self._live = True
        self.started = False
        self.rounds_done = 0
        self.refetch = refetch
        self.refetch_after_s = refetch_after_s
        self.on_stall = on_stall
        self.refetched = 0
        self._waiting_since: float | None = None
        self._quiet_since = self._progress_at = time.monotonic()

    # --- state ---------------------------------------------------------------------------------

    @property
    def lockstep(self) -> bool:
        """True while rounds drive the stage (the replay is not complete)."""
        return self.log is not None and not self.log.complete

    @property
    def complete(self) -> bool:
        return self.log is not None and self.log.complete

    # --- inputs --------------------------------------------------------------------------------

    def receive_on(self, topic: str) -> Callable[[Event], None]:
        """The Kafka handler for input ``topic``."""

        def handler(event: Event) -> None:
            self.receive(topic, event)

        return handler

    def receive(self, topic: str, event: Event) -> None:
        digest = event_digest(event)
        if self.lockstep or not self.started:
            self._buffer.setdefault((topic, digest), deque()).append(event)
            self._arrivals.append((topic, digest))
            if len(self._arrivals) > 2 * len(self._buffer) + 10_000:  # forget arrivals already handled
                self._arrivals = deque(k for k in self._arrivals if k in self._buffer)
            return
        if not self.handled.first_time(digest):
            self.hooks.duplicate()
            return
        self._batch.append(digest)
        self._handle_free(topic, event)

    def _handle_free(self, topic: str, event: Event) -> None:
        """Free-running: handle now; a handler error propagates (the Kafka adapter dead-letters it)."""
        assert self.stage is not None
        started = time.perf_counter()
        outputs = self.stage.handle(topic, event)
        for out in outputs:
            self.publisher.publish(out.topic, out.key, out.event)
        self.hooks.handled(topic, event, outputs, time.perf_counter() - started)

    def batch_failed(self) -> None:
        """The Kafka adapter rewound the last batch (outputs not acknowledged): let it through again."""
        for digest in self._batch:
            self.handled.forget(digest)
        self._batch.clear()

    def batch_committed(self) -> None:
        if self._batch:
            self._batch.clear()
            self.hooks.round_completed(-1, 0)

    # --- start: catch up with the log and rebuild ----------------------------------------------

    def start(self, history: Sequence[HistoryItem] = (),
              committed: Mapping[tuple[str, int], int] | None = None) -> None:
        """Rebuild in-memory state from the control log and the input ``history`` (see the module doc).

        ``committed``: the consumer group's committed offsets per (topic name without prefix, partition);
        events below them that the lockstep did not account for were handled free-running and are
        handled again here (in event-time order: exact only in lockstep mode).
        """
        self.hooks.replaying(True)
        self._live = False
        try:
            if self.log is not None and self.channel is not None:
                for done in self.channel.read_existing():
                    self.log.feed(done)
            for item in history:
                self._buffer.setdefault((item.topic, event_digest(item.event)), deque()).append(item.event)
            replayed = 0
            if self.log is not None:
                for r in list(self.log.rounds):
                    if self.name in r.dones:
                        self._run_round(r)
                        replayed += 1
                self.log.prune()
            if self.log is None or self.log.complete:
                self._replay_free(history, committed or {})
                self._buffer.clear()
                self._arrivals.clear()
            else:
                self._arrivals = deque(self._buffer)
            if replayed:
                log.info("state rebuilt", extra={"stage": self.name, "rounds": replayed,
                                                 "history": len(history)})
        finally:
            self._live = True
            self.hooks.replaying(False)
        self.started = True
        if self.log is not None and self.log.complete:
            self._finish_after_replay(publish=False)

    def _replay_free(self, history: Sequence[HistoryItem], committed: Mapping[tuple[str, int], int]) -> None:
        """Handle (outputs dropped) history events below the committed offsets the rounds did not use."""
        if self.stage is None:
            return
        inputs = list(self.stage.inputs)
        leftover: Counter[tuple[str, str]] = Counter({k: len(v) for k, v in self._buffer.items()})
        todo: list[HistoryItem] = []
        for item in history:
            key = (item.topic, event_digest(item.event))
            if leftover[key] <= 0:
                continue
            leftover[key] -= 1
            end = committed.get((item.topic, item.partition), -1)
            if item.offset < end and self.handled.first_time(key[1]):
                todo.append(item)
        todo.sort(key=lambda h: (h.event.ts, inputs.index(h.topic) if h.topic in inputs else 99, h.partition, h.offset))
        for item in todo:
            self._handle_quiet(item.topic, item.event)

    # --- the loop ------------------------------------------------------------------------------

    def step(self, poll_data: DataPoll, wait_s: float = 0.2) -> None:
        """One turn: read what arrived, and handle a round if this participant's turn has come."""
        if self.log is None or self.channel is None or self.log.complete:
            if self.log is None and self._source is not None and self._pump_source():
                poll_data(0.0)
            else:
                poll_data(wait_s)
            return
        r = self.log.current
        mine = self.name in r.active and self.name not in r.dones
        now = time.monotonic()
        if now - self._quiet_since > 10.0:
            self._quiet_since = now
            log.info("lockstep waiting", extra={"stage": self.name, "round": r.number, "my_turn": mine,
                                                "waiting_for": sorted(r.active - set(r.dones))})
        if not mine and now - self._progress_at > STUCK_READ_S:
            # Nothing new on the control log for this long: the others may be slow, or this reader
            # may be a client that went deaf after a broker restart. A fresh one settles it.
            self._progress_at = now
            log.warning("lockstep reader replaced", extra={"stage": self.name, "round": r.number})
            self.channel.reconnect_reader()
        if mine and (r.injector == self.name or self._inputs_ready(r)):
            self._quiet_since = self._progress_at = time.monotonic()
            self._waiting_since = None
            done = self._run_round(r)
            self.channel.send(done)
            self.log.feed(done)
            self.rounds_done += 1
            self.hooks.round_completed(r.number, self.log.root_wall_ns)
            self._after_feed()
            return
        if mine:  # waiting for this round's inputs to arrive
            now = time.monotonic()
            if self._waiting_since is None:
                self._waiting_since = now
            elif self.refetch is not None and now - self._waiting_since > self.refetch_after_s:
                self._refill(r)
                self._waiting_since = now
                if self.on_stall is not None:
                    self.on_stall()
            poll_data(wait_s)
            self._feed(self.channel.poll(0.0))
        else:  # waiting for the others
            self._feed(self.channel.poll(wait_s))
            poll_data(0.0)

    def _pump_source(self, batch: int = 500) -> bool:
        """Free-running source: publish up to ``batch`` events (then flush); False once exhausted."""
        assert self._source is not None
        sent = 0
        for root in self._source:
            if self.clock is not None:
                self.clock.advance_to(root.event.ts)
            self.publisher.publish(root.topic, root.key, root.event)
            self.hooks.injected(root)
            sent += 1
            if sent >= batch:
                break
        if sent:
            self.publisher.flush()
            return True
        self._source = None
        log.info("replay sent", extra={"stage": self.name})
        return False

    def _feed(self, records: list[Done]) -> None:
        assert self.log is not None
        for done in records:
            if self.log.feed(done):
                self._quiet_since = self._progress_at = time.monotonic()
        self._after_feed()

    def _after_feed(self) -> None:
        if self.log is not None and len(self.log.rounds) > 64:
            self.log.prune()
        if self.log is not None and self.log.complete and self.started:
            self._finish_after_replay(publish=True)

    def _inputs_ready(self, r: Round) -> bool:
        assert self.log is not None
        need = Counter((p.topic, p.digest) for p in self.log.expected(self.name, r.number))
        return all(len(self._buffer.get(k, ())) >= n for k, n in need.items())

    def _refill(self, r: Round) -> None:
        """The consumer has not delivered announced events for a while (e.g. its group membership was
        lost in a broker restart): read them from the topics directly."""
        assert self.log is not None and self.refetch is not None
        need = Counter((p.topic, p.digest) for p in self.log.expected(self.name, r.number))
        missing = {k: n - len(self._buffer.get(k, ())) for k, n in need.items() if len(self._buffer.get(k, ())) < n}
        log.warning("announced inputs not delivered; reading them from the topics",
                    extra={"stage": self.name, "round": r.number, "missing": len(missing)})
        for item in self.refetch({t for t, _ in missing}):
            key = (item.topic, event_digest(item.event))
            if missing.get(key, 0) > 0:
                missing[key] -= 1
                self._buffer.setdefault(key, deque()).append(item.event)
                self.refetched += 1

    def _run_round(self, r: Round) -> Done:
        """Handle round ``r`` (live: publish and flush; rebuilding: outputs dropped)."""
        assert self.log is not None
        if self.clock is not None:
            self.clock.advance_to(r.clock_floor)
        produced: list[Produced] = []
        injected = finished = False
        end_ts: int | None = None
        if r.injector == self.name:
            injected = True
            root = self._next_root()
            if root is None:
                finished = True
                if self.stage is None:
                    end_ts = self.log.max_clock if self.clock is None else max(self.log.max_clock, self.clock.now_ns())
            else:
                produced.append(Produced(root.topic, output_digest(root.event), ROOT_PATH))
                if self._live:
                    self.publisher.publish(root.topic, root.key, root.event)
                    self.hooks.injected(root)
        else:
            for item in self.log.expected(self.name, r.number):
                event = self._take(item)
                outputs = self._handle_round_event(item.topic, event)
                for i, out in enumerate(outputs):
                    path = child_path(item.path, self._index, i)
                    produced.append(Produced(out.topic, output_digest(out.event), path))
        if self._live:
            self.publisher.flush()
        return Done(round=r.number, stage=self.name, produced=tuple(produced),
                    clock=self.clock.now_ns() if self.clock is not None else 0, wall_ns=time.time_ns(),
                    injected=injected, finished=finished, end_ts=end_ts)

    def _next_root(self) -> Output | None:
        if self._roots is None:
            assert self.stage is not None and self.log is not None
            end = self.log.end_ts if self.log.end_ts is not None else self.log.max_clock
            self._roots = iter(self.stage.finish(end))
            self._finish_called = True
        root = next(self._roots, None)
        if root is not None and self.stage is None and self.clock is not None:
            self.clock.advance_to(root.event.ts)
        return root

    def _take(self, item: Produced) -> Event:
        copies = self._buffer.get((item.topic, item.digest))
        if not copies:
            raise LockstepError(f"{self.name}: event {item.digest} on {item.topic} announced in the control "
                                "log is missing from the topic (retention or data loss?)")
        event = copies.popleft()
        if not copies:
            del self._buffer[(item.topic, item.digest)]
        self.handled.first_time(item.digest)
        return event

    def _handle_round_event(self, topic: str, event: Event) -> list[Output]:
        assert self.stage is not None
        if not self._live:
            return self._handle_quiet(topic, event)
        started = time.perf_counter()
        try:
            outputs = self.stage.handle(topic, event)
        except InputRefusedError as exc:
            log.warning("input refused", extra={"stage": self.name, "topic": topic, "event_id": event.event_id,
                                                "rule": exc.rule, "detail": exc.detail})
            assert self.channel is not None
            self.channel.dead_letter(self.name, topic, event, exc.detail, reason="refused", field=exc.rule)
            self.hooks.dead_lettered()
            return []
        except Exception as exc:
            log.exception("handler failed", extra={"stage": self.name, "topic": topic, "event_id": event.event_id})
            assert self.channel is not None
            self.channel.dead_letter(self.name, topic, event, f"{type(exc).__name__}: {exc}")
            self.hooks.dead_lettered()
            return []
        for out in outputs:
            self.publisher.publish(out.topic, out.key, out.event)
        self.hooks.handled(topic, event, outputs, time.perf_counter() - started)
        return outputs

    def _handle_quiet(self, topic: str, event: Event) -> list[Output]:
        assert self.stage is not None
        try:
            return self.stage.handle(topic, event)
        except Exception:
            log.debug("handler failed while rebuilding (dead-lettered the first time)", exc_info=True)
            return []

    # --- after the replay ----------------------------------------------------------------------

    def _finish_after_replay(self, publish: bool) -> None:
        """The replay is complete: hand over events nobody announced (arrival order), then run free."""
        leftovers: list[tuple[str, Event]] = []
        for key in self._arrivals:
            copies = self._buffer.get(key)
            if not copies:
                continue
            event = copies.popleft()
            if self.handled.first_time(key[1]):
                leftovers.append((key[0], event))
        self._buffer.clear()
        self._arrivals.clear()
        if self.stage is None:
            return
        for topic, event in leftovers:
            if publish:
                self._handle_round_event(topic, event)
            else:
                self._handle_quiet(topic, event)
        if leftovers and publish:
            self.publisher.flush()
            self.hooks.round_completed(-1, 0)

    def finish_free(self, now_ns: int) -> list[Output]:
        """Graceful stop of a free-running stage: its finish() outputs, published (once)."""
        if self.stage is None or self._finish_called or self.lockstep:
            return []
        self._finish_called = True
        outputs = self.stage.finish(now_ns)
        for out in outputs:
            self.publisher.publish(out.topic, out.key, out.event)
        return outputs
