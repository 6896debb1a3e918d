"""A real Apache Kafka broker (KRaft, combined broker+controller) on free 127.0.0.1 ports.

The broker is :class:`services.localstack.KafkaServer` (what ``dreambot services up`` runs) in a
temporary folder: jars from ``scripts/fetch-kafka.sh`` (cached per version under
``${DREAMBOT_CACHE:-~/.cache/dreambot}/kafka-<version>/libs``), storage formatted with
``kafka.tools.StorageTool format --standalone``, log4j2 output in ``<dir>/server.log``. The data dir
and ports survive :meth:`restart`, so crash tests (:meth:`kill`) see the same cluster come back;
:meth:`close` removes the folder.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from services.localstack import FETCH_SCRIPT, POM, KafkaServer, kafka_libs, kafka_version
from services.localstack import cluster_id as _cluster_id

__all__ = ["FETCH_SCRIPT", "POM", "KafkaBroker", "_cluster_id", "kafka_libs", "kafka_version"]


class KafkaBroker(KafkaServer):
    """Start/stop/kill/restart a private single-node KRaft cluster; ``bootstrap`` is its address."""

    def __init__(self, libs: Path | None = None, heap: str = "512m") -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="dreambot-kafka-")), libs=libs or kafka_libs(), heap=heap)

    def start(self, timeout_s: float = 90.0) -> KafkaBroker:
        super().start(timeout_s)
        return self

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

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
