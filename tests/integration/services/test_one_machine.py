"""The one-machine stack, as a new user runs it: the README's services commands, verbatim.

``dreambot services up`` on a clean state folder starts its own Kafka (KRaft, the cached jars) and
redis-server, every stage and the console; the console answers; the bundled real SPY session
replays through Kafka and trades (fills on the executions topic, the OMS audit, the OMS snapshot in
Redis); ``status`` shows every process healthy; ``down`` stops them all and keeps the data; ``up``
again serves the same book (Redis kept the snapshot, the OMS rebuilt it from Kafka, nothing traded
twice); ``down --purge`` removes the state. Times of each step are printed (``pytest -s``).
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import orjson
import pytest
import redis

from services import launcher
from services.core import keys, shared_state, topics
from services.core.events import OrderEvent, decode_msgpack
from services.core.settings import PROJECT_ROOT
from services.dashboard.access import CSRF_FIELD
from services.localstack import pid_alive
from tests.integration.services.conftest import read_topic

pytestmark = pytest.mark.integration

SESSION = launcher.DEFAULT_SESSION
README_SECTION = "## One machine"


def readme_commands() -> list[str]:
    """The indented command block under the README's one-machine heading."""
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(README_SECTION, 1)[1].split("\n## ", 1)[0]
    return [ln.strip() for ln in section.splitlines() if ln.startswith("    dreambot ")]


def _run(cmd: str, cwd: Path, timeout_s: float = 420.0) -> tuple[subprocess.CompletedProcess[str], float]:
    argv = shlex.split(cmd)
    argv[0] = str(Path(sys.executable).parent / "dreambot")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DREAMBOT_", "OMS_"))}
    env["DREAMBOT_CALIBRATION"] = "none"  # a local calibration run must not change what trades
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, env=env,
                          stdin=subprocess.DEVNULL)
    took = time.monotonic() - started
    print(f"$ {cmd}  ({took:.1f}s)\n{proc.stdout}", flush=True)
    assert proc.returncode == 0, f"{cmd} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc, took


def _console_url(stdout: str) -> str:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("console: "))
    return line.split()[1]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return int(resp.status), resp.read().decode(errors="replace")


