"""Services mode on one machine: every stage as its own process, with its own Kafka and Redis or yours.

    dreambot services up --session demo --data data/sample/spy_1min_2025-07-09.csv
    dreambot services status --session demo
    dreambot services down --session demo           # data kept; --purge removes it

(``python -m services.launcher ...`` is the same.) Without ``--kafka-bootstrap``/``--redis-url`` (or a
``kafka.bootstrap``/``redis.url`` in the configuration: environment, ``.env``, session file), ``up``
first starts a single-node KRaft Kafka and a redis-server on 127.0.0.1 (:mod:`services.localstack`;
data in ``storage/services/<session>/kafka`` and ``.../redis``, kept across ``down``/``up``); given
them, it uses those. It then starts ``python -m services.<stage>.main`` for ingest, features, signals,
risk and oms and the console (``services.dashboard.main``; logs in ``storage/services/<session>/<name>.log``,
the OMS audit in ``.../oms-audit.jsonl``), waits until every ``/readyz`` (the console's page) answers 200,
records every process in ``.../deployment.json`` and prints the console's URL. ``down`` sends the stages
SIGTERM (each finishes its batch, commits and exits), then the console, Kafka and Redis, with SIGKILL
after a grace period. The same steps are functions for tests and tools: :func:`up` returns a
:class:`Deployment` (start, stop, kill, restart one stage; wait for readiness or for the replay to
complete), :func:`down` stops a recorded session.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
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
from services.localstack import InfraError, KafkaServer, LocalServer, LocalStack, RedisServer, port_open
from services.runtime.lockstep import ControlChannel, RoundLog, Topology

PROG = "python -m services.launcher"
STAGES: tuple[str, ...] = ("ingest", *STAGE_ORDER)
#: Relative to the working directory (like ``dreambot run``'s storage/run); resolved when used.
DEFAULT_STORAGE = Path("storage") / "services"
DEFAULT_SESSION = "demo"
CONSOLE = "console"
CONSOLE_PORT = 8050  # the console's usual port, taken when free
#: Processes that are not ``services.<name>.main``.
MODULES: dict[str, str] = {CONSOLE: "services.dashboard.main"}
#: Settings never written to deployment.json (the stages have them in their environment only).
SECRET_ENV: frozenset[str] = frozenset({"DREAMBOT_APPROVAL_KEY"})


class LaunchError(RuntimeError):
    """A stage did not start or become ready; the message ends with the tail of its log."""


class DeploymentNotFoundError(LaunchError):
    """No deployment is recorded for the session named (a wrong --session or --storage)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 25) -> str:
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _alive(pid: int, module: str) -> bool:
    """True when ``pid`` runs ``module`` (a recycled pid is not mistaken for it)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if module not in cmdline:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@dataclass
class ServiceProcess:
    """One stage (or console) process: its HTTP port, log file and (when started here) its Popen handle."""

    name: str
    port: int
    log: Path
    pid: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def module(self) -> str:
        return MODULES.get(self.name, f"services.{self.name}.main")

    def url(self, path: str = "/readyz") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid > 0 and _alive(self.pid, self.module)


@dataclass
class Deployment:
    """The stage processes of one session on this machine, and the Kafka and Redis started for it."""

    session: str
    directory: Path
    env: dict[str, str]
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    infra: dict[str, LocalServer] = field(default_factory=dict)
    console_port: int = 0

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
        """Start (or restart) stage ``name`` (or the console); its output is appended to its log file."""
        svc = self.processes.get(name)
        if svc is None:
            port = self.console_port if name == CONSOLE and self.console_port else free_port()
            svc = ServiceProcess(name, port, self.directory / f"{name}.log")
            self.processes[name] = svc
        if svc.running:
            return svc
        env = dict(self.env)
        env.update(DREAMBOT_HTTP_PORT=str(svc.port), PYTHONUNBUFFERED="1")
        if name == CONSOLE:
            env.update(DREAMBOT_DASHBOARD_PORT=str(svc.port), DREAMBOT_DASHBOARD_HOST="127.0.0.1")
            # The trading pages read the journal the stages write (<storage>/parquet, the stages' default).
            storage_dir = Path(env.get("DREAMBOT_STORAGE_DIR") or PROJECT_ROOT / "storage")
            env.setdefault("DREAMBOT_CONSOLE_JOURNAL", str(storage_dir / "parquet"))
            if not env.get("DREAMBOT_CONSOLE_USERS") and not env.get("DREAMBOT_CONSOLE_ADMIN_PASSWORD"):
                env["DREAMBOT_CONSOLE_ADMIN_PASSWORD"] = session_secret(self.console_password_file, 18)
        svc.log.parent.mkdir(parents=True, exist_ok=True)
        with svc.log.open("ab") as out:
            svc.proc = subprocess.Popen([sys.executable, "-m", svc.module], env=env, cwd=PROJECT_ROOT,
                                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        svc.pid = svc.proc.pid
        self.save()
        return svc

    @property
    def console_password_file(self) -> Path:
        return self.directory / "console-admin-password"

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

    def running(self) -> list[str]:
        """Names of the recorded processes (stages, console, Kafka, Redis) that still run."""
        return [n for n, p in self.processes.items() if p.running] + [n for n, s in self.infra.items() if s.running]

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
                    last = next((ln for ln in reversed(_tail(svc.log).splitlines()) if ln.strip()), "no output")
                    raise LaunchError(f"{name} exited before it was ready ({last.strip()[:300]}); log {svc.log}:\n"
                                      f"{_tail(svc.log)}")
                if http_status(svc.url("/readyz")) == 200:
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                detail = "\n".join(f"--- {n}: {http_text(self.processes[n].url('/readyz'))}\n"
                                   f"{_tail(self.processes[n].log, 10)}" for n in pending)
                raise LaunchError(f"not ready after {timeout_s:.0f}s: {', '.join(pending)}\n{detail}")
            if pending:
                time.sleep(0.1)

    def down(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        """Stop every stage (the source first), the console, then the Kafka and Redis started for the
        session (their data kept); returns the exit statuses."""
        codes = {name: self.stop(name, timeout_s) for name in self.processes}
        if self.infra:
            codes.update(self.local_stack().stop(timeout_s))
        return codes

    def local_stack(self) -> LocalStack:
        """The Kafka and Redis this deployment started (an empty stack when it uses given ones)."""
        stack = LocalStack(self.directory, kafka=False, redis=False)
        stack.servers.update(self.infra)
        return stack

    def purge(self) -> None:
        """Remove the session's folder: logs, audit, deployment record, Kafka and Redis data. Only when
        nothing of it runs."""
        running = self.running()
        if running:
            raise LaunchError(f"session {self.session!r} still runs {', '.join(running)}: `down` it first")
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def console_url(self) -> str | None:
        svc = self.processes.get(CONSOLE)
        return svc.url("/") if svc is not None else None

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
        infra = {n: s.record() for n, s in self.infra.items()}
        doc = {"session": self.session, "env": env, "processes": procs, "infra": infra}
        path = self.directory / "deployment.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when an older, wider file was there
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, indent=2))

    @classmethod
    def load(cls, session: str, storage: Path = DEFAULT_STORAGE) -> Deployment:
        directory = (Path(storage) / session).resolve()
        path = directory / "deployment.json"
        if not path.is_file():
            raise DeploymentNotFoundError(f"no deployment recorded for session {session!r} ({path} not found)")
        doc = json.loads(path.read_text(encoding="utf-8"))
        processes = {n: ServiceProcess(n, int(p["port"]), Path(p["log"]), int(p["pid"]))
                     for n, p in doc.get("processes", {}).items()}
        infra = _load_infra(doc.get("infra", {}))
        return cls(session, directory, dict(doc.get("env", {})), processes, infra)


def _load_infra(doc: Mapping[str, Mapping[str, object]]) -> dict[str, LocalServer]:
    """The local servers of a deployment record (their folders keep ports and pid files)."""
    servers: dict[str, LocalServer] = {}
    for name, rec in doc.items():
        folder = Path(str(rec["dir"]))
        if name == "kafka":
            servers[name] = KafkaServer(folder)
        elif name == "redis":
            servers[name] = RedisServer(folder)
    return servers


def session_secret(path: Path, nbytes: int = 32, keep: bool = True) -> str:
    """A secret of the session kept in ``path``: made once (random), readable by its owner only, handed
    to the processes through their environment and never written into deployment.json, so a session
    stopped and started again keeps it (the console's admin password, risk's approval key).
    ``keep=False``: a new one is returned but not written yet (see :func:`keep_secret`)."""
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    value = secrets.token_hex(nbytes)
    if keep:
        keep_secret(path, value)
    return value


def keep_secret(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` (mode 0600) unless the file exists."""
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(value + "\n")


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
    kafka_bootstrap: str | None = None,
    redis_url: str | None = None,
    storage: Path = DEFAULT_STORAGE,
    stages: Sequence[str] = STAGES,
    lockstep: bool = True,
    env: Mapping[str, str] | None = None,
    console: bool = False,
    console_port: int | None = None,
    wait: bool = True,
    timeout_s: float = 120.0,
) -> Deployment:
    """Start every stage of ``session`` as a process and (by default) wait until all are ready.

    ``kafka_bootstrap`` / ``redis_url`` None: start the session's own Kafka / Redis first
    (:class:`services.localstack.LocalStack` under ``<storage>/<session>``). ``data``: the bars the
    ingest replays (None: synthetic bars). ``env``: further settings (``DREAMBOT_*``, ``OMS_*``) for
    every stage; they override the ones derived here. ``console``: also serve the ops console (on
    ``console_port``; default 8050 when free, else any free port). A session whose recorded processes
    still run is refused (LaunchError).
    """
    directory = (Path(storage) / session).resolve()
    if (directory / "deployment.json").is_file():
        running = Deployment.load(session, Path(storage)).running()
        if running:
            raise LaunchError(f"session {session!r} is already up ({', '.join(running)} running): "
                              f"`down --session {session}` first")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DREAMBOT_", "OMS_"))}
    base.update(
        DREAMBOT_SESSION=session,
        DREAMBOT_SYMBOLS=",".join(symbols),
        DREAMBOT_REPLAY_LOCKSTEP="true" if lockstep else "false",
        OMS_AUDIT_PATH=str(directory / "oms-audit.jsonl"),
    )
    if data is not None:
        base["DREAMBOT_REPLAY_SOURCE"] = str(Path(data).resolve())
    base.update(env or {})
    # Risk signs every order it approves and the OMS checks it: one key for the deployment, the
    # caller's (env, or DREAMBOT_APPROVAL_KEY in this environment) or the session's own, made once and
    # kept in <session>/approval-key: orders approved before a down/up still verify after it.
    given_key = base.get("DREAMBOT_APPROVAL_KEY") or os.environ.get("DREAMBOT_APPROVAL_KEY")
    key_file = directory / "approval-key"
    base["DREAMBOT_APPROVAL_KEY"] = given_key or session_secret(key_file, keep=False)
    stack = LocalStack(directory, kafka=kafka_bootstrap is None, redis=redis_url is None)
    base["DREAMBOT_KAFKA_BOOTSTRAP"] = kafka_bootstrap or (stack.kafka.bootstrap if stack.kafka else "")
    base["DREAMBOT_REDIS_URL"] = redis_url or (stack.redis.url if stack.redis else "")
    # Every stage process loads its SessionConfig from this environment: refuse a bad one here, once.
    load_session_config(environ=base)
    directory.mkdir(parents=True, exist_ok=True)
    if not given_key:
        keep_secret(key_file, base["DREAMBOT_APPROVAL_KEY"])
    deployment = Deployment(session, directory, base, infra=dict(stack.servers))
    if console:
        deployment.console_port = console_port or (CONSOLE_PORT if not port_open(CONSOLE_PORT) else free_port())
    try:
        if stack.servers:
            try:
                stack.start(timeout_s)
            except InfraError as exc:
                raise LaunchError(str(exc)) from exc
            deployment.save()
        for name in stages:
            deployment.start(name)
        if console:
            deployment.start(CONSOLE)
        if wait:
            deployment.wait_ready(timeout_s=timeout_s)
    except BaseException:
        deployment.down(timeout_s=10)
        raise
    return deployment


