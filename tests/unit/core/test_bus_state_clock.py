"""In-process bus ordering, memory state semantics, replay clock."""

from __future__ import annotations

from services.core.bus import InProcessBus
from services.core.clock import ReplayClock
from services.core.events import Event, Heartbeat
from services.core.state import MemoryState


def _hb(ts: int, src: str = "a") -> Heartbeat:
    return Heartbeat(ts=ts, source=src, seq=ts)


def test_fifo_delivery_and_no_reentrancy() -> None:
    bus = InProcessBus()
    seen: list[tuple[str, int]] = []

    def first(e: Event) -> None:
        seen.append(("first", e.ts))
        if e.ts < 3:
            bus.publish("b", "k", _hb(e.ts + 10))

    bus.subscribe("a", first, group="g1")
    bus.subscribe("b", lambda e: seen.append(("second", e.ts)), group="g2")
    for ts in (1, 2, 3):
        bus.publish("a", "k", _hb(ts))
    # Outputs of a handler are delivered after the event that caused them, in publication order.
    assert seen == [("first", 1), ("second", 11), ("first", 2), ("second", 12), ("first", 3)]


def test_per_key_order_preserved_across_interleaving() -> None:
    bus = InProcessBus()
    got: dict[str, list[int]] = {}
    bus.subscribe("t", lambda e: got.setdefault(e.source, []).append(e.ts), group="g")  # type: ignore[attr-defined]
    for i in range(100):
        bus.publish("t", "SPY" if i % 3 else "QQQ", _hb(i, "SPY" if i % 3 else "QQQ"))
    assert all(v == sorted(v) for v in got.values())
    assert sum(map(len, got.values())) == 100


def test_duplicate_group_rejected() -> None:
    bus = InProcessBus()
    bus.subscribe("t", lambda e: None, group="g")
    try:
        bus.subscribe("t", lambda e: None, group="g")
    except ValueError as exc:
        assert "g" in str(exc)
    else:
        raise AssertionError("second subscription of one group must fail")


def test_memory_state_prefix_ttl_and_streams() -> None:
    clock = ReplayClock(0)
    st = MemoryState(prefix="s1", now_s=lambda: clock.now_ns() / 1e9)
    other = MemoryState(prefix="s2")
    st.set("k", b"v", ttl_s=5)
    assert st.get("k") == b"v" and other.get("k") is None
    clock.advance_to(4_999_000_000)
    assert st.get("k") == b"v"
    clock.advance_to(5_000_000_000)
    assert st.get("k") is None
    for i in range(10):
        st.append("stream", str(i).encode(), maxlen=4)
    assert st.read("stream", 10) == [b"6", b"7", b"8", b"9"]
    assert st.read("stream", 2) == [b"8", b"9"]
    st.set("x", b"1")
    st.delete("x")
    assert st.get("x") is None


def test_replay_clock_never_goes_back() -> None:
    c = ReplayClock(10)
    c.advance_to(5)
    assert c.now_ns() == 10
    c.advance_to(20)
    assert c.now_ns() == 20
