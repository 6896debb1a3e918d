"""Parity with the learner on: ``--learner frozen`` through Kafka + Redis, one process per stage
(the learner in the lockstep), equals the embedded run.

The frozen policy is built by hand: no bandit evidence, an abstain value above the unseen arms' 0.5
and 30% exploration, so the bandit abstains on most candidates and explores on the rest — what
signals publishes depends on every draw and on the learner's RegimeChanges arriving in the embedded
order. Real Kafka broker and redis-server (tests/integration/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from services import launcher
from services.app.market_data import load_market_data
from services.app.stages import build_replay_feed
from services.backtest.embedded import EmbeddedSession
from services.core import topics
from services.core.events import RegimeChange, SignalIntent, decode_msgpack, encode_msgpack
from services.core.learner_policy import LearnerPolicy, PolicyBucket, encode_policy
from services.core.session_config import SessionConfig
from services.core.settings import CONFIG_DIR
from tests.harness.kafka_broker import KafkaBroker
from tests.integration.services.conftest import (
    APPROVAL_KEY,
    COMPARED,
    DATA,
    SYMBOLS,
    Launch,
    Published,
    assert_same,
    event_key,
    new_session,
    read_published,
    read_topic,
)

pytestmark = pytest.mark.integration

LOCKSTEP = "features,signals,risk,oms,learner"


def write_policy(path: Path) -> Path:
    policy = LearnerPolicy(version=1, trained_through=0, trades=0, seed=11, epsilon=0.3, abstain_value=0.55,
                           buckets=(PolicyBucket("adx_14", (20.0, 30.0)),))
    path.write_bytes(encode_policy(policy))
    return path


def embedded(model: Path) -> tuple[Published, list[bytes]]:
    data = load_market_data(list(SYMBOLS), DATA)
    config = SessionConfig(symbols=SYMBOLS, config_dir=CONFIG_DIR, calibration={"path": None},
                           approval_key=SecretStr(APPROVAL_KEY), learner={"mode": "frozen", "model": model})
    session = EmbeddedSession(config)
    published = Published()
    learner: list[bytes] = []
    for topic in COMPARED:
        session.bus.subscribe(topic, lambda e, t=topic: published.add(t, event_key(e), encode_msgpack(e)),
                              group="reference")
    session.bus.subscribe(topics.LEARNER, lambda e: learner.append(encode_msgpack(e)), group="reference")
    session.run(build_replay_feed(data.bars, session.state, session.calendar))
    return published, learner


def test_frozen_learner_through_kafka_equals_embedded(launch: Launch, broker: KafkaBroker, tmp_path: Path) -> None:
    model = write_policy(tmp_path / "policy.json")
    want, want_learner = embedded(model)
    intents = [e for e in want.events(topics.SIGNALS) if isinstance(e, SignalIntent)]
    assert intents and all("bandit chose" in i.reason for i in intents)
    assert any(isinstance(decode_msgpack(v), RegimeChange) for v in want_learner)

    env = {"DREAMBOT_LEARNER": "frozen", "DREAMBOT_LEARNER_MODEL": str(model), "DREAMBOT_LOCKSTEP_STAGES": LOCKSTEP}
    dep = launch(new_session("learner"), stages=(*launcher.STAGES, "learner"), env=env)
    dep.wait_replay(timeout_s=900)
    got = read_published(broker.bootstrap, dep.prefix)
    assert_same(got, want)
    learner = [v for _, v in read_topic(broker.bootstrap, topics.qualified(dep.prefix, topics.LEARNER))]
    assert sorted(learner) == sorted(want_learner)
