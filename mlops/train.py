"""Learner training job (CronJob): fit the meta-labelers and bandit on trade outcomes, log to MLflow.

    MLFLOW_TRACKING_URI=http://mlflow:5000 DREAMBOT_MLFLOW_EXPERIMENT=dreambot \\
        python -m mlops.train --trades storage/backtests/trades.json
    python -m mlops.train --symbols SPY QQQ --data data/backtests/spy_1m.csv   # replay, then train

Input: a trades JSON written by the backtest CLI (``--trades-output``: a list of objects with
entry_time, exit_time, pnl, playbook, reason, ...), or a replay of ``--data`` (synthetic bars without
it) through services.backtest.main.run_backtest. A trade's features are its ``context`` object when
the record has one (a replay's TradeOutcome always does); otherwise the ``name=value`` pairs of
learnable features its ``reason`` spells out (the signal engine writes every value it checked).

Evaluation is time-ordered, never shuffled: trades sorted by entry time, the last
``--test-fraction`` is the test set, and training trades still open when the first test trade
entered are purged (their outcome was not known then). The policy's scikit-learn meta-labeling
classifiers are fitted on the rest, scored
on the test set (AUC, log loss, Brier, hit rate; baselines predict the training win rate), then
refitted on every trade. MLflow gets the parameters, the metrics, ``learner_state.json`` (load it
with LearnerEngine.load_state), ``evaluation.json``, the learner config and ``policy.json``: the
policy signals applies (bandit arms and scikit-learn meta-labeling classifiers fitted on every trade;
``--policy-output`` also writes it, for ``--learner frozen --learner-model``). The run id is the last
line printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from mlops.tracking import TrackingError, check_server, start_run, tracking_config
from services.backtest.main import SYMBOLS, add_data_args
from services.cliutil import OneLineParser, fail
from services.core.learner_policy import LearnerPolicy, PolicyIndex, encode_policy
from services.core.settings import ConfigError
from services.ingest.sources import DataSourceError
from services.learner.config import DEFAULT_LEARNER_PATH, LEARNABLE_FEATURES, LearnerConfig, load_learner_config
from services.learner.engine import MODEL_NAME, LabeledTrade, LearnerEngine
from services.learner.meta_label import brier, log_loss, roc_auc

PROG = "python -m mlops.train"
STATE_ARTIFACT = "learner_state.json"
POLICY_ARTIFACT = "policy.json"
EVALUATION_ARTIFACT = "evaluation.json"
_PAIR = re.compile(r"(?<![\w.])([a-z][a-z0-9_]*)=(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")


class TrainingInputError(ValueError):
    """The trades cannot be used for training; the message is one readable line."""


# --- inputs --------------------------------------------------------------------------------------


def features_from_reason(reason: str) -> dict[str, float]:
    """Learnable ``name=value`` pairs of a signal reason (first occurrence of each name wins)."""
    out: dict[str, float] = {}
    for name, value in _PAIR.findall(reason):
        if name in LEARNABLE_FEATURES and name not in out:
            number = float(value)
            if math.isfinite(number):
                out[name] = number
    return out


def _ns(value: Any, field: str, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise TrainingInputError(f"{where}: {field} must be an ISO 8601 time, got {value!r}")
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        raise TrainingInputError(f"{where}: {field} {value!r} is not an ISO 8601 time") from None
    if stamp.tzinfo is None:
        raise TrainingInputError(f"{where}: {field} {value!r} has no UTC offset")
    return int(stamp.timestamp()) * 1_000_000_000 + stamp.microsecond * 1000


def trade_from_record(record: Any, index: int, source: str) -> LabeledTrade:
    """One trades-JSON object as a LabeledTrade (see the module docstring for its features)."""
    where = f"{source}: trade {index}"
    if not isinstance(record, Mapping):
        raise TrainingInputError(f"{where}: expected an object, got {type(record).__name__}")
    for key in ("entry_time", "exit_time", "pnl", "playbook"):
        if key not in record:
            raise TrainingInputError(f"{where}: missing {key!r}")
    pnl = record["pnl"]
    if isinstance(pnl, bool) or not isinstance(pnl, int | float) or not math.isfinite(pnl):
        raise TrainingInputError(f"{where}: pnl must be a finite number, got {pnl!r}")
    playbook = record["playbook"]
    if not isinstance(playbook, str) or not playbook:
        raise TrainingInputError(f"{where}: playbook must be a non-empty string")
    context = record.get("context")
    if isinstance(context, Mapping):
        features = {
            str(k): float(v)
            for k, v in context.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
    else:
        features = features_from_reason(str(record.get("reason", "")))
    entry_ts = _ns(record["entry_time"], "entry_time", where)
    exit_ts = _ns(record["exit_time"], "exit_time", where)
    if exit_ts < entry_ts:
        raise TrainingInputError(f"{where}: exit_time is before entry_time")
    return LabeledTrade(
        id=str(record.get("id") or f"trade-{index}"),
        playbook=playbook,
        underlying=str(record.get("underlying") or ""),
        entry_ts=entry_ts,
        exit_ts=exit_ts,
        pnl=float(pnl),
        features=features,
    )


def read_trades(path: Path) -> list[LabeledTrade]:
    """Every trade of a trades JSON file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainingInputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainingInputError(f"{path}: not a readable trades JSON: {exc}") from None
    if not isinstance(doc, list):
        raise TrainingInputError(f"{path}: expected a JSON list of trades, got {type(doc).__name__}")
    return [trade_from_record(r, i, str(path)) for i, r in enumerate(doc)]


