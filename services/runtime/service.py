"""The stage process runner: one Stage, driven by Kafka, with Redis state, health and metrics.

``python -m services.<stage>.main`` loads the session's :class:`~services.core.session_config.SessionConfig`,
builds its stage in the composition root (:mod:`services.app.services`: the same objects the embedded
runner uses) and calls :func:`run_service`, which

1. builds the stage's parts (a configuration problem is one line, exit status 2);
2. serves ``/healthz``, ``/readyz`` and ``/metrics`` (:mod:`services.core.health`);
3. provisions the session's topics and, in replay lockstep mode, the control topic;
4. subscribes the stage's inputs on a :class:`~services.runtime.kafka_bus.KafkaBus` (consumer group
   ``<prefix>.<stage>``) and rebuilds the stage's state from its input history
   (:class:`~services.runtime.lockstep.Participant`);
5. loops until SIGTERM/SIGINT: the round in progress (or the Kafka batch) is finished, outputs
   flushed, offsets committed, the consumer group left; exit status 0.

A stage given a :class:`StageJournal` (the features stage and the OMS: the session's parquet journal,
:mod:`services.core.journal`) journals what it handled live once the round or batch is acknowledged;
the events a rebuild handles again are never journaled twice (see :class:`StageJournal`).

Redis outages never stop a stage: reads raise :class:`~services.core.state.StateUnavailable` to the
engines that ask (risk then refuses entries), and the writes a service makes on its own behalf
(heartbeat, OMS snapshot, learner state) go through :class:`GuardedWrites` / :class:`BestEffortState`,
which log, count and retry them later.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol, TypeVar

import orjson
from confluent_kafka import KafkaException

from services.core import keys
from services.core.calendar import MarketCalendar, default_calendar
from services.core.clock import Clock, ReplayClock
from services.core.events import Event
from services.core.health import HealthServer
from services.core.logs import configure_stage_logging
from services.core.metrics import StageMetrics
from services.core.redis_state import RedisState
from services.core.session_config import SessionConfig
from services.core.settings import ConfigError
from services.core.stage import Output, Stage
from services.core.state import StateError, StateStore
from services.runtime.kafka_bus import BusError, FatalBusError, KafkaBus, KafkaBusConfig
from services.runtime.lockstep import (
    SOURCE,
    ControlChannel,
    HistoryItem,
    Hooks,
    LockstepError,
    Participant,
    Topology,
    read_history,
)

log = logging.getLogger(__name__)

# --- Redis writes a service makes on its own behalf ---------------------------------------------


class GuardedWrites:
    """Writes to the StateStore that must never stop the stage: a failure is logged (once per
    outage), counted, and the caller tries again later; attempts back off while Redis is away."""

    def __init__(self, state: StateStore, metrics: StageMetrics, min_retry_s: float = 0.5,
                 max_retry_s: float = 5.0) -> None:
        self.state = state
        self.metrics = metrics
        self._min, self._max = min_retry_s, max_retry_s
        self._delay = 0.0
        self._next_try = 0.0
        self.failing = False

    def attempt(self, op: str, write: Callable[[StateStore], None]) -> bool:
        """Run ``write`` unless backing off; True when it succeeded."""
        now = time.monotonic()
        if now < self._next_try:
            return False
        try:
            write(self.state)
        except StateError as exc:
            self.metrics.state_failed(op)
            self._delay = min(self._max, max(self._min, self._delay * 2))
            self._next_try = now + self._delay
            if not self.failing:
                log.warning("state write failed; will retry", extra={"op": op, "error": str(exc)})
            self.failing = True
            return False
        if self.failing:
            log.info("state writes recovered", extra={"op": op})
        self.failing = False
        self._delay = 0.0
        self.metrics.state_ok()
        return True


class BestEffortState:
    """A StateStore for writes a stage makes on its own behalf (the ingest heartbeat, the learner's
    saved state): a failed write never raises; the newest value per key is written again by
    :meth:`retry` (the service calls it after every round or batch) once Redis answers. While
    ``muted`` (the stage rebuilding its state) writes are held back; :meth:`release` writes the newest."""

    def __init__(self, writes: GuardedWrites) -> None:
        self._writes = writes
        self.muted = False
        self._pending: dict[str, tuple[bytes, float | None]] = {}

    def get(self, key: str) -> bytes | None:
        return self._writes.state.get(key)

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self._pending[key] = (bytes(value), ttl_s)
        if not self.muted:
            self._write(key)

    def _write(self, key: str) -> None:
        value, ttl = self._pending[key]
        if self._writes.attempt(f"SET {key}", lambda s: s.set(key, value, ttl)):
            self._pending.pop(key, None)

    def retry(self) -> None:
        """Write again what failed (newest value per key)."""
        if not self.muted:
            for key in list(self._pending):
                self._write(key)

    def release(self) -> None:
        self.muted = False
        self.retry()

    def delete(self, key: str) -> None:
        self._pending.pop(key, None)
        self._writes.attempt(f"DEL {key}", lambda s: s.delete(key))

    def append(self, stream: str, value: bytes, maxlen: int = 10_000) -> None:
        if not self.muted:
            self._writes.attempt(f"XADD {stream}", lambda s: s.append(stream, value, maxlen))

    def read(self, stream: str, count: int = 100) -> list[bytes]:
        return self._writes.state.read(stream, count)


class ReplayableState:
    """The risk engine's StateStore. Live it is Redis. While the stage rebuilds its state (re-handling
    what it handled before a restart) it answers as Redis did then: the kill switch as risk itself
    set it (from released), and a current ingest heartbeat (the lockstep writes it before each bar);
    writes stay in memory. This keeps a rebuild from deciding differently than the first pass."""

    def __init__(self, real: StateStore, clock: Clock) -> None:
        self.real = real
        self.clock = clock
        self.replaying = False
        self._overlay: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        if not self.replaying:
            return self.real.get(key)
        if key == keys.INGEST_HEARTBEAT:
            return orjson.dumps({"ts": self.clock.now_ns(), "seq": 0})
        return self._overlay.get(key)

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        if self.replaying:
            self._overlay[key] = bytes(value)
        else:
            self.real.set(key, value, ttl_s)

    def delete(self, key: str) -> None:
        if self.replaying:
            self._overlay.pop(key, None)
        else:
            self.real.delete(key)

    def append(self, stream: str, value: bytes, maxlen: int = 10_000) -> None:
        if not self.replaying:
            self.real.append(stream, value, maxlen)

    def read(self, stream: str, count: int = 100) -> list[bytes]:
        return [] if self.replaying else self.real.read(stream, count)


# --- the session journal ------------------------------------------------------------------------


class EventJournal(Protocol):
    """Where a stage's journaled events go (:class:`services.app.journal_recorder.JournalRecorder`)."""

    def on_event(self, topic: str, event: Event) -> None: ...

    def close(self) -> None: ...


