"""The learner page's pure parts: the view from Redis or an output folder, and its rendering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.core import keys, shared_state
from services.core.learner_policy import ArmStats, LearnerPolicy, MetaMember, MetaModel, PolicyBucket, encode_policy
from services.core.shared_state import ChangePointView, LearnerArmView, LearnerModelView, LearnerView
from services.core.state import MemoryState
from services.dashboard.pages import learner
from services.dashboard.pages.base import Page, PageContext

NS = 1_000_000_000
T = 1_752_070_560 * NS  # 2025-07-09 10:16 New York


def find(component: Any, component_id: str) -> Any:
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list | tuple) else [children] if children is not None else []:
        hit = find(child, component_id)
        if hit is not None:
            return hit
    return None


def rows(table: Any) -> list[list[str]]:
    return [[td.children for td in tr.children] for tr in table.children[1].children]


def view() -> LearnerView:
    return LearnerView(
        ts=T, mode="off",
        model=LearnerModelView("meta_label+beta_bandit", 3, 3, {"win_rate": 2 / 3}, T - 600 * NS, T),
        arms=(LearnerArmView("orb_calls", "adx_14=1", 3.0, 2.0, 3.0),
              LearnerArmView("vwap", "adx_14=0", 1.0, 1.0, 0.0)),
        regimes={"SPY": "trend"},
        change_points=(ChangePointView(T - 60 * NS, "SPY", "range", "unknown", 0.7),
                       ChangePointView(T, "SPY", "trend", "range", 0.9)))


def ctx(store: MemoryState | None = None, folder: Path | None = None) -> PageContext:
    return PageContext("s", store, None, None, folder, 500)


def test_arm_row_has_the_beta_mean_and_90_percent_interval() -> None:
    row = learner.arm_row(LearnerArmView("p", "b", 3.0, 2.0, 3.0))
    assert row["mean"] == pytest.approx(0.6)
    # Beta(3, 2) has CDF 4x^3 - 3x^4; its 5% and 95% quantiles solve that = 0.05 / 0.95 (bisection here).
    def quantile(q: float) -> float:
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if 4 * mid**3 - 3 * mid**4 < q else (lo, mid)
        return lo
    assert row["low"] == pytest.approx(quantile(0.05), abs=1e-5)
    assert row["high"] == pytest.approx(quantile(0.95), abs=1e-5)
    uniform = learner.arm_row(LearnerArmView("p", "b", 1.0, 1.0, 0.0))
    assert (uniform["low"], uniform["high"]) == pytest.approx((0.05, 0.95))


def test_view_from_redis_is_rendered() -> None:
    store = MemoryState("s")
    store.set(keys.LEARNER_VIEW, shared_state.encode(view()))
    found = learner.find_view(ctx(store))
    assert isinstance(found, learner.Sourced) and found.source == "Redis (session s)"
    page = learner.render_view(found)
    assert rows(find(page, "learner-arms")) == [
        ["adx_14=0", "vwap", "1", "1", "0.5", "0.05", "0.95", "0"],
        ["adx_14=1", "orb_calls", "3", "2", "0.6", "0.2486", "0.9024", "3"]]
    assert find(page, "learner-model-version").children == "3"
    assert find(page, "learner-trained-through").children == "2025-07-09 10:16:00"
    assert rows(find(page, "learner-regimes")) == [["SPY", "trend"]]
    assert [r[3] for r in rows(find(page, "learner-changes"))] == ["trend", "range"]  # newest first


def test_missing_and_malformed_views_are_one_readable_line(tmp_path: Path) -> None:
    store = MemoryState("s")
    missing = learner.find_view(ctx(store))
    assert isinstance(missing, learner.Missing) and "no view" in missing.reason
    store.set(keys.LEARNER_VIEW, b'{"ts": -1}')
    bad = learner.find_view(ctx(store, tmp_path))
    assert isinstance(bad, learner.Missing)
    assert "dreambot:learner_view" in bad.reason and "holds no policy.json" in bad.reason and "\n" not in bad.reason
    (tmp_path / "policy.json").write_text("[]")
    worse = learner.find_view(ctx(None, tmp_path))
    assert isinstance(worse, learner.Missing) and "not a learner policy" in worse.reason
    assert find(learner.render_view(worse), "learner-missing") is not None


def policy() -> LearnerPolicy:
    member = MetaMember((0.0,), (0.0,), (1.0,), (0.5,), 0.0, -1.0, 0.0)
    return LearnerPolicy(
        version=2, trained_through=T, trades=40, seed=7, epsilon=0.05, abstain_value=0.4,
        buckets=(PolicyBucket("adx_14", (20.0, 30.0)),),
        arms=(ArmStats("orb_calls", "adx_14=1", 6.0, 2.0), ArmStats("orb_calls", "adx_14=0", 1.0, 3.0)),
        meta=(MetaModel("orb_calls", ("adx_14",), (member,), 40, 0.55),))


def test_output_folder_view_reads_policy_evaluation_and_trade_regimes(tmp_path: Path) -> None:
    (tmp_path / "policy.json").write_bytes(encode_policy(policy()))
    (tmp_path / "evaluation.json").write_text(json.dumps({"metrics": {"test_auc": 0.61, "n_test": 12,
                                                                       "gated_win_rate": None}}))
    (tmp_path / "trades.json").write_text(json.dumps([
        {"underlying": "SPY", "entry_time": "2025-07-09T10:17:00-04:00", "reason": "learner [...; regime 'range']"},
        {"underlying": "SPY", "entry_time": "2025-07-09T11:02:00-04:00", "reason": "learner [...; regime 'trend']"},
        {"underlying": "QQQ", "entry_time": "2025-07-09T10:40:00-04:00", "reason": "learner: no learner wired"},
    ]))
    found = learner.find_view(ctx(MemoryState("s"), tmp_path))  # Redis has no view: the folder's
    assert isinstance(found, learner.Sourced) and found.source.startswith("output folder")
    v = found.view
    assert v.mode == "frozen" and v.regimes == {"SPY": "trend"}
    assert v.ts == 1_752_073_320 * NS  # 2025-07-09 15:02 UTC
    assert [(a.bucket, a.alpha, a.beta, a.pulls) for a in v.arms] == [("adx_14=0", 2.0, 4.0, 4.0),
                                                                       ("adx_14=1", 7.0, 3.0, 8.0)]
    assert v.model is not None and v.model.version == 2 and v.model.trades == 40
    assert v.model.metrics == {"epsilon": 0.05, "abstain_value": 0.4, "orb_calls.trades": 40.0,
                               "orb_calls.win_rate": 0.55, "eval.test_auc": 0.61, "eval.n_test": 12.0}
    page = learner.render_view(found)
    assert find(page, "learner-changes-empty") is not None


def test_page_contract_and_digest() -> None:
    assert isinstance(learner.PAGE, Page)
    store = MemoryState("s")
    store.set(keys.LEARNER_VIEW, shared_state.encode(view()))
    first, _ = learner.body(ctx(store))
    assert learner.body(ctx(store))[0] == first
    changed = view()
    store.set(keys.LEARNER_VIEW, shared_state.encode(LearnerView(changed.ts + 1, "off", changed.model, changed.arms,
                                                                 changed.regimes, changed.change_points)))
    assert learner.body(ctx(store))[0] != first
