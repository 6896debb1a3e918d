"""Services mode on one machine: every stage as its own process, against a running Kafka and Redis.

    python -m services.launcher up --session demo --symbols SPY --data data/sample/spy_1min_2025-07-09.csv
    python -m services.launcher status --session demo
    python -m services.launcher down --session demo

``up`` starts ``python -m services.<stage>.main`` for ingest, features, signals, risk and oms (logs in
``storage/services/<session>/<stage>.log``, the OMS audit in ``.../oms-audit.jsonl``), waits until every
``/readyz`` answers 200 and records the processes in ``.../deployment.json``; ``down`` sends them SIGTERM
(each finishes its batch, commits and exits) and SIGKILL after a grace period. The same steps are
functions for tests and tools: :func:`up` returns a :class:`Deployment` (start, stop, kill, restart one
stage; wait for readiness or for the replay to complete), :func:`down` stops a recorded session.
Kafka (``--kafka-bootstrap``) and Redis (``--redis-url``) must already be running.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.app.stages import STAGE_ORDER, stage_inputs
from services.cliutil import OneLineParser, fail
from services.core.logs import redact_text
from services.core.session_config import load_session_config
from services.core.settings import PROJECT_ROOT, ConfigError
from services.runtime.lockstep import ControlChannel, RoundLog, Topology

PROG = "python -m services.launcher"
STAGES: tuple[str, ...] = ("ingest", *STAGE_ORDER)
DEFAULT_STORAGE = PROJECT_ROOT / "storage" / "services"
#: Settings never written to deployment.json (the stages have them in their environment only).
SECRET_ENV: frozenset[str] = frozenset({"DREAMBOT_APPROVAL_KEY"})


class LaunchError(RuntimeError):
    """A stage did not start or become ready; the message ends with the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 25) -> str:
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _alive(pid: int, name: str) -> bool:
    """True when ``pid`` runs ``services.<name>.main`` (a recycled pid is not mistaken for it)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if f"services.{name}.main" not in cmdline:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@dataclass
class ServiceProcess:
    """One stage process: its HTTP port, log file and (when started here) its Popen handle."""

    name: str
    port: int
    log: Path
    pid: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def url(self, path: str = "/readyz") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid > 0 and _alive(self.pid, self.name)


@dataclass
class Deployment:
    """The stage processes of one session on this machine."""

    session: str
    directory: Path
    env: dict[str, str]
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return self.env.get("DREAMBOT_KAFKA_TOPIC_PREFIX") or self.session

    @property
    def bootstrap(self) -> str:
        return self.env["DREAMBOT_KAFKA_BOOTSTRAP"]

    @property
    def audit_path(self) -> Path:
        return Path(self.env["OMS_AUDIT_PATH"])

    # --- lifecycle of one stage ----------------------------------------------------------------

    def start(self, name: str) -> ServiceProcess:
        """Start (or restart) stage ``name``; its output is appended to its log file."""
        svc = self.processes.get(name)
        if svc is None:
            svc = ServiceProcess(name, free_port(), self.directory / f"{name}.log")
            self.processes[name] = svc
        if svc.running:
            return svc
        env = dict(self.env)
        env.update(DREAMBOT_HTTP_PORT=str(svc.port), PYTHONUNBUFFERED="1")
        svc.log.parent.mkdir(parents=True, exist_ok=True)
        with svc.log.open("ab") as out:
            svc.proc = subprocess.Popen([sys.executable, "-m", f"services.{name}.main"], env=env, cwd=PROJECT_ROOT,
                                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        svc.pid = svc.proc.pid
        self.save()
        return svc

    def stop(self, name: str, timeout_s: float = 30.0) -> int | None:
        """SIGTERM stage ``name`` and wait (SIGKILL after ``timeout_s``); returns its exit status."""
        svc = self.processes[name]
        if not svc.running:
            return svc.proc.returncode if svc.proc is not None else None
        os.kill(svc.pid, signal.SIGTERM)
        return self._wait_exit(svc, timeout_s)

    def kill(self, name: str) -> None:
        """Crash stage ``name`` (SIGKILL)."""
        svc = self.processes[name]
        if svc.running:
            os.kill(svc.pid, signal.SIGKILL)
            self._wait_exit(svc, 10.0)

    def _wait_exit(self, svc: ServiceProcess, timeout_s: float) -> int | None:
        deadline = time.monotonic() + timeout_s
        while svc.running and time.monotonic() < deadline:
            time.sleep(0.05)
        if svc.running:
            os.kill(svc.pid, signal.SIGKILL)
            while svc.running:
                time.sleep(0.05)
        return svc.proc.wait() if svc.proc is not None else None

    def wait_ready(self, names: Sequence[str] | None = None, timeout_s: float = 120.0) -> None:
        """Block until every named stage's /readyz answers 200; LaunchError if one exits or times out."""
        pending = list(names or self.processes)
        deadline = time.monotonic() + timeout_s
        while pending:
            for name in list(pending):
                svc = self.processes[name]
                if not svc.running:
                    raise LaunchError(f"{name} exited before it was ready; {svc.log}:\n{_tail(svc.log)}")
                if http_status(svc.url("/readyz")) == 200:
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                detail = "\n".join(f"--- {n}: {http_text(self.processes[n].url('/readyz'))}\n"
                                   f"{_tail(self.processes[n].log, 10)}" for n in pending)
                raise LaunchError(f"not ready after {timeout_s:.0f}s: {', '.join(pending)}\n{detail}")
            if pending:
                time.sleep(0.1)

    def down(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        """Stop every stage (the source first); returns their exit statuses."""
        return {name: self.stop(name, timeout_s) for name in self.processes}

    # --- the replay ----------------------------------------------------------------------------

    def topology(self) -> Topology:
        stages = [s for s in self.env.get("DREAMBOT_LOCKSTEP_STAGES", ",".join(STAGE_ORDER)).split(",") if s]
        return Topology.of(stage_inputs(stages), stages, [*STAGE_ORDER, *(s for s in stages if s not in STAGE_ORDER)])

    def replay_log(self) -> RoundLog:
        """The lockstep's state as of now (see :mod:`services.runtime.lockstep`)."""
        channel = ControlChannel(self.bootstrap, self.prefix, f"dreambot-{self.prefix}-launcher")
        try:
            rounds = RoundLog(self.topology())
            for done in channel.read_existing():
                rounds.feed(done)
            return rounds
        finally:
            channel.close()

    def wait_replay(self, timeout_s: float = 600.0, check_alive: bool = True) -> RoundLog:
        """Follow the control log until the lockstep replay is complete; LaunchError on timeout or when
        a stage process died."""
        channel = ControlChannel(self.bootstrap, self.prefix, f"dreambot-{self.prefix}-launcher")
        rounds = RoundLog(self.topology())
        deadline = time.monotonic() + timeout_s
        try:
            for done in channel.read_existing():
                rounds.feed(done)
            while not rounds.complete:
                if time.monotonic() > deadline:
                    waiting = sorted(rounds.current.active - set(rounds.current.dones))
                    tails = "\n".join(f"--- {n}: {self.processes[n].log}\n{_tail(self.processes[n].log, 30)}"
                                       for n in waiting if n in self.processes)
                    raise LaunchError(f"replay not complete after {timeout_s:.0f}s (round {rounds.current.number}, "
                                      f"waiting for {waiting})\n{tails}")
                if check_alive:
                    dead = [n for n, p in self.processes.items() if not p.running]
                    if dead:
                        raise LaunchError(f"stage(s) {', '.join(dead)} exited during the replay:\n"
                                          + "\n".join(_tail(self.processes[n].log) for n in dead))
                for done in channel.poll(0.5):
                    rounds.feed(done)
                rounds.prune()
            return rounds
        finally:
            channel.close()

    # --- persistence ---------------------------------------------------------------------------

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # No secrets on disk: the approval key is left out, URL passwords and registered secrets masked.
        env = {k: redact_text(v) for k, v in self.env.items()
               if k.startswith(("DREAMBOT_", "OMS_")) and k not in SECRET_ENV}
        procs = {n: {"pid": p.pid, "port": p.port, "log": str(p.log)} for n, p in self.processes.items()}
        doc = {"session": self.session, "env": env, "processes": procs}
        path = self.directory / "deployment.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when an older, wider file was there
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, indent=2))

    @classmethod
    def load(cls, session: str, storage: Path = DEFAULT_STORAGE) -> Deployment:
        directory = storage / session
        path = directory / "deployment.json"
        if not path.is_file():
            raise LaunchError(f"no deployment recorded for session {session!r} ({path} not found)")
        doc = json.loads(path.read_text(encoding="utf-8"))
        processes = {n: ServiceProcess(n, int(p["port"]), Path(p["log"]), int(p["pid"]))
                     for n, p in doc.get("processes", {}).items()}
        return cls(session, directory, dict(doc.get("env", {})), processes)


