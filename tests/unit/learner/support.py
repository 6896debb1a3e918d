"""Builders for the learner tests: outcomes, feature vectors and synthetic series."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from services.core.events import FeatureVector, TradeOutcome

NS = 1_000_000_000
MIN = 60 * NS
T0 = 1_751_986_800 * NS  # 2025-07-08 15:00 UTC (11:00 New York)


def outcome(i: int, pnl: float, context: Mapping[str, float] | None = None, **kw: Any) -> TradeOutcome:
    """A closed trade ``i`` minutes after T0 (exit five minutes after entry)."""
    entry = T0 + i * MIN
    fields: dict[str, Any] = {
        "ts": entry + 5 * MIN,
        "id": f"t{i}",
        "underlying": "SPY",
        "playbook": "orb_calls",
        "contract": "SPY250708C00620000",
        "entry_ts": entry,
        "exit_ts": entry + 5 * MIN,
        "entry_price": 1.0,
        "exit_price": 1.0 + pnl / 100,
        "quantity": 1,
        "pnl": pnl,
        "mae": min(pnl, 0.0),
        "mfe": max(pnl, 0.0),
        "exit_reason": "take_profit" if pnl > 0 else "stop_loss",
        "reason": "test",
        "context": dict(context or {}),
    }
    fields.update(kw)
    return TradeOutcome(**fields)


def vector(i: int, close: float, symbol: str = "SPY", **values: float) -> FeatureVector:
    """The FeatureVector of bar ``i`` (one minute apart) with ``close`` and extra values."""
    return FeatureVector(ts=T0 + i * MIN, symbol=symbol, values={"close": close, **values})


def closes_from_returns(returns: np.ndarray, start: float = 600.0) -> list[float]:
    """Prices whose successive log returns are ``returns`` (one more price than returns)."""
    return [float(p) for p in start * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))]


def separable(n: int, seed: int) -> tuple[list[dict[str, float]], list[int]]:
    """Contexts whose label follows a logistic of adx_14 and rv_15 (AUC ~0.93 for the true model)."""
    rng = np.random.default_rng(seed)
    adx = rng.normal(25, 10, n)
    rv = rng.normal(0.2, 0.1, n)
    noise = rng.normal(100, 60, n)  # minutes_since_open: uninformative
    logit = 3.0 * (adx - 25) / 10 - 2.0 * (rv - 0.2) / 0.1
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    rows = [
        {"adx_14": float(a), "rv_15": float(r), "minutes_since_open": float(m)}
        for a, r, m in zip(adx, rv, noise, strict=True)
    ]
    return rows, [int(v) for v in y]