def down(session: str, storage: Path = DEFAULT_STORAGE, timeout_s: float = 30.0,
         purge: bool = False) -> dict[str, int | None]:
    """Stop the recorded processes of ``session`` (SIGTERM, then SIGKILL after ``timeout_s``), the
    session's own Kafka and Redis last; ``purge``: then remove its folder (data, logs, record)."""
    dep = Deployment.load(session, storage)
    codes = dep.down(timeout_s)
    if purge:
        dep.purge()
    return codes


def status_lines(dep: Deployment) -> list[str]:
    """One line per process: name, running or stopped, pid, port and what its health check answered."""
    lines = []
    for name, svc in dep.processes.items():
        state = "running" if svc.running else "stopped"
        if not svc.running:
            health = "-"
        else:
            health = "readyz: " + http_text(svc.url("/readyz")).strip().replace("\n", "; ")
        lines.append(f"{name:9s} {state:8s} pid {svc.pid:<7d} port {svc.port:<5d} {health}")
    for name, server in dep.infra.items():
        state = "running" if server.running else "stopped"
        health = server.health() if server.running else "-"
        lines.append(f"{name:9s} {state:8s} pid {server.pid:<7d} port {server.port:<5d} {health}")
    return lines


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: a number 1-65535") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: a number 1-65535")
    return value


