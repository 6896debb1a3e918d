"""Feature names of the FeatureVector wire schema: what the features stage computes and what
playbooks and the learner may reference (one list, shared by every stage)."""

from __future__ import annotations

from typing import Final

UNDERLYING_FEATURES: Final[tuple[str, ...]] = (
    "close",
    "vwap",
    "vwap_upper_1",
    "vwap_upper_2",
    "vwap_upper_3",
    "vwap_lower_1",
    "vwap_lower_2",
    "vwap_lower_3",
    "vwap_sigma",
    "atr_14",
    "adx_14",
    "plus_di_14",
    "minus_di_14",
    "rv_5",
    "rv_15",
    "rv_30",
    "rv_60",
    "or_high_15",
    "or_low_15",
    "or_high_30",
    "or_low_30",
    "or_breakout_15",
    "or_breakout_30",
    "vwap_dist_atr",
    "minutes_since_open",
    "minutes_to_close",
    "spread",
    "spread_bps",
    "microprice",
    "ofi",
    "trade_imbalance",
    "quote_intensity",
    "trade_intensity",
)
"""Features the FeatureEngine computes from bars, quotes and trades (mirrors services/features/engine.py)."""

CHAIN_FEATURES: Final[tuple[str, ...]] = (
    "atm_iv",
    "atm_iv_next",
    "skew_25d",
    "term_slope",
    "svi_rmse",
    "svi_arb_free",
    "chain_contracts",
    "chain_iv_ok_frac",
)
"""Features the FeatureEngine takes from the chain (mirrors services/options/chain.py summarize)."""

KNOWN_FEATURES: Final[frozenset[str]] = frozenset(UNDERLYING_FEATURES + CHAIN_FEATURES)
"""Every feature name a playbook may reference."""
