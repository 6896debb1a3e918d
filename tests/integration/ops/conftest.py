"""The nightly job's real neighbours: the Polygon sim and history of the sync tests (the MLflow server
and per-test experiments come from tests/integration/conftest.py)."""

from __future__ import annotations

from tests.integration.backtest.conftest import history, polygon_sim, sim

__all__ = ["history", "polygon_sim", "sim"]
