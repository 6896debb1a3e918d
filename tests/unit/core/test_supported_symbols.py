"""A session trades only the supported underlyings; the CRD's enum says the same."""

from __future__ import annotations

import pytest
import yaml

from services.core.session_config import SUPPORTED_SYMBOLS, load_session_config
from services.core.settings import PROJECT_ROOT, ConfigError


@pytest.mark.parametrize("symbols", ["TSLA", "SPY,AAPL", "ÄBC", "ſpy x"])
def test_an_unsupported_symbol_is_one_line(symbols: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_session_config(environ={"DREAMBOT_SYMBOLS": symbols}, use_env_file=False)
    assert "\n" not in str(info.value) and "symbols" in str(info.value)


def test_the_supported_ones_load() -> None:
    config = load_session_config(environ={"DREAMBOT_SYMBOLS": "spy, qqq,SPX,ndx"}, use_env_file=False).config
    assert config.symbols == ("SPY", "QQQ", "SPX", "NDX")


def test_the_crd_enum_is_the_same_set() -> None:
    crd = yaml.safe_load((PROJECT_ROOT / "crds" / "tradingsessions.dreambot.io.yaml").read_text(encoding="utf-8"))
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(spec["properties"]["symbols"]["items"]["enum"]) == set(SUPPORTED_SYMBOLS)


def test_the_refusal_names_the_symbol_and_the_supported_set() -> None:
    with pytest.raises(ConfigError, match=r"TSLA: not a supported underlying \(supported: SPX, NDX, SPY, QQQ\)"):
        load_session_config(environ={"DREAMBOT_SYMBOLS": "TSLA"}, use_env_file=False)
