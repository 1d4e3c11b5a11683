"""The embedded Apache Kafka: one KRaft node (broker + controller) run from the Maven Central jars of jvm/pom.xml.

Guarantees: it listens on 127.0.0.1 only; its log (the topics' history) lives under ``.tootpipe/kafka/data`` and
survives a stop, a restart and a kill -9 of the broker (a record acknowledged with acks=all is in the page cache
of the OS, which a killed process does not lose); the storage is formatted once, with a cluster id that stays for
the folder's lifetime; a restart keeps its ports when they are free; a stop is a controlled shutdown (SIGTERM),
SIGKILL only after `grace` seconds.
"""
from __future__ import annotations

import base64
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from tootpipe.core.errors import ServiceError
from tootpipe.core.jvm import jit_options
from tootpipe.services.jars import broker_classpath, pom_version
from tootpipe.services.procs import free_port, identity, port_free

__all__ = ["kafka_home", "start", "cluster_id_of", "HEAP"]

HEAP = "512m"

_LOG4J2 = """status = error
name = tootpipe-kafka
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = info
logger.apache.name = org.apache.kafka
logger.apache.level = info
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""


def kafka_home(state_dir: Path) -> Path:
    return state_dir / "kafka"


def _properties(data: Path, port: int, controller_port: int) -> str:
    listen = f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
    return "\n".join([
        "# written by tootpipe (lib/tootpipe/kafka_broker.py): a single-node KRaft cluster on loopback",
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
        f"listeners={listen}",
        f"advertised.listeners={listen}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data}",
        "num.partitions=3",
        "auto.create.topics.enable=false",
        # one node: every internal topic has one replica
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # a node killed with SIGKILL is still registered until its session times out (default 9 s), and its
        # restart waits that long: shorter heartbeats make a restart after a crash take ~2 s, not ~10
        "broker.heartbeat.interval.ms=500",
        "broker.session.timeout.ms=2000",
        # the topics are the pipeline's history, replayed by the backfill: kept until `make clean`
        "log.retention.ms=-1",
        "message.max.bytes=8388608",
        "num.network.threads=2",
        "num.io.threads=2",
        "num.recovery.threads.per.data.dir=1",
        "",
    ])


def _old_ports(props: Path) -> tuple[int | None, int | None]:
    if not props.exists():
        return None, None
    m = re.search(r"^listeners=PLAINTEXT://127\.0\.0\.1:(\d+),CONTROLLER://127\.0\.0\.1:(\d+)$", props.read_text(),
                  re.M)
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def _new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (what StorageTool random-uuid prints),
    never starting with "-" (Kafka's own Uuid.randomUuid skips those too: the command line would read it as an
    option)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def cluster_id_of(data: Path) -> str | None:
    """The cluster id the storage was formatted with (``meta.properties``), or None before formatting."""
    meta = data / "meta.properties"
    if not meta.exists():
        return None
    m = re.search(r"^cluster\.id=(.+)$", meta.read_text(), re.M)
    return m.group(1).strip() if m else None


def _java(cls: str, *args: str, heap: str, log4j: Path) -> list[str]:
    return ["java", f"-Xmx{heap}", f"-Xms{min(128, int(heap.rstrip('m')))}m", "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile=file:{log4j}", *jit_options(), "-cp", broker_classpath(), cls, *args]


def _wait_free(ports: list[int], wait_s: float) -> bool:
    """Whether the ports can be bound, waiting up to `wait_s`: after a kill -9 the dead broker's sockets linger
    in FIN_WAIT states until their peers close, which can take a while; its clients want the same address back."""
    deadline = time.monotonic() + wait_s
    while not all(port_free(p) for p in ports):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def start(state_dir: Path, env: dict, wait_s: float = 90, port_wait_s: float = 75) -> dict:
    """Format the storage when new, start the node (on its old ports, when it had some), wait until it serves
    metadata; returns its state entry."""
    home = kafka_home(state_dir)
    data = home / "data"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o700)
    props, log4j, log = home / "server.properties", home / "log4j2.properties", home / "broker.log"
    old_port, old_cport = _old_ports(props)
    if old_port and old_cport and _wait_free([old_port, old_cport], port_wait_s):
        port, cport = old_port, old_cport
    else:  # first start, or the old ports stayed taken: new ones (clients must read the new address)
        port = free_port()
        cport = free_port()
        while cport == port:
            cport = free_port()
    props.write_text(_properties(data, port, cport))
    log4j.write_text(_LOG4J2.format(log=log))
    if cluster_id_of(data) is None:
        r = subprocess.run(_java("kafka.tools.StorageTool", "format", "-t", _new_cluster_id(), "-c", str(props),
                                 "--standalone", "--ignore-formatted", heap="256m", log4j=log4j),
                           capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
        if r.returncode != 0:
            raise ServiceError(f"formatting Kafka's storage failed: {(r.stderr or r.stdout).strip()[-1500:]}")
    with open(home / "broker.out", "ab") as out:
        proc = subprocess.Popen(_java("kafka.Kafka", str(props), heap=HEAP, log4j=log4j), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    _wait_ready(proc, f"127.0.0.1:{port}", wait_s, log)
    return {**identity(proc.pid, "kafka.Kafka"), "bootstrap_servers": f"127.0.0.1:{port}", "controller_port": cport,
            "cluster_id": cluster_id_of(data), "version": pom_version("kafka.version"),
            "broker": "Apache Kafka (KRaft)", "log": str(log), "data": str(data)}


def _wait_ready(proc: subprocess.Popen, bootstrap: str, wait_s: float, log: Path) -> None:
    """Until the broker answers a metadata request with itself as a live broker."""
    deadline = time.monotonic() + wait_s
    admin = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if admin is None:
                with socket.create_connection(tuple(bootstrap.rsplit(":", 1)), timeout=0.5):
                    pass
                admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
            if admin.list_topics(timeout=2).brokers:
                return
        except Exception:  # not listening yet, or no metadata yet
            time.sleep(0.2)
    tail = log.read_text()[-2500:] if log.exists() else ""
    state = f"exited with {proc.returncode}" if proc.poll() is not None else f"not ready after {wait_s:.0f} s"
    raise ServiceError(f"the embedded Kafka broker {state} (log: {log}). {tail}")
