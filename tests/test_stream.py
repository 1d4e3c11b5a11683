"""Stage 02, the exactly-once stream: the query, the sink, its micro-batches, checkpoints, late events and deletes."""
import json
from dataclasses import replace

import pytest
from conftest import kafka_df, produce_raw, publish, wait_until

from tootpipe import kafka, steps
from tootpipe.ingest.sample import expected_posts, generate
from tootpipe.postgres import db
from tootpipe.report import checks
from tootpipe.stream.query import PostgresSink, checkpoint_path, nothing_new, run_available_now


def posts(endpoints):
    return set(db.query_df(endpoints.database_url, "SELECT uri FROM mastodon_posts").uri)


def _toot(n, created_at, user="alice"):
    return {"v": 1, "event": "update", "uri": f"https://a.example/s/{n}", "id": str(n), "instance": "a.example",
            "created_at": created_at, "account": {"acct": user, "username": user}, "visibility": "public",
            "text": f"toot {n}", "language": "en"}


def _sink_records(spark, params, endpoints, sink, records, batch_id) -> dict:
    """Produce `records` and hand exactly them to `sink` as micro-batch `batch_id`; returns the sink's figures."""
    produce_raw(endpoints.bootstrap_servers, params.kafka.topic, [json.dumps(r).encode() for r in records])
    ends = kafka.end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
    sink(kafka_df(spark, endpoints.bootstrap_servers, params.kafka.topic, {0: ends[0] - len(records)}, ends), batch_id)
    return sink.last


def _delete(instance, sid):
    return {"v": 1, "event": "delete", "uri": None, "id": sid, "instance": instance}


def test_a_checkpoint_is_bound_to_one_cluster_and_topic(tmp_path):
    from tootpipe.stream.query import CheckpointMismatch, bind_checkpoint
    ck = tmp_path / "q"
    bind_checkpoint(ck, "cluster-a", "toots")
    bind_checkpoint(ck, "cluster-a", "toots")  # the same again: fine
    with pytest.raises(CheckpointMismatch, match="cluster 'cluster-b', topic 'toots'"):
        bind_checkpoint(ck, "cluster-b", "toots")
    with pytest.raises(CheckpointMismatch, match="topic 'other'"):
        bind_checkpoint(ck, "cluster-a", "other")
    legacy = tmp_path / "old"
    (legacy / "offsets").mkdir(parents=True)
    (legacy / "offsets" / "0").write_text("v1")
    with pytest.raises(CheckpointMismatch, match="no record of the cluster"):
        bind_checkpoint(legacy, "cluster-a", "toots")


def test_progress_offsets_and_lag_from_sparks_kafka_source():
    from tootpipe.stream.progress import lag, source_offsets
    sparks = '{"t": {"0": 40, "1": 7}}'
    assert source_offsets(sparks) == source_offsets({"t": {"0": 40, "1": 7}}) == {"0": 40, "1": 7}
    assert source_offsets(None) == source_offsets("") == source_offsets("not json") == {}
    assert lag({"0": 50, "1": 7, "2": 3}, {"0": 40, "1": 7}) == 13   # a partition the batch did not touch counts
    assert lag({"0": 40}, {"0": 45}) == 0 and lag({}, {"0": 1}) is None


def test_the_newest_version_of_each_uri_is_marked_as_distinct_on_with_the_sinks_order_would_pick():
    from datetime import datetime, timezone

    import pyarrow as pa

    from tootpipe.stream.microbatch import newest_versions

    t = [datetime(2026, 11, 26, h, tzinfo=timezone.utc) for h in range(4)]
    rows = [  # uri, event, created_at, edited_at, partition, offset, newest?
        ("a", "update", t[0], None, 0, 1, False), ("a", "status.update", t[0], t[2], 2, 9, True),  # the edit
        ("a", "update", t[1], None, 1, 5, False),
        ("b", "update", t[1], None, 1, 3, False), ("b", "update", t[1], None, 0, 2, True),  # tie: lowest partition
        ("c", "update", t[3], None, 0, 4, False), ("c", "update", t[3], None, 0, 8, True),  # then highest offset
        (None, "delete", None, None, 0, 5, False), ("d", "delete", t[3], None, 0, 6, False),  # deletes: never
        ("d", "update", t[0], None, 1, 7, True), ("e", None, t[0], None, 1, 8, False)]  # no event: as SQL's <>
    cols = list(zip(*rows))
    part = pa.table({"uri": cols[0], "event": cols[1],
                     "created_at": pa.array(cols[2], pa.timestamp("us", tz="UTC")),
                     "edited_at": pa.array(cols[3], pa.timestamp("us", tz="UTC")),
                     "kafka_partition": pa.array(cols[4], pa.int32()), "kafka_offset": pa.array(cols[5], pa.int64())})
    assert newest_versions(part).to_pylist() == list(cols[6])
    assert newest_versions(part.slice(0, 0)).to_pylist() == []