def _session_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", text):
        raise argparse.ArgumentTypeError(f"invalid session name {text!r}: up to 63 letters, digits, '.', '_' or '-', "
                                         "starting with a letter or digit")
    return text


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    u = sub.add_parser("up", help="start a session's Kafka and Redis (unless given), every stage and the console")
    u.add_argument("--session", type=_session_name, default=DEFAULT_SESSION,
                   help=f"session name (default {DEFAULT_SESSION})")
    u.add_argument("--symbols", default="SPY", help="comma-separated underlyings (default SPY)")
    u.add_argument("--data", type=Path, help="bars the ingest replays (default: synthetic bars)")
    u.add_argument("--table", help="DuckDB table of --data")
    u.add_argument("--tz", help="time zone of naive timestamps in --data")
    u.add_argument("--kafka-bootstrap", help="use this Kafka (default: the configured kafka.bootstrap, e.g. "
                   "DREAMBOT_KAFKA_BOOTSTRAP; when none is configured, start one for the session)")
    u.add_argument("--redis-url", help="use this Redis (default: the configured redis.url, e.g. DREAMBOT_REDIS_URL; "
                   "when none is configured, start one for the session)")
    u.add_argument("--config-dir", type=Path, help="folder of the YAML configs (default config/)")
    u.add_argument("--storage", type=Path, default=DEFAULT_STORAGE, help="state folder (default storage/services)")
    u.add_argument("--no-lockstep", action="store_true", help="free-running replay (no embedded parity)")
    u.add_argument("--learner", action="store_true", help="also start the learner (free-running)")
    u.add_argument("--no-console", action="store_true", help="do not start the ops console")
    u.add_argument("--console-port", type=_port, help=f"console port (default {CONSOLE_PORT} when free)")
    u.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    for name in ("down", "status"):
        d = sub.add_parser(name, help=f"{name} a session started by `up`")
        d.add_argument("--session", type=_session_name, default=DEFAULT_SESSION,
                       help=f"session name (default {DEFAULT_SESSION})")
        d.add_argument("--storage", type=Path, default=DEFAULT_STORAGE, help="state folder (default storage/services)")
        if name == "down":
            d.add_argument("--purge", action="store_true",
                           help="then remove the session's state: Kafka and Redis data, logs, audit")
    return p


