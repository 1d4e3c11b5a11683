"""Crash tests of the exactly-once sink, each crashing driver in its own process: kill -9 between our commit and
Spark's (serial sink), between Spark's commit and our apply (overlapped sink), PostgreSQL stopped under a running
query. After a restart, every produced offset is applied exactly once. The restart is a new query on the same
checkpoint in the suite's warm driver (a new driver JVM would only add its warm-up: the query, its sink and ledger
are new either way)."""
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict

import pytest
import yaml
from conftest import ROOT

from tootpipe import kafka, steps
from tootpipe.ingest.sample import expected_posts, generate
from tootpipe.postgres import db
from tootpipe.services import embedded as services
from tootpipe.stream.query import checkpoint_path, run_until_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
N, SEED = 400, 5


def prepare(fresh, tmp_path, per_trigger, overlap=True):
    params, endpoints = fresh
    params.stream.overlap_apply = overlap
    params.source.sample_n, params.source.sample_seed = N, SEED
    steps.ingest_step(params, endpoints)
    params.stream.trigger = "processing_time"
    params.stream.processing_time = "0.5 seconds"
    params.stream.max_offsets_per_trigger = per_trigger
    params.stream.watermark_minutes = 10 ** 6  # every row refreshes its window, so the counts can be checked too
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump()))
    (tmp_path / "endpoints.json").write_text(json.dumps(asdict(endpoints)))
    return params, endpoints


def worker(tmp_path, fault=None, wait=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    env.pop("TOOTPIPE_FAULT", None)
    if fault:
        env["TOOTPIPE_FAULT"] = fault
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "stream_worker.py"), str(tmp_path / "params.yaml"),
                             str(tmp_path / "endpoints.json")], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if wait:
        out, err = proc.communicate(timeout=300)
        return proc.returncode, out, err
    return proc


def restart(spark, params, endpoints, caplog) -> str:
    """The query started again on the crashed one's checkpoint, until it has caught up; what it logged."""
    caplog.clear()
    with caplog.at_level("INFO", logger="tootpipe"):
        run_until_caught_up(spark, params, endpoints, timeout_s=300)
    return caplog.text


def assert_exactly_once(params, endpoints):
    """Every produced offset applied once: the ledger's batches tile each partition without gap or overlap, the
    rows Spark handed to committed batches add up to the topic, and the posts are the independent expectation."""
    url = endpoints.database_url
    topic_ends = kafka.end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
    ledger = db.query_df(url, "SELECT batch_id, end_offsets, input_rows FROM stream_ledger ORDER BY batch_id")
    assert list(ledger.batch_id) == list(range(len(ledger))), "a batch id is missing or repeated"
    seen = {p: 0 for p in topic_ends}
    for ends in ledger.end_offsets:
        for p, o in ends.items():
            assert int(o) >= seen[int(p)]
            seen[int(p)] = int(o)
    assert seen == topic_ends
    assert int(ledger.input_rows.sum()) == sum(topic_ends.values())  # no offset counted twice, none missing
    progress = db.scalar(url, "SELECT sum(input_rows)::bigint FROM stream_progress")
    assert progress == sum(topic_ends.values())
    expected = expected_posts(generate(N, SEED), params.filters)
    uris = db.query_df(url, "SELECT uri FROM mastodon_posts").uri
    assert len(uris) == len(set(uris)) and set(uris) == set(expected)
    assert db.scalar(url, "SELECT sum(cnt)::bigint FROM streamed_toot_counts") == len(expected)


def test_kill_9_after_our_commit_and_before_sparks_is_neither_lost_nor_applied_twice(fresh, tmp_path, spark, caplog):
    params, endpoints = prepare(fresh, tmp_path, per_trigger=120, overlap=False)
    rc, out, err = worker(tmp_path, fault="kill_after_commit:1")
    assert rc == -9, err[-2000:]
    ck = checkpoint_path(params, endpoints)
    # the crash landed in the window: batch 1 is in PostgreSQL and in Spark's offset log, not in its commit log
    assert (ck / "offsets" / "1").exists() and not (ck / "commits" / "1").exists()
    assert db.scalar(endpoints.database_url, "SELECT count(*) FROM stream_ledger WHERE batch_id = 1") == 1
    assert "already committed: skipped" in restart(spark, params, endpoints, caplog)  # replayed, recognised
    assert_exactly_once(params, endpoints)


def test_kill_9_after_sparks_commit_and_before_our_overlapped_apply_is_read_again_from_kafka(fresh, tmp_path, spark,
                                                                                            caplog):
    params, endpoints = prepare(fresh, tmp_path, per_trigger=120)
    rc, out, err = worker(tmp_path, fault="kill_before_apply:1")
    assert rc == -9, err[-2000:]
    ck = checkpoint_path(params, endpoints)
    # the crash landed in the window: Spark recorded batch 1 as done; PostgreSQL has only its claim
    assert (ck / "commits" / "1").exists()
    url = endpoints.database_url
    assert db.scalar(url, "SELECT count(*) FROM stream_ledger WHERE batch_id = 1 AND NOT applied") == 1
    assert db.scalar(url, "SELECT count(*) FROM mastodon_posts WHERE batch_id = 1") == 0
    logged = restart(spark, params, endpoints, caplog)
    assert "batch 1 of" in logged and "re-read from Kafka" in logged  # applied before the query went on
    assert_exactly_once(params, endpoints)
    assert db.scalar(url, "SELECT count(*) FROM stream_ledger WHERE NOT applied") == 0


def test_postgresql_stopped_under_a_running_query_then_restarted(fresh, tmp_path, spark, caplog):
    params, endpoints = prepare(fresh, tmp_path, per_trigger=50)
    proc = worker(tmp_path, wait=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if db.scalar(endpoints.database_url, "SELECT count(*) FROM stream_ledger") >= 2:
            break
        time.sleep(0.2)
    services.stop_postgres(mode="immediate")  # no clean shutdown: a crash
    out, err = proc.communicate(timeout=180)
    assert proc.returncode != 0 and "cannot reach PostgreSQL" in err, err[-2000:]
    restarted = services.up(params)
    assert restarted.database_url.rsplit("/", 1)[0] == endpoints.database_url.rsplit("/", 1)[0]  # same server address
    restart(spark, params, endpoints, caplog)
    assert_exactly_once(params, endpoints)


def test_stream_follow_stops_cleanly_on_sigterm(fresh, tmp_path):
    """`tootpipe stream --follow` (what `make live` runs) commits what it read and exits 0 on SIGTERM."""
    import signal
    params, endpoints = prepare(fresh, tmp_path, per_trigger=100)
    params.database.url, params.kafka.bootstrap_servers = endpoints.database_url, endpoints.bootstrap_servers
    (tmp_path / "live.yaml").write_text(yaml.safe_dump(params.model_dump()))
    proc = subprocess.Popen([sys.executable, "-m", "tootpipe.cli", "--params", str(tmp_path / "live.yaml"), "stream",
                             "--follow"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "lib")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and db.scalar(endpoints.database_url, "SELECT count(*) FROM stream_ledger") < 1:
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert db.scalar(endpoints.database_url, "SELECT count(*) FROM stream_ledger") >= 1