def _sign_in(url: str, password: str) -> str:
    """Sign in to the console as ``admin`` the way a browser does; the page it then serves."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(f"{url}login", timeout=10) as resp:
        form = resp.read().decode()
    token = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', form)
    assert token is not None, form
    body = urllib.parse.urlencode({"user": "admin", "password": password, CSRF_FIELD: token.group(1)}).encode()
    request = urllib.request.Request(f"{url}login", data=body, headers={"Origin": url.rstrip("/")})
    with opener.open(request, timeout=10) as resp:
        assert resp.status == 200 and resp.url.rstrip("/") == url.rstrip("/"), resp.url
        return str(resp.read().decode(errors="replace"))


def _snapshot(dep: launcher.Deployment) -> shared_state.OmsSnapshot | None:
    client = redis.Redis.from_url(dep.env["DREAMBOT_REDIS_URL"])
    try:
        raw = client.get(f"{SESSION}:{keys.POSITIONS}")
    finally:
        client.close()
    return None if raw is None else shared_state.decode_oms_snapshot(raw)


def _fills(dep: launcher.Deployment) -> list[OrderEvent]:
    events = [decode_msgpack(v) for _k, v in read_topic(dep.bootstrap, topics.qualified(dep.prefix, topics.EXECUTIONS))]
    return [e for e in events if isinstance(e, OrderEvent) and e.status == "filled"]


def _all_stopped(dep: launcher.Deployment) -> None:
    for name, svc in dep.processes.items():
        assert not pid_alive(svc.pid, svc.module), f"{name} (pid {svc.pid}) still runs after down"
    for name, server in dep.infra.items():
        assert not server.running, f"{name} still runs after down"
        assert server.data_dir.is_dir() and any(server.data_dir.iterdir()), f"{name} data gone after down"


def test_services_up_status_down_up_purge(tmp_path: Path) -> None:
    commands = readme_commands()
    up = next(c for c in commands if c.startswith("dreambot services up"))
    status = next(c for c in commands if c.startswith("dreambot services status"))
    down = next(c for c in commands if c.startswith("dreambot services down") and "--purge" not in c)
    purge = next(c for c in commands if c.startswith("dreambot services down") and "--purge" in c)
    assert "--kafka-bootstrap" not in up and "--redis-url" not in up, "the quickstart brings its own Kafka and Redis"
    (tmp_path / "data").symlink_to(PROJECT_ROOT / "data")
    state = tmp_path / "storage" / "services" / SESSION
    assert not state.exists()
    dep: launcher.Deployment | None = None
    try:
        # 1. up on a clean state folder: own Kafka and Redis, five stages and the console.
        proc, took_up = _run(up, tmp_path)
        dep = launcher.Deployment.load(SESSION, tmp_path / "storage" / "services")
        assert set(dep.infra) == {"kafka", "redis"}
        assert set(dep.processes) == {*launcher.STAGES, launcher.CONSOLE}
        assert (state / "kafka" / "data" / "meta.properties").is_file()
        assert dep.bootstrap == f"127.0.0.1:{dep.infra['kafka'].port}"
        url = _console_url(proc.stdout)
        assert url == dep.console_url
        # The console answers: /readyz for probes, sign-in with the session's admin password.
        assert _get(f"{url}readyz") == (200, "ok\n")
        password_file, key_file = dep.console_password_file, state / "approval-key"
        for secret in (password_file, key_file):
            assert secret.stat().st_mode & 0o777 == 0o600
            assert secret.read_text().strip() not in (state / "deployment.json").read_text()
        assert str(password_file) in proc.stdout
        assert f"DreamBot · {SESSION}" in _sign_in(url, password_file.read_text().strip())
        approval_key = key_file.read_text()

        # 2. the replay trades through Kafka.
        started = time.monotonic()
        assert dep.wait_replay(timeout_s=420).complete
        took_replay = time.monotonic() - started
        fills = _fills(dep)
        assert fills, "the real SPY session trades: fills on the executions topic"
        audit = [orjson.loads(line) for line in dep.audit_path.read_bytes().splitlines()]
        assert any(r["kind"] == "order_request" for r in audit)
        # The OMS writes its snapshot after each batch: wait for the one after the last fill.
        deadline = time.monotonic() + 30
        while (before := _snapshot(dep)) is None or before.ts < max(f.ts for f in fills):
            assert time.monotonic() < deadline, f"no OMS snapshot after the last fill: {before}"
            time.sleep(0.2)
        assert before.realized_pnl != 0.0 and before.broker

        # 3. status: every process with pid, port and a health answer.
        proc, _ = _run(status, tmp_path, 60)
        rows = {ln.split()[0]: ln for ln in proc.stdout.splitlines() if ln.strip()}
        assert set(rows) == {*launcher.STAGES, launcher.CONSOLE, "kafka", "redis"}
        assert all(" running " in row for row in rows.values()), proc.stdout
        assert "ok (brokers [1])" in rows["kafka"] and "ok (PONG)" in rows["redis"]
        assert all("readyz: ready" in rows[s] for s in launcher.STAGES) and "readyz: ok" in rows[launcher.CONSOLE]
        assert f"pid {dep.infra['kafka'].pid}" in rows["kafka"]

        # 4. down: everything stops, the data stays.
        _proc, took_down = _run(down, tmp_path, 120)
        _all_stopped(dep)
        assert all(p.is_file() for p in (state / "deployment.json", dep.audit_path))

        # 5. up again: same ports and data, the book intact, nothing traded twice.
        proc, took_warm = _run(up, tmp_path)
        again = launcher.Deployment.load(SESSION, tmp_path / "storage" / "services")
        assert again.bootstrap == dep.bootstrap and again.env["DREAMBOT_REDIS_URL"] == dep.env["DREAMBOT_REDIS_URL"]
        assert _snapshot(again) == before, "Redis kept the OMS snapshot across down/up"
        assert again.wait_replay(timeout_s=120).complete
        assert len(_fills(again)) == len(fills)
        assert key_file.read_text() == approval_key, "orders approved before down still verify"
        assert f"DreamBot · {SESSION}" in _sign_in(_console_url(proc.stdout), password_file.read_text().strip())
        # The OMS rebuilt its book from Kafka: without the Redis copy it writes the same snapshot.
        client = redis.Redis.from_url(again.env["DREAMBOT_REDIS_URL"])
        client.delete(f"{SESSION}:{keys.POSITIONS}")
        client.close()
        again.stop("oms")  # SIGTERM: the OMS finishes its batch and writes its snapshot on the way out
        assert not again.processes["oms"].running
        assert '"stage stopped"' in again.processes["oms"].log.read_text(encoding="utf-8")
        rebuilt = _snapshot(again)
        assert rebuilt is not None
        assert (rebuilt.orders, rebuilt.positions, rebuilt.realized_pnl, rebuilt.flat) == \
            (before.orders, before.positions, before.realized_pnl, before.flat)
        assert len([ln for ln in again.audit_path.read_bytes().splitlines()]) == len(audit), "no order sent twice"
        _run(down, tmp_path, 120)
        _all_stopped(again)
        dep = None

        # 6. down --purge: the state is gone.
        proc, _ = _run(purge, tmp_path, 60)
        assert not state.exists()
        print(f"timings: up (cold) {took_up:.1f}s, replay {took_replay:.1f}s, down {took_down:.1f}s, "
              f"up (warm) {took_warm:.1f}s")
    finally:
        if dep is not None and (state / "deployment.json").is_file():
            launcher.Deployment.load(SESSION, tmp_path / "storage" / "services").down(timeout_s=20)