def _up(args: argparse.Namespace, prog: str) -> int:
    if args.data is not None and not args.data.exists():
        fail(prog, f"--data {args.data}: no such file or folder")
    if args.timeout <= 0:
        fail(prog, f"--timeout {args.timeout:g}: must be > 0 seconds")
    if args.no_console and args.console_port is not None:
        fail(prog, "--console-port and --no-console contradict each other")
    extra: dict[str, str] = {}
    if args.config_dir is not None:
        if not args.config_dir.is_dir():
            fail(prog, f"--config-dir {args.config_dir}: no such folder")
        extra["DREAMBOT_CONFIG_DIR"] = str(args.config_dir.resolve())
    if args.table:
        extra["DREAMBOT_REPLAY_TABLE"] = args.table
    if args.tz:
        extra["DREAMBOT_REPLAY_TZ"] = args.tz
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    if not symbols:
        fail(prog, f"--symbols {args.symbols!r}: name at least one underlying")
    stages = (*STAGES, "learner") if args.learner else STAGES
    # The caller's configuration (environment, .env, session file) is checked here, once (e.g. live
    # mode with the paper broker is refused). A Kafka or Redis it names is used like the flags; only
    # what nobody configured is started locally.
    loaded = load_session_config()
    kafka = args.kafka_bootstrap
    if kafka is None and loaded.origin(("kafka", "bootstrap")) != "default":
        kafka = loaded.config.kafka.bootstrap
    redis_url = args.redis_url
    if redis_url is None and loaded.origin(("redis", "url")) != "default":
        redis_url = loaded.config.redis.url
    started = time.monotonic()
    dep = up(args.session, symbols, args.data, kafka_bootstrap=kafka, redis_url=redis_url,
             storage=args.storage, stages=stages, lockstep=not args.no_lockstep, env=extra,
             console=not args.no_console, console_port=args.console_port, timeout_s=args.timeout)
    for name, server in dep.infra.items():
        print(f"{name:9s} pid {server.pid:<7d} 127.0.0.1:{server.port:<6d} data {server.data_dir}")
    for name, svc in dep.processes.items():
        where = svc.url("/") if name == CONSOLE else svc.url("/metrics")
        print(f"{name:9s} pid {svc.pid:<7d} {where}  log {svc.log}")
    print(f"kafka {dep.bootstrap}, redis {dep.env['DREAMBOT_REDIS_URL'].split('@')[-1]}")
    stage_count = sum(1 for n in dep.processes if n != CONSOLE)
    print(f"up: {stage_count} stages ready in {time.monotonic() - started:.1f}s; stop with: "
          f"dreambot services down --session {args.session}")
    if dep.console_url is not None:
        login = ""
        if dep.console_password_file.is_file():
            login = f" (user admin, password in {dep.console_password_file})"
        print(f"console: {dep.console_url}{login}")
    return 0


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    args = _parser(prog).parse_args(argv)
    try:
        if args.command == "up":
            return _up(args, prog)
        dep = Deployment.load(args.session, args.storage)
        if args.command == "down":
            started = time.monotonic()
            codes = dep.down()
            if args.purge:
                dep.purge()
            print("down: " + ", ".join(f"{n} " + ("stopped" if c is None else f"exit {c}") for n, c in codes.items())
                  + f" in {time.monotonic() - started:.1f}s" + (f"; removed {dep.directory}" if args.purge else ""))
            return 0
        print("\n".join(status_lines(dep)))
        return 0
    except DeploymentNotFoundError as exc:
        fail(prog, str(exc))
    except LaunchError as exc:
        fail(prog, str(exc).splitlines()[0], 1)
    except ConfigError as exc:
        fail(prog, str(exc))


if __name__ == "__main__":
    raise SystemExit(main())
