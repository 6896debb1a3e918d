"""config/broker.yaml loads into BrokerConfig; mistakes become one readable line."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.settings import ConfigError
from services.oms.config import BrokerConfig, PaperConfig, load_broker_config


def test_shipped_yaml_matches_the_documented_defaults() -> None:
    cfg = load_broker_config()
    # Every shipped value is the model's default but the paper latency: the model's None (fill on arrival)
    # is the simulators' and the mechanics tests'; sessions get broker.yaml's 500 ms.
    assert cfg == BrokerConfig(paper=PaperConfig(latency_ms=500))
    assert cfg.broker == "paper"
    assert cfg.paper.tick_size("SPY", 5.0) == 0.01
    assert (cfg.paper.tick_size("SPXW", 2.95), cfg.paper.tick_size("SPXW", 3.0)) == (0.05, 0.10)


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("paper:\n  slippage_tick: 1\n", "paper.slippage_tick: Extra inputs are not permitted"),
        ("fees:\n  commission_per_contract: -1\n", "fees.commission_per_contract: Input should be greater"),
        ("broker: ibkr\n", "broker: Input should be 'paper' or 'tradier'"),
        ("stop_sync:\n  k_atr: 0\n", "stop_sync.k_atr: Input should be greater than 0"),
        ("paper:\n  tick_sizes: {SPY: {below_3: 0.01, at_or_above_3: 0.01}}\n", "needs a 'default' entry"),
        ("paper: [1\n", "invalid YAML"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, yaml: str, message: str) -> None:
    path = tmp_path / "broker.yaml"
    path.write_text(yaml)
    with pytest.raises(ConfigError) as err:
        load_broker_config(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(path) in str(err.value)