def replay_trades(args: argparse.Namespace) -> tuple[list[LabeledTrade], str]:
    """Trades of a backtest replay of ``args.symbols`` (and the data source it read)."""
    from services.app.stages import session_market_data
    from services.backtest.main import config_from_args, run_backtest

    config = config_from_args(args, args.symbols)
    data = session_market_data(config)
    result = run_backtest(config, data, progress=sys.stderr.isatty())
    return [LabeledTrade.from_outcome(o) for o in result.record.outcomes], data.source


# --- evaluation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """A time-ordered train/test split with purging."""

    train: list[LabeledTrade]
    test: list[LabeledTrade]
    purged: int


def time_split(trades: Sequence[LabeledTrade], test_fraction: float) -> Split:
    """Earlier trades train, later ones test; training trades that exit after the first test entry are purged."""
    ordered = sorted(trades, key=lambda t: (t.entry_ts, t.exit_ts, t.id))
    cut = min(len(ordered) - 1, max(1, math.floor(len(ordered) * (1.0 - test_fraction))))
    test = ordered[cut:]
    first_entry = test[0].entry_ts
    train = [t for t in ordered[:cut] if t.exit_ts <= first_entry]
    return Split(train, test, cut - len(train))


def evaluate(config: LearnerConfig, split: Split, threshold: float) -> dict[str, Any]:
    """Fit the policy's scikit-learn meta-labeling classifiers on the split's training trades and score
    its test trades (a playbook without a classifier, own or pooled, is scored at the training win rate)."""
    base = float(np.mean([t.label for t in split.train])) if split.train else 0.5
    index = PolicyIndex(train_policy(split.train, config))

    def probability(t: LabeledTrade) -> float:
        model = index.meta(t.playbook)
        return base if model is None else model.probability(t.features, t.playbook)

    p = np.asarray([probability(t) for t in split.test])
    y = np.asarray([t.label for t in split.test], dtype=np.float64)
    accepted = p >= threshold
    metrics: dict[str, Any] = {
        "n_train": len(split.train),
        "n_test": len(split.test),
        "n_purged": split.purged,
        "train_win_rate": base,
        "test_win_rate": float(y.mean()),
        "test_auc": roc_auc(y, p),
        "test_log_loss": log_loss(y, p),
        "test_brier": brier(y, p),
        "baseline_log_loss": log_loss(y, np.full(len(y), base)),
        "baseline_brier": brier(y, np.full(len(y), base)),
        "test_hit_rate": float(np.mean((p >= 0.5) == (y == 1))),
        "gated_fraction": float(accepted.mean()),
        "gated_win_rate": float(y[accepted].mean()) if accepted.any() else None,
        "test_mean_probability": float(p.mean()),
    }
    predictions = [
        {
            "id": t.id,
            "playbook": t.playbook,
            "entry_ts": t.entry_ts,
            "label": t.label,
            "probability": round(float(q), 6),
        }
        for t, q in zip(split.test, p, strict=True)
    ]
    return {"metrics": metrics, "predictions": predictions, "threshold": threshold}


def train_policy(trades: Sequence[LabeledTrade], config: LearnerConfig) -> LearnerPolicy:
    """The policy of every trade (cut-off just after the last exit): what a frozen session applies."""
    from services.learner.policy_fit import fit_policy

    cutoff = max(t.exit_ts for t in trades) + 1
    return fit_policy(trades, config, cutoff, version=1)


