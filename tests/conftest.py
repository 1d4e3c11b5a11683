"""Fixtures: real embedded services of the suite's own (started once, in a temporary state folder), a fresh
database and topic per test, one SparkSession.

The suite never touches the user's state: ``TOOTPIPE_STATE_DIR`` is set before anything starts, so the broker,
PostgreSQL, checkpoints and models of a test run live in ``.tootpipe/tests/<run>/`` and are removed at the end
(subprocesses inherit it). Nor does the user's configuration reach it: the project's `.env` is not read
(``TOOTPIPE_ENV_FILE`` names an empty file) and the variables that override parameters or hold secrets are taken
out of the environment, so a `.env` or a shell pointing at the live services (``KAFKA_BOOTSTRAP``, ``JDBC_URL``)
never gets the suite's topics and rows.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "data" / "fixtures" / "mastodon"
STATE = ROOT / ".tootpipe" / "tests" / f"run-{uuid.uuid4().hex[:8]}"
os.environ["TOOTPIPE_STATE_DIR"] = str(STATE)


def hermetic(environ) -> None:
    """No env file of the user's, none of the user's override or secret variables: what the suite runs with."""
    from tootpipe.core.config import ENV_OVERRIDES, SECRET_NAMES
    environ["TOOTPIPE_ENV_FILE"] = os.devnull
    for name in (*ENV_OVERRIDES, *SECRET_NAMES):
        environ.pop(name, None)


hermetic(os.environ)  # before anything starts: every process of the suite inherits it
# Every JVM of the suite (Spark drivers and executors, the brokers) compiles with C1 only: short jobs on small data
# never pay C2's compile work back, and on 2 cores it competes with the other worker (tootpipe.core.jvm; to compare:
# TOOTPIPE_JIT=tiered make test)
os.environ.setdefault("TOOTPIPE_JIT", "c1")


def isolated(overrides: dict | None = None) -> dict:
    """Parameter overrides that keep a run's checkpoints and models inside the suite's state folder."""
    return {"stream.checkpoint_dir": str(STATE / "checkpoints"), "sentiment.model_dir": str(STATE / "models"),
            **(overrides or {})}


@pytest.fixture(scope="session")
def services_up():
    from tootpipe.core import config
    from tootpipe.services import embedded as services
    assert services.state_dir() == STATE.resolve()
    endpoints = services.up(config.load(use_env=False))
    yield endpoints
    services.down()
    shutil.rmtree(STATE, ignore_errors=True)


@pytest.fixture
def fresh(services_up):
    """(params, endpoints) with a new database and new topics, so tests never see each other's rows."""
    from tootpipe.core import config
    from tootpipe.postgres import db
    from tootpipe.services import embedded as services
    name = "t_" + uuid.uuid4().hex[:10]
    endpoints = services.create_database(services_up, name)
    params = config.load(None, isolated({"kafka.topic": f"toots_{name}", "kafka.dlq_topic": f"toots_{name}_dlq",
                                         "stream.query_name": name, "spark.master": "local[2]",
                                         "spark.shuffle_partitions": 2}), use_env=False)
    db.ensure_schema(endpoints.database_url)
    yield params, endpoints


@pytest.fixture(scope="session")
def spark(services_up):
    from tootpipe.core import config
    from tootpipe.spark.session import get_spark
    return get_spark(config.load(None, {"spark.master": "local[2]", "spark.shuffle_partitions": 2}, use_env=False))


def produce_raw(bootstrap: str, topic: str, values, partition: int = 0) -> None:
    """Write raw values as another producer would (no normalisation, no key), and wait for every ack."""
    from confluent_kafka import Producer
    prod = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    errors = []
    for v in values:
        prod.produce(topic, value=v, partition=partition, on_delivery=lambda err, _m: err and errors.append(err))
    assert prod.flush(30) == 0 and not errors, errors


def kafka_df(spark, bootstrap: str, topic: str, start: dict | None = None, end: dict | None = None):
    """A batch read of the topic through Spark's Kafka connector (all of it, or offsets start..end of partitions)."""
    import json
    reader = spark.read.format("kafka").option("kafka.bootstrap.servers", bootstrap).option("subscribe", topic)
    if start is not None:
        reader = reader.option("startingOffsets", json.dumps({topic: {str(p): o for p, o in start.items()}}))
    if end is not None:
        reader = reader.option("endingOffsets", json.dumps({topic: {str(p): o for p, o in end.items()}}))
    return reader.load()


def wait_until(condition, timeout: float, what: str, every: float = 0.2):
    """Poll `condition` until it returns something truthy (returned); fail naming `what` after `timeout` s."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(every)


def publish(params, endpoints, n=300, seed=11):
    """The bundled sample (`n` toots, `seed`) into the test's topic, as notebook 01 does."""
    from tootpipe import steps
    params.source.sample_n, params.source.sample_seed = n, seed
    return steps.ingest_step(params, endpoints)


HOLD = """
import sys
from tootpipe.postgres.locks import acquire
acquire(sys.argv[1], sys.argv[2], sys.argv[3])
print("held", flush=True)
sys.stdin.read()  # holds until its stdin closes, or it is killed
"""


class Holder:
    """Another process that holds the `kind` lock of `key` until it is released or killed."""

    def __init__(self, url: str, kind: str, key: str = "") -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, url, kind, key], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)


def pytest_collection_modifyitems(items):
    """The notebook chain's module first: under `make test`'s two workers (pytest-xdist, one module per worker at a
    time) it is the longest module by far, so it starts at once and the other worker takes everything else."""
    items.sort(key=lambda item: item.get_closest_marker("notebooks") is None)
