"""What only a durable broker can pass: the embedded Apache Kafka killed with SIGKILL under a running ingest and
stream, stopped and started between two runs, and an ingest process killed mid-run and started again.

The broker-killing tests run a broker of their own (in a temporary state folder), never the suite's or the user's.
"""
import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import yaml
from conftest import ROOT, wait_until

from tootpipe import kafka, steps
from tootpipe.batch import backfill as batch
from tootpipe.ingest.sample import expected_posts, generate
from tootpipe.ingest.source import ingest, paced
from tootpipe.postgres import db
from tootpipe.services import embedded as services
from tootpipe.stream.query import run_available_now, start_stream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture
def own_kafka(fresh, tmp_path, monkeypatch):
    """(params, endpoints): an embedded Kafka of this test's own, and a fresh database on the suite's PostgreSQL."""
    params, endpoints = fresh
    monkeypatch.setenv("TOOTPIPE_STATE_DIR", str(tmp_path / "state"))
    params.database.url = endpoints.database_url
    yield params, services.up(params)
    services.down()


def topic_total(params, endpoints) -> int:
    return sum(kafka.end_offsets(endpoints.bootstrap_servers, params.kafka.topic).values())


def stored_uris(endpoints) -> list:
    return list(db.query_df(endpoints.database_url, "SELECT uri FROM mastodon_posts").uri)


def assert_each_toot_once(params, endpoints, events) -> None:
    """Posts = the independent expectation, none twice; the window counts add up to them; the ledger's batches
    tile every partition up to the topic's end, so no offset was applied twice or skipped."""
    expected = expected_posts(events, params.filters)
    uris = stored_uris(endpoints)
    assert len(uris) == len(set(uris)) and set(uris) == set(expected)
    assert db.scalar(endpoints.database_url, "SELECT coalesce(sum(cnt), 0)::bigint FROM streamed_toot_counts") == len(expected)
    ends = kafka.end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
    ledger = db.query_df(endpoints.database_url, "SELECT end_offsets, input_rows FROM stream_ledger ORDER BY batch_id")
    reached = {p: 0 for p in ends}
    for batch_ends in ledger.end_offsets:
        for p, o in batch_ends.items():
            assert int(o) >= reached[int(p)]
            reached[int(p)] = int(o)
    assert reached == ends and int(ledger.input_rows.sum()) == sum(ends.values())


def test_broker_killed_with_sigkill_under_ingest_and_stream_loses_and_doubles_nothing(own_kafka, spark):
    params, endpoints = own_kafka
    params.stream.trigger, params.stream.processing_time = "processing_time", "0.5 seconds"
    params.stream.max_offsets_per_trigger = 200
    params.stream.watermark_minutes = 10 ** 6  # every row refreshes its window, so the counts can be checked
    events = generate(1500, 21)
    kafka.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic, params.kafka.dlq_topic], 3)
    query, sink = start_stream(spark, params, endpoints, available_now=False)
    publisher = kafka.Publisher(endpoints.bootstrap_servers, params.kafka.topic, params.kafka.dlq_topic)
    failure, killed = [], threading.Event()

    def events_around_the_kill():
        """The first 600 events, then (once the broker is dead) the rest: ingest is running across the kill and
        its producer has records to deliver while no broker is there."""
        yield from events[:600]
        killed.wait(300)
        yield from paced(events[600:], 500)

    def produce():
        try:
            ingest(events_around_the_kill(), publisher, params, source="test", progress_every=1e9)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failure.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    wait_until(lambda: topic_total(params, endpoints) >= 300 and sink.committed_ends(), 180,
               "300 toots in the topic and a committed batch")
    broker = services.status()["kafka"]
    os.kill(broker["pid"], signal.SIGKILL)
    wait_until(lambda: not services.status()["kafka"]["alive"], 30, "the broker to die")
    killed.set()
    restarted = services.up(params)
    assert restarted.cluster_id == endpoints.cluster_id  # the same storage, formatted once
    producer.join(timeout=600)
    assert not producer.is_alive() and not failure, failure
    if restarted.bootstrap_servers != endpoints.bootstrap_servers:  # the old port was taken meanwhile: follow the broker
        query.stop()
        endpoints = restarted
        query, sink = start_stream(spark, params, endpoints, available_now=False)
    target = kafka.end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
    try:
        wait_until(lambda: query.exception() or all(sink.committed_ends().get(p, 0) >= o for p, o in target.items()),
                   600, "the stream to commit everything the topic holds")
        assert query.exception() is None, query.exception()
    finally:
        query.stop()
    assert_each_toot_once(params, endpoints, events)


