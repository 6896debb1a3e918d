"""The learner changes what trades in a backtest of the real QQQ recording (embedded replay, paper broker).

Sessions 1-8 of ``qqq_1min_utc_2025-04-30_2025-06-13.csv`` replayed with ``--learner off`` give the
trades a frozen policy is trained on (``mlops.train``'s ``train_policy``: bandit arms and
scikit-learn meta-labeling); sessions 9-12 are then replayed with ``--learner off`` and with
``--learner frozen``: the trades differ and every frozen intent says what the learner contributed.
Walk-forward over sessions 1-5 and over sessions 1-4 followed by two much later sessions decide the
same up to the end of session 4: no retrain saw what came after it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from mlops.train import train_policy
from services.app.stages import session_market_data
from services.backtest.main import BacktestResult, run_backtest
from services.core.calendar import ny_date
from services.core.datasets import QQQ_1MIN_UTC
from services.core.learner_policy import encode_policy
from services.core.session_config import load_session_config
from services.learner.config import load_learner_config
from services.learner.engine import LabeledTrade
from tests.realdata import require_real

pytestmark = pytest.mark.integration


def sessions_file(src: pd.DataFrame, days: list[str], path: Path) -> Path:
    src[src["Datetime"].str[:10].isin(days)].to_csv(path, index=False)
    return path


def backtest(path: Path, mode: str = "off", model: Path | None = None) -> BacktestResult:
    cli = {"symbols": ["QQQ"], "calibration": {"path": "none"},
           "market_data": {"source": "replay", "replay": {"path": path}},
           "learner": {"mode": mode, "model": model}}
    config = load_session_config(cli, environ={}, use_env_file=False).config
    return run_backtest(config, session_market_data(config))


@pytest.fixture(scope="module")
def qqq(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, list[str], Path]:
    frame = pd.read_csv(require_real(QQQ_1MIN_UTC))
    days = sorted(frame["Datetime"].str[:10].unique())
    return frame, days, tmp_path_factory.mktemp("qqq")


def trade_keys(result: BacktestResult) -> set[tuple[str, int, str]]:
    return {(o.playbook, o.entry_ts, o.contract) for o in result.record.outcomes}


def test_frozen_policy_changes_the_trades_and_every_intent_names_the_learner(
        qqq: tuple[pd.DataFrame, list[str], Path], record_property: pytest.RecordProperty) -> None:
    frame, days, tmp = qqq
    train = backtest(sessions_file(frame, days[:8], tmp / "qqq_utc_train.csv"))
    trades = [LabeledTrade.from_outcome(o) for o in train.record.outcomes]
    assert len(trades) >= 30
    policy = train_policy(trades, load_learner_config())
    assert policy.arms and policy.meta  # bandit evidence and at least the pooled classifier
    model = tmp / "policy.json"
    model.write_bytes(encode_policy(policy))

    test_file = sessions_file(frame, days[8:12], tmp / "qqq_utc_test.csv")
    off = backtest(test_file)
    frozen = backtest(test_file, "frozen", model)
    record_property("off", f"{off.summary['trade_count']} trades, pnl {off.summary['net_pnl']}")
    record_property("frozen", f"{frozen.summary['trade_count']} trades, pnl {frozen.summary['net_pnl']}")
    assert off.record.intents and frozen.record.intents
    assert trade_keys(off) != trade_keys(frozen)
    assert all(i.reason.endswith("; learner off") for i in off.record.intents)
    for intent in frozen.record.intents:
        learner = intent.reason[intent.reason.index("; learner [frozen policy v1"):]
        assert f"bandit chose {intent.playbook} in bucket " in learner
        assert "propensity" in learner and "meta" in learner and "regime '" in learner
        assert 0.0 < intent.features["learner_propensity"] <= 1.0
    # The pooled classifier scores every intent whose playbook has no classifier of its own.
    assert all("learner_probability" in i.features for i in frozen.record.intents)
    # Outcomes carry the propensity of the decision that opened them (off-policy evaluation).
    assert all("learner_propensity" in o.context for o in frozen.record.outcomes)


def test_walk_forward_decisions_never_depend_on_later_sessions(qqq: tuple[pd.DataFrame, list[str], Path]) -> None:
    frame, days, tmp = qqq
    a = backtest(sessions_file(frame, days[:5], tmp / "qqq_utc_wf_a.csv"), "walk-forward")
    b = backtest(sessions_file(frame, [*days[:4], *days[20:22]], tmp / "qqq_utc_wf_b.csv"), "walk-forward")
    end = dt.date.fromisoformat(days[3])
    before_a = [i for i in a.record.intents if ny_date(i.ts) <= end]
    before_b = [i for i in b.record.intents if ny_date(i.ts) <= end]
    assert before_a == before_b
    # Retrains happened inside that window (sessions 2-4), so the check covers trained policies.
    assert any("walk-forward policy v" in i.reason for i in before_a)
    assert [i for i in a.record.intents if ny_date(i.ts) > end] != [i for i in b.record.intents if ny_date(i.ts) > end]
