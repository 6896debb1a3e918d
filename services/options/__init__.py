"""Options analytics: Black-Scholes Greeks, chain implied vols, probabilities, SVI smiles, chain features.

Conventions (time ACT/365 to the calendar close, Black-76 on the forward, Greeks per unit) are in
:mod:`.black_scholes`; quote handling (mids, zero bids, parity forwards) in :mod:`.chain`. The
array solver ``implied_vol`` is not re-exported here: the name belongs to its module.
"""

from services.options.black_scholes import (
    Greeks,
    black76_greeks,
    black76_price,
    bsm_greeks,
    bsm_price,
    expiry_time_ns,
    time_to_expiry,
    year_fraction,
)
from services.options.chain import ChainAnalysis, ExpiryAnalysis, analyze_chain, chain_features
from services.options.implied_vol import (
    VEGA_FLOOR,
    IVResult,
    IVStatus,
    implied_vol_bsm,
    implied_vol_greeks,
    implied_vol_scalar,
)
from services.options.probability import prob_itm, prob_touch
from services.options.svi import (
    SVIFit,
    SVIParams,
    butterfly_g,
    fit_svi,
    is_butterfly_arbitrage_free,
    svi_implied_vol,
    svi_total_variance,
)

__all__ = [
    "VEGA_FLOOR",
    "ChainAnalysis",
    "ExpiryAnalysis",
    "Greeks",
    "IVResult",
    "IVStatus",
    "SVIFit",
    "SVIParams",
    "analyze_chain",
    "black76_greeks",
    "black76_price",
    "bsm_greeks",
    "bsm_price",
    "butterfly_g",
    "chain_features",
    "expiry_time_ns",
    "fit_svi",
    "implied_vol_bsm",
    "implied_vol_greeks",
    "implied_vol_scalar",
    "is_butterfly_arbitrage_free",
    "prob_itm",
    "prob_touch",
    "svi_implied_vol",
    "svi_total_variance",
    "time_to_expiry",
    "year_fraction",
]
