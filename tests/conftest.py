"""Fixtures: real embedded services (started once), a fresh database and topic per test, one SparkSession."""
from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "data" / "fixtures" / "mastodon"


@pytest.fixture(scope="session")
def services_up():
    from tootpipe import config, services
    was_running = {k: v.get("alive") for k, v in services.status().items()}
    ep = services.up(config.load(use_env=False))
    yield ep
    if not all(was_running.get(k) for k in ("kafka", "postgres")):
        services.down()


@pytest.fixture
def fresh(services_up):
    """(params, endpoints) with a new database and new topics, so tests never see each other's rows."""
    from tootpipe import config, db, services
    name = "t_" + uuid.uuid4().hex[:10]
    admin = services_up.database_url.rsplit("/", 1)[0] + "/postgres"
    services._create_database(admin, name)
    ep = replace(services_up, database_url=services_up.database_url.rsplit("/", 1)[0] + "/" + name)
    params = config.load(None, {"kafka.topic": f"toots_{name}", "kafka.dlq_topic": f"toots_{name}_dlq",
                                "stream.query_name": name, "stream.checkpoint_dir": ".tootpipe/test-checkpoints",
                                "spark.master": "local[2]", "spark.shuffle_partitions": 2}, use_env=False)
    db.ensure_schema(ep.database_url)
    yield params, ep


@pytest.fixture(scope="session")
def spark(services_up):
    from tootpipe import config
    from tootpipe.spark_session import get_spark
    return get_spark(config.load(None, {"spark.master": "local[2]", "spark.shuffle_partitions": 2}, use_env=False))