def http_status(url: str, timeout_s: float = 1.0) -> int | None:
    """HTTP status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def http_text(url: str, timeout_s: float = 2.0) -> str:
    """Body of a GET (also of an error status), or why there is none."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            text: str = resp.read().decode(errors="replace")
            return text
    except urllib.error.HTTPError as exc:
        return exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return f"no answer ({exc})"


def up(
    session: str,
    symbols: Sequence[str] = ("SPY",),
    data: Path | None = None,
    *,
    kafka_bootstrap: str,
    redis_url: str,
    storage: Path = DEFAULT_STORAGE,
    stages: Sequence[str] = STAGES,
    lockstep: bool = True,
    env: Mapping[str, str] | None = None,
    wait: bool = True,
    timeout_s: float = 120.0,
) -> Deployment:
    """Start every stage of ``session`` as a process and (by default) wait until all are ready.

    ``data``: the bars the ingest replays (None: synthetic bars). ``env``: further settings
    (``DREAMBOT_*``, ``OMS_*``) for every stage; they override the ones derived here.
    """
    directory = storage / session
    directory.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DREAMBOT_", "OMS_"))}
    base.update(
        DREAMBOT_SESSION=session,
        DREAMBOT_SYMBOLS=",".join(symbols),
        DREAMBOT_KAFKA_BOOTSTRAP=kafka_bootstrap,
        DREAMBOT_REDIS_URL=redis_url,
        DREAMBOT_REPLAY_LOCKSTEP="true" if lockstep else "false",
        OMS_AUDIT_PATH=str(directory / "oms-audit.jsonl"),
    )
    if data is not None:
        base["DREAMBOT_REPLAY_SOURCE"] = str(Path(data).resolve())
    base.update(env or {})
    # Risk signs every order it approves and the OMS checks it: one key for the deployment, the
    # caller's (env, or DREAMBOT_APPROVAL_KEY in this environment) or a fresh random one.
    base["DREAMBOT_APPROVAL_KEY"] = (base.get("DREAMBOT_APPROVAL_KEY") or os.environ.get("DREAMBOT_APPROVAL_KEY")
                                     or secrets.token_hex(32))
    # Every stage process loads its SessionConfig from this environment: refuse a bad one here, once.
    load_session_config(environ=base)
    deployment = Deployment(session, directory, base)
    try:
        for name in stages:
            deployment.start(name)
        if wait:
            deployment.wait_ready(timeout_s=timeout_s)
    except BaseException:
        deployment.down(timeout_s=10)
        raise
    return deployment


