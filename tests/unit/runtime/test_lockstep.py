"""The replay lockstep without Kafka: round bookkeeping, and embedded-identical order under any
cross-topic delivery interleaving, restarts and redeliveries included.

Toy stages whose outputs depend on the exact order of everything they handled are wired like the
real pipeline (several input topics each, cycles between risk and the OMS). A fake broker delivers
each participant's messages per topic in order but interleaves topics at random, and a fake control
log plays the lockstep's topic. The published streams must equal what the in-process bus publishes.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict, deque

import pytest

from services.core import topics
from services.core.bus import InProcessBus
from services.core.clock import ReplayClock
from services.core.events import Bar, Event, Heartbeat, decode_msgpack, encode_msgpack
from services.core.stage import Output
from services.runtime.lockstep import (
    ROOT_PATH,
    Done,
    HistoryItem,
    Participant,
    Produced,
    RoundLog,
    Topology,
    child_path,
    event_digest,
)

ORDER = ("features", "signals", "risk", "oms")
INPUTS = {
    "features": (topics.MD_BARS, topics.MD_QUOTES),
    "signals": (topics.MD_BARS, topics.FEATURES),
    "risk": (topics.SIGNALS, topics.FEATURES, topics.EXECUTIONS, topics.RISK_COMMANDS),
    "oms": (topics.SIGNALS, topics.ORDERS, topics.RISK_COMMANDS, topics.MD_BARS),
}
OUTPUTS = {
    "features": (topics.FEATURES,),
    "signals": (topics.SIGNALS,),
    "risk": (topics.ORDERS, topics.RISK_COMMANDS),
    "oms": (topics.EXECUTIONS,),
}


class ToyStage:
    """Outputs depend on a running hash of every input in order; cascades stop at depth 4."""

    def __init__(self, name: str, clock: ReplayClock | None = None) -> None:
        self.name = name
        self.inputs = INPUTS[name]
        self._h = hashlib.blake2b(name.encode(), digest_size=16)
        self.clock = clock or ReplayClock()

    def handle(self, topic: str, event: Event) -> list[Output]:
        self.clock.advance_to(event.ts)
        self._h.update(topic.encode() + encode_msgpack(event))
        d = self._h.digest()
        depth = event.seq + 1 if isinstance(event, Heartbeat) else 1
        if depth > 4:
            return []
        outs = OUTPUTS[self.name]
        return [Output(outs[(d[1] + i) % len(outs)], "K",
                       Heartbeat(ts=event.ts + d[2 + i] % 3, source=f"{self.name}-{d[:6].hex()}", seq=depth))
                for i in range(d[0] % 3)]

    def finish(self, now_ns: int) -> list[Output]:
        d = self._h.hexdigest()
        return [Output(OUTPUTS[self.name][0], "K", Heartbeat(ts=now_ns, source=f"{self.name}-end-{d[:6]}", seq=3))]


def roots(n: int) -> list[Output]:
    out: list[Output] = []
    for i in range(n):
        ts = (i + 1) * 60
        out.append(Output(topics.MD_QUOTES, "K", Heartbeat(ts=ts, source=f"q{i}", seq=0)))
        out.append(Output(topics.MD_BARS, "K", Bar(ts=ts, symbol="K", open=1.0, high=2.0, low=1.0,
                                                   close=1 + i / 100, volume=1.0)))
    return out


def embedded(n: int) -> dict[str, list[bytes]]:
    """What the in-process bus publishes, per topic (the reference)."""
    bus = InProcessBus()
    published: dict[str, list[bytes]] = defaultdict(list)
    shared = ReplayClock()  # one clock for every stage, as in EmbeddedSession
    stages = [ToyStage(name, shared) for name in ORDER]
    for stage in stages:
        for topic in stage.inputs:
            def deliver(event: Event, s: ToyStage = stage, t: str = topic) -> None:
                for out in s.handle(t, event):
                    bus.publish(out.topic, out.key, out.event)
            bus.subscribe(topic, deliver, group=stage.name)
    for topic in topics.ALL_TOPICS:
        bus.subscribe(topic, lambda e, t=topic: published[t].append(encode_msgpack(e)), group="recorder")
    for out in roots(n):
        shared.advance_to(out.event.ts)
        bus.publish(out.topic, out.key, out.event)
    end = shared.now_ns()
    for stage in stages:
        for out in stage.finish(end):
            bus.publish(out.topic, out.key, out.event)
    return dict(published)


class FakeControl:
    """The control topic: one ordered list, a read position per reader."""

    def __init__(self, log: list[Done], fail_next_send: set[str]) -> None:
        self.log = log
        self.pos = 0
        self.prefix = "toy"
        self.fail_next_send = fail_next_send
        self.owner = ""

    def read_existing(self) -> list[Done]:
        self.pos = len(self.log)
        return list(self.log)

    def poll(self, _timeout: float) -> list[Done]:
        new = self.log[self.pos:]
        self.pos = len(self.log)
        return new

    def send(self, done: Done) -> None:
        if self.owner in self.fail_next_send:
            self.fail_next_send.discard(self.owner)
            raise RuntimeError("crash before the Done was acknowledged")
        self.log.append(done)

    def dead_letter(self, *_args: object) -> None:
        raise AssertionError("no handler fails here")


class FakeBroker:
    """Topics as lists; each consumer gets its topics in order per topic, interleaved at random."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.topics: dict[str, list[Event]] = defaultdict(list)
        self.read: dict[tuple[str, str], int] = defaultdict(int)

    def publisher(self) -> FakePublisher:
        return FakePublisher(self)

    def poll(self, who: str, participant: Participant) -> int:
        queues = {t: deque(self.topics[t][self.read[(who, t)]:]) for t in INPUTS.get(who, ())}
        taken = 0
        budget = self.rng.randint(0, 6)
        while taken < budget and any(queues.values()):
            topic = self.rng.choice([t for t, q in queues.items() if q])
            participant.receive(topic, queues[topic].popleft())
            self.read[(who, topic)] += 1
            taken += 1
        return taken

    def history(self, names: tuple[str, ...]) -> list[HistoryItem]:
        return [HistoryItem(t, 0, i, e) for t in names for i, e in enumerate(self.topics[t])]


