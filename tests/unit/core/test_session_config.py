"""SessionConfig: defaults, every source in its precedence, one-line errors naming the source,
credentials typed as secrets, and .env.example naming every variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from services.core.session_config import (
    DEFAULT_CALIBRATION,
    ENV_NAMES,
    LOCATOR_NAMES,
    PIPELINE_STAGES,
    REDACTED,
    SessionConfig,
    describe,
    load_session_config,
)
from services.core.settings import CONFIG_DIR, PROJECT_ROOT, ConfigError

ENV_EXAMPLE = PROJECT_ROOT / ".env.example"


def load(env: dict[str, str] | None = None, **kw: object):  # type: ignore[no-untyped-def]
    return load_session_config(environ=env or {}, use_env_file=kw.pop("use_env_file", False), **kw)  # type: ignore[arg-type]


def test_defaults_are_a_paper_session() -> None:
    c = load().config
    assert c.name == "default" and c.topic_prefix == "default" and c.symbols == ("SPY",)
    assert c.mode == "paper" and not c.live_confirm and c.broker.provider == "paper"
    assert c.kafka.partitions == 3 and c.http.port == 9100
    assert c.market_data.source == "synthetic" and c.market_data.replay.lockstep
    assert c.config_dir == CONFIG_DIR and c.calibration.path == DEFAULT_CALIBRATION
    assert c.market_data.replay.lockstep_stages == PIPELINE_STAGES


def test_flat_environment_names(tmp_path: Path) -> None:
    c = load({"DREAMBOT_SESSION": "paper-1", "DREAMBOT_SYMBOLS": " spy, qqq ,SPY,",
              "DREAMBOT_KAFKA_TOPIC_PREFIX": "dreambot.paper-1", "DREAMBOT_KAFKA_PARTITIONS": "6",
              "DREAMBOT_HTTP_PORT": "0", "DREAMBOT_REPLAY_SOURCE": str(tmp_path / "bars.csv"),
              "DREAMBOT_REPLAY_LOCKSTEP": "false", "DREAMBOT_CALIBRATION": "none",
              "DREAMBOT_LOCKSTEP_STAGES": "features,signals", "DREAMBOT_KAFKA_DEBUG": ""}).config
    assert c.name == "paper-1" and c.topic_prefix == "dreambot.paper-1"
    assert c.symbols == ("SPY", "QQQ") and c.kafka.partitions == 6 and c.http.port == 0
    assert c.market_data.source == "replay" and c.market_data.replay.path == tmp_path / "bars.csv"
    assert not c.market_data.replay.lockstep and c.calibration.path is None
    assert c.market_data.replay.lockstep_stages == ("features", "signals") and c.kafka.debug is None


def test_nested_environment_names_reach_any_field() -> None:
    c = load({"DREAMBOT_RISK__MAX_DAILY_LOSS_USD": "250", "DREAMBOT_PLAYBOOKS__ENABLED": "orb_calls,orb_puts"}).config
    assert c.risk.max_daily_loss_usd == 250 and c.playbooks.enabled == ("orb_calls", "orb_puts")


def test_precedence_cli_env_dotenv_file_broker_yaml_default(tmp_path: Path) -> None:
    session = tmp_path / "session.yaml"
    session.write_text(yaml.safe_dump({"name": "from-file", "symbols": ["QQQ"], "kafka": {"partitions": 5},
                                       "redis": {"url": "redis://file:6379/0"}, "broker": {"provider": "paper"}}))
    dotenv = tmp_path / ".env"
    dotenv.write_text("DREAMBOT_SESSION=from-dotenv\nDREAMBOT_KAFKA_PARTITIONS=7\n")
    env = {"DREAMBOT_SESSION": "from-env"}
    loaded = load(env, session_file=session, env_file=dotenv, use_env_file=True,
                  cli={"symbols": ["NDX"], "kafka": {"partitions": None}})
    c = loaded.config
    assert c.symbols == ("NDX",) and loaded.origin(("symbols",)) == "command line"
    assert c.name == "from-env" and loaded.origin(("name",)) == "environment variable DREAMBOT_SESSION"
    assert c.kafka.partitions == 7 and loaded.origin(("kafka", "partitions")).startswith(str(dotenv))
    assert c.redis.url == "redis://file:6379/0" and loaded.origin(("redis", "url")) == f"session file {session}"
    assert c.broker.provider == "paper" and loaded.origin(("broker", "provider")) == f"session file {session}"
    assert loaded.origin(("http", "port")) == "default"
    without_file = load(env, env_file=dotenv, use_env_file=True)
    assert without_file.origin(("broker", "provider")) == str(CONFIG_DIR / "broker.yaml")


def test_the_config_dir_session_yaml_is_read_when_present(tmp_path: Path) -> None:
    (tmp_path / "session.yaml").write_text("name: mounted\nsymbols: [SPX]\n")
    c = load({"DREAMBOT_CONFIG_DIR": str(tmp_path)}).config
    assert c.name == "mounted" and c.symbols == ("SPX",)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("DREAMBOT_HTTP_PORT", "70000", "less than or equal to 65535"),
    ("DREAMBOT_HTTP_PORT", "not-a-port", "valid integer"),
    ("DREAMBOT_KAFKA_PARTITIONS", "0", "greater than or equal to 1"),
    ("DREAMBOT_SYMBOLS", ",", "at least 1 item"),
    ("DREAMBOT_SYMBOLS", "SPY,S P X", "should match pattern"),
    ("DREAMBOT_SYMBOLS", "SPÝ", "should match pattern"),
    ("DREAMBOT_MODE", "yolo", "'paper' or 'live'"),
    ("DREAMBOT_SESSION", "no spaces", "should match pattern"),
    ("DREAMBOT_REPLAY_RATE", "-1", "greater than or equal to 0"),
    ("DREAMBOT_REPLAY_LOCKSTEP", "maybe", "valid boolean"),
    ("DREAMBOT_LOCKSTEP_STAGES", "features,bogus", "unknown stage(s) bogus"),
    ("DREAMBOT_RISK__MAX_DAILY_LOSS_USD", "inf", "finite"),
    ("DREAMBOT_RISK__MAX_DAILY_LOSS_USD", "-5", "greater than 0"),
    ("DREAMBOT_RISK__NO_SUCH_LIMIT", "1", "unknown setting"),
    ("DREAMBOT_MARKET_DATA", "replay", "needs replay.path"),
    ("DREAMBOT_REDIS_URL", "http://x", "should match pattern"),
])
def test_a_bad_value_is_one_line_naming_its_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load({name: value})
    text = str(err.value)
    assert "\n" not in text and message in text
    if name != "DREAMBOT_MARKET_DATA":  # a cross-field rule names the fields, not one variable
        assert text.startswith(f"environment variable {name}: ")


def test_a_bad_session_file_value_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("kafka:\n  partitions: lots\n")
    with pytest.raises(ConfigError, match=rf"^session file {re.escape(str(f))}: kafka.partitions: "):
        load(session_file=f)
    f.write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="mapping of settings"):
        load(session_file=f)
    with pytest.raises(ConfigError, match="session file not found"):
        load(session_file=tmp_path / "missing.yaml")


def test_credentials_are_secret_and_never_come_from_a_session_file(tmp_path: Path) -> None:
    token = "tt-SENTINEL-5b8e2d6f90ac"
    loaded = load({"TRADIER_ACCESS_TOKEN": token, "POLYGON_API_KEY": "pk-SENTINEL"})
    assert loaded.config.broker.access_token is not None
    assert loaded.config.broker.access_token.get_secret_value() == token
    text = "\n".join(describe(loaded)) + repr(loaded.config) + str(loaded.config.session_file_dict())
    assert token not in text and "pk-SENTINEL" not in text and REDACTED in text
    f = tmp_path / "s.yaml"
    f.write_text(f"broker:\n  access_token: {token}\n")
    with pytest.raises(ConfigError, match="credentials are read from the environment") as err:
        load(session_file=f)
    assert token not in str(err.value)


def test_live_mode_needs_confirmation_and_a_real_broker() -> None:
    with pytest.raises(ConfigError, match="DREAMBOT_LIVE_CONFIRM=true"):
        load({"DREAMBOT_MODE": "live", "DREAMBOT_BROKER": "tradier"})
    c = load({"DREAMBOT_MODE": "live", "DREAMBOT_LIVE_CONFIRM": "true", "DREAMBOT_BROKER": "tradier"}).config
    assert c.mode == "live"


def test_the_session_file_round_trips() -> None:
    c = SessionConfig(name="s1", symbols=("SPY", "QQQ"), risk={"max_daily_loss_usd": 300},
                      playbooks={"enabled": ["orb_calls"]})
    again = SessionConfig(**c.session_file_dict())
    assert again == c


def test_env_example_lists_every_variable() -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    wanted = set(ENV_NAMES) | {"OMS_AUDIT_PATH", "OMS_AUDIT_ROTATE_MB", "OMS_AUDIT_BACKUPS", "OMS_METRIC_STREAM"}
    assert wanted <= listed, f"missing from .env.example: {sorted(wanted - listed)}"
    known = wanted | set(LOCATOR_NAMES) | {"DREAMBOT_DATA_DIR"}
    assert listed <= known, f"not a setting: {sorted(listed - known)}"
