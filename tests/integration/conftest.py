"""Real services for integration tests: one Kafka broker and one redis-server per test session.

Each is started once (Kafka's jars are fetched from Maven Central by scripts/fetch-kafka.sh the first
time) and stopped after the last test. Tests isolate themselves by session name: every test gets a
fresh ``session_name``, which prefixes its Kafka topics and consumer groups and its Redis keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.harness.kafka_broker import KafkaBroker
from tests.harness.mlflow_server import MlflowServer
from tests.harness.redis_server import RedisServer


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A KRaft single-node broker on 127.0.0.1; ``.bootstrap`` is its address."""
    broker = KafkaBroker()
    try:
        broker.start()
    except BaseException:
        broker.close()
        raise
    yield broker
    broker.close()


@pytest.fixture
def kafka(kafka_broker: KafkaBroker) -> KafkaBroker:
    """The session broker, restarted first if an earlier test left it stopped or crashed."""
    if kafka_broker.proc is None or kafka_broker.proc.poll() is not None:
        kafka_broker.start()
    return kafka_broker


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on 127.0.0.1; ``.url`` is its address."""
    server = RedisServer()
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    yield server
    server.close()


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
    """A private MLflow tracking server (SQLite backend) on 127.0.0.1; ``.uri`` is its address."""
    server = MlflowServer()
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    yield server
    server.close()


@pytest.fixture
def experiment(request: pytest.FixtureRequest) -> str:
    """An MLflow experiment name unique to this test."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    return f"it-{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def session_name(request: pytest.FixtureRequest) -> str:
    """A TradingSession name unique to this test (valid in Kafka topic names and Redis keys)."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:24].strip("-")
    return f"it-{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic_prefix(session_name: str) -> str:
    """What this test's Kafka topics start with (``<session>.``)."""
    return f"{session_name}."


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Make further unique names within a test, e.g. a second session or a consumer group."""

    def make(stem: str) -> str:
        return f"{stem}-{uuid.uuid4().hex[:8]}"

    return make
