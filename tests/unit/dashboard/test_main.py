"""The console's entry point: settings from env, one line on bad settings, where it listens."""

from __future__ import annotations

import socket

import pytest

from services.core.redis_state import RedisState
from services.core.settings import ConfigError
from services.dashboard import main as console_main
from services.dashboard.main import ConsoleSettings, load_settings, make_console

ENV = ("DREAMBOT_SESSION", "DREAMBOT_REDIS_URL", "DREAMBOT_PROMETHEUS_URL", "DREAMBOT_DASHBOARD_PORT",
       "DREAMBOT_DASHBOARD_HOST", "DREAMBOT_DASHBOARD_REFRESH_S", "DREAMBOT_DASHBOARD_WINDOW_S",
       "DREAMBOT_DASHBOARD_HEARTBEAT_STALE_S", "DREAMBOT_LOG_LEVEL", "KUBERNETES_SERVICE_HOST")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def test_settings_come_from_the_chart_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAMBOT_SESSION", "paper-etf")
    monkeypatch.setenv("DREAMBOT_REDIS_URL", "redis://dreambot-redis:6379/0")
    monkeypatch.setenv("DREAMBOT_PROMETHEUS_URL", "http://prometheus:9090")
    monkeypatch.setenv("DREAMBOT_DASHBOARD_PORT", "8050")
    s = load_settings()
    assert (s.session, s.redis_url, s.prometheus_url, s.dashboard_port) == (
        "paper-etf", "redis://dreambot-redis:6379/0", "http://prometheus:9090", 8050)
    assert s.dashboard_refresh_s == 5.0 and s.dashboard_heartbeat_stale_s == 30.0
    console = make_console(s)
    assert console.config.session == "paper-etf"
    assert isinstance(console.state.store, RedisState) and console.state.store.session == "paper-etf"
    assert console.prometheus.configured
    console.state.store.close()


def test_empty_urls_are_allowed_and_mean_unavailable() -> None:
    console = make_console(load_settings())
    assert console.state.store is None and not console.prometheus.configured
    assert console.config.redis_display == "" and console.config.prometheus_display == ""


@pytest.mark.parametrize("name, value, message", [
    ("DREAMBOT_DASHBOARD_PORT", "http", "environment variable DREAMBOT_DASHBOARD_PORT: Input should be a valid "
                                        "integer, unable to parse string as an integer"),
    ("DREAMBOT_DASHBOARD_PORT", "70000", "environment variable DREAMBOT_DASHBOARD_PORT: Input should be less than "
                                         "or equal to 65535"),
    ("DREAMBOT_REDIS_URL", "http://user:hunter2@redis:6379", "environment variable DREAMBOT_REDIS_URL: must start "
                                                             "with redis://, rediss:// or unix://"),
    ("DREAMBOT_PROMETHEUS_URL", "prometheus:9090", "environment variable DREAMBOT_PROMETHEUS_URL: must be an "
                                                   "http:// or https:// URL with a host"),
    ("DREAMBOT_SESSION", "bad session", "environment variable DREAMBOT_SESSION: String should match pattern"),
    ("DREAMBOT_DASHBOARD_REFRESH_S", "0", "environment variable DREAMBOT_DASHBOARD_REFRESH_S: Input should be "
                                          "greater than 0"),
])
def test_a_bad_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(message)
    assert console_main.main() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"dreambot console: {message}")
    assert "hunter2" not in err


def test_listen_host_defaults_to_loopback_outside_a_pod() -> None:
    s = ConsoleSettings()
    assert s.listen_host({}) == "127.0.0.1"
    assert s.listen_host({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}) == "0.0.0.0"
    assert ConsoleSettings(dashboard_host="127.0.0.1").listen_host({"KUBERNETES_SERVICE_HOST": "x"}) == "127.0.0.1"


def test_a_busy_port_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        monkeypatch.setenv("DREAMBOT_DASHBOARD_PORT", str(port))
        monkeypatch.setenv("DREAMBOT_DASHBOARD_HOST", "127.0.0.1")
        assert console_main.main() == 1
    err = capsys.readouterr().err
    assert err == f"dreambot console: cannot listen on 127.0.0.1:{port}: Address already in use\n"
