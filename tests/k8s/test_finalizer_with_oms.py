"""The live-session finalizer against a real OMS: its snapshot (a real OrderManager with working orders,
written to Redis by the OMS's own hooks) holds the deletion; the operator's flatten request, carried
out by the OMS, releases it."""

from __future__ import annotations

from pathlib import Path

import redis

from services.core import topics
from services.core.events import RiskCommand
from services.core.redis_state import RedisState
from tests.harness.redis_server import RedisServer
from tests.k8s.conftest import Cluster, OperatorProcess, load_example, wait_for
from tests.unit.oms.service_support import OmsService
from tests.unit.oms.support import NS, SPY_C620, T0, make_quote, make_request

SESSION = "live-index"


def test_deletion_is_held_until_the_oms_has_flattened(
    cluster: Cluster, operator: OperatorProcess, redis_server: RedisServer, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    store = RedisState(redis_server.url, SESSION, retries=1, backoff_cap_s=0.05)
    oms = OmsService(store, tmp_path)
    oms.chain(T0, make_quote(SPY_C620, T0, 1.00, 1.05, bid_size=20, ask_size=20))
    oms.handle((topics.ORDERS, make_request("r1", SPY_C620, 2, 1.10, 1.50, 0.80, ts=T0 + NS)))
    assert oms.manager.book.live(), "the OMS has working orders"
    body = load_example("tradingsession-live.yaml")
    body["spec"]["redis"]["url"] = redis_server.url
    try:
        cluster.apply(body)
        wait_for(lambda: cluster.get("deployment", f"{SESSION}-oms") is not None, 30, what="OMS deployment")
        cluster.delete("tradingsession", SESSION)

        def held() -> bool | None:
            ts = cluster.get("tradingsession", SESSION)
            status = (ts or {}).get("status") or {}
            deleting = ts is not None and ts["metadata"].get("deletionTimestamp") and status.get("phase") == "Deleting"
            return True if deleting else None

        wait_for(held, 30, what="deletion held by the finalizer")
        wait_for(lambda: client.get(f"{SESSION}:dreambot:flatten_request"), 30, what="the operator's flatten request")
        assert cluster.get("tradingsession", SESSION) is not None  # still held: the book is not flat

        oms.wall.now += 1.0
        oms.hooks.periodic()  # the OMS runner's periodic check, with no market data arriving
        commands = [e for e in oms.publisher.on(topics.RISK_COMMANDS) if isinstance(e, RiskCommand)]
        assert [c.action for c in commands] == ["flatten"]
        oms.deliver()  # Kafka hands the command back; the OMS flattens and writes its snapshot
        assert oms.manager.is_flat()
        wait_for(lambda: cluster.get("tradingsession", SESSION) is None, 30, what="deletion completed")
    finally:
        client.delete(f"{SESSION}:dreambot:positions", f"{SESSION}:dreambot:kill_switch",
                      f"{SESSION}:dreambot:flatten_request", f"{SESSION}:dreambot:flatten_ack")
        store.close()
