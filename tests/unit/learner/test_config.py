"""config/learner.yaml: the shipped file is valid and says what the defaults say; mistakes are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.settings import ConfigError
from services.learner.config import DEFAULT_LEARNER_PATH, LearnerConfig, load_learner_config


def test_shipped_file_matches_the_schema_defaults() -> None:
    assert load_learner_config(DEFAULT_LEARNER_PATH) == LearnerConfig()


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "meta_label: {features: [adx_41]}",
            "meta_label.features: Value error, unknown feature 'adx_41' (did you mean 'adx_14'?)",
        ),
        ("meta_label: {features: [learner_probability]}", "unknown feature 'learner_probability'"),
        ("bandit: {buckets: [{feature: adx_14, edges: [30, 20]}]}", "strictly ascending"),
        ("bandit: {reward: sharpe}", "bandit.reward"),
        ("changepoint: {expected_run: 1}", "changepoint.expected_run"),
        ("changepoint: {min_drop: 300, max_run: 300}", "min_drop must be smaller"),
        ("combine: {mode: greedy}", "combine.mode"),
        ("metalabel: {}", "metalabel: Extra inputs are not permitted"),
    ],
)
def test_mistakes_are_one_line(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "learner.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_learner_config(path)
    text = str(caught.value)
    assert "\n" not in text
    assert str(path) in text
    assert message in text
