"""The runbook's kill-switch, flatten and stale-feed commands, run verbatim by bash against a real
redis-server; the flatten is carried out by a real OMS (OmsStage + OmsHooks over the same Redis)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from services.core import keys, shared_state, topics
from services.core.events import RiskCommand
from services.core.redis_state import RedisState
from tests.harness.redis_server import RedisServer
from tests.unit.oms.service_support import OmsService
from tests.unit.oms.support import NS, SPY_C620, T0, make_quote, make_request

pytestmark = pytest.mark.integration

SESSION = "demo"
STATUS = 'dreambot kill-switch status --session demo --redis-url "$DREAMBOT_REDIS_URL"'
ENGAGE = ('dreambot kill-switch engage --session demo --redis-url "$DREAMBOT_REDIS_URL" '
          '--reason "fills look wrong, halting" --actor alice')
RELEASE = ('dreambot kill-switch release --session demo --redis-url "$DREAMBOT_REDIS_URL" '
           '--reason "fills checked, resuming" --actor alice')
FLATTEN = 'dreambot flatten --session demo --redis-url "$DREAMBOT_REDIS_URL" --wait 30'
COMMANDS = (STATUS, ENGAGE, RELEASE, FLATTEN)

UTC_TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
JUL_9_2025_NS = 1_752_069_600 * NS  # 2025-07-09 14:00:00 UTC, a Wednesday (the next session is the 10th)


def env_for(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DREAMBOT_", "OMS_"))}
    env["DREAMBOT_REDIS_URL"] = url
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def sh(cmd: str, url: str) -> subprocess.CompletedProcess[str]:
    """``cmd`` exactly as the runbook prints it, through bash, as an operator pastes it."""
    proc = subprocess.run(["bash", "-c", cmd], env=env_for(url), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url)
    for key in c.keys(f"{SESSION}:*"):  # the session-wide server: start from an empty session
        c.delete(key)
    yield c
    for key in c.keys(f"{SESSION}:*"):
        c.delete(key)
    c.close()


def audit(c: redis.Redis) -> list[shared_state.KillSwitchAudit]:
    entries = c.xrange(f"{SESSION}:{keys.KILL_SWITCH_AUDIT}")
    return [shared_state.decode_kill_switch_audit(fields[b"v"]) for _id, fields in entries]


def flag(c: redis.Redis) -> shared_state.KillSwitchState:
    raw = c.get(f"{SESSION}:{keys.KILL_SWITCH}")
    assert raw is not None
    return shared_state.decode_kill_switch(raw)


def test_engage_status_release_are_written_and_audited(redis_server: RedisServer, client: redis.Redis) -> None:
    url = redis_server.url
    before = sh(STATUS, url)
    assert before.returncode == 0, before.stderr
    assert before.stdout.splitlines() == [
        "kill switch: released (session demo)",
        "last audit: none",
        "market data: no heartbeat yet (the ingest has not published)",
        "book: no OMS snapshot yet (nothing traded)",
    ]

    engaged = sh(ENGAGE, url)
    assert engaged.returncode == 0, engaged.stderr
    assert re.fullmatch(rf"kill switch engaged at {UTC_TS} by alice\n", engaged.stdout), engaged.stdout
    f = flag(client)
    assert (f.engaged, f.reason, f.source) == (True, "Manual", "cli")
    [entry] = audit(client)
    assert (entry.action, entry.outcome, entry.user, entry.role, entry.why, entry.reason, entry.source) == \
        ("engage", "written", "alice", "operator", "fills look wrong, halting", "Manual", "cli")
    assert entry.ts == f.ts  # the console shows who wrote the flag by this match

    again = sh(ENGAGE, url)
    assert (again.returncode, again.stdout) == (0, "kill switch already engaged: nothing was written\n")
    assert len(audit(client)) == 1

    shown = sh(STATUS, url).stdout.splitlines()
    assert re.fullmatch(rf"kill switch: ENGAGED \(session demo\), reason Manual, since {UTC_TS}, by cli", shown[0])
    assert re.fullmatch(rf"last audit: engage written by alice \(cli\) at {UTC_TS}: fills look wrong, halting",
                        shown[1])

    released = sh(RELEASE, url)
    assert released.returncode == 0, released.stderr
    assert re.fullmatch(rf"kill switch released at {UTC_TS} by alice\n", released.stdout), released.stdout
    assert flag(client).engaged is False
    assert [(e.action, e.outcome, e.why) for e in audit(client)] == [
        ("engage", "written", "fills look wrong, halting"), ("release", "written", "fills checked, resuming")]


def test_a_daily_loss_limit_engagement_waits_for_the_next_session(redis_server: RedisServer,
                                                                  client: redis.Redis) -> None:
    key = f"{SESSION}:{keys.KILL_SWITCH}"
    today = shared_state.encode(shared_state.KillSwitchState(True, "DailyLossLimit", time.time_ns(), "risk"))
    client.set(key, today)
    refused = sh(RELEASE, redis_server.url)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("dreambot kill-switch: error: It was engaged for DailyLossLimit on ")
    assert "can release it from the next session" in refused.stderr and refused.stderr.count("\n") == 1
    assert client.get(key) == today, "nothing was written"
    [entry] = audit(client)
    assert (entry.action, entry.outcome, entry.user, entry.reason) == ("release", "refused", "alice", "DailyLossLimit")
    assert entry.detail in refused.stderr

    # Engaged on 2025-07-09: the next session (2025-07-10) has long begun, so it may be released.
    client.set(key, shared_state.encode(shared_state.KillSwitchState(True, "DailyLossLimit", JUL_9_2025_NS, "risk")))
    released = sh(RELEASE, redis_server.url)
    assert released.returncode == 0, released.stderr
    assert released.stdout.endswith("by alice (it was engaged for DailyLossLimit)\n"), released.stdout
    assert flag(client).engaged is False


def test_bad_input_is_one_line_and_writes_nothing(redis_server: RedisServer, client: redis.Redis) -> None:
    short = sh(ENGAGE.replace('"fills look wrong, halting"', '"x"'), redis_server.url)
    assert short.returncode == 2 and short.stderr.count("\n") == 1 and "3-200 characters" in short.stderr
    down = sh(STATUS.replace('"$DREAMBOT_REDIS_URL"', "redis://:hunter2@127.0.0.1:1/0"), redis_server.url)
    assert down.returncode == 3 and down.stderr.count("\n") == 1, down.stderr
    assert "unreachable" in down.stderr and "hunter2" not in down.stderr
    assert client.keys(f"{SESSION}:*") == []


def test_status_says_when_the_feed_is_stale(redis_server: RedisServer, client: redis.Redis) -> None:
    beat = f"{SESSION}:{keys.INGEST_HEARTBEAT}"
    client.set(beat, shared_state.encode(shared_state.IngestHeartbeat(ts=JUL_9_2025_NS, seq=7)))
    line = sh(STATUS, redis_server.url).stdout.splitlines()[2]
    assert re.fullmatch(r"market data: STALE, last event 2025-07-09 14:00:00 UTC \(seq 7\), \d+ s ago", line), line
    client.set(beat, shared_state.encode(shared_state.IngestHeartbeat(ts=time.time_ns(), seq=8)))
    line = sh(STATUS, redis_server.url).stdout.splitlines()[2]
    assert re.fullmatch(rf"market data: fresh, last event {UTC_TS} \(seq 8\), \d+ s ago", line), line


def test_flatten_waits_for_the_oms_to_act_and_report_a_flat_book(redis_server: RedisServer, client: redis.Redis,
                                                                 tmp_path: Path) -> None:
    store = RedisState(redis_server.url, SESSION, retries=1, backoff_cap_s=0.05)
    oms = OmsService(store, tmp_path)
    try:
        oms.chain(T0, make_quote(SPY_C620, T0, 1.00, 1.05, bid_size=20, ask_size=20))
        oms.handle((topics.ORDERS, make_request("r1", SPY_C620, 2, 1.10, 1.50, 0.80, ts=T0 + NS)))
        assert oms.manager.book.live(), "the OMS has working orders"
        assert sh(STATUS, redis_server.url).stdout.splitlines()[3].startswith("book: NOT flat, ")

        proc = subprocess.Popen(["bash", "-c", FLATTEN], env=env_for(redis_server.url), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not [e for e in oms.publisher.on(topics.RISK_COMMANDS) if isinstance(e, RiskCommand)]:
            assert time.monotonic() < deadline and proc.poll() is None, "the OMS never saw the request"
            oms.wall.now += 1.0
            oms.hooks.periodic()  # the OMS runner's periodic check of the request key
            time.sleep(0.1)
        oms.deliver()  # Kafka hands the flatten command back; the OMS flattens and writes its snapshot
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        lines = out.splitlines()
        nonce = re.fullmatch(r"flatten requested: nonce ([0-9a-f]{16})", lines[0])
        assert nonce is not None, out
        ack_raw = client.get(f"{SESSION}:{keys.FLATTEN_ACK}")
        assert ack_raw is not None
        ack = shared_state.decode_flatten_ack(ack_raw)
        assert ack.nonce == nonce.group(1)
        assert lines[1] == f"flatten acknowledged by the OMS: command {ack.command}"
        assert lines[2].startswith("book: flat, 0 open positions, 0 working orders, "), out
        assert oms.manager.is_flat()
    finally:
        store.close()


def test_flatten_without_an_oms_says_so_and_leaves_the_request(redis_server: RedisServer, client: redis.Redis) -> None:
    proc = sh(FLATTEN.replace("--wait 30", "--wait 1"), redis_server.url)
    assert proc.returncode == 1
    assert proc.stderr == ("dreambot flatten: error: the OMS did not acknowledge the flatten within 1 s (is it "
                           "running?); the request stays and the OMS acts on it once\n")
    raw = client.get(f"{SESSION}:{keys.FLATTEN_REQUEST}")
    assert raw is not None and shared_state.decode_flatten_request(raw).source == "cli"
