"""The Tradier sim fixture of tests/unit/sim, for the composition root's broker tests."""

from tests.unit.sim.conftest import tradier

__all__ = ["tradier"]
