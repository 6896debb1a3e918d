"""Chain analytics on the real recordings: SPXW end-of-day chains and SPY 1-minute puts."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from services.core.calendar import iso_ny, ny_date
from services.core.datasets import SPXW_CHAINS, SPY_PUTS_1MIN
from services.ingest.chains import read_spxw_eod_chains, read_spy_puts_1min
from services.options.chain import analyze_chain, chain_features
from services.options.implied_vol import IVStatus
from tests.realdata import require_real

pytestmark = pytest.mark.realdata

# SPY puts expiring 2024-06-07, recorded 2024-06-03: the Fed funds rate was 5.33 %.
SPY_RATE_2024_06 = 0.0533


def test_spxw_ivs_from_mids_agree_with_the_vendor() -> None:
    """Our IVs (Black-76 on the parity forward, t to the 16:00 close ACT/365, rate 0) vs ``impliedvol``.

    Compared on two-sided out-of-the-money quotes: for deep in-the-money strikes the vendor prints
    one constant IV per day (e.g. 0.1067 for every call at and below 2650 on 2018-01-09), a
    placeholder, and on the expiry date itself (t = 0 at the close) 0.3 for everything. Bound 0.015:
    the vendor's own rate/dividend/time conventions and an underlying print not synchronous with the
    option quotes move its IVs by tenths of a vol point (the median half-spread is ~0.3 vol points);
    a real convention error, such as a wrong year fraction or forward, moves them by whole points.
    """
    path = require_real(SPXW_CHAINS)
    vendor: dict[tuple[str, str], float] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            vendor[(row["quotedate"], row["optionroot"])] = float(row["impliedvol"])
    diffs, diffs_all, half_spreads = [], [], []
    for snap in read_spxw_eod_chains(path).snapshots:
        a = analyze_chain(snap, snap.ts)
        day = ny_date(snap.ts).strftime("%m/%d/%Y")
        fwd = a.forward
        for i in np.flatnonzero((a.status == IVStatus.OK) & ~a.zero_bid):
            diff = abs(float(a.iv[i]) - vendor[(day, str(a.symbol[i]))])
            diffs_all.append(diff)
            if bool(a.is_call[i]) == (a.strike[i] >= fwd[i]):
                diffs.append(diff)
                half_spreads.append(0.5 * a.spread[i] / a.vega[i])
    median = float(np.median(diffs))
    print(
        f"\nSPXW Jan 2018: median |iv - vendor| = {median:.4f} over {len(diffs)} OTM two-sided quotes "
        f"(all OK quotes incl. ITM placeholders: {np.median(diffs_all):.4f} over {len(diffs_all)}); "
        f"median half-spread in vol {np.median(half_spreads):.4f}"
    )
    assert len(diffs) > 2000
    assert median < 0.015


def test_spxw_chain_features_every_day() -> None:
    snaps = read_spxw_eod_chains(require_real(SPXW_CHAINS)).snapshots
    for snap in snaps:
        feats = chain_features(snap, snap.ts)
        assert all(math.isfinite(v) for v in feats.values())
        if ny_date(snap.ts).isoformat() < "2018-01-31":
            assert 0.04 < feats["atm_iv"] < 0.4 and feats["skew_25d"] > 0.0
        else:  # the expiry date itself, stamped at its close: nothing left to analyse
            assert "atm_iv" not in feats and feats["chain_iv_ok_frac"] == 0.0


def test_spy_put_smiles_per_minute() -> None:
    """A smile fit every minute; butterfly-arbitrage-free, else reported with its worst g(k)."""
    snaps = read_spy_puts_1min(require_real(SPY_PUTS_1MIN)).snapshots
    assert len(snaps) == 29
    free = 0
    report: list[str] = []
    for snap in snaps:
        a = analyze_chain(snap, snap.ts, rate=SPY_RATE_2024_06)
        e = a.expiries[0]
        assert not e.forward_from_parity  # puts only: spot carried at the rate
        assert e.svi is not None and e.svi.iv_rmse is not None and e.svi.iv_rmse < 0.02
        assert e.atm_iv is not None and 0.05 < e.atm_iv < 0.3
        if e.svi.butterfly_arbitrage_free:
            free += 1
        else:
            report.append(f"{iso_ny(snap.ts)} min g {e.svi.min_g:.1e}")
    print(f"\nSPY puts 2024-06-03 10:00-10:28: {free}/{len(snaps)} minutes arbitrage-free; others: {report}")
    assert free >= 0.9 * len(snaps)