class StageJournal:
    """A stage's events for the session journal, written once each.

    Only live handling reaches :meth:`handled` / :meth:`injected`: a rebuild (the participant handling
    its input history again after a restart) handles quietly and calls no hook. Even a live round can be
    handled twice: a stage that dies before its round's Done (or its batch's offset commit) is
    acknowledged redoes it after the restart. So the events are held until :meth:`commit` (the round or
    batch acknowledged) and dropped by :meth:`discard` (a batch the Kafka adapter rewinds) and at close.
    A crash loses what the journal had not flushed yet (its ``flush_seconds``), never duplicates it.

    ``inputs``: the input topics whose events are journaled too (the features stage: the bars its
    rows carry, the chain snapshots); every output is offered (the sink keeps the kinds it journals).
    """

    def __init__(self, sink: EventJournal, inputs: Iterable[str] = ()) -> None:
        self.sink = sink
        self.inputs = frozenset(inputs)
        self._pending: list[tuple[str, Event]] = []
        self.failed = 0
        self._failing = False

    def handled(self, topic: str, event: Event, outputs: Iterable[Output]) -> None:
        if topic in self.inputs:
            self._pending.append((topic, event))
        self._pending.extend((out.topic, out.event) for out in outputs)

    def injected(self, root: Output) -> None:
        """A stage's finish() output published as a lockstep root (e.g. the OMS settling the session)."""
        self._pending.append((root.topic, root.event))

    def commit(self) -> None:
        """What was handled so far is acknowledged: hand it to the journal."""
        pending, self._pending = self._pending, []
        for topic, event in pending:
            try:
                self.sink.on_event(topic, event)
            except Exception as exc:  # a full disk or a bad row must not stop trading: logged, counted
                self.failed += 1
                if not self._failing:
                    log.error("journal write failed", extra={"topic": topic, "error": f"{type(exc).__name__}: {exc}"})
                self._failing = True
                continue
            if self._failing:
                log.info("journal writes recovered", extra={"failed": self.failed})
            self._failing = False

    def discard(self) -> None:
        """The handling so far was not acknowledged and will be redone: forget it."""
        self._pending.clear()

    def close(self) -> None:
        """Flush what was committed (what was not is redone, and journaled, by the next run)."""
        self.discard()
        try:
            self.sink.close()
        except Exception as exc:
            log.error("journal close failed", extra={"error": f"{type(exc).__name__}: {exc}"})


