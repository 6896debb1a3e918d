"""The one-machine infrastructure: a single-node KRaft Kafka and a redis-server on 127.0.0.1.

``dreambot services up`` without ``--kafka-bootstrap``/``--redis-url`` runs these (the integration
test harness, ``tests/harness``, runs the same classes in temporary folders):

- :class:`KafkaServer`: Apache Kafka in combined broker+controller mode from the jars that
  ``scripts/fetch-kafka.sh`` (part of ``scripts/setup.sh all``) caches under
  ``${DREAMBOT_CACHE:-~/.cache/dreambot}/kafka-<version>/libs``, the version pinned in
  ``build/kafka/pom.xml``. It runs ``java -cp '<libs>/*' kafka.Kafka server.properties`` after
  ``kafka.tools.StorageTool format --standalone`` (the classes behind ``bin/kafka-server-start.sh``
  and ``bin/kafka-storage.sh``); ready once a metadata request lists the broker.
- :class:`RedisServer`: Debian's ``redis-server``, append-only file on (``persist``), ready once it
  answers PING.

Each server owns one folder: its data (``data/``), its configuration, its log, ``<name>.pid`` and
``ports.json``. The ports are chosen once (free ones, or the ones given) and kept, so a server
stopped and started again, even by another process, serves the same data at the same address. A
server started here runs in its own session (it outlives the command that started it);
:meth:`LocalServer.stop` sends SIGTERM (Kafka shuts down in order, Redis syncs its append-only file)
and SIGKILL after a grace period; the data stays until the folder is removed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from services.core.settings import PROJECT_ROOT

FETCH_SCRIPT: Final = PROJECT_ROOT / "scripts" / "fetch-kafka.sh"
POM: Final = PROJECT_ROOT / "build" / "kafka" / "pom.xml"
LOOPBACK: Final = "127.0.0.1"


class InfraError(RuntimeError):
    """A local server could not be started, found or stopped; the message says what to do."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout_s: float = 30.0, host: str = LOOPBACK) -> None:
    """Block until something accepts connections on ``port`` or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(port, host):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s")


def pid_alive(pid: int, marker: str) -> bool:
    """True when ``pid`` is a live (not zombie) process whose command line contains ``marker``, so a
    recycled pid is never mistaken for the server."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return marker in cmdline and stat.rsplit(")", 1)[-1].split()[0] != "Z"


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file, or ``(no log)``."""
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


# --- Kafka jars ----------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where heavy artefacts are cached: ``$DREAMBOT_CACHE`` or ``~/.cache/dreambot``."""
    return Path(os.environ.get("DREAMBOT_CACHE") or Path.home() / ".cache" / "dreambot")


def kafka_version() -> str:
    """The Kafka version pinned in build/kafka/pom.xml (or DREAMBOT_KAFKA_VERSION)."""
    override = os.environ.get("DREAMBOT_KAFKA_VERSION")
    if override:
        return override
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text(encoding="utf-8"))
    if found is None:
        raise InfraError(f"no <kafka.version> in {POM}")
    return found.group(1).strip()


