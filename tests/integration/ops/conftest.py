"""The nightly job's real neighbours: the Polygon sim and history of the sync tests, and an MLflow server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.harness.mlflow_server import MlflowServer
from tests.integration.backtest.conftest import history, polygon_sim, sim

__all__ = ["experiment", "history", "mlflow_server", "polygon_sim", "sim"]


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