# --- hooks: metrics and per-stage side effects --------------------------------------------------


class ServiceHooks(Hooks):
    """Counts events and latencies; stages extend it (OMS snapshot, kill-switch gauges...). With a
    ``journal`` (set by the runner), live-handled events go to the session journal."""

    def __init__(self, metrics: StageMetrics) -> None:
        self.metrics = metrics
        self.participant: Participant | None = None
        self.journal: StageJournal | None = None

    def root_age_s(self, event_ts: int) -> float | None:
        """Seconds since the market-data event behind the current step: in lockstep, since the ingest
        injected it; free-running, since its event time when that is recent (a live feed)."""
        now = time.time_ns()
        p = self.participant
        if p is not None and p.lockstep and p.log is not None and p.log.root_wall_ns:
            return (now - p.log.root_wall_ns) / 1e9
        age = (now - event_ts) / 1e9
        return age if 0 <= age < 3600 else None

    def handled(self, topic: str, event: Event, outputs: list[Output], seconds: float) -> None:
        m = self.metrics
        m.count_in(topic)
        m.observe_processing(seconds)
        for out in outputs:
            m.count_out(out.topic)
        if self.journal is not None:
            self.journal.handled(topic, event, outputs)

    def injected(self, root: Output) -> None:
        if self.journal is not None:
            self.journal.injected(root)

    def duplicate(self) -> None:
        self.metrics.duplicates.labels(self.metrics.stage).inc()

    def dead_lettered(self) -> None:
        self.metrics.dead_letters.labels(self.metrics.stage).inc()

    def round_completed(self, number: int, root_wall_ns: int) -> None:
        if number >= 0:
            self.metrics.lockstep_round.labels(self.metrics.stage).set(number)
        if self.journal is not None:
            self.journal.commit()

    def periodic(self) -> None:
        """Called every couple of seconds by the runner, inputs or not (e.g. a quiet OMS polling
        for a flatten request while the market is closed)."""


@dataclass
class StageParts:
    """What a stage's main module builds for :func:`run_service`."""

    stage: Stage | None
    clock: ReplayClock | None = None
    hooks: ServiceHooks | None = None
    source: Iterator[Output] | None = None
    uses_state: bool = False
    on_close: list[Callable[[], None]] = field(default_factory=list)
    journal: StageJournal | None = None


@dataclass
class ServiceContext:
    """What a stage builder gets: settings, metrics, calendar and (lazily) the session's Redis."""

    name: str
    config: SessionConfig
    metrics: StageMetrics
    calendar: MarketCalendar
    _state: RedisState | None = None

    @property
    def state(self) -> RedisState:
        if self._state is None:
            c = self.config
            self._state = RedisState(c.redis.url, c.name, retries=1, backoff_cap_s=0.05)
        return self._state

    @property
    def has_state(self) -> bool:
        return self._state is not None


Builder = Callable[[ServiceContext], StageParts]


T = TypeVar("T")


def _retry(call: Callable[[], T], what: str, timeout_s: float = 60.0) -> T:
    """``call()``, retried while Kafka is not ready yet (coordinator loading, leader moving)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except (KafkaException, BusError, LockstepError) as exc:
            if time.monotonic() > deadline:
                raise LockstepError(f"{what} unavailable for {timeout_s:.0f}s: {exc}") from exc
            log.info("kafka not ready yet; retrying", extra={"what": what, "error": str(exc)})
            time.sleep(0.5)


class _Signals:
    """SIGTERM/SIGINT set ``stop``; the loop finishes what it is doing, then shuts down."""

    def __init__(self) -> None:
        self.stop = threading.Event()

    def install(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("stop requested", extra={"signal": signal.Signals(signum).name})
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


@dataclass(frozen=True)
class Pipeline:
    """What the runner needs to know about the session's stages (the lockstep topology)."""

    order: tuple[str, ...]
    inputs: Callable[[list[str]], dict[str, tuple[str, ...]]]


