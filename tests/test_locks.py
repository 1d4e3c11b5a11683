"""One writer at a time, per kind: a second writer waits or refuses naming the holder, a killed holder's lock is
taken over, a batch step refuses without writing, a second stream query on a checkpoint refuses."""
import os
import time

import pytest
from conftest import Holder, publish, wait_until

from tootpipe.core.errors import WriterBusy
from tootpipe.postgres import db
from tootpipe.postgres.locks import acquire, holder, writer_lock

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

def test_a_second_writer_refuses_naming_the_holder_and_takes_over_a_killed_ones_lock(fresh):
    _, endpoints = fresh
    url = endpoints.database_url
    other = Holder(url, "batch")
    try:
        who = holder(url, "batch")
        assert who and f"pid {other.proc.pid}" in who, who
        t0 = time.monotonic()
        with pytest.raises(WriterBusy, match=f"another batch writer is running .*pid {other.proc.pid}"):
            acquire(url, "batch", wait_s=1.0)
        assert time.monotonic() - t0 >= 1.0, "it did not wait"
        with writer_lock(url, "stream", "another/checkpoint"):  # other kinds and keys are free
            pass
    finally:
        other.kill()  # kill -9: its session ends with it, and the server gives the lock back
    release = wait_until(lambda: _try(url), 60, "the killed holder's lock taken over")
    assert holder(url, "batch") and str(os.getpid()) in holder(url, "batch")
    again = acquire(url, "batch")  # re-entrant within this process
    again()
    assert holder(url, "batch"), "released while a taker still holds it"
    release()
    assert holder(url, "batch") is None


def _try(url):
    try:
        return acquire(url, "batch")
    except WriterBusy:
        return None


def test_a_waiting_writer_goes_on_once_the_holder_finishes(fresh):
    _, endpoints = fresh
    other = Holder(endpoints.database_url, "batch")
    import threading
    released = []
    threading.Timer(1.0, lambda: (released.append(True), other.release())).start()
    with writer_lock(endpoints.database_url, "batch", wait_s=120):
        assert released, "the lock was taken while its holder still held it"


def test_a_batch_step_refuses_while_another_writer_holds_the_lock_and_writes_nothing(fresh):
    from tootpipe import steps
    params, endpoints = fresh
    publish(params, endpoints, n=60)
    tables = ["toots_raw", "backfill_ranges", "toots_clean", "step_runs", "mastodon_sentiments", "daily_toot_counts"]
    before = db.table_counts(endpoints.database_url, tables)
    params.run.lock_wait_s = 0
    other = Holder(endpoints.database_url, "batch")
    try:
        for step in (steps.backfill_step, steps.clean_step, steps.analytics_step, steps.score_step):
            with pytest.raises(WriterBusy, match=f"another batch writer is running .*pid {other.proc.pid}"):
                step(params, endpoints)
    finally:
        other.release()
    assert db.table_counts(endpoints.database_url, tables) == before


def test_a_second_stream_query_on_a_checkpoint_refuses_and_the_stream_step_reports_the_live_one(fresh, spark):
    from tootpipe import steps
    from tootpipe.stream.query import checkpoint_path, start_stream
    params, endpoints = fresh
    publish(params, endpoints, n=40)
    steps.stream_step(params, endpoints)
    ck = str(checkpoint_path(params, endpoints))
    other = Holder(endpoints.database_url, "stream", ck)
    try:
        with pytest.raises(WriterBusy, match=f"another stream writer of {ck} is running .*pid {other.proc.pid}"):
            start_stream(spark, params, endpoints, available_now=True)
        publish(params, endpoints, n=40, seed=12)
        out = steps.stream_step(params, endpoints)
        assert f"pid {other.proc.pid}" in out["live"] and out["lag"] > 0 and out["batches"] >= 1, out
    finally:
        other.release()
    assert "live" not in steps.stream_step(params, endpoints)


def test_one_producer_per_topic_the_notebook_reports_the_live_one_and_the_cli_refuses(fresh):
    from tootpipe import steps
    from tootpipe.services.embedded import cluster_of
    params, endpoints = fresh
    publish(params, endpoints, n=30)
    other = Holder(endpoints.database_url, "ingest", f"{cluster_of(endpoints)}/{params.kafka.topic}")
    try:
        params.source.republish = True
        out = steps.ingest_step(params, endpoints)  # what notebook 01 does while `make live` ingests
        assert f"pid {other.proc.pid}" in out["live"] and sum(out["topic_end_offsets"].values()) > 0
        assert "published" not in out
        with pytest.raises(WriterBusy, match="another ingest writer"):
            steps.ingest_step(params, endpoints, while_live="refuse")
    finally:
        other.release()
    assert "live" not in steps.ingest_step(params, endpoints)