def test_history_and_checkpoints_survive_services_down_and_up(own_kafka, spark):
    params, endpoints = own_kafka
    params.source.sample_n, params.source.sample_seed = 200, 31
    params.stream.watermark_minutes = 10 ** 6  # the second run's toots are as old as the first's
    first = steps.ingest_step(params, endpoints)["topic_end_offsets"]
    assert run_available_now(spark, params, endpoints)["input_rows"] == sum(first.values())
    assert batch.backfill(spark, params, endpoints)["rows"] == sum(first.values())
    services.down()
    assert not services.status()
    endpoints = services.up(params)
    assert kafka.end_offsets(endpoints.bootstrap_servers, params.kafka.topic) == first  # the history is still there
    params.source.sample_seed = 32
    both = steps.ingest_step(params, endpoints)["topic_end_offsets"]
    second = sum(both.values()) - sum(first.values())
    assert second > 0
    # the checkpoint and the backfill ledger go on where they stopped: only the second run's messages are new
    assert run_available_now(spark, params, endpoints)["input_rows"] == second
    assert batch.backfill(spark, params, endpoints)["rows"] == second
    # and the whole history can be read again: both runs' messages
    everything = batch.backfill(spark, params, endpoints, ranges={p: (0, e) for p, e in both.items()})
    assert everything["rows"] == sum(both.values()) and everything["inserted"] == 0
    cleaned, _ = batch.clean(batch.load_raw(spark, endpoints.database_url), params.filters)
    events = generate(200, 31) + generate(200, 32)
    assert {r.uri for r in cleaned.select("uri").collect()} == set(expected_posts(events, params.filters))
    assert_each_toot_once(params, endpoints, events)


def test_ingest_killed_mid_run_and_started_again_doubles_nothing_downstream(fresh, spark, tmp_path):
    params, endpoints = fresh
    events = generate(600, 41)
    replay = tmp_path / "replay.jsonl"
    replay.write_text("".join(json.dumps(e) + "\n" for e in events))
    params.kafka.bootstrap_servers, params.database.url = endpoints.bootstrap_servers, endpoints.database_url
    params.stream.watermark_minutes = 10 ** 6
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params.model_dump()))
    cmd = [sys.executable, "-m", "tootpipe.cli", "--params", str(tmp_path / "p.yaml"), "ingest", "--replay",
           str(replay)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    proc = subprocess.Popen(cmd + ["--rate", "100"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: proc.poll() is not None or topic_total(params, endpoints) >= 100, 120, "100 toots published")
    finally:
        proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "ingest ended before it was killed: nothing was tested"
    partial = topic_total(params, endpoints)
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    full_run = json.loads(again.stdout)
    assert topic_total(params, endpoints) == partial + full_run["published"] + full_run["deletes"]  # at-least-once
    run_available_now(spark, params, endpoints)
    assert_each_toot_once(params, endpoints, events)
    batch.backfill(spark, params, endpoints)
    cleaned, _ = batch.clean(batch.load_raw(spark, endpoints.database_url), params.filters)
    uris = [r.uri for r in cleaned.select("uri").collect()]
    assert len(uris) == len(set(uris)) and set(uris) == set(expected_posts(events, params.filters))
