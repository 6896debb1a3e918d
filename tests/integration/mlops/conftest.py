"""A real MLflow tracking server (SQLite backend, local artifact root) for the MLOps job tests.

Started once per test session by tests/harness/mlflow_server.py and stopped after the last test.
Each test logs into its own experiment, so tests never see each other's runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.harness.mlflow_server import MlflowServer


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
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
    """An experiment name unique to this test."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    return f"it-{stem}-{uuid.uuid4().hex[:8]}"
