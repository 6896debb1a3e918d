"""``dreambot kill-switch status|engage|release`` and ``dreambot flatten``: the console's kill switch
and the operator's flatten request, for an operator without a browser.

Same keys, schema and rules as the console (:mod:`services.core.shared_state`,
:mod:`services.core.kill_switch_rules`): every engage or release asked for is appended to the
kill-switch audit stream with who (``--actor``, default the login name; role ``operator``), when and
why (``--reason``, 3-200 characters), written or refused; a ``DailyLossLimit`` engagement is not
released before the next trading session. The flag is written with source ``cli`` (the operator's
``spec.killSwitch`` releases only flags it engaged itself, so it never undoes this one).

Exit codes: 0 done (or already so), 1 refused / not done in time (the line says why), 2 bad arguments,
3 Redis unreachable or unreadable. The Redis URL (it may hold a password) is never printed.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final, NoReturn, TypeVar

from services.cliutil import OneLineParser
from services.core import keys, shared_state
from services.core.calendar import default_calendar
from services.core.kill_switch_rules import WHY_MAX, WHY_MIN, release_refusal
from services.core.redis_state import RedisState
from services.core.shared_state import (
    MANUAL,
    AuditAction,
    FlattenRequest,
    KillSwitchAudit,
    KillSwitchState,
    OmsSnapshot,
    SharedStateError,
)
from services.core.state import StateError

SOURCE: Final = "cli"  # the flag's and the audit entry's writer
ROLE: Final = "operator"  # whoever can reach the session's Redis may act, like a console operator
STALE_AFTER_S: Final = 30.0  # heartbeat age past which market data counts as stale (the console's)
POLL_S: Final = 0.2
NS_PER_S: Final = 1_000_000_000

T = TypeVar("T")

EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNAVAILABLE: Final = 3


class OpsError(Exception):
    """One line for the operator and the exit code it ends with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def utc(ts_ns: int) -> str:
    """``2025-01-02 14:30:05 UTC`` for a ns timestamp (``never`` for 0)."""
    if ts_ns <= 0:
        return "never"
    return datetime.fromtimestamp(ts_ns / NS_PER_S, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- reading the session's state ---------------------------------------------------------------


def _get(store: RedisState, key: str) -> bytes | None:
    try:
        return store.get(key)
    except StateError as exc:
        raise OpsError(str(exc), EXIT_UNAVAILABLE) from None


def _decoded(decode: Callable[[bytes], T], raw: bytes) -> T:
    try:
        return decode(raw)
    except SharedStateError as exc:
        raise OpsError(f"unreadable {exc}", EXIT_UNAVAILABLE) from None


def read_flag(store: RedisState) -> KillSwitchState:
    """The flag; an absent key is a released switch."""
    raw = _get(store, keys.KILL_SWITCH)
    return shared_state.RELEASED if raw is None else _decoded(shared_state.decode_kill_switch, raw)


def read_book(store: RedisState) -> OmsSnapshot | None:
    raw = _get(store, keys.POSITIONS)
    return None if raw is None else _decoded(shared_state.decode_oms_snapshot, raw)


def flag_line(session: str, flag: KillSwitchState) -> str:
    if not flag.engaged:
        return f"kill switch: released (session {session})"
    return f"kill switch: ENGAGED (session {session}), reason {flag.reason}, since {utc(flag.ts)}, by {flag.source}"


def heartbeat_line(store: RedisState, now_ns: int) -> str:
    raw = _get(store, keys.INGEST_HEARTBEAT)
    if raw is None:
        return "market data: no heartbeat yet (the ingest has not published)"
    beat = _decoded(shared_state.decode_heartbeat, raw)
    age_s = (now_ns - beat.ts) / NS_PER_S
    state = "STALE" if age_s > STALE_AFTER_S else "fresh"
    return f"market data: {state}, last event {utc(beat.ts)} (seq {beat.seq}), {age_s:.0f} s ago"


def book_line(book: OmsSnapshot | None) -> str:
    if book is None:
        return "book: no OMS snapshot yet (nothing traded)"
    flat = "flat" if not book.open_positions and not book.working_orders else "NOT flat"
    return (f"book: {flat}, {len(book.open_positions)} open positions, {len(book.working_orders)} working orders, "
            f"realized pnl {book.realized_pnl:+.2f}, unrealized {book.unrealized_pnl:+.2f} "
            f"(OMS snapshot at {utc(book.ts)}, broker {book.broker})")


def last_audit_line(store: RedisState) -> str:
    try:
        raws = store.read(keys.KILL_SWITCH_AUDIT, 1)
    except StateError as exc:
        raise OpsError(str(exc), EXIT_UNAVAILABLE) from None
    if not raws:
        return "last audit: none"
    e = _decoded(shared_state.decode_kill_switch_audit, raws[-1])
    return f"last audit: {e.action} {e.outcome} by {e.user} ({e.source or '?'}) at {utc(e.ts)}: {e.why}"


# --- the commands ------------------------------------------------------------------------------


def status(store: RedisState, session: str, now_ns: int) -> list[str]:
    """Flag, last audit entry, market-data heartbeat and book, one line each."""
    return [flag_line(session, read_flag(store)), last_audit_line(store), heartbeat_line(store, now_ns),
            book_line(read_book(store))]


def _append_audit(store: RedisState, entry: KillSwitchAudit) -> None:
    try:
        store.append(keys.KILL_SWITCH_AUDIT, shared_state.encode(entry), 10_000)  # the console's cap
    except StateError as exc:
        raise OpsError(f"the audit entry could not be stored: {exc}", EXIT_UNAVAILABLE) from None


def set_flag(store: RedisState, action: AuditAction, actor: str, why: str, clock_ns: Callable[[], int]) -> str:
    """Engage or release as the console does; the line to print. Refusals are audited, then raised."""
    text = " ".join(why.split())
    if not WHY_MIN <= len(text) <= WHY_MAX:
        raise OpsError(f"--reason must be {WHY_MIN}-{WHY_MAX} characters (it is recorded with your name): "
                       "nothing was written", EXIT_USAGE)
    current = read_flag(store)
    engage = action == "engage"
    if current.engaged == engage:
        return f"kill switch already {action}d: nothing was written"
    if not engage:
        refusal = release_refusal(current, clock_ns(), default_calendar(), writer="dreambot kill-switch")
        if refusal is not None:
            _append_audit(store, KillSwitchAudit(clock_ns(), action, "refused", actor, ROLE, text, current.reason,
                                                 refusal, SOURCE))
            raise OpsError(refusal, EXIT_REFUSED)
    written = KillSwitchState(engage, MANUAL, clock_ns(), SOURCE)
    try:
        store.set(keys.KILL_SWITCH, shared_state.encode(written))
    except StateError as exc:
        raise OpsError(f"{exc}: nothing was written", EXIT_UNAVAILABLE) from None
    _append_audit(store, KillSwitchAudit(written.ts, action, "written", actor, ROLE, text,
                                         written.reason if engage else current.reason, "", SOURCE))
    was = f" (it was engaged for {current.reason})" if not engage and current.reason != MANUAL else ""
    return f"kill switch {action}d at {utc(written.ts)} by {actor}{was}"


def flatten(store: RedisState, wait_s: float, clock_ns: Callable[[], int], say: Callable[[str], None]) -> None:
    """Write a flatten request (a new nonce); with ``wait_s`` > 0, wait for the OMS's ack and a flat book."""
    request = FlattenRequest(nonce=secrets.token_hex(8), ts=clock_ns(), source=SOURCE)
    try:
        store.set(keys.FLATTEN_REQUEST, shared_state.encode(request))
    except StateError as exc:
        raise OpsError(f"{exc}: nothing was written", EXIT_UNAVAILABLE) from None
    say(f"flatten requested: nonce {request.nonce}")
    if wait_s <= 0:
        return
    deadline = time.monotonic() + wait_s
    while True:
        raw = _get(store, keys.FLATTEN_ACK)
        ack = None if raw is None else _decoded(shared_state.decode_flatten_ack, raw)
        if ack is not None and ack.nonce == request.nonce:
            break
        if time.monotonic() >= deadline:
            raise OpsError(f"the OMS did not acknowledge the flatten within {wait_s:g} s (is it running?); the "
                           "request stays and the OMS acts on it once", EXIT_REFUSED)
        time.sleep(POLL_S)
    say(f"flatten acknowledged by the OMS: command {ack.command}")
    while True:  # the OMS's snapshot after it handled its own flatten command
        book = read_book(store)
        if book is None or (not book.open_positions and not book.working_orders):
            say(book_line(book))
            return
        if time.monotonic() >= deadline:
            raise OpsError(f"not flat after {wait_s:g} s: {book_line(book)}", EXIT_REFUSED)
        time.sleep(POLL_S)


# --- argument parsing --------------------------------------------------------------------------


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session", required=True, help="the session's name (its Redis keys are <session>:...)")
    p.add_argument("--redis-url", default=os.environ.get("DREAMBOT_REDIS_URL"),
                   help="the session's Redis (default DREAMBOT_REDIS_URL)")


def build_parser(prog: str) -> argparse.ArgumentParser:
    if prog.endswith("flatten"):
        p = OneLineParser(prog=prog, description="Ask the session's OMS to flatten every position once.")
        _add_target(p)
        p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                       help="wait this long for the OMS's acknowledgement and a flat book (default: do not wait)")
        return p
    p = OneLineParser(prog=prog, description="Read, engage or release the session's kill switch (audited).")
    sub = p.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    _add_target(sub.add_parser("status", help="flag, last audit entry, market-data heartbeat, book"))
    for action in ("engage", "release"):
        a = sub.add_parser(action, help=f"{action} the kill switch (recorded with who, when and why)")
        _add_target(a)
        a.add_argument("--reason", required=True, help=f"why ({WHY_MIN}-{WHY_MAX} characters, recorded)")
        a.add_argument("--actor", default=None, help="who asks (default: your login name)")
    return p


def _die(prog: str, message: str, code: int) -> NoReturn:
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None, prog: str = "dreambot kill-switch") -> int:
    args = build_parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    if not args.redis_url:
        _die(prog, "no Redis: pass --redis-url or set DREAMBOT_REDIS_URL", EXIT_USAGE)
    if not args.session.strip():
        _die(prog, "--session must not be empty", EXIT_USAGE)
    try:
        store = RedisState(args.redis_url, args.session, socket_timeout_s=2.0, connect_timeout_s=2.0)
    except ValueError:  # a malformed URL; not echoed, it may hold a password
        _die(prog, "bad --redis-url: use redis://[user:password@]host:port/db", EXIT_USAGE)
    try:
        if prog.endswith("flatten"):
            flatten(store, args.wait, time.time_ns, lambda line: print(line, flush=True))
        elif args.action == "status":
            print("\n".join(status(store, args.session, time.time_ns())))
        else:
            actor = " ".join((args.actor or getpass.getuser()).split())
            if not actor:
                _die(prog, "--actor must not be empty", EXIT_USAGE)
            print(set_flag(store, args.action, actor, args.reason, time.time_ns))
    except OpsError as exc:
        _die(prog, str(exc), exc.code)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