class FakePublisher:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker

    def publish(self, topic: str, key: str, event: Event) -> None:
        # what a consumer gets: the event decoded from its wire bytes
        self.broker.topics[topic].append(decode_msgpack(encode_msgpack(event)))

    def flush(self, timeout_s: float | None = None) -> None:
        return None


def simulate(n: int, seed: int, crashes: dict[int, str] | None = None) -> tuple[dict[str, list[bytes]], int]:
    """Run the lockstep; ``crashes``: at scheduler tick k, participant p crashes before its next Done."""
    rng = random.Random(seed)
    broker = FakeBroker(rng)
    log: list[Done] = []
    failing: set[str] = set()
    topology = Topology.of(INPUTS, ORDER, ORDER)

    def make(name: str, restarted: bool) -> Participant:
        channel = FakeControl(log, failing)
        channel.owner = name
        if name == "ingest":
            p = Participant(name, publisher=broker.publisher(), source=iter(roots(n)), clock=ReplayClock(),
                            channel=channel, topology=topology)  # type: ignore[arg-type]
            p.start()
            return p
        stage = ToyStage(name)
        p = Participant(name, publisher=broker.publisher(), stage=stage, clock=stage.clock, channel=channel,
                        topology=topology)  # type: ignore[arg-type]
        p.start(broker.history(stage.inputs) if restarted else [])
        if restarted:
            for t in stage.inputs:
                broker.read[(name, t)] = len(broker.topics[t])
        return p

    members = {name: make(name, False) for name in ("ingest", *ORDER)}
    crashes = dict(crashes or {})
    ticks = 0
    while not all(p.complete for p in members.values()):
        ticks += 1
        assert ticks < 200_000, "lockstep did not finish"
        if ticks in crashes:
            failing.add(crashes.pop(ticks))
        name = rng.choice(list(members))
        p = members[name]
        try:
            p.step(lambda _t, w=name, q=p: broker.poll(w, q), 0.0)
        except RuntimeError:
            members[name] = make(name, True)  # the crashed process is gone; a new one starts
    rounds = members["ingest"].log.current.number if members["ingest"].log else 0
    published: dict[str, list[bytes]] = {}
    for topic, events in broker.topics.items():
        seen: list[bytes] = []
        for e in events:
            b = encode_msgpack(e)
            if not seen or b not in seen:
                seen.append(b)
        published[topic] = seen
    return published, rounds