def kafka_libs(fetch: bool = True) -> Path:
    """Folder with the broker's jars; runs scripts/fetch-kafka.sh when they are not cached yet
    (``fetch=False``: InfraError naming the script instead)."""
    home = cache_dir() / f"kafka-{kafka_version()}"
    if (home / ".complete").is_file():
        return home / "libs"
    if not fetch:
        raise InfraError(f"Kafka jars not in {home}: run scripts/fetch-kafka.sh (or scripts/setup.sh all)")
    done = subprocess.run(["bash", str(FETCH_SCRIPT)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise InfraError(f"scripts/fetch-kafka.sh failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


# --- one server process --------------------------------------------------------------------------


class LocalServer:
    """A server process with its own folder, ports kept in ``ports.json`` and a pid file.

    ``proc`` is the Popen handle when this object started the process (else None); ``pid`` also
    finds a server started by another process, through the pid file.
    """

    name: str = "server"
    marker: str = ""  # a string in the server's command line (see pid_alive)

    def __init__(self, directory: Path, ports: Mapping[str, int | None]) -> None:
        self.dir = Path(directory)
        saved = self._saved_ports()
        self.ports: dict[str, int] = {}
        for key, given in ports.items():
            chosen = given or saved.get(key) or free_port()
            while chosen in self.ports.values():
                chosen = free_port()
            self.ports[key] = chosen
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0
        self._launched = 0.0

    # --- files -----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.ports["port"]

    @property
    def pid_file(self) -> Path:
        return self.dir / f"{self.name}.pid"

    @property
    def stdout_log(self) -> Path:
        return self.dir / "stdout.log"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def _saved_ports(self) -> dict[str, int]:
        try:
            doc = json.loads((self.dir / "ports.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in doc.items()} if isinstance(doc, dict) else {}

    @property
    def pid(self) -> int:
        if self.proc is not None:
            return self.proc.pid
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return 0

    @property
    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return pid_alive(self.pid, self.marker)

    # --- what a subclass provides -----------------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write configuration, format storage: whatever must exist before the process starts."""

    def ready(self) -> bool:
        """One readiness probe (the server answers a real request)."""
        raise NotImplementedError

    def health(self) -> str:
        """One line for ``status``: what the server answered, or why not."""
        raise NotImplementedError

    # --- lifecycle -------------------------------------------------------------------------------

    def launch(self) -> None:
        """Start the process (when not already running) without waiting for it to be ready."""
        if self.running:
            return
        for key, port in self.ports.items():
            if port_open(port):
                raise InfraError(f"{self.name}: 127.0.0.1:{port} ({key}) is taken by another process; stop it or "
                                 f"remove {self.dir / 'ports.json'} to pick new ports")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "ports.json").write_text(json.dumps(self.ports), encoding="utf-8")
        self._launched = time.monotonic()
        self.prepare()
        with self.stdout_log.open("ab") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.dir, start_new_session=True)
        self.pid_file.write_text(f"{self.proc.pid}\n", encoding="utf-8")

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Block until :meth:`ready`; InfraError (with the log's tail) if the process exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if not self.running:
                raise InfraError(f"{self.name} exited during startup:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise InfraError(f"{self.name} on 127.0.0.1:{self.port} not ready after {timeout_s:.0f}s:\n"
                                 f"{self.log_tail()}")
            time.sleep(0.1)
        self.startup_s = time.monotonic() - self._launched

    def start(self, timeout_s: float = 90.0) -> LocalServer:
        """Start (unless running) and wait until ready."""
        self.launch()
        self.wait_ready(timeout_s)
        return self

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; the data stays. Returns the exit status when the
        process was started here, else None."""
        if self.running:
            os.kill(self.pid, signal.SIGTERM)
            if not self._wait_exit(timeout_s):
                os.kill(self.pid, signal.SIGKILL)
                self._wait_exit(30.0)
        code = self.proc.wait() if self.proc is not None else None
        self.proc = None
        self.pid_file.unlink(missing_ok=True)
        return code

    def kill(self) -> None:
        """Crash the server (SIGKILL): what reached the page cache survives, the process does not."""
        if self.running:
            os.kill(self.pid, signal.SIGKILL)
            self._wait_exit(30.0)
        if self.proc is not None:
            self.proc.wait()
        self.proc = None
        self.pid_file.unlink(missing_ok=True)

    def _wait_exit(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.running:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def log_tail(self, lines: int = 40) -> str:
        return f"--- {self.stdout_log.name}\n{tail(self.stdout_log, lines)}"

    def record(self) -> dict[str, object]:
        """What a deployment record keeps of this server."""
        return {"dir": str(self.dir), "pid": self.pid, **self.ports}


# --- Kafka ---------------------------------------------------------------------------------------

_LOG4J2: Final = """\
status = error
name = dreambot-kafka
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def cluster_id() -> str:
    """A Kafka cluster id as ``StorageTool random-uuid`` makes it: 16 random bytes, URL-safe base64
    without padding, never starting with '-' (it would read as a command-line flag)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):
            return cid


class KafkaServer(LocalServer):
    """A single-node KRaft cluster (broker and controller in one JVM); ``bootstrap`` is its address."""

    name = "kafka"
    marker = "kafka.Kafka"

    def __init__(self, directory: Path, port: int | None = None, controller_port: int | None = None,
                 libs: Path | None = None, heap: str = "512m") -> None:
        super().__init__(directory, {"port": port, "controller_port": controller_port})
        self._libs = libs
        self.heap = heap
        self.cluster_id = ""

    @property
    def controller_port(self) -> int:
        return self.ports["controller_port"]

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def libs(self) -> Path:
        if self._libs is None:
            self._libs = kafka_libs()
        return self._libs

    @property
    def log_file(self) -> Path:
        return self.dir / "server.log"

    def properties(self) -> dict[str, str]:
        """server.properties: one node, one replica of everything, small thread pools for a small machine."""
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{LOOPBACK}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{LOOPBACK}:{self.port},CONTROLLER://{LOOPBACK}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "2",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "share.coordinator.state.topic.num.partitions": "1",
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            # Topics come from explicit provisioning (KafkaBus.ensure_topics), as in production.
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            # Stages (and crash tests) may use short consumer session timeouts (default minimum 6 s).
            "group.min.session.timeout.ms": "1000",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "2",
            "log.cleaner.threads": "1",
            "controlled.shutdown.enable": "true",
            # After a crash the controller must expire the old broker session before the restarted
            # broker may register again: keep that short (default 9 s).
            "broker.session.timeout.ms": "2000",
            "broker.heartbeat.interval.ms": "500",
        }

    def _config_files(self) -> tuple[Path, Path]:
        self.dir.mkdir(parents=True, exist_ok=True)
        props = self.dir / "server.properties"
        props.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()), encoding="utf-8")
        log4j = self.dir / "log4j2.properties"
        log4j.write_text(_LOG4J2.format(log=self.log_file), encoding="utf-8")
        return props, log4j

    def _java(self, log4j: Path, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise InfraError("java not found: Kafka 4 needs Java 17+ (scripts/install-system-deps.sh)")
        return [java, f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseSerialGC", "-Xshare:auto", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={self.dir}", "-cp", f"{self.libs}/*", *args]

    def prepare(self) -> None:
        props, log4j = self._config_files()
        if (self.data_dir / "meta.properties").is_file():
            return
        self.cluster_id = self.cluster_id or cluster_id()
        cmd = self._java(log4j, "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(props),
                         "--standalone")
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise InfraError(f"kafka storage format failed ({done.returncode}): {done.stdout}{done.stderr}")

    def command(self) -> list[str]:
        return self._java(self.dir / "log4j2.properties", "kafka.Kafka", str(self.dir / "server.properties"))

    def _metadata(self) -> Sequence[int]:
        from confluent_kafka.admin import AdminClient  # loaded only when a probe runs

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000})
        return list(admin.list_topics(timeout=2).brokers)

    def ready(self) -> bool:
        if not port_open(self.port):
            return False
        try:
            return 1 in self._metadata()
        except Exception:  # KafkaException while the broker registers
            return False

    def health(self) -> str:
        if not port_open(self.port):
            return "no answer"
        try:
            brokers = self._metadata()
        except Exception as exc:
            return f"metadata request failed ({exc})"
        return f"ok (brokers {sorted(brokers)})" if 1 in brokers else f"broker not registered (brokers {brokers})"

    def log_tail(self, lines: int = 40) -> str:
        return f"{super().log_tail(lines)}\n--- {self.log_file.name}\n{tail(self.log_file, lines)}"


# --- Redis ---------------------------------------------------------------------------------------


def redis_ping(port: int, host: str = LOOPBACK, timeout_s: float = 1.0) -> str:
    """Redis's answer to PING (``+PONG``; ``-LOADING ...`` while it reads its data), or why none came."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            conn.sendall(b"*1\r\n$4\r\nPING\r\n")
            return conn.recv(256).decode(errors="replace").strip() or "connection closed"
    except OSError as exc:
        return f"no answer ({exc.strerror or exc})"


class RedisServer(LocalServer):
    """A private redis-server on loopback; ``url`` is its address. ``persist``: append-only file in
    ``data/`` (synced when stopped), so the keys survive a restart; otherwise nothing is written."""

    name = "redis"
    marker = "redis-server"

    def __init__(self, directory: Path, port: int | None = None, persist: bool = True) -> None:
        super().__init__(directory, {"port": port})
        self.persist = persist

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def command(self) -> list[str]:
        exe = shutil.which("redis-server")
        if exe is None:
            raise InfraError("redis-server not installed: run scripts/install-system-deps.sh")
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persist else ["--appendonly", "no"]
        return [exe, "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(self.data_dir), "--save", "",
                *persistence, "--protected-mode", "no", "--daemonize", "no"]

    def ready(self) -> bool:
        return redis_ping(self.port) == "+PONG"

    def health(self) -> str:
        answer = redis_ping(self.port)
        return "ok (PONG)" if answer == "+PONG" else answer


# --- both ----------------------------------------------------------------------------------------


class LocalStack:
    """The Kafka and Redis of one session on this machine, under ``root/kafka`` and ``root/redis``."""

    def __init__(self, root: Path, kafka: bool = True, redis: bool = True) -> None:
        self.root = Path(root)
        self.servers: dict[str, LocalServer] = {}
        if redis:
            self.servers["redis"] = RedisServer(self.root / "redis")
        if kafka:
            self.servers["kafka"] = KafkaServer(self.root / "kafka")

    @property
    def kafka(self) -> KafkaServer | None:
        server = self.servers.get("kafka")
        return server if isinstance(server, KafkaServer) else None

    @property
    def redis(self) -> RedisServer | None:
        server = self.servers.get("redis")
        return server if isinstance(server, RedisServer) else None

    def start(self, timeout_s: float = 90.0) -> LocalStack:
        """Launch every server, then wait for all (they start side by side); on failure stop them."""
        try:
            for server in self.servers.values():
                server.launch()
            for server in self.servers.values():
                server.wait_ready(timeout_s)
        except BaseException:
            self.stop(10.0)
            raise
        return self

    def stop(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        """Stop Kafka before Redis (nothing depends on Redis to shut down); data kept."""
        order = sorted(self.servers, key=lambda n: n != "kafka")
        return {name: self.servers[name].stop(timeout_s) for name in order}
