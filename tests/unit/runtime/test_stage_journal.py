"""A services-mode stage journals what it handled live, once: never the events a rebuild handles again,
never a batch before it is acknowledged, never a batch the Kafka adapter rewinds.

The real features stage (recorded SPY bars) is driven by a real free-running Participant with the real
ServiceHooks and StageJournal feeding a real JournalRecorder/JournalWriter in a temporary folder; only
Kafka is replaced, by a publisher that keeps what it is given.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.app.journal_recorder import JournalRecorder
from services.app.market_data import load_market_data
from services.app.stage_builders import build_features_service
from services.app.stages import build_features
from services.core import topics
from services.core.calendar import default_calendar
from services.core.datasets import SAMPLE_BARS
from services.core.events import Bar, FeatureVector
from services.core.journal import JournalWriter, read_table
from services.core.metrics import StageMetrics
from services.core.session_config import SessionConfig
from services.runtime.lockstep import HistoryItem, Participant
from services.runtime.service import ServiceContext, ServiceHooks, StageJournal
from tests.unit.risk.test_metrics import Published

SESSION = "unit-journal"


@pytest.fixture(scope="module")
def bars() -> list[Bar]:
    data = load_market_data(["SPY"], SAMPLE_BARS)
    return list(data.bars["SPY"])[:60]


def _participant(root: Path) -> tuple[Participant, Published, StageJournal]:
    calendar = default_calendar()
    stage = build_features(SessionConfig(symbols=("SPY",)), calendar)
    journal = StageJournal(JournalRecorder(JournalWriter(root, SESSION, flush_seconds=0), calendar),
                           (topics.MD_BARS, topics.MD_CHAIN))
    hooks = ServiceHooks(StageMetrics("features"))
    hooks.journal = journal
    publisher = Published()
    return Participant("features", publisher=publisher, stage=stage, hooks=hooks), publisher, journal


def test_rebuilt_events_are_not_journaled_and_live_ones_are_after_the_commit(tmp_path: Path, bars: list[Bar]) -> None:
    participant, publisher, journal = _participant(tmp_path)
    history = [HistoryItem(topics.MD_BARS, 0, i, bar) for i, bar in enumerate(bars[:40])]
    # A restart: the first 40 bars were handled (committed) by the run before; the rebuild handles them
    # again quietly.
    participant.start(history, {(topics.MD_BARS, 0): 40})
    assert publisher.events == []
    journal.close()
    assert read_table(tmp_path, "features").empty

    participant, publisher, journal = _participant(tmp_path)
    participant.start(history, {(topics.MD_BARS, 0): 40})
    for bar in bars[40:]:
        participant.receive(topics.MD_BARS, bar)
    # Handled and published, not yet acknowledged: nothing journaled.
    assert len(publisher.events) == 20
    journal.sink.close()  # flushes the writer; the pending rows are not in it
    assert read_table(tmp_path, "features").empty

    participant, publisher, journal = _participant(tmp_path)
    participant.start(history, {(topics.MD_BARS, 0): 40})
    for bar in bars[40:]:
        participant.receive(topics.MD_BARS, bar)
    participant.batch_committed()
    journal.close()
    rows = read_table(tmp_path, "features", session=SESSION)
    vectors = [e for t, e in publisher.events if t == topics.FEATURES]
    assert list(rows["ts"]) == [v.ts for v in vectors]
    assert list(rows["open"]) == [b.open for b in bars[40:]]
    # The rebuilt state carries into the live rows (a 14-bar ATR exists from the first live bar on).
    assert rows["atr_14"].notna().all()


def test_a_rewound_batch_is_journaled_once_when_handled_again(tmp_path: Path, bars: list[Bar]) -> None:
    participant, publisher, journal = _participant(tmp_path)
    participant.start()
    for bar in bars[:10]:
        participant.receive(topics.MD_BARS, bar)
    participant.batch_committed()
    for bar in bars[10:20]:
        participant.receive(topics.MD_BARS, bar)
    participant.batch_failed()  # outputs not acknowledged: the adapter delivers the batch again
    journal.discard()
    for bar in bars[10:20]:
        participant.receive(topics.MD_BARS, bar)
    participant.batch_committed()
    journal.close()
    rows = read_table(tmp_path, "features", session=SESSION)
    vectors = [e for _t, e in publisher.events if isinstance(e, FeatureVector)]
    assert len(vectors) == 30
    # The journal holds the acknowledged batches' vectors: the first and the redelivered one, not the rewound.
    acknowledged = vectors[:10] + vectors[20:]
    assert sorted(rows["ts"]) == sorted(v.ts for v in acknowledged)
    assert sorted(rows["close"]) == sorted(v.values["close"] for v in acknowledged)
    assert len(rows) == 20


def test_a_failing_journal_does_not_stop_the_stage_and_recovers(tmp_path: Path, bars: list[Bar]) -> None:
    root = tmp_path / "parquet"
    root.write_text("a file where the journal's folder should be")
    calendar = default_calendar()
    stage = build_features(SessionConfig(symbols=("SPY",)), calendar)
    journal = StageJournal(JournalRecorder(JournalWriter(root, SESSION, flush_rows=1, flush_seconds=0), calendar),
                           (topics.MD_BARS,))
    first = stage.handle(topics.MD_BARS, bars[0])
    journal.handled(topics.MD_BARS, bars[0], first)
    journal.commit()  # the writer cannot make its folder: logged and counted, nothing raised
    assert journal.failed == 1
    root.unlink()
    second = stage.handle(topics.MD_BARS, bars[1])
    journal.handled(topics.MD_BARS, bars[1], second)
    journal.commit()
    journal.close()
    # The writer kept the row it could not write: both are on disk once the folder can be made.
    assert list(read_table(root, "features")["ts"]) == [first[0].event.ts, second[0].event.ts]


def test_the_features_builder_journals_to_the_session_storage_unless_turned_off(tmp_path: Path) -> None:
    config = SessionConfig(name="wired", symbols=("SPY",), storage_dir=tmp_path)
    parts = build_features_service(ServiceContext("features", config, StageMetrics("features"), default_calendar()))
    journal = parts.journal
    assert journal is not None and journal.inputs == {topics.MD_BARS, topics.MD_CHAIN}
    assert isinstance(journal.sink, JournalRecorder)
    assert (journal.sink.writer.root, journal.sink.writer.session) == (tmp_path / "parquet", "wired")
    journal.close()
    off = SessionConfig(name="wired", symbols=("SPY",), storage_dir=tmp_path, journal=False)
    assert build_features_service(ServiceContext("features", off, StageMetrics("features"),
                                                 default_calendar())).journal is None