def _dedupe(published: dict[str, list[bytes]]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for topic, values in published.items():
        kept: list[bytes] = []
        for v in values:
            if v not in kept:
                kept.append(v)
        out[topic] = kept
    return out


@pytest.mark.parametrize("seed", range(6))
def test_any_interleaving_publishes_what_the_embedded_bus_publishes(seed: int) -> None:
    reference = _dedupe(embedded(12))
    published, rounds = simulate(12, seed)
    assert rounds > 24
    assert published == reference


@pytest.mark.parametrize("seed", range(4))
def test_crashes_before_done_redo_the_round_and_change_nothing(seed: int) -> None:
    reference = _dedupe(embedded(10))
    rng = random.Random(100 + seed)
    crashes = {rng.randint(50, 3000): rng.choice(("ingest", *ORDER)) for _ in range(6)}
    published, _ = simulate(10, seed, crashes)
    assert published == reference


def test_round_log_turns_and_order() -> None:
    topo = Topology.of(INPUTS, ORDER, ORDER)
    rounds = RoundLog(topo)
    assert rounds.current.active == {"ingest"} and rounds.current.injector == "ingest"
    bar = Bar(ts=60, symbol="K", open=1, high=1, low=1, close=1, volume=1)
    root = Produced(topics.MD_BARS, event_digest(bar), ROOT_PATH)
    assert rounds.feed(Done(round=0, stage="ingest", produced=(root,), clock=60, injected=True))
    assert not rounds.feed(Done(round=0, stage="ingest", produced=(root,), clock=60, injected=True))
    r1 = rounds.current
    assert r1.number == 1 and r1.active == {"features", "signals", "oms"} and r1.clock_floor == 60
    assert rounds.expected("features", 1) == [root]
    a = Produced(topics.FEATURES, "a", child_path(ROOT_PATH, 0, 1))
    b = Produced(topics.FEATURES, "b", child_path(ROOT_PATH, 0, 0))
    c = Produced(topics.SIGNALS, "c", child_path(ROOT_PATH, 1, 0))
    rounds.feed(Done(round=1, stage="signals", produced=(c,), clock=0))
    rounds.feed(Done(round=1, stage="oms", produced=(), clock=61))
    assert rounds.current.number == 1
    rounds.feed(Done(round=1, stage="features", produced=(a, b), clock=0))
    r2 = rounds.current
    assert r2.active == {"signals", "risk", "oms"} and r2.clock_floor == 61
    # siblings in (stage, output index) order, whatever order the Dones came in
    assert rounds.expected("risk", 2) == [b, a, c]
    for stage in sorted(r2.active):
        rounds.feed(Done(round=2, stage=stage, produced=()))
    assert rounds.current.active == {"ingest"}  # the step is over: the injector's turn
    rounds.feed(Done(round=3, stage="ingest", injected=True, finished=True, end_ts=99))
    assert rounds.end_ts == 99 and rounds.current.injector == "features"
    for n, stage in enumerate(ORDER, start=4):
        assert not rounds.complete
        rounds.feed(Done(round=n, stage=stage, injected=True, finished=True))
    assert rounds.complete and rounds.roots["ingest"] == 1


def test_history_rebuild_reproduces_state_exactly() -> None:
    # a participant restarted after every round it had done rebuilds to the same hash
    reference, _ = simulate(6, seed=7)
    published, _ = simulate(6, seed=7, crashes={200: "risk", 400: "oms", 600: "features", 800: "signals"})
    assert published == reference



def test_free_running_restart_handles_what_was_committed_and_leaves_the_rest() -> None:
    bars = [Bar(ts=60 * (i + 1), symbol="K", open=1.0, high=1.0, low=1.0, close=1.0 + i, volume=1.0) for i in range(6)]
    history = [HistoryItem(topics.MD_BARS, 0, i, b) for i, b in enumerate(bars)]
    published: list[Event] = []

    class Collect:
        def publish(self, topic: str, key: str, event: Event) -> None:
            published.append(event)

        def flush(self, timeout_s: float | None = None) -> None:
            return None

    first = ToyStage("features")
    for b in bars[:4]:
        first.handle(topics.MD_BARS, b)
    restarted = ToyStage("features")
    p = Participant("features", publisher=Collect(), stage=restarted)
    p.start(history, {(topics.MD_BARS, 0): 4})
    assert published == []  # rebuilt quietly
    assert restarted._h.digest() == first._h.digest()
    p.receive(topics.MD_BARS, bars[3])  # a redelivery of a handled bar is dropped
    p.receive(topics.MD_BARS, bars[4])
    assert restarted._h.digest() != first._h.digest()
    first.handle(topics.MD_BARS, bars[4])
    assert restarted._h.digest() == first._h.digest()
