"""The console's entry point: settings from env, one line on bad settings, where it listens."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from services.core.redis_state import RedisState
from services.core.settings import PROJECT_ROOT, ConfigError
from services.dashboard import main as console_main
from services.dashboard.auth import PasswordHash, verify_password
from services.dashboard.main import ConsoleSettings, load_settings, make_access, make_console

ENV = ("DREAMBOT_SESSION", "DREAMBOT_REDIS_URL", "DREAMBOT_PROMETHEUS_URL", "DREAMBOT_DASHBOARD_PORT",
       "DREAMBOT_DASHBOARD_HOST", "DREAMBOT_DASHBOARD_REFRESH_S", "DREAMBOT_DASHBOARD_WINDOW_S",
       "DREAMBOT_DASHBOARD_HEARTBEAT_STALE_S", "DREAMBOT_LOG_LEVEL", "KUBERNETES_SERVICE_HOST",
       "DREAMBOT_CONSOLE_USERS", "DREAMBOT_CONSOLE_ADMIN_PASSWORD", "DREAMBOT_CONSOLE_SESSION_KEY",
       "DREAMBOT_CONSOLE_SESSION_TTL_S", "DREAMBOT_CONSOLE_ALLOWED_HOSTS", "DREAMBOT_CONSOLE_TRUSTED_ORIGINS",
       "DREAMBOT_CONSOLE_COOKIE_SECURE", "DREAMBOT_CONSOLE_PROXY_USER_HEADER", "DREAMBOT_CONSOLE_TRUSTED_PROXIES",
       "DREAMBOT_CONSOLE_PROXY_DEFAULT_ROLE", "DREAMBOT_CONSOLE_CONFIRM_TTL_S")
ADMIN_PASSWORD = "admin-password-from-the-secret"


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
    ("DREAMBOT_CONSOLE_USERS", "alice:operator:hunter2", "environment variable DREAMBOT_CONSOLE_USERS: user "
                                                         "'alice': a password hash must look like scrypt$"),
    ("DREAMBOT_CONSOLE_USERS", "alice:root:-", "environment variable DREAMBOT_CONSOLE_USERS: user 'alice': role "
                                               "must be viewer or operator"),
    ("DREAMBOT_CONSOLE_SESSION_KEY", "hunter2", "environment variable DREAMBOT_CONSOLE_SESSION_KEY: must be at "
                                                "least 32 bytes"),
    ("DREAMBOT_CONSOLE_ADMIN_PASSWORD", "hunter2", "environment variable DREAMBOT_CONSOLE_ADMIN_PASSWORD: must "
                                                   "have at least 12 characters"),
    ("DREAMBOT_CONSOLE_TRUSTED_PROXIES", "10.0.0.0/8,proxy-host", "environment variable "
                                                               "DREAMBOT_CONSOLE_TRUSTED_PROXIES: 'proxy-host' is not"),
    ("DREAMBOT_CONSOLE_ADMIN_PASSWORD", "", "no way to sign in: set DREAMBOT_CONSOLE_USERS"),
])
def test_a_bad_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str, message: str
) -> None:
    if name != "DREAMBOT_CONSOLE_ADMIN_PASSWORD":
        monkeypatch.setenv("DREAMBOT_CONSOLE_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        make_access(load_settings())
    assert str(info.value).startswith(message)
    assert console_main.main() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"dreambot console: {message}")
    assert "hunter2" not in err


def test_listen_host_is_loopback_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")  # inside a pod too
    assert ConsoleSettings().listen_host() == "127.0.0.1"
    assert ConsoleSettings().allowed_hosts() == ("localhost", "127.0.0.1", "::1")
    wide = ConsoleSettings(dashboard_host="0.0.0.0")
    assert wide.listen_host() == "0.0.0.0" and wide.allowed_hosts() == ("localhost", "127.0.0.1", "::1")
    assert ConsoleSettings(dashboard_host="10.1.2.3").allowed_hosts()[-1] == "10.1.2.3"
    monkeypatch.setenv("DREAMBOT_CONSOLE_ALLOWED_HOSTS", "dreambot-console, dreambot-console.ops.svc")
    assert load_settings().allowed_hosts() == ("dreambot-console", "dreambot-console.ops.svc")


def test_access_from_env_keeps_secrets_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    hash_line = f"carol:viewer:{PasswordHash.parse(_hash('viewer-password')).encode()}"
    monkeypatch.setenv("DREAMBOT_CONSOLE_USERS", hash_line + ";dave@example.com:operator:-")
    monkeypatch.setenv("DREAMBOT_CONSOLE_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.setenv("DREAMBOT_CONSOLE_SESSION_KEY", "k" * 40)
    monkeypatch.setenv("DREAMBOT_CONSOLE_PROXY_USER_HEADER", "X-Forwarded-Email")
    settings = load_settings()
    for secret in (ADMIN_PASSWORD, "k" * 40, hash_line):
        assert secret not in repr(settings) and secret not in str(settings.model_dump())
    access = make_access(settings)
    users = access.policy.users
    admin, carol, dave = users.get("admin"), users.get("carol"), users.get("dave@example.com")
    assert admin is not None and admin.role == "operator" and admin.password is not None
    assert verify_password(ADMIN_PASSWORD, admin.password.encode())  # hashed at start, never kept in clear
    assert carol is not None and carol.role == "viewer"
    assert dave is not None and dave.password is None  # proxy header only
    assert users.authenticate("dave@example.com", "") is None
    assert access.policy.proxy is not None and access.policy.proxy.from_trusted_peer("127.0.0.1")
    assert not access.policy.proxy.from_trusted_peer("10.0.0.7")


def _hash(password: str) -> str:
    from services.dashboard.auth import hash_password

    return hash_password(password, log2_n=10)


def test_hash_password_cli_makes_an_entry_the_console_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    out = subprocess.run([sys.executable, "-m", "services.dashboard.auth", "hash-password", "--user", "erin",
                          "--role", "operator"], input="erin-password-1\n", capture_output=True, text=True,
                         cwd=PROJECT_ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    entry = out.stdout.strip()
    assert entry.startswith("erin:operator:scrypt$15$8$1$") and "erin-password-1" not in entry
    monkeypatch.setenv("DREAMBOT_CONSOLE_USERS", entry)
    users = make_access(load_settings()).policy.users
    assert users.authenticate("erin", "erin-password-1") is not None
    assert users.authenticate("erin", "erin-password-2") is None
    short = subprocess.run([sys.executable, "-m", "services.dashboard.auth", "hash-password", "--user", "erin",
                            "--role", "operator"], input="short\n", capture_output=True, text=True,
                           cwd=PROJECT_ROOT, timeout=60)
    assert short.returncode == 2 and "at least 8 characters" in short.stderr


def test_a_busy_port_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        monkeypatch.setenv("DREAMBOT_DASHBOARD_PORT", str(port))
        monkeypatch.setenv("DREAMBOT_DASHBOARD_HOST", "127.0.0.1")
        monkeypatch.setenv("DREAMBOT_CONSOLE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        assert console_main.main() == 1
    err = capsys.readouterr().err
    assert err == f"dreambot console: cannot listen on 127.0.0.1:{port}: Address already in use\n"