def down(session: str, storage: Path = DEFAULT_STORAGE, timeout_s: float = 30.0) -> dict[str, int | None]:
    """Stop the recorded processes of ``session`` (SIGTERM, then SIGKILL after ``timeout_s``)."""
    return Deployment.load(session, storage).down(timeout_s)


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    u = sub.add_parser("up", help="start every stage of a session and wait until ready")
    u.add_argument("--session", required=True)
    u.add_argument("--symbols", default="SPY", help="comma-separated underlyings (default SPY)")
    u.add_argument("--data", type=Path, help="bars the ingest replays (default: synthetic bars)")
    u.add_argument("--table", help="DuckDB table of --data")
    u.add_argument("--tz", help="time zone of naive timestamps in --data")
    u.add_argument("--kafka-bootstrap", help="Kafka brokers (default: the session config's kafka.bootstrap)")
    u.add_argument("--redis-url", help="Redis URL (default: the session config's redis.url)")
    u.add_argument("--config-dir", type=Path, help="folder of the YAML configs (default config/)")
    u.add_argument("--storage", type=Path, default=DEFAULT_STORAGE)
    u.add_argument("--no-lockstep", action="store_true", help="free-running replay (no embedded parity)")
    u.add_argument("--learner", action="store_true", help="also start the learner (free-running)")
    u.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for /readyz")
    for name in ("down", "status"):
        d = sub.add_parser(name, help=f"{name} a session started by `up`")
        d.add_argument("--session", required=True)
        d.add_argument("--storage", type=Path, default=DEFAULT_STORAGE)
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    parser = _parser()
    parser.prog = prog
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            if args.kafka_bootstrap is None or args.redis_url is None:
                defaults = load_session_config().config
                args.kafka_bootstrap = args.kafka_bootstrap or defaults.kafka.bootstrap
                args.redis_url = args.redis_url or defaults.redis.url
            if args.data is not None and not args.data.exists():
                fail(prog, f"--data {args.data}: no such file or folder")
            extra: dict[str, str] = {}
            if args.config_dir is not None:
                extra["DREAMBOT_CONFIG_DIR"] = str(args.config_dir.resolve())
            if args.table:
                extra["DREAMBOT_REPLAY_TABLE"] = args.table
            if args.tz:
                extra["DREAMBOT_REPLAY_TZ"] = args.tz
            symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
            stages = (*STAGES, "learner") if args.learner else STAGES
            dep = up(args.session, symbols, args.data, kafka_bootstrap=args.kafka_bootstrap,
                     redis_url=args.redis_url, storage=args.storage, stages=stages, lockstep=not args.no_lockstep,
                     env=extra, timeout_s=args.timeout)
            for name, svc in dep.processes.items():
                print(f"{name:9s} pid {svc.pid:<7d} {svc.url('/metrics')}  log {svc.log}")
            print(f"up: {len(dep.processes)} stages ready; stop with: {PROG} down --session {args.session}")
            return 0
        dep = Deployment.load(args.session, args.storage)
        if args.command == "down":
            codes = dep.down()
            print("down: " + ", ".join(f"{n} " + ("stopped" if c is None else f"exit {c}") for n, c in codes.items()))
            return 0
        for name, svc in dep.processes.items():
            state = "running" if svc.running else "stopped"
            ready = http_text(svc.url("/readyz")).strip().replace("\n", "; ") if svc.running else "-"
            print(f"{name:9s} {state:8s} pid {svc.pid:<7d} readyz: {ready}")
        return 0
    except LaunchError as exc:
        fail(prog, str(exc).splitlines()[0], 1)
    except ConfigError as exc:
        fail(prog, str(exc))


if __name__ == "__main__":
    raise SystemExit(main())
