"""Apache Kafka 4.x as a single KRaft node on loopback, from the official Maven Central jars.

The jars are resolved once with the installed Maven into
``<cache>/kafka/<version>/libs`` and reused, so later starts take a few seconds. Each
broker gets a fresh log directory (formatted with ``kafka.tools.StorageTool``) unless a
``data_dir`` is given, which lets a test restart a broker over the same data.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from streams.brokers.base import LocalBroker, free_port
from streams.errors import BrokerError

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.0"
SCALA_VERSION = "2.13"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>recstream</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId><version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka.server.KafkaRaftServer
logger.kafka.level = info
"""


def _libs_dir(cache_dir: Path, version: str) -> Path:
    return cache_dir / "kafka" / version / "libs"


def resolve_kafka_jars(cache_dir: Path, version: str = KAFKA_VERSION) -> Path:
    """Download (once) Kafka's runtime jars with Maven; return the folder holding them."""
    libs = _libs_dir(cache_dir, version)
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("resolving Apache Kafka's jars needs Maven (mvn) on PATH, or use --broker tansu")
    work = libs.parent
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(_POM.format(scala=SCALA_VERSION, version=version))
    log.info("resolving Apache Kafka %s jars from Maven Central into %s", version, libs)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={libs}"],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise BrokerError(f"mvn could not resolve Kafka {version}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    marker.touch()
    return libs


class ApacheKafkaBroker(LocalBroker):
    """One KRaft node (broker + controller) on 127.0.0.1."""

    kind = "apache-kafka"

    def __init__(self, *, cache_dir: Path, port: int | None = None, data_dir: Path | None = None,
                 version: str = KAFKA_VERSION, heap_mb: int = 768,
                 sasl_users: dict[str, str] | None = None) -> None:
        """``sasl_users``: also listen with SASL_PLAINTEXT (mechanism PLAIN) for these
        user -> password pairs, on :attr:`sasl_bootstrap_servers`."""
        super().__init__(port)
        self.sasl_users = dict(sasl_users or {})
        self.sasl_port = free_port() if self.sasl_users else None
        self.version = version
        self.cache_dir = cache_dir
        self.heap_mb = heap_mb
        self._own_data_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="recstream-kafka-"))
        self.controller_port = free_port()
        self.log_path = self.data_dir / "broker.log"

    @staticmethod
    def is_cached(cache_dir: Path, version: str = KAFKA_VERSION) -> bool:
        return (_libs_dir(cache_dir, version) / ".complete").exists()

    @property
    def description(self) -> str:
        return f"apache-kafka {self.version}"

    @property
    def sasl_bootstrap_servers(self) -> str | None:
        return f"127.0.0.1:{self.sasl_port}" if self.sasl_port else None

    def _listener_config(self) -> list[str]:
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        extra = []
        if self.sasl_port:
            listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}")
            protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
            users = " ".join(f'user_{name}="{password}"' for name, password in self.sasl_users.items())
            extra = ["sasl.enabled.mechanisms=PLAIN",
                     "listener.name.sasl_plaintext.plain.sasl.jaas.config="
                     f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"]
        return [
            f"listeners={','.join(listeners)},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners={','.join(listeners)}",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map={','.join(protocols)}",
            "inter.broker.listener.name=PLAINTEXT",
            *extra,
        ]

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("Apache Kafka needs Java 17+ on PATH; without it use --broker tansu")
        return java

    def _command(self) -> tuple[list[str], dict[str, str]]:
        java = self._java()
        libs = resolve_kafka_jars(self.cache_dir, self.version)
        classpath = f"{libs}/*"
        logs = self.data_dir / "kraft"
        props = self.data_dir / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            *self._listener_config(),
            f"log.dirs={logs}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "log.segment.bytes=67108864",
            "log.cleaner.dedupe.buffer.size=8388608",
        ]) + "\n")
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        jvm = [f"-Xms{self.heap_mb // 2}m", f"-Xmx{self.heap_mb}m", "-XX:+UseG1GC",
               "-XX:TieredStopAtLevel=1" if False else "-XX:+UseStringDeduplication",
               f"-Dlog4j2.configurationFile={log4j}", "-Djava.awt.headless=true"]
        if not (logs / "meta.properties").exists():
            cluster_id = uuid.uuid4().hex[:22]
            fmt = subprocess.run(
                [java, *jvm, "-cp", classpath, "kafka.tools.StorageTool", "format",
                 "-t", cluster_id, "-c", str(props)],
                capture_output=True, text=True,
            )
            if fmt.returncode != 0:
                raise BrokerError(f"formatting the KRaft log dir failed:\n{fmt.stdout}{fmt.stderr}")
        return [java, *jvm, "-cp", classpath, "kafka.Kafka", str(props)], {}

    def stop(self, timeout_s: float = 15.0) -> None:
        super().stop(timeout_s)
        if self._own_data_dir and self.data_dir.exists() and self._process is None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
