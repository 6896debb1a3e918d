"""Services-mode benchmark: tick-to-order latency and sustained events/s through Kafka, next to the
embedded runner on the same events.

    python bench/pipeline_kafka.py [--rate 5000] [--sessions 2] [--quotes-per-bar 150]

Starts its own Kafka broker and redis-server (the test harness classes), launches features, signals,
risk and oms as processes (``services.launcher``, free-running: no lockstep) and plays a generated
SPY load into md.* itself: per 1-minute bar ``--quotes-per-bar`` top-of-book quotes, an option chain
every ``--chain-every`` bars and the bar, at ``--rate`` events per second, writing the ingest
heartbeat to Redis as the ingest does. A deliberately loose playbook (config copied to a temp dir)
makes nearly every bar in the entry window an intent, so there are orders to time.

Tick-to-order: from the bench publishing a bar (the tick that completes it) to the OMS's ``accepted``
OrderEvent of the entry that bar caused, as seen by a consumer of the executions topic in this
process (so it includes one more Kafka hop). Sustained events/s: events published / time until the
features stage has committed all of them. The embedded numbers are the same events through
:class:`~services.backtest.embedded.EmbeddedSession` (bar published to order accepted, in process).
Target: p99 tick-to-order < 20 ms at 5,000 events/s. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: E402

from services import launcher  # noqa: E402
from services.app.market_data import SYNTHETIC_START, synthetic_chain_source  # noqa: E402
from services.app.stages import STAGE_INPUTS, STAGE_ORDER  # noqa: E402
from services.backtest.embedded import EmbeddedSession  # noqa: E402
from services.core import keys, topics  # noqa: E402
from services.core.calendar import NS_PER_S, default_calendar  # noqa: E402
from services.core.events import Bar, Event, OrderEvent, Quote, decode_msgpack  # noqa: E402
from services.core.redis_state import RedisState  # noqa: E402
from services.core.session_config import SessionConfig  # noqa: E402
from services.core.settings import CONFIG_DIR  # noqa: E402
from services.core.stage import Output  # noqa: E402
from services.core.state import StateStore  # noqa: E402
from services.ingest.synthetic import synthetic_bars  # noqa: E402
from services.runtime.kafka_bus import KafkaBus, KafkaBusConfig  # noqa: E402
from services.runtime.lockstep import pipeline_lag  # noqa: E402
from tests.harness.kafka_broker import KafkaBroker  # noqa: E402
from tests.harness.redis_server import RedisServer  # noqa: E402

TARGET_P99_MS = 20.0
TARGET_RATE = 5_000
PLAYBOOK = {
    "name": "bench_calls",
    "description": "Benchmark only: buys a call on every bar in the entry window.",
    "symbols": ["SPY"],
    "direction": "call",
    "entry": [{"feature": "close", "op": ">", "value": 0}],
    "gates": {"event_halts": False},
    "contract": {"target": {"metric": "delta", "value": 0.40, "band": 0.25}, "max_spread": 1.0,
                 "max_spread_pct": 0.5, "min_bid": 0.01},
    "limit": {"at": "ask"},
    "bracket": {"mode": "premium", "take_profit_pct": 0.5, "stop_loss_pct": 0.3},
    "sizing": {"risk_per_trade_usd": 200, "max_contracts": 1},
    "cooldown_minutes": 1,
}


def bench_config(folder: Path) -> Path:
    """config/ copied, with one loose playbook and risk limits that let every intent through."""
    folder.mkdir(parents=True, exist_ok=True)
    for src in CONFIG_DIR.glob("*.yaml"):
        shutil.copy(src, folder / src.name)
    playbooks = yaml.safe_load((CONFIG_DIR / "playbooks.yaml").read_text(encoding="utf-8"))
    playbooks["playbooks"] = [PLAYBOOK]
    playbooks["calibration"]["path"] = None
    (folder / "playbooks.yaml").write_text(yaml.safe_dump(playbooks), encoding="utf-8")
    risk = yaml.safe_load((CONFIG_DIR / "risk.yaml").read_text(encoding="utf-8"))
    risk.update(max_daily_loss_usd=10_000_000, max_open_positions=100_000, max_premium_per_symbol_usd=1e9,
                max_premium_total_usd=1e9)
    risk["throttle"]["max_orders_per_minute"] = 100_000
    risk["cooldown"]["losses"] = 1_000_000
    risk["event_halts"]["path"] = str(folder / "events.yaml")
    (folder / "risk.yaml").write_text(yaml.safe_dump(risk), encoding="utf-8")
    return folder


@dataclass
class Load:
    """The generated events and, per bar end time, the index of the bar in ``events``."""

    events: list[Output]
    heartbeat_before: dict[int, int]  # event index -> heartbeat ts written just before it
    bars: int


def generate(sessions: int, quotes_per_bar: int, chain_every: int, seed: int = 7) -> Load:
    cal = default_calendar()
    chains = synthetic_chain_source(seed, cal)
    rng = np.random.default_rng(seed)
    events: list[Output] = []
    heartbeat: dict[int, int] = {}
    bars = synthetic_bars("SPY", SYNTHETIC_START, sessions, seed, 620.0)
    for n, bar in enumerate(bars):
        end = bar.ts + bar.interval_s * NS_PER_S
        heartbeat[len(events)] = end
        path = np.linspace(bar.open, bar.close, quotes_per_bar) + rng.normal(0, 0.02, quotes_per_bar)
        for i, px in enumerate(path):
            bid = round(max(float(px), 0.02), 2)
            ts = bar.ts + (i + 1) * bar.interval_s * NS_PER_S // (quotes_per_bar + 1)
            events.append(Output(topics.MD_QUOTES, "SPY", Quote(ts=ts, symbol="SPY", bid=bid, ask=round(bid + 0.01, 2),
                                                                bid_size=100.0, ask_size=100.0)))
        if n % chain_every == 0 and cal.is_open(bar.ts):
            chain = chains("SPY", bar.close, end)
            if chain is not None:
                events.append(Output(topics.MD_CHAIN, "SPY", chain))
        events.append(Output(topics.MD_BARS, "SPY", bar))
    return Load(events, heartbeat, len(bars))


@dataclass
class Result:
    label: str
    latencies_ms: list[float]
    events_per_s: float
    orders: int
    note: str = ""

    def line(self) -> str:
        lat = self.latencies_ms
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = float(np.percentile(lat, 99)) if lat else float("nan")
        return (f"{self.label:9s} {self.events_per_s:12,.0f} ev/s   tick-to-order p50 {p50:8.3f} ms  "
                f"p99 {p99:8.3f} ms  max {max(lat, default=float('nan')):8.3f} ms  ({self.orders} orders) {self.note}")


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bar_end_of(client_order_id: str) -> int | None:
    tail = client_order_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _entry_accepted(event: Event) -> str | None:
    if isinstance(event, OrderEvent) and event.leg == "entry" and event.status == "accepted":
        return event.client_order_id
    return None


def run_embedded(load: Load, config_dir: Path) -> Result:
    session = EmbeddedSession(SessionConfig(symbols=("SPY",), config_dir=config_dir, calibration={"path": None}))
    accepted: dict[str, int] = {}

    def on_execution(event: Event) -> None:
        coid = _entry_accepted(event)
        if coid is not None:
            accepted.setdefault(coid, time.perf_counter_ns())

    session.bus.subscribe(topics.EXECUTIONS, on_execution, group="bench")
    bar_sent: dict[int, int] = {}
    started = time.perf_counter()
    for i, out in enumerate(load.events):
        hb = load.heartbeat_before.get(i)
        if hb is not None:
            session.state.set(keys.INGEST_HEARTBEAT, orjson.dumps({"ts": hb, "seq": i}))
        if isinstance(out.event, Bar):
            bar_sent[out.event.ts + out.event.interval_s * NS_PER_S] = time.perf_counter_ns()
        session.publish(out)
    elapsed = time.perf_counter() - started
    lat = [(t - bar_sent[end]) / 1e6 for coid, t in accepted.items()
           if (end := _bar_end_of(coid)) is not None and end in bar_sent]
    return Result("embedded", lat, len(load.events) / elapsed, len(accepted))


class _ExecutionsReader(threading.Thread):
    def __init__(self, bootstrap: str, prefix: str, partitions: int) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 5,
                                  "socket.nagle.disable": True})
        name = topics.qualified(prefix, topics.EXECUTIONS)
        self.consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.accepted: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            first = self.consumer.poll(0.05)  # returns at the first message (consume(n, t) waits for n)
            if first is None:
                continue
            for msg in [first, *self.consumer.consume(500, 0)]:
                if msg.error() is None:
                    coid = _entry_accepted(decode_msgpack(msg.value() or b""))
                    if coid is not None:
                        self.accepted.setdefault(coid, time.perf_counter_ns())
        self.consumer.close()


def run_services(load: Load, config_dir: Path, rate: float, storage: Path) -> Result:
    with KafkaBroker() as broker, RedisServer() as redis:
        session = f"bench-{uuid.uuid4().hex[:6]}"
        partitions = 1
        env = {"DREAMBOT_CONFIG_DIR": str(config_dir), "DREAMBOT_CALIBRATION": "none", "DREAMBOT_LOG_LEVEL": "WARNING",
               "DREAMBOT_KAFKA_PARTITIONS": str(partitions)}
        dep = launcher.up(session, ["SPY"], None, kafka_bootstrap=broker.bootstrap, redis_url=redis.url,
                          storage=storage, stages=STAGE_ORDER, lockstep=False, env=env)
        try:
            bus = KafkaBus(KafkaBusConfig(bootstrap=broker.bootstrap, session=dep.prefix, linger_ms=1,
                                          producer={"socket.nagle.disable": True}))
            bus.ensure_topics(partitions=partitions)
            state: StateStore = RedisState(redis.url, session)
            reader = _ExecutionsReader(broker.bootstrap, dep.prefix, partitions)
            reader.start()
            bar_sent: dict[int, int] = {}
            interval_ns = int(1e9 / rate)
            pids = {n: svc.pid for n, svc in dep.processes.items()}
            pids["broker"] = broker.proc.pid if broker.proc is not None else 0
            pids["bench"] = os.getpid()
            cpu_before = {n: _cpu_s(pid) for n, pid in pids.items()}
            started = time.perf_counter_ns()
            for i, out in enumerate(load.events):
                due = started + i * interval_ns
                ahead = due - time.perf_counter_ns()
                if ahead > 1_000_000:  # pace in ~1 ms steps (no busy wait: the stages need the cores)
                    time.sleep(ahead / 1e9)
                hb = load.heartbeat_before.get(i)
                if hb is not None:
                    state.set(keys.INGEST_HEARTBEAT, orjson.dumps({"ts": hb, "seq": i}))
                bus.publish(out.topic, out.key, out.event)
                if isinstance(out.event, Bar):
                    bar_sent[out.event.ts + out.event.interval_s * NS_PER_S] = time.perf_counter_ns()
            bus.flush()
            sent_s = (time.perf_counter_ns() - started) / 1e9
            features_done = None
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                lag = pipeline_lag(broker.bootstrap, dep.prefix, STAGE_INPUTS)
                if features_done is None and not any(v for (s, _t), v in lag.items() if s == "features"):
                    features_done = (time.perf_counter_ns() - started) / 1e9
                if not any(lag.values()):
                    break
                time.sleep(0.05)
            busy_s = (time.perf_counter_ns() - started) / 1e9
            cpu = {n: (_cpu_s(pid) - cpu_before[n]) / busy_s for n, pid in pids.items()}
            time.sleep(0.5)
            reader.stop.set()
            reader.join(5)
            bus.close()
            done_s = features_done or float("nan")
            lat = [(t - bar_sent[end]) / 1e6 for coid, t in reader.accepted.items()
                   if (end := _bar_end_of(coid)) is not None and end in bar_sent]
            note = (f"(published at {len(load.events) / sent_s:,.0f} ev/s over {sent_s:.1f} s; cores used: "
                    + ", ".join(f"{n} {c:.2f}" for n, c in cpu.items()) + ")")
            return Result("kafka", lat, len(load.events) / done_s, len(reader.accepted), note)
        finally:
            dep.down(timeout_s=20)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rate", type=float, default=TARGET_RATE, help="events per second offered (default 5000)")
    p.add_argument("--sessions", type=int, default=2, help="synthetic SPY sessions of load (default 2)")
    p.add_argument("--quotes-per-bar", type=int, default=150)
    p.add_argument("--chain-every", type=int, default=2, help="an option chain every N bars (default 2)")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dreambot-bench-"))
    try:
        config_dir = bench_config(work / "config")
        load = generate(args.sessions, args.quotes_per_bar, args.chain_every)
        print(f"load: {len(load.events):,} events ({load.bars} bars, {args.quotes_per_bar} quotes per bar, "
              f"a chain every {args.chain_every} bars), offered at {args.rate:,.0f} events/s")
        embedded = run_embedded(load, config_dir)
        kafka = run_services(load, config_dir, args.rate, work / "services")
        print(embedded.line())
        print(kafka.line())
        p99 = float(np.percentile(kafka.latencies_ms, 99)) if kafka.latencies_ms else float("nan")
        verdict = "met" if p99 < TARGET_P99_MS and kafka.events_per_s >= args.rate * 0.95 else "NOT met"
        print(f"target p99 tick-to-order < {TARGET_P99_MS:g} ms at {args.rate:,.0f} events/s: {verdict}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