def run_service(name: str, build: Builder, config: SessionConfig, pipeline: Pipeline, prog: str) -> int:
    """Run stage ``name`` (see the module doc); returns the process exit status."""
    configure_stage_logging(name, config)  # stderr and <storage_dir>/logs/<name>.jsonl
    signals = _Signals()
    signals.install()
    metrics = StageMetrics(name)
    ctx = ServiceContext(name, config, metrics, default_calendar())
    try:
        parts = build(ctx)
    except ConfigError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    except StateError as exc:  # e.g. the learner restoring its state while Redis is away
        log.error("stage could not start", extra={"stage": name, "error": str(exc)})
        return 1
    try:
        runner = _Runner(name, config, ctx, parts, signals.stop, pipeline)
    except OSError as exc:
        sys.stderr.write(f"{prog}: error: http.port (DREAMBOT_HTTP_PORT): cannot listen on "
                         f"{config.http.host}:{config.http.port}: {exc.strerror or exc}\n")
        return 2
    try:
        return runner.run()
    except ConfigError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    except (BusError, LockstepError) as exc:
        log.error("stage stopped", extra={"stage": name, "error": str(exc)})
        return 1


class _Runner:
    def __init__(self, name: str, config: SessionConfig, ctx: ServiceContext, parts: StageParts,
                 stop: threading.Event, pipeline: Pipeline) -> None:
        self.name = name
        self.config = config
        self.pipeline = pipeline
        self.ctx = ctx
        self.parts = parts
        self.stop = stop
        self.metrics = ctx.metrics
        self.hooks = parts.hooks or ServiceHooks(ctx.metrics)
        self.hooks.journal = parts.journal
        self._assigned = False
        self._redis_ok = (0.0, False)
        self._reset_consumer = False
        self._last_reset = 0.0
        self.participant: Participant | None = None
        self.health = HealthServer(self.metrics.registry, self.readiness, config.http.port,
                                   config.http.host).start()
        log.info("http endpoints up", extra={"stage": name, "port": self.health.port,
                                             "url": f"http://127.0.0.1:{self.health.port}/readyz"})

    # --- readiness -----------------------------------------------------------------------------

    def readiness(self) -> list[str]:
        reasons: list[str] = []
        p = self.participant
        if p is None or not p.started:
            reasons.append("starting: state not rebuilt yet")
        if self.parts.stage is not None and not self._assigned:
            reasons.append("kafka: no partitions assigned yet")
        if self.parts.uses_state and not self._redis_healthy():
            reasons.append(f"redis: {self.ctx.state.where} does not answer")
        self.metrics.ready.labels(self.name).set(0 if reasons else 1)
        return reasons

    def _redis_healthy(self) -> bool:
        checked, ok = self._redis_ok
        if time.monotonic() - checked > 1.0:
            ok = self.ctx.state.healthy()
            self._redis_ok = (time.monotonic(), ok)
        return ok

    # --- run -----------------------------------------------------------------------------------

    def _new_bus(self) -> KafkaBus:
        s = self.config
        # Small messages one hop after another: Nagle's algorithm would hold each for a delayed ACK.
        low_latency = {"socket.nagle.disable": True}
        consumer: dict[str, Any] = {**low_latency, "fetch.wait.max.ms": 100}
        if s.kafka.debug:
            consumer["debug"] = s.kafka.debug
        return KafkaBus(KafkaBusConfig(bootstrap=s.kafka.bootstrap, session=s.topic_prefix,
                                       client_id=f"dreambot-{s.topic_prefix}-{self.name}",
                                       session_timeout_ms=s.kafka.session_timeout_ms,
                                       producer=low_latency, consumer=consumer))

    def _subscribe(self, bus: KafkaBus, participant: Participant) -> None:
        if self.parts.stage is not None:
            for topic in self.parts.stage.inputs:
                bus.subscribe(topic, participant.receive_on(topic), group=self.name, dedupe=False)

    def run(self) -> int:
        s = self.config
        self.bus = bus = self._new_bus()
        channel: ControlChannel | None = None
        try:
            _retry(lambda: bus.ensure_topics(partitions=s.kafka.partitions), "topics")
            topology = self._topology()
            if topology is not None:
                channel = ControlChannel(s.kafka.bootstrap, s.topic_prefix, f"dreambot-{s.topic_prefix}-{self.name}")
                _retry(channel.ensure, "the lockstep control topic")
            stage = self.parts.stage
            participant = Participant(
                self.name, publisher=bus, stage=stage, source=self.parts.source, clock=self.parts.clock,
                channel=channel, topology=topology, hooks=self.hooks,
                refetch=lambda names: read_history(s.kafka.bootstrap, s.topic_prefix, names),
                on_stall=self._consumer_stalled)
            self.hooks.participant = participant
            self._subscribe(bus, participant)
            self._start(bus, participant)
            self.participant = participant
            log.info("stage running", extra={"stage": self.name, "prefix": s.topic_prefix,
                                             "lockstep": participant.lockstep})
            self._loop(participant)
            if stage is not None and not participant.lockstep:
                now = self.parts.clock.now_ns() if self.parts.clock is not None else time.time_ns()
                finished = participant.finish_free(now)
                if self.parts.journal is not None:
                    for out in finished:
                        self.parts.journal.injected(out)
                    self.bus.flush()
                    self.parts.journal.commit()
        finally:
            if self.parts.journal is not None:
                self.parts.journal.close()
            for close in self.parts.on_close:
                close()
            try:
                self.bus.close()
            finally:
                if channel is not None:
                    channel.close()
                if self.ctx.has_state:
                    self.ctx.state.close()
                self.health.close()
        log.info("stage stopped", extra={"stage": self.name})
        return 0

    def _consumer_stalled(self) -> None:
        """Announced inputs did not arrive: next turn, rejoin the consumer group with a fresh client
        (seen once after a broker restart: a consumer that never got its partitions back)."""
        if time.monotonic() - self._last_reset > 60.0:
            self._reset_consumer = True

    def _replace_bus(self, participant: Participant) -> None:
        self._reset_consumer = False
        self._last_reset = time.monotonic()
        log.warning("rejoining the consumer group with a new Kafka client", extra={"stage": self.name})
        old, self.bus = self.bus, self._new_bus()
        participant.publisher = self.bus
        self._subscribe(self.bus, participant)
        self._assigned = False
        try:
            old.close(timeout_s=10)
        except BusError as exc:
            log.warning("old Kafka client did not close cleanly", extra={"error": str(exc)})

    def _topology(self) -> Topology | None:
        s = self.config
        replay = s.market_data.replay
        if not replay.lockstep or s.market_data.source == "polygon":
            return None
        stages = [x for x in replay.lockstep_stages if x != SOURCE]
        if self.name != SOURCE and self.name not in stages:
            return None
        if s.learner.mode != "off" and "learner" not in stages:
            # The embedded run has the learner in its pipeline; a lockstep without it would differ.
            raise ConfigError(f"learner mode {s.learner.mode} in a lockstep replay needs the learner in it: "
                              "add learner to market_data.replay.lockstep_stages (DREAMBOT_LOCKSTEP_STAGES) "
                              "and start the learner stage")
        try:
            inputs = self.pipeline.inputs(stages)
            order = self.pipeline.order
            return Topology.of(inputs, stages, [*order, *[x for x in inputs if x not in order]])
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"market_data.replay.lockstep_stages (DREAMBOT_LOCKSTEP_STAGES): {exc}") from None

    def _start(self, bus: KafkaBus, participant: Participant) -> None:
        s = self.config
        stage = self.parts.stage
        if stage is None:
            participant.start()
            return
        committed: dict[tuple[str, int], int] = {}
        if participant.log is None:
            for topic in stage.inputs:
                offsets = _retry(functools.partial(bus.committed, self.name, topic), f"committed offsets of {topic}")
                for part, offset in offsets.items():
                    if offset >= 0:
                        committed[(topic, part)] = offset
        history: list[HistoryItem] = []
        if participant.log is not None or committed:
            history = _retry(lambda: read_history(s.kafka.bootstrap, s.topic_prefix, stage.inputs), "input history")
        participant.start(history, committed)

    def _loop(self, participant: Participant) -> None:
        def poll(timeout_s: float) -> int:
            try:
                taken = self.bus.poll_once(timeout_s)
            except FatalBusError:
                raise
            except BusError as exc:
                participant.batch_failed()
                if self.parts.journal is not None:
                    self.parts.journal.discard()
                log.error("batch not committed; it will be handled again", extra={"error": str(exc)})
                self.stop.wait(0.5)
                return 0
            participant.batch_committed()
            return taken

        next_check = 0.0
        while not self.stop.is_set():
            participant.step(poll, 0.2)
            if self._reset_consumer:
                self._replace_bus(participant)
            if self.parts.stage is not None and not self._assigned:
                self._assigned = self.bus.assigned()
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 2.0
                self._periodic(self.bus)
                if self.participant is not None and self.participant.started:
                    self.hooks.periodic()

    def _periodic(self, bus: KafkaBus) -> None:
        if self.parts.stage is None:
            return
        self._assigned = bus.assigned()
        try:
            lag = bus.lag(self.name, timeout_s=2.0)
        except Exception as exc:  # the broker may be away; lag is only a metric
            log.debug("lag unavailable", extra={"error": str(exc)})
            return
        per_topic: dict[str, int] = {}
        prefix = f"{self.config.topic_prefix}."
        for (topic, _part), value in lag.items():
            name = topic.removeprefix(prefix)
            per_topic[name] = per_topic.get(name, 0) + value
        self.metrics.set_lag(per_topic)
