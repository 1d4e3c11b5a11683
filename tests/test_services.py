"""The embedded services: cluster ids, checkpoints of the embedded server."""
import pytest

from tootpipe.postgres import db


def test_generated_kafka_cluster_ids_are_valid_and_never_read_as_an_option():
    import base64

    from tootpipe.services.kafka_broker import _new_cluster_id
    ids = [_new_cluster_id() for _ in range(3000)]  # ~1 in 64 raw ids starts with "-": ~47 expected here
    assert all(len(i) == 22 and not i.startswith("-") for i in ids) and len(set(ids)) == len(ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)


def test_the_jit_of_the_projects_jvms_is_tootpipe_jit_and_a_wrong_value_is_named(monkeypatch):
    from tootpipe.core.jvm import jit_options
    monkeypatch.delenv("TOOTPIPE_JIT", raising=False)
    assert jit_options() == []  # HotSpot's default: tiered
    monkeypatch.setenv("TOOTPIPE_JIT", "c1")
    assert jit_options() == ["-XX:TieredStopAtLevel=1"]
    monkeypatch.setenv("TOOTPIPE_JIT", "c2-only")
    with pytest.raises(ValueError, match="TOOTPIPE_JIT='c2-only'.*tiered, c1"):
        jit_options()


@pytest.mark.integration
def test_the_broker_compiles_as_tootpipe_jit_says(services_up):
    """The suite sets TOOTPIPE_JIT=c1 (conftest) unless the shell set it: its broker's command line carries it."""
    from tootpipe.core.jvm import jit_options
    from tootpipe.services import embedded as services
    pid = services.status()["kafka"]["pid"]
    args = open(f"/proc/{pid}/cmdline").read().split("\0")
    assert [a for a in args if a.startswith("-XX:TieredStopAtLevel")] == jit_options()


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_checkpoint_asked_of_the_embedded_server_happens_and_an_external_one_is_refused(fresh):
    """services.checkpoint (benchmarks start timing after one): the server's count of requested checkpoints grows;
    a server that is not the embedded one is never touched."""
    import dataclasses

    from tootpipe.services import embedded as services
    _, endpoints = fresh
    asked = "SELECT num_requested FROM pg_stat_checkpointer"
    before = db.scalar(endpoints.database_url, asked)
    services.checkpoint(endpoints)
    assert db.scalar(endpoints.database_url, asked) > before
    with pytest.raises(services.ServiceError, match="checkpoint needs the embedded PostgreSQL"):
        services.checkpoint(dataclasses.replace(endpoints, embedded_postgres=False))


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_parameters_naming_a_database_of_the_embedded_server_get_it_created_and_kept_apart(services_up):
    """params/live.yaml's `database.name`: the live demo's rows live in a database of their own on the embedded
    server, created by `up`, never in the project's default one."""
    from tootpipe.core import config
    from tootpipe.services import embedded as services
    params = config.load(None, {"database.name": "t_named_db"}, use_env=False)
    first = services.up(params)
    assert first.database_url.endswith("/t_named_db") and first.database_url != services_up.database_url
    db.ensure_schema(first.database_url)
    assert "mastodon_posts" in set(db.query_df(first.database_url, "SELECT tablename FROM pg_tables").tablename)
    assert services.up(params) == first  # idempotent: the database and what it holds stay
    assert db.table_counts(first.database_url, ["mastodon_posts"]) == {"mastodon_posts": 0}
    with pytest.raises(config.ParamsError, match="database.name names a database of the embedded PostgreSQL"):
        config.load(None, {"database.name": "x", "database.url": "postgresql://h:5432/db"}, use_env=False)