# --- the job -------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--trades", type=Path, help="trades JSON written by the backtest CLI (--trades-output)")
    source.add_argument(
        "--symbols",
        nargs="+",
        type=str.upper,
        choices=SYMBOLS,
        help="replay these symbols (with the data options below) and train on the trades",
    )
    add_data_args(p)
    p.add_argument("--learner-config", type=Path, default=DEFAULT_LEARNER_PATH, help="learner YAML")
    p.add_argument("--test-fraction", type=float, default=0.3, help="latest share of trades held out (0.3)")
    p.add_argument("--min-trades", type=int, default=10, help="fewer trades is an error (10)")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="gate threshold for the gated hit-rate metrics (playbooks' learner.min_probability)",
    )
    p.add_argument("--output", type=Path, help="also write the trained state JSON here")
    p.add_argument("--policy-output", type=Path,
                   help="also write the policy JSON here (dreambot backtest --learner frozen --learner-model)")
    p.add_argument("--run-name", default="learner-training", help="MLflow run name")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not 0.0 < args.test_fraction < 1.0:
        fail(PROG, f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if args.min_trades < 2:
        fail(PROG, "--min-trades must be >= 2")
    if not 0.0 <= args.threshold <= 1.0:
        fail(PROG, f"--threshold must be in [0, 1], got {args.threshold}")
    if args.sessions is not None and args.sessions < 1:
        fail(PROG, "--sessions must be >= 1")
    try:
        tracking = tracking_config()
        config = load_learner_config(args.learner_config)
        check_server(tracking)
        if args.trades is not None:
            trades, source = read_trades(args.trades), str(args.trades)
        else:
            trades, source = replay_trades(args)
    except (TrackingError, ConfigError, TrainingInputError, DataSourceError) as exc:
        fail(PROG, str(exc))
    if len(trades) < args.min_trades:
        fail(PROG, f"{source}: {len(trades)} trades, need at least {args.min_trades} (--min-trades)")
    split = time_split(trades, args.test_fraction)
    if not split.train:
        fail(PROG, f"{source}: every training trade overlaps the test period; use a smaller --test-fraction")
    evaluation = evaluate(config, split, args.threshold)
    engine = LearnerEngine(config).train(trades)
    state = engine.state()
    policy = train_policy(trades, config)
    if args.policy_output is not None:
        args.policy_output.parent.mkdir(parents=True, exist_ok=True)
        args.policy_output.write_bytes(encode_policy(policy) + b"\n")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(state, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")

    wins = sum(t.label for t in trades)
    metrics = {
        **evaluation["metrics"],
        "n_trades": len(trades),
        "win_rate": wins / len(trades),
        "playbooks": len(engine.playbooks),
    }
    per_playbook = {pb: sum(1 for t in trades if t.playbook == pb) for pb in engine.playbooks}
    metrics.update({f"trades.{pb}": n for pb, n in per_playbook.items()})
    params = {
        "source": source,
        "test_fraction": args.test_fraction,
        "threshold": args.threshold,
        "model": MODEL_NAME,
        "learner": config.model_dump(mode="json"),
    }
    try:
        with start_run(tracking, args.run_name, {"dreambot.job": "training", "dreambot.model": MODEL_NAME}) as run:
            run.log_params(params)
            run.log_metrics(metrics)
            run.log_json(state, STATE_ARTIFACT)
            run.log_json(msgspec.to_builtins(policy), POLICY_ARTIFACT)
            run.log_json(evaluation, EVALUATION_ARTIFACT)
            if args.learner_config.exists():
                run.log_file(args.learner_config, "config")
    except TrackingError as exc:
        fail(PROG, str(exc))
    m = evaluation["metrics"]
    auc = "n/a" if m["test_auc"] is None else f"{m['test_auc']:.3f}"
    print(
        f"trained on {len(trades)} trades ({m['n_train']} train / {m['n_test']} test, {m['n_purged']} purged): "
        f"test AUC {auc}, log loss {m['test_log_loss']:.4f} (baseline {m['baseline_log_loss']:.4f}), "
        f"Brier {m['test_brier']:.4f}, hit rate {m['test_hit_rate']:.1%} -> MLflow {tracking.uri} "
        f"experiment {tracking.experiment!r}"
    )
    print(run.run_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
