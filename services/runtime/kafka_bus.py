"""KafkaBus: the Bus over Apache Kafka (confluent-kafka), for services mode.

Wire format: topic ``<session>.<name>`` (:func:`services.core.topics.qualified`), key = the underlying
(per-symbol order), value = msgpack (:func:`services.core.events.encode_msgpack`), headers ``type``
(the event tag) and ``schema`` (its schema version). The producer is idempotent (``acks=all``) and
partitions with murmur2 like the Java client, so a key lands on the same partition from any client.

Delivery is at-least-once. Each stage is one consumer group, ``<session>.<stage>``, with auto-commit
off. :meth:`KafkaBus.poll_once` takes a batch, calls the handlers in partition order, flushes every
event the handlers published (acknowledged by the broker) and only then commits the batch's offsets,
synchronously. A crash before the commit redelivers the batch; its outputs may then appear twice,
with the same ``event_id``, and every consumer drops them with a :class:`Deduper` (``dedupe=True`` on
:meth:`KafkaBus.subscribe`). A message that cannot be decoded (or whose handler raises) goes to
``<session>.dlq`` as a :class:`services.core.dlq.DeadLetter` and the stage carries on — unless the
handler's exception is one the stage declared passing (``KafkaBusConfig.retry_on``, e.g. Redis being
unreachable): then the event is handled again later instead.

This module is the only one that imports ``confluent_kafka``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from services.core import topics
from services.core.bus import Handler
from services.core.dlq import (
    DeadLetter,
    InputRefusedError,
    Reason,
    dead_letter,
    dead_letter_headers,
    decode_dead_letter,
    encode_dead_letter,
)
from services.core.events import Event, EventDecodeError, decode_msgpack, encode_msgpack

log = logging.getLogger(__name__)
client_log = logging.getLogger("librdkafka")  # librdkafka's own log lines, instead of raw stderr

DeadLetterHandler = Callable[[DeadLetter], None]

# Commit errors after which the partitions belong to someone else: drop the offsets, the new owner
# re-reads from the last commit (at-least-once).
_LOST_OWNERSHIP: Final = frozenset(
    {KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS,
     KafkaError._ASSIGNMENT_LOST, KafkaError.FENCED_INSTANCE_ID, KafkaError.STALE_MEMBER_EPOCH}
)


class BusError(RuntimeError):
    """Kafka could not do what was asked; the message says what and, where known, what to check."""


class FatalBusError(BusError):
    """The Kafka client cannot continue (e.g. the idempotent producer was fenced): restart the stage."""


@dataclass(frozen=True)
class KafkaBusConfig:
    """How a stage talks to Kafka.

    bootstrap: ``host:port[,host:port]`` of the brokers (TradingSession ``spec.kafka.bootstrap``).
    session: the TradingSession name; prefixes topics (``<session>.md.bars``) and consumer groups.
    client_id: shown in broker logs and metrics; default ``dreambot-<session>``.
    batch_size: most messages handled per :meth:`KafkaBus.poll_once` (one flush + commit per batch).
    poll_timeout_s: how long one poll waits for the first message of a batch.
    linger_ms: producer batching delay; small keeps tick-to-intent latency low.
    session_timeout_ms: consumer liveness; a crashed stage's partitions move after this long.
    flush_timeout_s: longest wait for the broker to acknowledge a batch's outputs before the batch is
        rewound (re-read, not committed) and :class:`BusError` raised.
    commit_timeout_s: how long a synchronous commit is retried while the group coordinator is away.
    dedupe_capacity: event ids a ``dedupe=True`` subscription remembers (oldest forgotten first).
    retry_on: exception types a handler raises for a passing outage (e.g. ``StateUnavailable``): the
        event is not dead-lettered but handled again later (what came before it is committed, the
        partitions are rewound to it, and :meth:`KafkaBus.poll_once` raises BusError).
    producer: extra librdkafka producer settings (override the defaults above).
    consumer: extra librdkafka consumer settings.
    """

    bootstrap: str
    session: str
    client_id: str = ""
    batch_size: int = 500
    poll_timeout_s: float = 0.5
    linger_ms: int = 2
    session_timeout_ms: int = 10_000
    flush_timeout_s: float = 60.0
    commit_timeout_s: float = 15.0
    dedupe_capacity: int = 100_000
    retry_on: tuple[type[BaseException], ...] = ()
    producer: Mapping[str, Any] = field(default_factory=dict)
    consumer: Mapping[str, Any] = field(default_factory=dict)


class Deduper:
    """A bounded set of event ids: ``first_time(id)`` is True once per id within the window.

    Redelivered events (after a crash or an upstream retry) carry the same ``Event.event_id``, so a
    handler guarded by a Deduper acts on each event once. The window is the newest ``capacity`` ids
    and lives in this process only.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity <= 0:
            raise ValueError("Deduper capacity must be positive")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, event_id: str) -> bool:
        """Record ``event_id``; True if it was not in the window yet."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def forget(self, event_id: str) -> None:
        """Let ``event_id`` through again (its processing was rolled back)."""
        self._ids.pop(event_id, None)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


@dataclass
class BusStats:
    """Counters since start (read by the stage's metrics)."""

    published: int = 0
    consumed: int = 0
    handled: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    commits: int = 0
    commit_failures: int = 0
    rewinds: int = 0
    retries: int = 0


@dataclass
class _Subscription:
    handler: Handler | None
    dead_letter_handler: DeadLetterHandler | None
    dedupe: bool


@dataclass
class _Group:
    stage: str
    group_id: str
    consumer: Consumer
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    pending: dict[tuple[str, int], int] = field(default_factory=dict)
    deduper: Deduper | None = None


class _RetryRequestedError(Exception):
    """A handler raised one of ``KafkaBusConfig.retry_on``: stop the batch at this message."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _event_tag(event: Event) -> str:
    return str(type(event).__struct_config__.tag)


class KafkaBus:
    """The :class:`services.core.bus.Bus` over Kafka, plus topic provisioning and a DLQ."""

    def __init__(self, config: KafkaBusConfig) -> None:
        self.config = config
        self.session = config.session
        self.client_id = config.client_id or f"dreambot-{config.session}"
        self.stats = BusStats()
        self._groups: dict[str, _Group] = {}
        self._delivery_errors: list[str] = []
        self._lock = threading.Lock()
        self._closed = False
        self._fatal: str | None = None
        self._admin: AdminClient | None = None
        self.dlq_topic = topics.qualified(self.session, topics.DLQ)
        producer_conf: dict[str, Any] = {
            "bootstrap.servers": config.bootstrap,
            "client.id": self.client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": config.linger_ms,
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
            "reconnect.backoff.max.ms": 1000,
            "error_cb": self._on_client_error,
            "logger": client_log,
        }
        producer_conf.update(config.producer)
        self._producer = Producer(producer_conf)

    # --- publishing --------------------------------------------------------------------------------

    def publish(self, topic: str, key: str, event: Event) -> None:
        """Send ``event`` to ``<session>.<topic>`` keyed by ``key`` (asynchronous; see :meth:`flush`)."""
        self._produce(
            topics.qualified(self.session, topic),
            key.encode(),
            encode_msgpack(event),
            [("type", _event_tag(event).encode()), ("schema", str(event.schema).encode())],
        )

    def _produce(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        wire_headers: list[tuple[str, str | bytes | None]] = list(headers)
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=wire_headers,
                                       on_delivery=self._on_delivery)
                break
            except BufferError:
                # Local queue full: serve delivery reports until there is room.
                self._producer.poll(0.05)
        self._producer.poll(0)
        self.stats.published += 1

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            with self._lock:
                self._delivery_errors.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    def _on_client_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err.str()
            log.error("kafka fatal error", extra={"error": err.str(), "bootstrap": self.config.bootstrap})
        else:
            log.debug("kafka client error", extra={"error": err.str(), "bootstrap": self.config.bootstrap})

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until the broker acknowledged everything published; BusError if anything failed."""
        timeout = self.config.flush_timeout_s if timeout_s is None else timeout_s
        remaining = self._producer.flush(timeout)
        with self._lock:
            errors, self._delivery_errors = self._delivery_errors, []
        if self._fatal is not None:
            raise FatalBusError(f"Kafka producer failed for good: {self._fatal}")
        if remaining:
            raise BusError(
                f"{remaining} message(s) not acknowledged by Kafka at {self.config.bootstrap} "
                f"within {timeout:.0f}s; check the brokers are up and the topics exist"
            )
        if errors:
            raise BusError(f"{len(errors)} message(s) not delivered: {'; '.join(errors[:5])}")

    # --- subscribing -------------------------------------------------------------------------------

    def subscribe(self, topic: str, handler: Handler, group: str, *, dedupe: bool = False) -> None:
        """Call ``handler`` for every event on ``<session>.<topic>`` in consumer group ``<session>.<group>``.

        ``group`` is the stage name. With ``dedupe=True`` an event whose ``event_id`` was already
        handled by this group (within :attr:`KafkaBusConfig.dedupe_capacity`) is skipped.
        """
        if topic == topics.DLQ:
            raise ValueError("subscribe to dead letters with subscribe_dead_letters()")
        self._add_subscription(topics.qualified(self.session, topic), group,
                               _Subscription(handler, None, dedupe))

    def subscribe_dead_letters(self, handler: DeadLetterHandler, group: str) -> None:
        """Call ``handler`` with every :class:`DeadLetter` written to ``<session>.dlq``."""
        self._add_subscription(self.dlq_topic, group, _Subscription(None, handler, False))

    def _add_subscription(self, qualified: str, stage: str, sub: _Subscription) -> None:
        if self._closed:
            raise BusError("bus is closed")
        grp = self._groups.get(stage)
        if grp is None:
            grp = _Group(stage=stage, group_id=f"{self.session}.{stage}", consumer=self._new_consumer(stage))
            self._groups[stage] = grp
        if qualified in grp.subscriptions:
            raise ValueError(f"group {stage!r} already subscribed to {qualified!r}")
        grp.subscriptions[qualified] = sub
        if sub.dedupe and grp.deduper is None:
            grp.deduper = Deduper(self.config.dedupe_capacity)
        target = grp

        def on_revoke(_consumer: Consumer, parts: list[TopicPartition]) -> None:
            self._on_revoke(target, parts)

        def on_lost(_consumer: Consumer, parts: list[TopicPartition]) -> None:
            self._on_lost(target, parts)

        grp.consumer.subscribe(sorted(grp.subscriptions), on_revoke=on_revoke, on_lost=on_lost)

    def _new_consumer(self, stage: str) -> Consumer:
        session_ms = self.config.session_timeout_ms
        conf: dict[str, Any] = {
            "bootstrap.servers": self.config.bootstrap,
            "client.id": f"{self.client_id}-{stage}",
            "group.id": f"{self.session}.{stage}",
            "group.protocol": "classic",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, min(3000, session_ms // 4)),
            "reconnect.backoff.max.ms": 1000,
            "error_cb": self._on_client_error,
            "logger": client_log,
        }
        conf.update(self.config.consumer)
        return Consumer(conf)

    def _on_revoke(self, grp: _Group, parts: list[TopicPartition]) -> None:
        # Partitions are about to move: make what is pending durable first.
        if grp.pending:
            try:
                self.flush()
                self._commit(grp)
            except BusError as exc:
                log.warning("commit on revoke failed", extra={"group": grp.group_id, "error": str(exc)})
        self._drop_pending(grp, parts)

    def _on_lost(self, grp: _Group, parts: list[TopicPartition]) -> None:
        log.warning("partitions lost", extra={"group": grp.group_id, "partitions": len(parts)})
        self._drop_pending(grp, parts)

    @staticmethod
    def _drop_pending(grp: _Group, parts: list[TopicPartition]) -> None:
        for tp in parts:
            grp.pending.pop((tp.topic, tp.partition), None)

    # --- consuming ---------------------------------------------------------------------------------

    def poll_once(self, timeout_s: float | None = None) -> int:
        """Handle at most one batch per group; returns how many messages were taken (0 if idle).

        Order: handlers (their outputs queued) → flush (outputs acknowledged) → synchronous commit.
        If the flush fails the batch is rewound (to be handled again) and BusError is raised.
        """
        if self._closed:
            raise BusError("bus is closed")
        timeout = self.config.poll_timeout_s if timeout_s is None else timeout_s
        if not self._groups:
            self._producer.poll(timeout)
            return 0
        taken = 0
        for i, grp in enumerate(list(self._groups.values())):
            # Wait (up to the timeout) for the first message only, then take whatever else is already
            # fetched: consume(n, timeout) alone would hold a lone tick until n arrive or time runs out.
            first = grp.consumer.poll(timeout if i == 0 else 0.0)
            if first is None:
                continue
            more = grp.consumer.consume(self.config.batch_size - 1, 0.0) if self.config.batch_size > 1 else []
            taken += self._handle_batch(grp, [first, *more])
        return taken

    def _handle_batch(self, grp: _Group, messages: list[Message]) -> int:
        firsts: dict[tuple[str, int], int] = {}
        nexts: dict[tuple[str, int], int] = {}
        handled_ids: list[str] = []
        taken = 0
        for index, msg in enumerate(messages):
            err = msg.error()
            if err is not None:
                self._on_consumer_error(grp, err)
                continue
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            firsts.setdefault((topic, partition), offset)
            self.stats.consumed += 1
            try:
                event_id = self._dispatch(grp, msg)
            except _RetryRequestedError as retry:
                # Commit what was handled, then re-read this message and everything after it.
                self._complete(grp, firsts, nexts, handled_ids)
                resume: dict[tuple[str, int], int] = {}
                for later in messages[index:]:
                    if later.error() is None:
                        resume.setdefault((later.topic() or "", later.partition() or 0), later.offset() or 0)
                self._seek(grp, resume)
                self.stats.retries += 1
                raise BusError(f"{grp.group_id}: handler asked to retry {topic}[{partition}]@{offset} "
                               f"later: {type(retry.cause).__name__}: {retry.cause}") from retry.cause
            if event_id is not None:
                handled_ids.append(event_id)
            nexts[(topic, partition)] = offset + 1
            taken += 1
        self._complete(grp, firsts, nexts, handled_ids)
        return taken

    def _complete(self, grp: _Group, firsts: dict[tuple[str, int], int], nexts: dict[tuple[str, int], int],
                  handled_ids: list[str]) -> None:
        """Flush the handlers' outputs, then commit ``nexts``; if the flush fails, rewind to ``firsts``."""
        if not nexts:
            return
        try:
            self.flush()
        except BusError:
            self.stats.rewinds += 1
            if grp.deduper is not None:
                for event_id in handled_ids:
                    grp.deduper.forget(event_id)
            self._seek(grp, firsts)
            raise
        grp.pending.update(nexts)
        self._commit(grp)

    def _dispatch(self, grp: _Group, msg: Message) -> str | None:
        """Hand one message to its handler; returns the event id it recorded for dedupe, if any."""
        sub = grp.subscriptions.get(msg.topic() or "")
        if sub is None:
            return None
        value = msg.value()
        if sub.dead_letter_handler is not None:
            # Dead letters are never dead-lettered again: an unreadable one, or a handler failure on
            # one, is logged and skipped.
            try:
                sub.dead_letter_handler(decode_dead_letter(value or b""))
            except Exception:
                log.exception("dead letter not handled",
                              extra={"group": grp.group_id, "offset": msg.offset()})
            return None
        if not value:
            self._dead_letter(grp, msg, "empty_payload", "message has no value", None)
            return None
        try:
            event = decode_msgpack(value)
        except EventDecodeError as exc:
            self._dead_letter(grp, msg, "decode_error", str(exc), exc.field)
            return None
        recorded: str | None = None
        if sub.dedupe and grp.deduper is not None:
            event_id = event.event_id
            if not grp.deduper.first_time(event_id):
                self.stats.duplicates += 1
                return None
            recorded = event_id
        assert sub.handler is not None
        try:
            sub.handler(event)
        except InputRefusedError as exc:
            self._dead_letter(grp, msg, "refused", exc.detail, exc.rule)
            return recorded
        except Exception as exc:
            if self.config.retry_on and isinstance(exc, self.config.retry_on):
                if recorded is not None and grp.deduper is not None:
                    grp.deduper.forget(recorded)
                raise _RetryRequestedError(exc) from exc
            log.exception("handler failed", extra={"group": grp.group_id, "topic": msg.topic(),
                                                   "offset": msg.offset(), "event_id": event.event_id})
            self._dead_letter(grp, msg, "handler_error", f"{type(exc).__name__}: {exc}", None)
            return recorded
        self.stats.handled += 1
        return recorded

    def _dead_letter(self, grp: _Group, msg: Message, reason: Reason, detail: str, fld: str | None) -> None:
        raw_headers = msg.headers() or []
        headers = list(raw_headers.items()) if isinstance(raw_headers, dict) else list(raw_headers)
        letter = dead_letter(
            reason=reason,
            detail=detail,
            stage=grp.stage,
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            payload=msg.value(),
            field=fld,
            key=msg.key(),
            timestamp_ms=msg.timestamp()[1],
            headers=[(k, v.encode() if isinstance(v, str) else v) for k, v in headers],
        )
        log.warning("dead letter", extra={"group": grp.group_id, "topic": letter.topic, "reason": reason,
                                          "detail": detail, "offset": letter.offset})
        self._produce(self.dlq_topic, msg.key(), encode_dead_letter(letter), dead_letter_headers(letter))
        self.stats.dead_letters += 1

    def _on_consumer_error(self, grp: _Group, err: KafkaError) -> None:
        if err.fatal():
            raise FatalBusError(f"consumer {grp.group_id} failed for good: {err.str()}")
        log.warning("consumer error", extra={"group": grp.group_id, "error": err.str()})

    def _seek(self, grp: _Group, offsets: dict[tuple[str, int], int]) -> None:
        """Move the fetch positions back so those messages are handled (and their outputs sent) again."""
        for (topic, partition), offset in offsets.items():
            try:
                grp.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # no longer assigned: the new owner re-reads from the commit
                log.warning("rewind skipped", extra={"group": grp.group_id, "topic": topic,
                                                     "partition": partition, "error": str(exc)})

    def _commit(self, grp: _Group) -> None:
        """Commit ``grp.pending`` synchronously, retrying while the coordinator is unavailable."""
        if not grp.pending:
            return
        deadline = time.monotonic() + self.config.commit_timeout_s
        delay = 0.05
        while True:
            offsets = [TopicPartition(t, p, o) for (t, p), o in grp.pending.items()]
            try:
                result = grp.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                code = err.code() if err is not None else None
                if code == KafkaError._NO_OFFSET:
                    grp.pending.clear()
                    return
                if code in _LOST_OWNERSHIP:
                    log.warning("commit refused: partitions reassigned; they will be re-read",
                                extra={"group": grp.group_id, "error": str(exc)})
                    grp.pending.clear()
                    self.stats.commit_failures += 1
                    return
                if time.monotonic() + delay > deadline:
                    self.stats.commit_failures += 1
                    log.warning("commit failed; offsets stay pending for the next batch",
                                extra={"group": grp.group_id, "error": str(exc)})
                    return
                time.sleep(delay)
                delay = min(1.0, delay * 2)
                continue
            failed = [tp for tp in result if tp.error is not None]
            for tp in result:
                if tp.error is None:
                    committed = grp.pending.get((tp.topic, tp.partition))
                    if committed is not None and committed <= tp.offset:
                        grp.pending.pop((tp.topic, tp.partition), None)
            if not failed:
                self.stats.commits += 1
                return
            if time.monotonic() + delay > deadline:
                self.stats.commit_failures += 1
                errors = [f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in failed]
                log.warning("commit failed for partitions", extra={"group": grp.group_id, "errors": errors})
                return
            time.sleep(delay)
            delay = min(1.0, delay * 2)

    def drain(self, idle_s: float = 1.0, max_s: float = 60.0) -> int:
        """Poll until nothing arrives for ``idle_s`` (or ``max_s`` passed); returns messages taken.

        Idle time counts only once every group has partitions assigned (joining takes a moment).
        """
        deadline = time.monotonic() + max_s
        total = 0
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            n = self.poll_once(min(0.2, idle_s))
            total += n
            now = time.monotonic()
            if n or not self.assigned():
                idle_since = now
            elif now - idle_since >= idle_s:
                break
        return total

    def assigned(self) -> bool:
        """True when every consumer group of this bus has partitions assigned."""
        return all(grp.consumer.assignment() for grp in self._groups.values())

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set (e.g. by a SIGTERM handler); recoverable errors are logged.

        Call :meth:`close` afterwards to flush, commit and leave the consumer groups.
        """
        while not stop.is_set():
            try:
                self.poll_once()
            except FatalBusError:
                raise
            except BusError as exc:
                log.error("batch not committed; it will be handled again", extra={"error": str(exc)})
                stop.wait(0.5)

    # --- provisioning & inspection -----------------------------------------------------------------

    def admin(self) -> AdminClient:
        if self._admin is None:
            conf: dict[str, Any] = {"bootstrap.servers": self.config.bootstrap,
                                    "client.id": f"{self.client_id}-admin", "logger": client_log}
            self._admin = AdminClient(conf)
        return self._admin

    def ensure_topics(
        self,
        partitions: int = 3,
        retention_ms: int | None = None,
        names: Iterable[str] = topics.ALL_TOPICS,
        replication_factor: int = 1,
        config: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> dict[str, int]:
        """Create ``<session>.<name>`` for each name (and the DLQ) if missing; existing ones are kept.

        Returns the partition count of every topic as the cluster reports it (an existing topic keeps
        its count: adding partitions would move keys and break per-symbol order). Raises BusError
        naming each topic that could not be created and why.
        """
        if partitions < 1 or replication_factor < 1:
            raise ValueError("partitions and replication_factor must be >= 1")
        wanted = sorted({topics.qualified(self.session, n) for n in names} | {self.dlq_topic})
        topic_conf = {k: str(v) for k, v in (config or {}).items()}
        if retention_ms is not None:
            topic_conf["retention.ms"] = str(retention_ms)
        new = [NewTopic(t, num_partitions=partitions, replication_factor=replication_factor,
                        config=topic_conf) for t in wanted]
        futures = self.admin().create_topics(new, request_timeout=timeout_s, operation_timeout=timeout_s)
        problems: list[str] = []
        for name, fut in futures.items():
            try:
                fut.result()
                log.info("topic created", extra={"topic": name, "partitions": partitions})
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                problems.append(f"{name}: {err.str() if err is not None else exc}")
        if problems:
            raise BusError(f"could not create topics on {self.config.bootstrap}: " + "; ".join(problems))
        counts = self._wait_for_leaders(wanted, timeout_s)
        for name, count in counts.items():
            if count != partitions:
                log.warning("existing topic has a different partition count", extra={
                    "topic": name, "partitions": count, "requested": partitions})
        return counts

    def _wait_for_leaders(self, names: list[str], timeout_s: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout_s
        missing: list[str] = names
        while True:
            try:
                md = self.admin().list_topics(timeout=max(1.0, min(5.0, deadline - time.monotonic())))
            except KafkaException as exc:
                md, last = None, str(exc)
            else:
                last = ""
            if md is not None:
                counts: dict[str, int] = {}
                missing = []
                for name in names:
                    t = md.topics.get(name)
                    if t is None or t.error is not None or not t.partitions or any(
                            p.leader < 0 for p in t.partitions.values()):
                        missing.append(name)
                    else:
                        counts[name] = len(t.partitions)
                if not missing:
                    return counts
            if time.monotonic() >= deadline:
                raise BusError(f"topics not ready on {self.config.bootstrap} after {timeout_s:.0f}s: "
                               f"{', '.join(missing)} {last}".strip())
            time.sleep(0.1)

    def committed(self, stage: str, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
        """Committed offset per partition of ``<session>.<topic>`` for consumer group ``<session>.<stage>``
        (-1001 where nothing was committed). Works for any group, not only this bus's own."""
        name = topics.qualified(self.session, topic)
        md = self.admin().list_topics(name, timeout=timeout_s)
        t = md.topics.get(name)
        if t is None or t.error is not None:
            raise BusError(f"topic {name} not found on {self.config.bootstrap}")
        probe = Consumer({"bootstrap.servers": self.config.bootstrap, "group.id": f"{self.session}.{stage}",
                          "enable.auto.commit": False, "logger": client_log})
        try:
            wanted = [TopicPartition(name, p) for p in sorted(t.partitions)]
            parts = probe.committed(wanted, timeout=timeout_s)
        finally:
            probe.close()
        return {tp.partition: tp.offset for tp in parts}

    def lag(self, stage: str, timeout_s: float = 5.0) -> dict[tuple[str, int], int]:
        """Messages not yet committed by this bus's group ``stage``, per assigned partition."""
        grp = self._groups.get(stage)
        if grp is None:
            raise ValueError(f"no subscription for group {stage!r}")
        assigned = grp.consumer.assignment()
        if not assigned:
            return {}
        committed = grp.consumer.committed(assigned, timeout=timeout_s)
        out: dict[tuple[str, int], int] = {}
        for tp in committed:
            # The high watermark cached by the fetcher is fresh for partitions being consumed.
            low, high = grp.consumer.get_watermark_offsets(tp, timeout=timeout_s, cached=True)
            if high < 0:
                low, high = grp.consumer.get_watermark_offsets(tp, timeout=timeout_s)
            start = tp.offset if tp.offset >= 0 else max(low, 0)
            out[(tp.topic, tp.partition)] = max(0, high - start)
        return out

    # --- shutdown ----------------------------------------------------------------------------------

    def close(self, timeout_s: float | None = None) -> None:
        """Flush published events, commit what was handled, leave the consumer groups. Idempotent."""
        if self._closed:
            return
        self._closed = True
        flushed = True
        try:
            self.flush(timeout_s)
        except BusError as exc:
            flushed = False
            log.error("close: outputs not acknowledged; their inputs stay uncommitted",
                      extra={"error": str(exc)})
            for grp in self._groups.values():
                grp.pending.clear()
        try:
            for grp in self._groups.values():
                try:
                    self._commit(grp)
                finally:
                    grp.consumer.close()
        finally:
            if not flushed:
                self._producer.purge()
            self._producer.close()
            self._admin = None

    def __enter__(self) -> KafkaBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
