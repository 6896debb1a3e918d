"""A forged OrderRequest written to the orders topic of a running OMS (real Kafka broker and
redis-server, the OMS as its own process): dead-lettered with its reason, never at the broker.

Four requests go straight onto ``<prefix>.orders`` as any Kafka client could write them: one for 500
contracts with no approval, one with a made-up approval, one signed with the session's key but for 500
contracts (over the 10-contract cap), and one properly approved for 1 contract. The first three land in
``<prefix>.dlq`` with reason ``refused`` and the rule that refused them, appear in the OMS audit log
only as ``order_refused`` and produce no execution; the approved one is executed (nothing lost).
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import orjson
from confluent_kafka import Producer

from services.core import topics
from services.core.approval import ApprovalKey
from services.core.dlq import DeadLetter, decode_dead_letter
from services.core.events import OrderEvent, OrderRequest, decode_msgpack, encode_msgpack
from tests.harness.kafka_broker import KafkaBroker
from tests.integration.services.conftest import APPROVAL_KEY, Launch, new_session, read_topic

T0 = 1_752_069_600_000_000_000  # 2025-07-09 10:00 New York


def _request(rid: str, quantity: int) -> OrderRequest:
    return OrderRequest(ts=T0, id=rid, intent_id=f"intent-{rid}", underlying="SPY", contract="SPY250709C00620000",
                        side="buy", quantity=quantity, limit_price=1.50, take_profit=2.00, stop_loss=1.00)


def _wait_for(bootstrap: str, qualified: str, count: int, timeout_s: float = 60.0) -> list[tuple[str, bytes]]:
    deadline = time.monotonic() + timeout_s
    while True:
        got = read_topic(bootstrap, qualified)
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def _audit(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()] if path.exists() else []


def test_a_forged_order_is_dead_lettered_and_never_reaches_the_broker(broker: KafkaBroker, launch: Launch) -> None:
    session = new_session("forged")
    dep = launch(session, stages=("oms",), lockstep=False)
    key = ApprovalKey(APPROVAL_KEY.encode(), "test")
    forged = _request("forged-500", 500)
    made_up = msgspec.structs.replace(_request("made-up-approval", 500), approval="ab" * 32)
    over_cap = key.sign(_request("signed-500", 500))
    approved = key.sign(_request("approved-1", 1))
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    orders = topics.qualified(dep.prefix, topics.ORDERS)
    for request in (forged, made_up, over_cap, approved):
        producer.produce(orders, key=b"SPY", value=encode_msgpack(request))
    assert producer.flush(10) == 0

    letters: list[DeadLetter] = [decode_dead_letter(v) for _, v in
                                 _wait_for(broker.bootstrap, topics.qualified(dep.prefix, topics.DLQ), 3)]
    executions = [decode_msgpack(v) for _, v in
                  _wait_for(broker.bootstrap, topics.qualified(dep.prefix, topics.EXECUTIONS), 1)]
    refused = {decode_msgpack(x.payload).id: x for x in letters}  # type: ignore[union-attr]
    assert sorted(refused) == ["forged-500", "made-up-approval", "signed-500"]
    for letter in letters:
        assert (letter.reason, letter.stage, letter.topic) == ("refused", "oms", orders)
    assert refused["forged-500"].field == "approval"
    assert refused["forged-500"].detail == "approval: order request forged-500 carries no risk approval"
    assert refused["made-up-approval"].field == "approval" and "does not match" in refused["made-up-approval"].detail
    assert refused["signed-500"].field == "max_contracts_per_order"
    assert refused["signed-500"].detail.endswith("for 500 contracts exceeds the 10-contract cap")
    # The dead letter keeps the original bytes: nothing about the refused request is lost.
    assert refused["forged-500"].payload == encode_msgpack(forged)

    order_events = [e for e in executions if isinstance(e, OrderEvent)]
    assert order_events and {e.client_order_id for e in order_events} == {order_events[0].client_order_id}
    assert all(e.quantity == 1 for e in order_events), "only the approved 1-contract request was executed"

    audit = _audit(dep.directory / "oms-audit.jsonl")
    assert sorted(str(r["id"]) for r in audit if r["kind"] == "order_refused") == sorted(refused)
    assert [r["id"] for r in audit if r["kind"] == "order_request"] == ["approved-1"]
    log = dep.processes["oms"].log.read_text(encoding="utf-8", errors="replace")
    assert "order request forged-500 carries no risk approval" in log and "Traceback" not in log
