"""A real Apache Kafka broker (KRaft, combined broker+controller) on free 127.0.0.1 ports.

The jars come from Maven Central through ``scripts/fetch-kafka.sh`` (cached per version under
``${DREAMBOT_CACHE:-~/.cache/dreambot}/kafka-<version>/libs``). The broker runs as
``java -cp '<libs>/*' kafka.Kafka server.properties`` after ``kafka.tools.StorageTool format
--standalone`` — the classes behind ``bin/kafka-server-start.sh`` and ``bin/kafka-storage.sh``.
Its log4j2 output goes to ``<dir>/server.log``; the data dir and ports survive :meth:`restart`, so
crash tests (:meth:`kill`) see the same cluster come back.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.harness.ports import free_port, wait_for_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = PROJECT_ROOT / "scripts" / "fetch-kafka.sh"
POM = PROJECT_ROOT / "build" / "kafka" / "pom.xml"

_LOG4J2 = """\
status = error
name = dreambot-test-kafka
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


def kafka_version() -> str:
    """The Kafka version pinned in build/kafka/pom.xml (or DREAMBOT_KAFKA_VERSION)."""
    override = os.environ.get("DREAMBOT_KAFKA_VERSION")
    if override:
        return override
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text(encoding="utf-8"))
    if found is None:
        raise RuntimeError(f"no <kafka.version> in {POM}")
    return found.group(1).strip()


def kafka_libs(fetch: bool = True) -> Path:
    """Folder with the broker's jars; runs scripts/fetch-kafka.sh when they are not cached yet."""
    cache = Path(os.environ.get("DREAMBOT_CACHE") or Path.home() / ".cache" / "dreambot")
    home = cache / f"kafka-{kafka_version()}"
    if (home / ".complete").is_file():
        return home / "libs"
    if not fetch:
        raise FileNotFoundError(f"Kafka jars not in {home}: run scripts/fetch-kafka.sh")
    done = subprocess.run(["bash", str(FETCH_SCRIPT)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/fetch-kafka.sh failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


class KafkaBroker:
    """Start/stop/kill/restart a private single-node KRaft cluster; ``bootstrap`` is its address."""

    def __init__(self, libs: Path | None = None, heap: str = "512m") -> None:
        self.libs = libs or kafka_libs()
        self.port = free_port()
        self.controller_port = free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="dreambot-kafka-"))
        self.data_dir = self.dir / "data"
        self.log_file = self.dir / "server.log"
        self.heap = heap
        self.cluster_id = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- configuration ---------------------------------------------------------------------------

    def _properties(self) -> str:
        listeners = f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": listeners,
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # One node: every internal topic has one replica; few partitions load fast.
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
            # Fast tests: no rebalance delay, small thread pools for a 2-core machine.
            "group.initial.rebalance.delay.ms": "0",
            # Let crash tests use short consumer session timeouts (default minimum is 6 s).
            "group.min.session.timeout.ms": "1000",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "2",
            "log.cleaner.threads": "1",
            "controlled.shutdown.enable": "true",
            # After a crash (kill -9) the controller must expire the old broker session before the
            # restarted broker may register again: keep that short (default 9 s).
            "broker.session.timeout.ms": "2000",
            "broker.heartbeat.interval.ms": "500",
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _write_config(self) -> tuple[Path, Path]:
        self.dir.mkdir(parents=True, exist_ok=True)
        props = self.dir / "server.properties"
        props.write_text(self._properties(), encoding="utf-8")
        log4j = self.dir / "log4j2.properties"
        log4j.write_text(_LOG4J2.format(log=self.log_file), encoding="utf-8")
        return props, log4j

    def _java(self, log4j: Path, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java not found: Kafka 4 needs Java 17+ (scripts/install-system-deps.sh)")
        return [
            java,
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseSerialGC",
            "-Xshare:auto",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.dir}",
            "-cp",
            f"{self.libs}/*",
            *args,
        ]

    def _format(self, props: Path, log4j: Path) -> None:
        if (self.data_dir / "meta.properties").is_file():
            return
        self.cluster_id = self.cluster_id or _cluster_id()
        cmd = self._java(log4j, "kafka.tools.StorageTool", "format", "-t", self.cluster_id,
                         "-c", str(props), "--standalone")
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"kafka storage format failed ({done.returncode}): {done.stdout}{done.stderr}")

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout_s: float = 90.0) -> KafkaBroker:
        if self.proc is not None and self.proc.poll() is None:
            return self
        started = time.monotonic()
        props, log4j = self._write_config()
        self._format(props, log4j)
        out = (self.dir / "stdout.log").open("ab")
        try:
            self.proc = subprocess.Popen(self._java(log4j, "kafka.Kafka", str(props)),
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        self._wait_ready(started + timeout_s)
        self.startup_s = time.monotonic() - started
        return self

    def _wait_ready(self, deadline: float) -> None:
        from confluent_kafka.admin import AdminClient  # harness-only use: readiness probe

        wait_for_port(self.port, max(1.0, deadline - time.monotonic()))
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000})
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"kafka broker exited during startup:\n{self.log_tail()}")
            try:
                md = admin.list_topics(timeout=2)
                if 1 in md.brokers:
                    return
            except Exception as exc:  # KafkaException while the broker registers
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"kafka broker at {self.bootstrap} not ready ({last}):\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful shutdown (SIGTERM), then SIGKILL if it takes longer than ``timeout_s``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Crash the broker (SIGKILL): unflushed page-cache data survives, the process does not."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, graceful: bool = True) -> KafkaBroker:
        """Stop (or kill) and start again on the same ports with the same data."""
        if graceful:
            self.stop()
        else:
            self.kill()
        return self.start()

    def close(self) -> None:
        """Stop and remove the data dir."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for path in (self.dir / "stdout.log", self.log_file):
            if path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
                parts.append(f"--- {path.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cluster_id() -> str:
    """A Kafka cluster id as ``StorageTool random-uuid`` makes it: 16 random bytes, URL-safe base64
    without padding, never starting with '-' (it would read as a command-line flag)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):
            return cid