def test_a_batch_is_summarised_for_the_ledger_and_split_for_postgresql_in_arrow():
    from datetime import datetime, timezone

    import pyarrow as pa

    from tootpipe.spark.transforms import POST_COLUMNS
    from tootpipe.stream.microbatch import errors_part, latencies_ms, posts_part, summarise

    t = [datetime(2026, 11, 26, h, tzinfo=timezone.utc) for h in range(6)]
    cols = {c: [None] * 6 for c in POST_COLUMNS}
    cols.update(kafka_partition=[0, 0, 1, 1, 1, 2], kafka_offset=[7, 9, 3, 4, 5, 0], created_at=t,
                uri=["a", "b", None, "c", "d", "e"], kafka_timestamp=[t[5]] * 5 + [None],
                hashtags=pa.array([["x", None, "y"], [], None, None, None, [None]], pa.list_(pa.string())),
                mentions=pa.array([["m"], [], None, None, None, None], pa.list_(pa.string())))
    extra = {"event": ["update", "update", None, "delete", "update", "update"],
             "error": [None, None, "not a toot record", None, None, None],
             "raw": [None, None, "{oops", None, None, None], "topic": ["toots"] * 6,
             "kept": [True, False, None, True, None, True]}  # None: the filters could not say
    rows = pa.table({**extra, **cols})
    s = summarise(rows)
    assert (s.starts, s.ends) == ({"0": 7, "1": 3, "2": 0}, {"0": 10, "1": 6, "2": 1})
    assert (s.rows, s.errors, s.filtered) == (6, 1, 1)
    assert s.max_event_time == t[5]  # the newest kept toot; the delete (t[3]) and the dropped (t[1], t[4]) aside
    posts = posts_part(rows)
    assert posts.column_names == ["event", "newest", *POST_COLUMNS] and posts["uri"].to_pylist() == ["a", "c", "e"]
    assert posts["newest"].to_pylist() == [True, False, True]  # the delete ("c") is no version of a toot
    # the arrays go to text[] without their null items (what the stream always stored)
    assert posts["hashtags"].to_pylist() == [["x", "y"], None, []] and posts["mentions"].to_pylist() == [["m"], None, None]
    assert errors_part(rows).to_pylist() == [{"topic": "toots", "kafka_partition": 1, "kafka_offset": 3,
                                              "raw": "{oops", "error": "not a toot record"}]
    now = t[5].timestamp() + 1.5
    assert latencies_ms(rows, now).tolist() == [1500.0] * 5  # the row without a timestamp has none
    empty = summarise(rows.slice(0, 0))
    assert (empty.starts, empty.rows, empty.errors, empty.max_event_time) == ({}, 0, 0, None)
    every = rows.filter(pa.array([True, False, False, True, False, True]))  # all usable and kept: passed as they are
    assert posts_part(every)["uri"].to_pylist() == ["a", "c", "e"] and posts_part(every)["kafka_offset"].to_pylist() == [7, 4, 0]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_stream_is_exactly_once_and_matches_the_independent_expectation(fresh, spark, caplog):
    params, endpoints = fresh
    stats = publish(params, endpoints)
    assert stats["dead_letters"] >= 0 and stats["published"] > 0
    run_available_now(spark, params, endpoints)
    expected = expected_posts(generate(300, 11), params.filters)
    assert posts(endpoints) == set(expected)
    counts = db.query_df(endpoints.database_url, "SELECT (SELECT sum(cnt)::bigint FROM streamed_toot_counts) s, "
                                          "(SELECT count(*) FROM mastodon_posts) n")
    assert counts.s[0] == counts.n[0] == len(expected)
    # an edit made in the sample wins over the original
    edited = [u for u, r in expected.items() if r["edited_at"]]
    if edited:
        content = db.scalar(endpoints.database_url, "SELECT content FROM mastodon_posts WHERE uri = %s", (edited[0],))
        assert "(edited)" in content
    # running again reads nothing new and changes nothing; the notebook's invariants hold (and fail when broken)
    with caplog.at_level("WARNING", logger="tootpipe"):
        again = run_available_now(spark, params, endpoints)
    assert again["input_rows"] == 0 and posts(endpoints) == set(expected)
    # a trigger with no new data sends no progress event: nothing to wait for, nothing to warn about
    assert not [r for r in caplog.records if "was not recorded" in r.getMessage()]
    ck = str(checkpoint_path(params, endpoints))
    skipped = steps.stream_step(params, endpoints)  # the ledger holds every offset of the topic: no Spark query
    assert skipped["nothing_new"] is True and skipped["input_rows"] == 0 and skipped["checkpoint"] == ck
    inv = checks.stream_invariants(endpoints.database_url, endpoints.bootstrap_servers, params.kafka.topic, ck)
    checks.require(inv, checks.sample_expectation(endpoints.database_url, expected))
    assert inv["ledger_rows"] == inv["in_topic"] == sum(stats["topic_end_offsets"].values())
    with db.transaction(endpoints.database_url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE streamed_toot_counts SET cnt = cnt + 1 WHERE window_start = "
                    "(SELECT min(window_start) FROM streamed_toot_counts)")
        cur.execute("UPDATE avg_toot_length_by_user SET total_length = total_length + 1 WHERE (username, window_start) "
                    "= (SELECT username, window_start FROM avg_toot_length_by_user ORDER BY 1, 2 LIMIT 1)")
    produce_raw(endpoints.bootstrap_servers, params.kafka.topic, [b"not yet streamed"])
    assert nothing_new(params, endpoints) is None  # a new message: the query runs
    other = params.model_copy(update={"stream": params.stream.model_copy(update={"query_name": "other"})})
    assert nothing_new(other, endpoints) is None  # a checkpoint that has committed nothing yet
    broken = checks.stream_invariants(endpoints.database_url, endpoints.bootstrap_servers, params.kafka.topic, ck)
    assert len(broken["failures"]) == 3 and "ledger" in broken["failures"][0]
    assert broken["count_windows_off"] == 1 and broken["user_windows_off"] == 1 and "per-user" in broken["failures"][2]
    with pytest.raises(AssertionError, match="window counts"):
        checks.require(broken)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_available_now_honours_max_offsets_per_trigger_and_stops_at_the_ends_it_found(fresh, spark):
    from tootpipe.stream.progress import wait_for
    from tootpipe.stream.query import start_stream
    params, endpoints = fresh
    before = publish(params, endpoints, n=300, seed=11)["topic_end_offsets"]
    params.stream.max_offsets_per_trigger = 100
    sink = PostgresSink(params, endpoints, str(checkpoint_path(params, endpoints)))
    late = {}

    def write_then_publish_more(df, batch_id):
        sink(df, batch_id)
        if batch_id == 0:  # produced while the query runs: after its target, so for the next run
            params.source.sample_seed = 12
            late.update(steps.ingest_step(params, endpoints)["topic_end_offsets"])

    query, _ = start_stream(spark, params, endpoints, available_now=True, sink=write_then_publish_more)
    query.awaitTermination()
    assert query.exception() is None and wait_for(spark, query)
    sizes = [q["numInputRows"] for q in query.recentProgress]
    assert sum(sizes) == sum(before.values()) and max(sizes) <= 100 and len(sizes) >= sum(before.values()) // 100
    assert sink.committed_ends() == before and sum(late.values()) > sum(before.values())
    ck = checkpoint_path(params, endpoints)  # checkpoint files without Hadoop's .crc side files (spark_session)
    assert len(list((ck / "offsets").iterdir())) == len(sizes) and not list(ck.rglob("*.crc"))
    progress = db.query_df(endpoints.database_url, "SELECT batch_id, input_rows, lag, trigger_ms, commit_ms, latest_offsets "
                                            "FROM stream_progress ORDER BY batch_id")
    total = sum(before.values())
    # Spark's view, recorded by the listener: the lag shrinks by each batch's rows down to 0 at the target
    assert list(progress.lag) == [total - n for n in progress.input_rows.cumsum()]
    assert progress.trigger_ms.notna().all() and progress.commit_ms.notna().all()
    assert all({int(k): v for k, v in o.items()} == before for o in progress.latest_offsets)
    again = run_available_now(spark, params, endpoints)  # the next run takes what came later
    assert again["input_rows"] == sum(late.values()) - sum(before.values()) and sink.committed_ends() == late


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_sink_keeps_one_connection_opens_another_when_it_died_and_closes_it_when_its_query_ends(fresh, spark):
    from tootpipe.stream.query import finish, start_stream
    params, endpoints = fresh
    publish(params, endpoints, n=300, seed=11)
    params.stream.max_offsets_per_trigger = 100
    url = endpoints.database_url

    def sessions():  # the tootpipe sessions on the test's database, the test's own aside
        return db.query_df(url, "SELECT pid, application_name AS app FROM pg_stat_activity WHERE datname = "
                                "current_database() AND application_name LIKE 'tootpipe %%' ORDER BY pid")

    seen = []

    def after_commit(batch_id):
        sink_pids = [p for p, a in zip(*sessions().T.values) if a.startswith("tootpipe sink")]
        seen.append(sink_pids)
        if batch_id == 1:  # the server ends the sink's session between two batches
            db.scalar(url, "SELECT pg_terminate_backend(%s)", (sink_pids[0],))

    query, sink = start_stream(spark, params, endpoints, available_now=True, after_commit=after_commit)
    query.awaitTermination()
    finish(query, sink)  # the overlapped sink's last batch is in PostgreSQL
    assert len(seen) >= 3
    assert all(len(p) == 1 for p in seen)  # one session, never one per batch
    assert seen[0] == seen[1] and seen[2] != seen[1] and seen[2] == seen[-1]
    assert posts(endpoints) == set(expected_posts(generate(300, 11), params.filters))
    wait_until(lambda: sessions().empty, 60, "the sink and the progress recorder to close their sessions")


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_filters_stricter_than_the_producers_still_account_for_every_message(fresh, spark):
    params, endpoints = fresh
    ends = publish(params, endpoints, n=300, seed=11)["topic_end_offsets"]
    params.filters.languages = ["de"]  # the producer kept every language; the stream keeps German only
    run_available_now(spark, params, endpoints)
    expected = expected_posts(generate(300, 11), params.filters)
    assert 0 < len(expected) and posts(endpoints) == set(expected)
    ledger = db.query_df(endpoints.database_url, "SELECT end_offsets, input_rows FROM stream_ledger")
    assert int(ledger.input_rows.sum()) == sum(ends.values())
    assert {int(p): o for p, o in ledger.end_offsets[0].items()} == ends
    filtered = db.scalar(endpoints.database_url, "SELECT sum(filtered)::bigint FROM stream_progress")
    assert filtered > 0


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_replayed_batch_is_not_applied_twice(fresh, spark):
    params, endpoints = fresh
    publish(params, endpoints, n=120, seed=3)
    ck = str(checkpoint_path(params, endpoints))
    sink = PostgresSink(params, endpoints, ck)
    df = kafka_df(spark, endpoints.bootstrap_servers, params.kafka.topic)
    sink(df, 0)
    first = db.table_counts(endpoints.database_url, ["mastodon_posts", "stream_progress", "toot_ids"])
    sink(df, 0)  # what Spark does after a crash between our commit and its own
    assert sink.last == {"batch_id": 0, "skipped": True}
    assert db.table_counts(endpoints.database_url, ["mastodon_posts", "stream_progress", "toot_ids"]) == first


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_claimed_batch_is_applied_from_kafka_at_the_next_start_and_only_from_the_messages_it_claimed(fresh, spark):
    from tootpipe.stream.query import apply_pending
    params, endpoints = fresh
    ends = publish(params, endpoints, n=120, seed=3)["topic_end_offsets"]
    ck, url = str(checkpoint_path(params, endpoints)), endpoints.database_url
    dying = PostgresSink(params, endpoints, ck, overlap=True)
    dying._write = lambda b, claim: None  # the driver dies before its thread applies the claimed batch
    dying(kafka_df(spark, endpoints.bootstrap_servers, params.kafka.topic), 0)
    dying.flush()
    [(batch_id, _, claimed_ends, messages)] = PostgresSink(params, endpoints, ck).pending()
    assert batch_id == 0 and {int(p): o for p, o in claimed_ends.items()} == ends and messages == sum(ends.values())
    assert db.scalar(url, "SELECT count(*) FROM mastodon_posts") == 0
    fewer = kafka_df(spark, endpoints.bootstrap_servers, params.kafka.topic, end={p: o - 1 for p, o in ends.items()})
    with pytest.raises(RuntimeError, match="read again from Kafka, has .* not the .* it claimed: not applied"):
        PostgresSink(params, endpoints, ck).apply_pending(fewer, 0, claimed_ends, messages)
    assert db.scalar(url, "SELECT count(*) FROM mastodon_posts") == 0  # nothing written
    assert apply_pending(spark, params, endpoints, PostgresSink(params, endpoints, ck)) == 1
    assert posts(endpoints) == set(expected_posts(generate(120, 3), params.filters))
    assert PostgresSink(params, endpoints, ck).pending() == [] and PostgresSink(params, endpoints, ck).committed_ends() == ends
    assert db.scalar(url, "SELECT posts_written FROM stream_progress WHERE batch_id = 0") > 0


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_claimed_batch_whose_offsets_kafka_no_longer_holds_is_a_clear_error_and_stays_claimed(fresh, spark):
    from confluent_kafka import TopicPartition

    from tootpipe.kafka.admin import _admin
    from tootpipe.stream.query import apply_pending
    params, endpoints = fresh
    ends = publish(params, endpoints, n=120, seed=3)["topic_end_offsets"]
    ck = str(checkpoint_path(params, endpoints))
    dying = PostgresSink(params, endpoints, ck, overlap=True)
    dying._write = lambda b, claim: None  # claimed, never applied
    dying(kafka_df(spark, endpoints.bootstrap_servers, params.kafka.topic), 0)
    dying.flush()
    gone = [TopicPartition(params.kafka.topic, p, 2) for p in ends]  # retention removed each partition's first two
    admin = _admin(endpoints.bootstrap_servers)  # held: futures of a collected client never complete
    for f in admin.delete_records(gone).values():
        f.result(timeout=60)
    with pytest.raises(RuntimeError, match="batch 0 .* claimed offsets .* Kafka no longer holds"):
        apply_pending(spark, params, endpoints, PostgresSink(params, endpoints, ck))
    assert db.scalar(endpoints.database_url, "SELECT count(*) FROM mastodon_posts") == 0
    assert len(PostgresSink(params, endpoints, ck).pending()) == 1  # still claimed, nothing half-applied


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_sinks_plain_insert_falls_back_to_its_upsert_when_a_key_was_inserted_meanwhile(fresh):
    from tootpipe.stream.sink import _insert_new
    _, endpoints = fresh
    plain = "INSERT INTO k SELECT g, 'new' FROM generate_series(1, 3) g"
    with db.transaction(endpoints.database_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE k (id int PRIMARY KEY, v text)")
        cur.execute("INSERT INTO k VALUES (1, 'stored')")  # what another transaction inserted after the lookup
        assert _insert_new(cur, plain, plain + " ON CONFLICT DO NOTHING") == ((2,), True)
        assert _insert_new(cur, "INSERT INTO k VALUES (4, 'new')", "-- not run") == ((1,), False)
        cur.execute("SELECT id, v FROM k ORDER BY id")
        assert cur.fetchall() == [(1, "stored"), (2, "new"), (3, "new"), (4, "new")]  # the transaction goes on


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_windows_stay_exact_when_the_sinks_insert_falls_back_to_its_upsert(fresh, spark, monkeypatch):
    """Toots another batch stored after this one took the stored versions: its plain insert meets them, and the
    fallback takes their versions before its upsert, so an edit replaces them in the windows instead of adding."""
    from tootpipe.stream import sql as stream_sql
    params, endpoints = fresh
    url = endpoints.database_url
    kafka.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic], 1)
    sink = PostgresSink(params, endpoints, "fallback-test")

    def batch_of(records, batch_id):
        return _sink_records(spark, params, endpoints, sink, records, batch_id)

    batch_of([_toot(1, "2026-11-26T12:05:10Z"), _toot(2, "2026-11-26T12:06:10Z")], 0)
    # the first look at the stored versions finds none (as if taken before the other batch committed)
    blind = stream_sql.SNAPSHOT_STORED.replace("WHERE s.newest {only}", "WHERE s.newest {only} AND '{only}' <> ''")
    monkeypatch.setattr(stream_sql, "SNAPSHOT_STORED", blind)
    last = batch_of([dict(_toot(1, "2026-11-26T12:05:10Z"), text="edited!", edited_at="2026-11-26T12:07:00Z"),
                     _toot(3, "2026-11-26T12:06:20Z")], 1)
    assert last["posts_written"] == 2
    assert db.scalar(url, "SELECT content FROM mastodon_posts WHERE uri = 'https://a.example/s/1'") == "edited!"
    assert db.scalar(url, "SELECT sum(cnt)::bigint FROM streamed_toot_counts") == 3
    assert db.scalar(url, "SELECT total_length FROM avg_toot_length_by_user") == 7 + 6 + 6
    checks.require(checks.stream_invariants(url, endpoints.bootstrap_servers, params.kafka.topic, "fallback-test"))


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_two_sinks_editing_one_toot_at_once_leave_its_window_exact(fresh, spark):
    """Sink B stores an edit of a toot and holds its transaction open; sink A, with a newer edit, must wait for it
    and replace B's version in the windows, not the version A saw before B committed."""
    import threading

    from tootpipe.stream.microbatch import summarise
    from tootpipe.stream.sink import _Batch
    params, endpoints = fresh
    url = endpoints.database_url
    kafka.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic], 1)
    sink_a, sink_b = PostgresSink(params, endpoints, "race-a"), PostgresSink(params, endpoints, "race-b")
    first = _toot(1, "2026-11-26T12:05:10Z")
    produce_raw(endpoints.bootstrap_servers, params.kafka.topic, [json.dumps(r).encode() for r in (
        first, dict(first, text="the second version", edited_at="2026-11-26T12:06:00Z"),
        dict(first, text="v3", edited_at="2026-11-26T12:07:00Z"))])

    def batch(offset, batch_id, sink):
        rows = sink.post_rows(kafka_df(spark, endpoints.bootstrap_servers, params.kafka.topic, {0: offset},
                                       {0: offset + 1})).toArrow()
        return _Batch(batch_id, rows, summarise(rows), 0.0, 0.0)

    sink_a._write(batch(0, 0, sink_a), claim=True)
    b_holds, release = threading.Event(), threading.Event()

    def b_pauses(cur, batch_id):  # after B's upsert, inside its transaction: the toot's row stays locked
        b_holds.set()
        release.wait(120)
        PostgresSink._refresh_windows(cur, batch_id)

    sink_b._refresh_windows = b_pauses
    second, third = batch(1, 0, sink_b), batch(2, 1, sink_a)
    threads = [threading.Thread(target=sink_b._write, args=(second, True))]
    threads[0].start()
    assert b_holds.wait(120)
    threads.append(threading.Thread(target=sink_a._write, args=(third, True)))
    threads[1].start()
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    try:
        wait_until(lambda: db.scalar(url, waiting) >= 1, 120, "sink A waiting for B's lock")
    finally:
        release.set()
        for t in threads:
            t.join(120)
    assert sink_a.last.get("posts_written") == 1 and sink_b.last.get("posts_written") == 1
    assert db.scalar(url, "SELECT content FROM mastodon_posts") == "v3"
    assert db.query_df(url, "SELECT n, total_length FROM avg_toot_length_by_user").values.tolist() == [[1, 2]]
    assert db.scalar(url, "SELECT sum(cnt)::bigint FROM streamed_toot_counts") == 1


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_poison_messages_go_to_stream_errors_and_good_rows_still_land(fresh, spark):
    params, endpoints = fresh
    kafka.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic], 3)
    good = json.dumps({"v": 1, "event": "update", "uri": "https://a.example/s/1", "id": "1", "instance": "a.example",
                       "created_at": "2026-11-26 10:00:00", "account": {"acct": "alice"}, "visibility": "public",
                       "text": "hello"}).encode()
    produce_raw(endpoints.bootstrap_servers, params.kafka.topic, [b"not json at all", b'{"event": "update", "uri": "u"}', json.dumps(
        {"event": "update", "uri": "x", "id": "2", "instance": "a", "account": {"acct": "b"},
         "created_at": "the day after"}).encode(), good])
    run_available_now(spark, params, endpoints)
    errs = db.query_df(endpoints.database_url, "SELECT error FROM stream_errors ORDER BY kafka_offset").error.tolist()
    assert len(errs) == 3 and errs[0].startswith("not a toot record") and "created_at" in errs[2]
    assert posts(endpoints) == {"https://a.example/s/1"}


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_arrays_reach_postgresql_as_they_were(fresh, spark):
    from pyspark.sql import functions as F

    from tootpipe.spark.transforms import pg_array
    _, endpoints = fresh
    values = [["plain", 'a "quote"', "back\\slash", "comma, {braces}", "", '\\"', "NULL", "ünï ✓"], [], None]
    df = spark.createDataFrame([(i, v) for i, v in enumerate(values)], "i int, a array<string>")
    literals = [r[0] for r in df.orderBy("i").select(pg_array(F.col("a"))).collect()]
    with db.transaction(endpoints.database_url) as conn, conn.cursor() as cur:
        got = []
        for literal in literals:
            cur.execute("SELECT %s::text[]", (literal,))
            got.append(cur.fetchone()[0])
    assert got == values


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_newest_versions_marked_in_arrow_are_those_postgresqls_distinct_on_picks(fresh):
    import random
    from datetime import datetime, timedelta, timezone

    import pyarrow as pa

    from tootpipe.stream.microbatch import newest_versions
    _, endpoints = fresh
    rng = random.Random(5)
    t0 = datetime(2026, 11, 26, tzinfo=timezone.utc)
    n = 3000  # few uris and few instants: many versions per uri, many ties
    part = pa.table({
        "event": [rng.choice(["update", "update", "status.update", "delete", None]) for _ in range(n)],
        "uri": [rng.choice([f"u{i}" for i in range(300)] + ["ü✓", None]) for _ in range(n)],
        "created_at": pa.array([rng.choice([None] + [t0 + timedelta(minutes=m) for m in range(4)]) for _ in range(n)],
                               pa.timestamp("us", tz="UTC")),  # no time: first under DESC, as in PostgreSQL
        "edited_at": pa.array([rng.choice([None, None, t0 + timedelta(minutes=rng.randrange(5))]) for _ in range(n)],
                              pa.timestamp("us", tz="UTC")),
        "kafka_partition": pa.array([rng.randrange(3) for _ in range(n)], pa.int32()),
        "kafka_offset": pa.array(rng.sample(range(10 * n), n), pa.int64())})
    part = part.append_column("newest", newest_versions(part)).append_column("n", pa.array(range(n), pa.int64()))
    with db.transaction(endpoints.database_url) as conn, conn.cursor() as cur:
        cur.execute('CREATE TEMP TABLE v (event text, uri text COLLATE "C", created_at timestamptz, '
                    "edited_at timestamptz, kafka_partition int, kafka_offset bigint, newest boolean, n bigint)")
        db.copy_arrow(cur, "v", part, binary=True)
        cur.execute("SELECT DISTINCT ON (uri) n FROM v WHERE event <> 'delete' "  # the order the sink's SQL used
                    "ORDER BY uri, coalesce(edited_at, created_at) DESC, kafka_partition, kafka_offset DESC")
        picked = sorted(r[0] for r in cur.fetchall())
    assert len(picked) > 250 and picked == [i for i, m in enumerate(part["newest"].to_pylist()) if m]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_sink_stores_the_same_rows_without_the_binary_copy(fresh, spark, monkeypatch):
    params, endpoints = fresh
    publish(params, endpoints, n=120, seed=3)
    monkeypatch.setattr(db, "binary_copy_available", lambda: False)  # a machine without pgpq's wheel
    run_available_now(spark, params, endpoints)
    assert posts(endpoints) == set(expected_posts(generate(120, 3), params.filters))
    tags = db.query_df(endpoints.database_url, "SELECT hashtags FROM mastodon_posts WHERE cardinality(hashtags) > 0")
    assert len(tags) > 0 and all(isinstance(t, list) for t in tags.hashtags)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_checkpoint_of_another_cluster_or_topic_is_a_clear_error(fresh, spark):
    from tootpipe.stream.query import CheckpointMismatch, start_stream
    params, endpoints = fresh
    publish(params, endpoints, n=30, seed=1)
    run_available_now(spark, params, endpoints)
    other = params.model_copy(deep=True)
    other.kafka.topic = params.kafka.topic + "_other"  # same query name (checkpoint), another topic
    with pytest.raises(CheckpointMismatch, match="belongs to Kafka cluster .* topic"):
        start_stream(spark, other, endpoints, available_now=True)
    moved = replace(endpoints, cluster_id="another-cluster")
    with pytest.raises(CheckpointMismatch, match="another-cluster"):
        start_stream(spark, params, moved, available_now=True)
    assert run_available_now(spark, params, endpoints)["input_rows"] == 0  # the right cluster and topic go on as before


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_late_events_within_the_watermark_fix_their_window_and_beyond_it_do_not(fresh, spark):
    """Watermark 10 minutes. Batch 0 reaches 12:30. Batch 1 brings 12:25 (inside: in its window) and 12:05 (beyond:
    stored, counted as late, outside its final window). Batch 2 edits two toots, batch 3 deletes the late toot and
    one in its window: the windows keep exactly the toots in them, as a recount finds (the late one never was)."""
    params, endpoints = fresh
    url = endpoints.database_url
    kafka.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic], 1)
    sink = PostgresSink(params, endpoints, "late-test")

    def batch_of(records, batch_id):
        _sink_records(spark, params, endpoints, sink, records, batch_id)
        checks.require(checks.stream_invariants(url, endpoints.bootstrap_servers, params.kafka.topic, "late-test"))

    batch_of([_toot(1, "2026-11-26T12:05:10Z"), _toot(2, "2026-11-26T12:25:10Z"), _toot(3, "2026-11-26T12:30:00Z")], 0)
    counts = lambda: dict(db.query_df(url, "SELECT to_char(window_start AT TIME ZONE 'UTC', 'HH24:MI') w, "
                                           "cnt FROM streamed_toot_counts").values.tolist())
    users = lambda: {u: (n, t, a) for u, n, t, a in db.query_df(
        url, "SELECT username, n, total_length, avg_length FROM avg_toot_length_by_user").values.tolist()}
    assert counts() == {"12:05": 1, "12:25": 1, "12:30": 1}
    batch_of([_toot(4, "2026-11-26T12:25:40Z"), _toot(5, "2026-11-26T12:05:50Z", user="bob")], 1)
    assert counts() == {"12:05": 1, "12:25": 2, "12:30": 1}  # 12:25 refreshed, 12:05 finalised
    assert users() == {"alice@a.example": (4, 24, 6.0)}  # "toot N": 6 characters; bob's late toot is in no window
    assert posts(endpoints) == {f"https://a.example/s/{i}" for i in range(1, 6)}  # the late toot itself is kept
    late = db.scalar(url, "SELECT late_rows FROM stream_progress WHERE batch_id = 1")
    assert late == 1
    # an edit inside the watermark replaces the text, an older edit does not
    batch_of([dict(_toot(4, "2026-11-26T12:25:40Z"), text="newer", edited_at="2026-11-26T12:31:00Z"),
              dict(_toot(3, "2026-11-26T12:30:00Z"), text="stale", edited_at="2026-11-26T12:20:00Z")], 2)
    texts = dict(db.query_df(url, "SELECT uri, content FROM mastodon_posts").values.tolist())
    assert texts["https://a.example/s/4"] == "newer" and texts["https://a.example/s/3"] == "toot 3"
    assert counts() == {"12:05": 1, "12:25": 2, "12:30": 1} and users() == {"alice@a.example": (4, 23, 5.75)}
    # the late toot leaves nothing to take out; toot 1 leaves 12:05
    batch_of([_delete("a.example", "5"), _delete("a.example", "1")], 3)
    assert counts() == {"12:05": 0, "12:25": 2, "12:30": 1} and users() == {"alice@a.example": (3, 17, 17 / 3)}


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_deleted_toot_goes_wherever_it_was_seen_and_never_comes_back_whatever_the_order(fresh, spark):
    """A toot is known by its uri and, per instance that showed it, by an (instance, id) pair; a delete names a pair.
    Batch 0: a delete of b.example's id 9 (not seen yet), toots 1-3 from a.example. Batch 1: toot 1 through
    b.example as id 9 (so toot 1 is that deleted one), a delete of a.example's id 2, then toot 2 delivered again.
    Batch 2: toots 1 and 2 delivered again, an edit of toot 3."""
    params, endpoints = fresh
    kafka.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic], 1)
    sink = PostgresSink(params, endpoints, "deletes-test")
    url = endpoints.database_url

    def batch_of(records, batch_id):
        return _sink_records(spark, params, endpoints, sink, records, batch_id)

    toot = {n: _toot(n, f"2026-11-26T12:0{n}:00Z") for n in (1, 2, 3)}
    assert batch_of([_delete("b.example", "9"), toot[1], toot[2], toot[3]], 0)["deletes"] == 0
    assert posts(endpoints) == {f"https://a.example/s/{n}" for n in (1, 2, 3)}
    last = batch_of([dict(toot[1], instance="b.example", id="9"), _delete("a.example", "2"), toot[2]], 1)
    assert posts(endpoints) == {"https://a.example/s/3"} and last["deletes"] == 2
    batch_of([toot[1], toot[2], dict(toot[3], text="edited", edited_at="2026-11-26T12:30:00Z")], 2)
    assert posts(endpoints) == {"https://a.example/s/3"}
    assert db.scalar(url, "SELECT content FROM mastodon_posts") == "edited"
    assert set(db.query_df(url, "SELECT uri FROM deleted_uris").uri) == {f"https://a.example/s/{n}" for n in (1, 2)}
    assert db.scalar(url, "SELECT sum(cnt)::bigint FROM streamed_toot_counts") == 1  # the windows follow
