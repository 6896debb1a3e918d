"""Services mode writes the session's parquet journal: the real SPY session through Kafka + Redis.

One lockstep replay (module fixture) of the bundled session with every stage in its own process and the
journal under a temporary ``DREAMBOT_STORAGE_DIR``. Mid-replay the features stage and then the OMS (with
a position open) are stopped with SIGTERM and started again, so each rebuilds its state from its input
history. The journal is then read with pandas (pyarrow's hive partitions) and with DuckDB, and compared
with what the stages published on Kafka (read back independently of the journal): one features row per
bar, every OrderEvent once in ``orders``, the filled ones in ``fills``, every TradeOutcome in ``trades``,
the chain rows of every md.chain snapshot — and no row twice, restarts included. A second replay kills
(SIGKILL) the same stages: the journal then misses what had not been flushed before each kill (the
restarted stage rebuilds without journaling), but never holds a row twice or one that was not published.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from confluent_kafka import Consumer, TopicPartition

from services import launcher
from services.app.journal_recorder import chain_rows
from services.core import topics
from services.core.calendar import default_calendar
from services.core.events import Bar, ChainSnapshot, Event, FeatureVector, OrderEvent, TradeOutcome, decode_msgpack
from services.core.feature_names import CHAIN_FEATURES, UNDERLYING_FEATURES
from services.core.journal import is_fill, read_table
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.redis_server import RedisServer
from tests.integration.services.conftest import (
    DATA,
    STAGE_ENV,
    SYMBOLS,
    Reference,
    new_session,
    read_topic,
)

pytestmark = pytest.mark.integration

# (FeatureVectors on the topic, stage to stop and start again): a position is open around bar 350.
RESTARTS = [(200, "features"), (350, "oms")]


@dataclass
class Run:
    session: str
    journal: Path
    bars: list[Bar]
    vectors: list[FeatureVector]
    chains: list[ChainSnapshot]
    executions: list[OrderEvent]
    outcomes: list[TradeOutcome]
    rebuilt: dict[str, str]
    exit_codes: dict[str, int | None]
    flushed_while_running: dict[str, int]


def _distinct(bootstrap: str, prefix: str, topic: str) -> list[Event]:
    """Every event on ``topic`` once (a restarted stage may publish a byte-identical copy again)."""
    seen: set[bytes] = set()
    out: list[Event] = []
    for _key, value in read_topic(bootstrap, topics.qualified(prefix, topic)):
        if value not in seen:
            seen.add(value)
            out.append(decode_msgpack(value))
    return out


def _feature_count(bootstrap: str, prefix: str) -> Callable[[], int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "journal-progress-probe"})
    name = topics.qualified(prefix, topics.FEATURES)
    parts = [TopicPartition(name, p) for p in consumer.list_topics(name, timeout=10).topics[name].partitions]
    return lambda: sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)


def _rows_on_disk(root: Path, session: str) -> dict[str, int]:
    return {t: len(read_table(root, t, session=session)) for t in ("features", "orders", "trades")}


@pytest.fixture(scope="module")
def run(broker: KafkaBroker, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("journal")
    session = new_session("journal")
    env = {**STAGE_ENV, "DREAMBOT_STORAGE_DIR": str(base / "store")}
    dep = launcher.up(session, SYMBOLS, DATA, kafka_bootstrap=broker.bootstrap, redis_url=redis.url,
                      storage=base / "services", env=env)
    try:
        done = _feature_count(broker.bootstrap, dep.prefix)
        for at, stage in RESTARTS:
            deadline = time.monotonic() + 180
            while done() < at:
                assert time.monotonic() < deadline, f"replay stuck before bar {at}"
                time.sleep(0.01)
            assert dep.stop(stage) == 0, f"{stage} did not stop cleanly"
            dep.start(stage)
        dep.wait_replay(timeout_s=300)
        journal = base / "store" / "parquet"
        # While the stages still run, the timer flush (every 5 s) brings every row to disk.
        expected_features = done()
        deadline = time.monotonic() + 60
        while (on_disk := _rows_on_disk(journal, session))["features"] < expected_features:
            assert time.monotonic() < deadline, f"journal not flushed while running: {on_disk}"
            time.sleep(0.5)
        bootstrap, prefix = broker.bootstrap, dep.prefix
        rebuilt = {name: dep.processes[name].log.read_text(errors="replace") for name in ("features", "oms")}
        exit_codes = dep.down(timeout_s=30)
    except BaseException:
        dep.down(timeout_s=10)
        raise
    yield Run(
        session=session, journal=journal,
        bars=[e for e in _distinct(bootstrap, prefix, topics.MD_BARS) if isinstance(e, Bar)],
        vectors=[e for e in _distinct(bootstrap, prefix, topics.FEATURES) if isinstance(e, FeatureVector)],
        chains=[e for e in _distinct(bootstrap, prefix, topics.MD_CHAIN) if isinstance(e, ChainSnapshot)],
        executions=[e for e in _distinct(bootstrap, prefix, topics.EXECUTIONS) if isinstance(e, OrderEvent)],
        outcomes=[e for e in _distinct(bootstrap, prefix, topics.OUTCOMES) if isinstance(e, TradeOutcome)],
        rebuilt=rebuilt, exit_codes=exit_codes, flushed_while_running=on_disk)


def test_the_restarted_stages_rebuilt_and_everything_stopped_cleanly(run: Run) -> None:
    for name in ("features", "oms"):
        assert '"state rebuilt"' in run.rebuilt[name], f"{name} did not rebuild from its history"
    assert set(run.exit_codes.values()) == {0}
    assert run.flushed_while_running["features"] == len(run.vectors)
    print(f"journal of {run.session}: {len(run.bars)} bars, {len(run.chains)} chain snapshots, "
          f"{len(run.executions)} order events, {sum(is_fill(e) for e in run.executions)} fills, "
          f"{len(run.outcomes)} trades; on disk before the stop: {run.flushed_while_running}")


def test_one_features_row_per_bar_replayed(run: Run, embedded_reference: Reference) -> None:
    rows = read_table(run.journal, "features", session=run.session)
    assert len(run.bars) > 300 and len(run.vectors) == len(run.bars)
    assert len(rows) == len(run.bars)
    assert not rows.duplicated(["symbol", "ts"]).any()
    by_ts = {v.ts: v for v in run.vectors}
    assert sorted(rows["ts"]) == sorted(by_ts)
    # Each row carries its bar (in bar order) and its vector's values.
    assert list(rows["open"]) == [b.open for b in sorted(run.bars, key=lambda b: b.ts)]
    assert list(rows["volume"]) == [b.volume for b in sorted(run.bars, key=lambda b: b.ts)]
    names = [c for c in rows.columns if c in UNDERLYING_FEATURES or c in CHAIN_FEATURES]
    for row in rows.to_dict("records"):
        values = by_ts[row["ts"]].values
        # A value the vector has is in the row; one it lacks is null, never 0.
        assert {n: row[n] for n in names if n in values} == pytest.approx({n: values[n] for n in names if n in values},
                                                                          nan_ok=True)
        assert all(math.isnan(row[n]) for n in names if n not in values)
    # And equal to what the embedded run computed for the same bars.
    embedded = [e for e in embedded_reference.published.events(topics.FEATURES) if isinstance(e, FeatureVector)]
    assert sorted(rows["ts"]) == sorted(v.ts for v in embedded)


def test_orders_fills_and_trades_are_what_the_oms_published_once(run: Run) -> None:
    orders = read_table(run.journal, "orders", session=run.session)
    fills = read_table(run.journal, "fills", session=run.session)
    trades = read_table(run.journal, "trades", session=run.session)
    assert run.executions and run.outcomes, "the replay traded nothing"
    # Every OrderEvent id exactly once (the OMS was restarted with a position open).
    assert orders["id"].is_unique
    assert Counter(orders["id"]) == Counter(e.id for e in run.executions)
    published = {e.id: e for e in run.executions}
    for row in orders.itertuples():
        event = published[row.id]
        assert (row.ts, row.status, row.leg, row.filled_quantity) == (
            event.ts, event.status, event.leg, event.filled_quantity)
    filled = [e for e in run.executions if is_fill(e)]
    assert filled
    assert sorted(fills["id"]) == sorted(e.id for e in filled)
    assert list(fills.sort_values("id")["fill_price"]) == [e.fill_price for e in sorted(filled, key=lambda e: e.id)]
    assert trades["id"].is_unique
    assert sorted(trades["id"]) == sorted(o.id for o in run.outcomes)
    assert trades["pnl"].sum() == pytest.approx(sum(o.pnl for o in run.outcomes))


def test_chain_rows_of_every_snapshot(run: Run) -> None:
    rows = read_table(run.journal, "chain", session=run.session)
    calendar = default_calendar()
    expected = [r for snap in run.chains for r in chain_rows(snap, calendar)]
    assert expected and len(rows) == len(expected)
    assert not rows.duplicated(["ts", "expiry", "strike", "right"]).any()
    assert sorted(set(rows["ts"])) == sorted({r["ts"] for r in expected})


def test_pandas_and_duckdb_read_the_partitions(run: Run) -> None:
    # pandas over pyarrow's hive partitioning: session and date become columns.
    frame = pd.read_parquet(run.journal / "orders")
    mine = frame[frame["session"] == run.session]
    assert len(mine) == len(run.executions)
    assert set(mine["date"].astype(str)) == {"2025-07-09"}
    with duckdb.connect() as db:

        def counts(table: str, key: str) -> tuple[int, int]:
            got = db.execute(f"select count(*), count(distinct {key}) from read_parquet(?, hive_partitioning = true)"
                             " where session = ?", [str(run.journal / table / "**" / "*.parquet"), run.session])
            row = got.fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

        features, orders, fills, trades = (counts("features", "ts"), counts("orders", "id"), counts("fills", "id"),
                                           counts("trades", "id"))
        pnl = db.execute("select sum(pnl) from read_parquet(?, hive_partitioning = true) where session = ?",
                         [str(run.journal / "trades" / "**" / "*.parquet"), run.session]).fetchone()
    assert features == (len(run.bars), len(run.bars))
    assert orders == (len(run.executions), len(run.executions))
    n_fills = sum(is_fill(e) for e in run.executions)
    assert fills == (n_fills, n_fills)
    assert trades == (len(run.outcomes), len(run.outcomes))
    assert pnl is not None and pnl[0] == pytest.approx(sum(o.pnl for o in run.outcomes))


def test_a_crash_loses_at_most_the_unflushed_rows_and_never_duplicates(
        broker: KafkaBroker, redis: RedisServer, tmp_path: Path) -> None:
    """SIGKILL (no clean stop): the features stage and the OMS, with a position open. Their journal may
    miss the rows of the last flush_seconds before each kill; what it holds was published, once."""
    session = new_session("journal-kill")
    env = {**STAGE_ENV, "DREAMBOT_STORAGE_DIR": str(tmp_path / "store")}
    dep = launcher.up(session, SYMBOLS, DATA, kafka_bootstrap=broker.bootstrap, redis_url=redis.url,
                      storage=tmp_path / "services", env=env)
    try:
        done = _feature_count(broker.bootstrap, dep.prefix)
        published_before: dict[str, int] = {}  # events on the stage's output topic when it was last killed
        for at, stage, output in [(250, "features", topics.FEATURES), (347, "oms", topics.EXECUTIONS),
                                  (400, "oms", topics.EXECUTIONS)]:
            deadline = time.monotonic() + 180
            while done() < at:
                assert time.monotonic() < deadline, f"replay stuck before bar {at}"
                time.sleep(0.005)
            dep.kill(stage)
            published_before[stage] = len(_distinct(broker.bootstrap, dep.prefix, output))
            dep.start(stage)
        dep.wait_replay(timeout_s=300)
        assert set(dep.down(timeout_s=30).values()) == {0}
    except BaseException:
        dep.down(timeout_s=10)
        raise
    journal = tmp_path / "store" / "parquet"
    vector_list = [e for e in _distinct(broker.bootstrap, dep.prefix, topics.FEATURES) if isinstance(e, FeatureVector)]
    execution_list = [e for e in _distinct(broker.bootstrap, dep.prefix, topics.EXECUTIONS)
                      if isinstance(e, OrderEvent)]
    vectors = {e.ts for e in vector_list}
    executions = Counter(e.id for e in execution_list)
    outcomes = {e.id for e in _distinct(broker.bootstrap, dep.prefix, topics.OUTCOMES) if isinstance(e, TradeOutcome)}
    features = read_table(journal, "features", session=session)
    orders = read_table(journal, "orders", session=session)
    trades = read_table(journal, "trades", session=session)
    assert features["ts"].is_unique and set(features["ts"]) <= vectors
    assert orders["id"].is_unique and set(orders["id"]) <= set(executions)
    assert trades["id"].is_unique and set(trades["id"]) <= outcomes
    # What the restarted process published (after the last kill; it then stopped cleanly) is all there.
    assert {v.ts for v in vector_list[published_before["features"]:]} <= set(features["ts"])
    assert {e.id for e in execution_list[published_before["oms"]:]} <= set(orders["id"])
    print(f"after SIGKILLs: features {len(features)}/{len(vectors)}, orders {len(orders)}/{len(executions)}, "
          f"trades {len(trades)}/{len(outcomes)} rows journaled")
