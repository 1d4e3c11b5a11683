"""Real broker, real PostgreSQL, one local SparkSession."""
import json
from dataclasses import replace

import pytest

from tootpipe import batch, checks, db, kafka_io, steps
from conftest import kafka_df, produce_raw, wait_until
from tootpipe.sample import expected_posts, generate
from tootpipe.stream_query import PostgresSink, checkpoint_path, nothing_new, run_available_now

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def publish(params, endpoints, n=300, seed=11):
    params.source.sample_n, params.source.sample_seed = n, seed
    return steps.ingest_step(params, endpoints)


def posts(endpoints):
    return set(db.query_df(endpoints.database_url, "SELECT uri FROM mastodon_posts").uri)


def test_stream_is_exactly_once_and_matches_the_independent_expectation(fresh, spark):
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
    again = run_available_now(spark, params, endpoints)
    assert again["input_rows"] == 0 and posts(endpoints) == set(expected)
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


def test_available_now_honours_max_offsets_per_trigger_and_stops_at_the_ends_it_found(fresh, spark):
    from tootpipe.progress import wait_for
    from tootpipe.stream_query import start_stream
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


def test_the_sink_keeps_one_connection_opens_another_when_it_died_and_closes_it_when_its_query_ends(fresh, spark):
    from tootpipe.stream_query import finish, start_stream
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


def test_a_claimed_batch_is_applied_from_kafka_at_the_next_start_and_only_from_the_messages_it_claimed(fresh, spark):
    from tootpipe.stream_query import apply_pending
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


def test_a_claimed_batch_whose_offsets_kafka_no_longer_holds_is_a_clear_error_and_stays_claimed(fresh, spark):
    from confluent_kafka import TopicPartition
    from tootpipe.kafka_io import _admin
    from tootpipe.stream_query import apply_pending
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


def test_the_sinks_plain_insert_falls_back_to_its_upsert_when_a_key_was_inserted_meanwhile(fresh):
    from tootpipe.stream_sink import _insert_new
    _, endpoints = fresh
    plain = "INSERT INTO k SELECT g, 'new' FROM generate_series(1, 3) g"
    with db.transaction(endpoints.database_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE k (id int PRIMARY KEY, v text)")
        cur.execute("INSERT INTO k VALUES (1, 'stored')")  # what another transaction inserted after the lookup
        assert _insert_new(cur, plain, plain + " ON CONFLICT DO NOTHING") == ((2,), True)
        assert _insert_new(cur, "INSERT INTO k VALUES (4, 'new')", "-- not run") == ((1,), False)
        cur.execute("SELECT id, v FROM k ORDER BY id")
        assert cur.fetchall() == [(1, "stored"), (2, "new"), (3, "new"), (4, "new")]  # the transaction goes on


def test_the_windows_stay_exact_when_the_sinks_insert_falls_back_to_its_upsert(fresh, spark, monkeypatch):
    """Toots another batch stored after this one took the stored versions: its plain insert meets them, and the
    fallback takes their versions before its upsert, so an edit replaces them in the windows instead of adding."""
    from tootpipe import stream_sql
    params, endpoints = fresh
    url = endpoints.database_url
    kafka_io.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic], 1)
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


def test_two_sinks_editing_one_toot_at_once_leave_its_window_exact(fresh, spark):
    """Sink B stores an edit of a toot and holds its transaction open; sink A, with a newer edit, must wait for it
    and replace B's version in the windows, not the version A saw before B committed."""
    import threading
    from tootpipe.stream_batch import summarise
    from tootpipe.stream_sink import _Batch
    params, endpoints = fresh
    url = endpoints.database_url
    kafka_io.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic], 1)
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


def test_poison_messages_go_to_stream_errors_and_good_rows_still_land(fresh, spark):
    params, endpoints = fresh
    kafka_io.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic], 3)
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


def test_arrays_reach_postgresql_as_they_were(fresh, spark):
    from pyspark.sql import functions as F
    from tootpipe.transforms import pg_array
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


def test_the_newest_versions_marked_in_arrow_are_those_postgresqls_distinct_on_picks(fresh):
    import random
    from datetime import datetime, timedelta, timezone
    import pyarrow as pa
    from tootpipe.stream_batch import newest_versions
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


def test_binary_and_csv_copies_store_the_same_values(fresh):
    import platform
    from datetime import datetime, timezone
    import pyarrow as pa
    _, endpoints = fresh
    if platform.machine() != "aarch64":  # pgpq has wheels everywhere else: the binary path must be there
        assert db.binary_copy_available()
    t = datetime(2026, 11, 26, 1, 2, 3, 456789, tzinfo=timezone.utc)
    table = pa.table({
        "s": pa.array(["plain", "", None, "nul\x00inside", 'quote " and , comma', "ünï ✓\nline"]),
        "a": pa.array(['{"x","y z"}', "{}", None, '{"\\\\"}', '{""}', '{"NULL"}']),  # array literals, as staged
        "h": pa.array([["x", 'q "uote', "back\\slash"], [], None, ["nul\x00in", None], ["", "NULL"], ["{a,b}", "ü ✓"]],
                      pa.list_(pa.string())),  # Arrow lists (the backfill's hashtags)
        "i": pa.array([1, -2, None, 2**31 - 1, 0, 5], pa.int32()),
        "l": pa.array([2**40, None, -1, 0, 1, 2], pa.int64()),
        "b": pa.array([True, False, None, True, False, True]),
        "t": pa.array([t, None, t, t, t, t], pa.timestamp("us", tz="UTC"))})
    got = {}
    with db.transaction(endpoints.database_url) as conn, conn.cursor() as cur:
        for name, binary, part in (("as_binary", True, table), ("as_csv", False, table),
                                   ("sliced_binary", True, table.slice(2)), ("sliced_csv", False, table.slice(2))):
            cur.execute(f"CREATE TEMP TABLE {name} (n serial, s text, a text, h text[], i int, l bigint, "
                        "b boolean, t timestamptz)")
            assert db.copy_arrow(cur, name, part, binary=binary) == part.num_rows
            cur.execute(f"SELECT s, a::text[], i, l, b, t, h FROM {name} ORDER BY n")
            got[name] = cur.fetchall()
    assert got["as_binary"] == got["as_csv"]
    assert got["sliced_binary"] == got["sliced_csv"] == got["as_csv"][2:]  # lists whose offsets start past 0
    rows = got["as_binary"]
    assert [r[0] for r in rows[:4]] == ["plain", "", None, "nulinside"] and rows[3][1] == ["\\"]
    assert rows[0][5] == t and rows[0][3] == 2**40 and rows[3][2] == 2**31 - 1
    assert [r[6] for r in rows] == [["x", 'q "uote', "back\\slash"], [], None, ["nulin", None], ["", "NULL"],
                                    ["{a,b}", "ü ✓"]]


def test_the_sink_stores_the_same_rows_without_the_binary_copy(fresh, spark, monkeypatch):
    params, endpoints = fresh
    publish(params, endpoints, n=120, seed=3)
    monkeypatch.setattr(db, "binary_copy_available", lambda: False)  # a machine without pgpq's wheel
    run_available_now(spark, params, endpoints)
    assert posts(endpoints) == set(expected_posts(generate(120, 3), params.filters))
    tags = db.query_df(endpoints.database_url, "SELECT hashtags FROM mastodon_posts WHERE cardinality(hashtags) > 0")
    assert len(tags) > 0 and all(isinstance(t, list) for t in tags.hashtags)


def test_read_range_raises_rather_than_return_a_short_range(fresh):
    params, endpoints = fresh
    kafka_io.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic], 3)
    with pytest.raises(kafka_io.KafkaUnavailable, match="refusing to return a short range"):
        list(kafka_io.read_range(endpoints.bootstrap_servers, params.kafka.topic, 0, 0, 5, timeout=1.0))


def test_a_checkpoint_of_another_cluster_or_topic_is_a_clear_error(fresh, spark):
    from tootpipe.stream_query import CheckpointMismatch, start_stream
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


def test_backfill_is_idempotent_and_clean_agrees_with_the_stream(fresh, spark):
    params, endpoints = fresh
    publish(params, endpoints, n=250, seed=5)
    first = batch.backfill(spark, params, endpoints)
    assert first["inserted"] == first["rows"] > 0
    assert batch.backfill(spark, params, endpoints)["rows"] == 0
    # an explicit range over rows already loaded (a crash before the ledger was written) adds nothing twice
    ends = kafka_io.end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
    overlap = batch.backfill(spark, params, endpoints, ranges={0: (0, ends[0])})
    assert overlap["rows"] == ends[0] > 0 and overlap["inserted"] == 0
    cleaned, rejects = batch.clean(batch.load_raw(spark, endpoints.database_url), params.filters)
    assert {r.uri for r in cleaned.select("uri").collect()} == set(expected_posts(generate(250, 5), params.filters))


def test_unreachable_broker_is_a_clear_error():
    with pytest.raises(kafka_io.KafkaUnavailable, match="no Kafka broker answers at 127.0.0.1:9"):
        kafka_io.Publisher("127.0.0.1:9", "t", "d")


def test_unreachable_database_is_a_clear_error():
    with pytest.raises(db.DatabaseUnavailable, match="cannot reach PostgreSQL at 127.0.0.1:9"):
        db.connect("postgresql://postgres:secret@127.0.0.1:9/x")


def test_backfill_loads_only_new_offsets_of_the_partitions_that_grew(fresh, spark):
    params, endpoints = fresh
    publish(params, endpoints, n=60, seed=8)
    first = batch.backfill(spark, params, endpoints)
    produce_raw(endpoints.bootstrap_servers, params.kafka.topic,
                [b'{"event": "delete", "id": "%d", "instance": "x"}' % i for i in range(5)], partition=1)
    second = batch.backfill(spark, params, endpoints)
    assert list(second["ranges"]) == ["1"] and second["rows"] == second["inserted"] == 5
    total = db.scalar(endpoints.database_url, "SELECT count(*) FROM toots_raw")
    assert total == first["rows"] + 5


def test_export_newest_or_from_the_beginning(fresh):
    params, endpoints = fresh
    publish(params, endpoints, n=40, seed=2)
    ends = kafka_io.end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
    oldest = list(kafka_io.export(endpoints.bootstrap_servers, params.kafka.topic, 4, from_beginning=True))
    assert [(m["partition"], m["offset"]) for m in oldest] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    newest = list(kafka_io.export(endpoints.bootstrap_servers, params.kafka.topic, 4, from_beginning=False))
    assert len(newest) == 4 and all(m["offset"] >= ends[m["partition"]] - 4 for m in newest)
    assert all(isinstance(m["value"], dict) and m["value"]["uri"] or m["value"]["event"] == "delete" for m in newest)
    assert len(list(kafka_io.export(endpoints.bootstrap_servers, params.kafka.topic, None, True))) == sum(ends.values())


def _toot(n, created_at, user="alice"):
    return {"v": 1, "event": "update", "uri": f"https://a.example/s/{n}", "id": str(n), "instance": "a.example",
            "created_at": created_at, "account": {"acct": user, "username": user}, "visibility": "public",
            "text": f"toot {n}", "language": "en"}


def _delete(instance, sid):
    return {"v": 1, "event": "delete", "uri": None, "id": sid, "instance": instance}


def _sink_records(spark, params, endpoints, sink, records, batch_id) -> dict:
    """Produce `records` and hand exactly them to `sink` as micro-batch `batch_id`; returns the sink's figures."""
    produce_raw(endpoints.bootstrap_servers, params.kafka.topic, [json.dumps(r).encode() for r in records])
    ends = kafka_io.end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
    sink(kafka_df(spark, endpoints.bootstrap_servers, params.kafka.topic, {0: ends[0] - len(records)}, ends), batch_id)
    return sink.last


def test_late_events_within_the_watermark_fix_their_window_and_beyond_it_do_not(fresh, spark):
    """Watermark 10 minutes. Batch 0 reaches 12:30. Batch 1 brings 12:25 (inside: in its window) and 12:05 (beyond:
    stored, counted as late, outside its final window). Batch 2 edits two toots, batch 3 deletes the late toot and
    one in its window: the windows keep exactly the toots in them, as a recount finds (the late one never was)."""
    params, endpoints = fresh
    url = endpoints.database_url
    kafka_io.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic], 1)
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


def test_a_deleted_toot_goes_wherever_it_was_seen_and_never_comes_back_whatever_the_order(fresh, spark):
    """A toot is known by its uri and, per instance that showed it, by an (instance, id) pair; a delete names a pair.
    Batch 0: a delete of b.example's id 9 (not seen yet), toots 1-3 from a.example. Batch 1: toot 1 through
    b.example as id 9 (so toot 1 is that deleted one), a delete of a.example's id 2, then toot 2 delivered again.
    Batch 2: toots 1 and 2 delivered again, an edit of toot 3."""
    params, endpoints = fresh
    kafka_io.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic], 1)
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


def test_a_database_from_before_deleted_uris_gets_them_from_its_deletes_once(fresh):
    _, endpoints = fresh
    url = endpoints.database_url
    db.ensure_schema(url)
    with db.transaction(url) as conn, conn.cursor() as cur:  # as an older tootpipe left it
        cur.execute("DROP TABLE deleted_uris")
        cur.execute("CREATE INDEX toot_ids_uri ON toot_ids (uri)")
        cur.execute("INSERT INTO toot_ids VALUES ('a.example', '1', 'u1'), ('b.example', '7', 'u1'), "
                    "('a.example', '2', 'u2')")
        cur.execute("INSERT INTO toot_deletes (instance, id) VALUES ('b.example', '7'), ('c.example', '5')")
    db.ensure_schema(url)
    assert list(db.query_df(url, "SELECT uri FROM deleted_uris").uri) == ["u1"]
    assert db.scalar(url, "SELECT to_regclass('toot_ids_uri') IS NULL")
    db.scalar(url, "DELETE FROM deleted_uris RETURNING 1")
    db.ensure_schema(url)  # filled when the table is created, not at every start
    assert db.scalar(url, "SELECT count(*) FROM deleted_uris") == 0


def test_a_database_from_before_the_window_deltas_gets_its_windows_rebuilt_once(fresh):
    _, endpoints = fresh
    url = endpoints.database_url
    with db.transaction(url) as conn, conn.cursor() as cur:  # as an older tootpipe left it: windows recounted
        cur.execute("ALTER TABLE mastodon_posts DROP COLUMN counted")
        cur.execute("CREATE INDEX mastodon_posts_user_time ON mastodon_posts (username, created_at)")
        cur.execute("DROP TABLE avg_toot_length_by_user")
        cur.execute("CREATE TABLE avg_toot_length_by_user (username text COLLATE \"C\" NOT NULL, window_start "
                    "timestamptz NOT NULL, window_end timestamptz NOT NULL, n bigint NOT NULL, avg_length double "
                    "precision NOT NULL, batch_id bigint, PRIMARY KEY (username, window_start))")
        cur.execute("INSERT INTO mastodon_posts (uri, id, instance, username, content, created_at) VALUES "
                    "('u1', '1', 'a', 'x@a', 'abcd', '2026-11-26 12:05:10+00'), "
                    "('u2', '2', 'a', 'x@a', NULL, '2026-11-26 12:59:00+00'), "
                    "('u3', '3', 'a', 'y@a', 'ab', '2026-11-26 13:00:00+00')")
        cur.execute("INSERT INTO streamed_toot_counts VALUES ('2026-11-26 12:05+00', '2026-11-26 12:06+00', 7)")
        cur.execute("INSERT INTO avg_toot_length_by_user VALUES ('x@a', '2026-11-26 12:00+00', '2026-11-26 13:00+00', "
                    "9, 1.5, 0)")
    db.ensure_schema(url)
    assert db.scalar(url, "SELECT count(*) FROM mastodon_posts WHERE counted") == 3
    assert db.scalar(url, "SELECT to_regclass('mastodon_posts_user_time') IS NULL")
    assert db.query_df(url, "SELECT extract(hour FROM window_start AT TIME ZONE 'UTC')::int h, "
                            "extract(minute FROM window_start)::int m, cnt FROM streamed_toot_counts "
                            "ORDER BY 1, 2").values.tolist() == [[12, 5, 1], [12, 59, 1], [13, 0, 1]]
    assert db.query_df(url, "SELECT username, n, total_length, avg_length FROM avg_toot_length_by_user "
                            "ORDER BY 1").values.tolist() == [["x@a", 2, 4, 2.0], ["y@a", 1, 2, 2.0]]
    db.scalar(url, "UPDATE streamed_toot_counts SET cnt = 5 RETURNING 1")
    db.ensure_schema(url)  # rebuilt when the column is added, not at every start
    assert db.scalar(url, "SELECT sum(cnt) FROM streamed_toot_counts") == 15


def test_pgquery_reads_every_row_once_in_slices_with_nulls_empties_and_types(fresh, spark):
    params, endpoints = fresh
    url = endpoints.database_url
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE probe (k bigint, s text, b boolean, t timestamptz, d double precision)")
        cur.execute("INSERT INTO probe SELECT g, CASE WHEN g % 3 = 0 THEN NULL WHEN g % 3 = 1 THEN '' "
                    "ELSE E'x,\"y\"\n' || g END, g % 2 = 0, TIMESTAMPTZ '2026-11-26 23:59:59.5+00' + g * interval '1 s', "
                    "g / 4.0 FROM generate_series(1, 997) g")
        cur.execute("INSERT INTO probe VALUES (NULL, 'null key', NULL, NULL, NULL)")
    df = batch.read_query(spark, url, "SELECT * FROM probe", "k long, s string, b boolean, t timestamp, d double",
                          "k", partitions=5)
    assert df.rdd.getNumPartitions() == 5
    got = sorted(df.collect(), key=lambda r: (r.k is None, r.k or 0))
    want = db.query_df(url, "SELECT * FROM probe ORDER BY k NULLS LAST")
    assert len(got) == len(want) == 998
    assert [r.k for r in got[:-1]] == list(range(1, 998)) and got[-1].s == "null key"
    assert got[0].s == "" and got[1].s == 'x,"y"\n2' and got[2].s is None and got[1].b is True
    assert got[0].t.isoformat() == "2026-11-27T00:00:00.500000"  # UTC across midnight
    assert got[3].d == 1.0


def test_a_failed_table_write_leaves_the_previous_table_intact(fresh, spark):
    params, endpoints = fresh
    ok = spark.createDataFrame([(1, "a"), (2, "b")], "n int, s string")
    assert batch.write_table(endpoints.database_url, "probe_out", ok) == 2
    from pyspark.sql import functions as F
    boom = F.udf(lambda n: 1 // (n - 2), "int")  # fails on the second row, inside a task
    bad = spark.createDataFrame([(1, "x"), (2, "y"), (3, "z")], "n int, s string").withColumn("n", boom("n"))
    with pytest.raises(Exception):
        batch.write_table(endpoints.database_url, "probe_out", bad)
    assert db.query_df(endpoints.database_url, "SELECT n, s FROM probe_out ORDER BY n").values.tolist() == [[1, "a"], [2, "b"]]


def test_a_database_with_the_old_ledger_name_keeps_its_history(services_up):
    """The ledger was `stream_batches`: ensure_schema renames it, rows and all, so replays are still recognised."""
    import uuid
    from tootpipe import services
    endpoints = services.create_database(services_up, "t_" + uuid.uuid4().hex[:10])
    with db.transaction(endpoints.database_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE stream_batches (checkpoint text NOT NULL, batch_id bigint NOT NULL, "
                    "end_offsets jsonb, input_rows bigint, max_event_time timestamptz, "
                    "committed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (checkpoint, batch_id))")
        cur.execute("INSERT INTO stream_batches (checkpoint, batch_id, input_rows) VALUES ('ck', 0, 7), ('ck', 1, 5)")
    db.ensure_schema(endpoints.database_url)
    db.ensure_schema(endpoints.database_url)  # twice: nothing left to rename, nothing lost
    assert db.scalar(endpoints.database_url, "SELECT sum(input_rows) FROM stream_ledger") == 12
    assert db.scalar(endpoints.database_url, "SELECT to_regclass('stream_batches') IS NULL") is True


def test_a_checkpoint_asked_of_the_embedded_server_happens_and_an_external_one_is_refused(fresh):
    """services.checkpoint (benchmarks start timing after one): the server's count of requested checkpoints grows;
    a server that is not the embedded one is never touched."""
    import dataclasses
    from tootpipe import services
    _, endpoints = fresh
    asked = "SELECT num_requested FROM pg_stat_checkpointer"
    before = db.scalar(endpoints.database_url, asked)
    services.checkpoint(endpoints)
    assert db.scalar(endpoints.database_url, asked) > before
    with pytest.raises(services.ServiceError, match="checkpoint needs the embedded PostgreSQL"):
        services.checkpoint(dataclasses.replace(endpoints, embedded_postgres=False))


def test_clean_and_analytics_are_reused_only_while_nothing_they_read_changed(fresh, spark):
    params, endpoints = fresh
    url = endpoints.database_url
    publish(params, endpoints, n=120, seed=6)
    batch.backfill(spark, params, endpoints)
    first = steps.clean_step(params, endpoints)
    assert not first.get("reused") and first["toots_clean"] > 0
    again = steps.clean_step(params, endpoints)
    assert again["reused"] and again["toots_clean"] == first["toots_clean"]
    tables = steps.analytics_step(params, endpoints)
    assert not tables.get("reused") and steps.analytics_step(params, endpoints)["reused"]
    # new raw rows: both run again, and the analytics see the new clean run
    produce_raw(endpoints.bootstrap_servers, params.kafka.topic,
                [b'{"event": "delete", "id": "%d", "instance": "x"}' % i for i in range(3)])
    batch.backfill(spark, params, endpoints)
    assert not steps.clean_step(params, endpoints).get("reused")
    assert not steps.analytics_step(params, endpoints).get("reused")
    # other filters, or an output table changed behind the step's back: run again
    stricter = params.model_copy(deep=True)
    stricter.filters.languages = ["en"]
    narrower = steps.clean_step(stricter, endpoints)
    assert not narrower.get("reused") and narrower["toots_clean"] < first["toots_clean"]
    assert db.scalar(url, "WITH d AS (DELETE FROM toots_clean WHERE uri = (SELECT min(uri) FROM toots_clean) "
                          "RETURNING 1) SELECT count(*) FROM d") == 1
    repaired = steps.clean_step(stricter, endpoints)
    assert not repaired.get("reused") and repaired["toots_clean"] == narrower["toots_clean"]
    assert steps.clean_step(stricter, endpoints, force=False)["reused"]
    assert not steps.clean_step(stricter, endpoints, force=True).get("reused")


def test_the_sample_is_published_once_per_topic_unless_asked_again(fresh):
    params, endpoints = fresh
    params.source.sample_n, params.source.sample_seed = 80, 21
    first = steps.ingest_step(params, endpoints)
    sent_first = sum(first["topic_end_offsets"].values())
    assert not first.get("reused") and first["published"] > 0 and sent_first > 0
    again = steps.ingest_step(params, endpoints)
    assert again["reused"] and again["published"] == first["published"]
    assert again["topic_end_offsets"] == first["topic_end_offsets"]  # nothing sent
    other = params.model_copy(deep=True)
    other.source.sample_seed = 22  # another sample: published
    grown = sum(steps.ingest_step(other, endpoints)["topic_end_offsets"].values())
    assert grown > sent_first
    assert steps.ingest_step(params, endpoints)["reused"]  # the first sample is still in the topic
    params.source.republish = True
    resent = steps.ingest_step(params, endpoints)
    assert not resent.get("reused") and sum(resent["topic_end_offsets"].values()) == grown + sent_first
    # a recreated topic no longer holds it: published again
    params.source.republish = False
    kafka_io.delete_topics(endpoints.bootstrap_servers, [params.kafka.topic])
    wait_until(lambda: params.kafka.topic not in kafka_io._metadata(endpoints.bootstrap_servers).topics, 60,
               "the topic to be deleted")
    recreated = steps.ingest_step(params, endpoints)
    assert not recreated.get("reused") and sum(recreated["topic_end_offsets"].values()) == sent_first


def test_the_driver_jvm_runs_with_the_class_archive_when_there_is_one(spark):
    from tootpipe.jvm_archive import archive_path
    expected = str(archive_path()) if archive_path().exists() else ""  # make install builds it; without: none
    jvm = spark.sparkContext._jvm
    bean = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean"))
    assert bean.getVMOption("SharedArchiveFile").getValue() == expected
    assert bean.getVMOption("DontCompileHugeMethods").getValue() == "false"  # Spark's large generated methods JIT


SHARED_CHILD = """
import json, sys, tempfile
from tootpipe import config
from tootpipe.spark_session import get_spark
spark = get_spark(config.load(sys.argv[1], use_env=False))
jvm_pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
doubled = spark.range(3).rdd.map(lambda r: r.id * 2).collect()  # a Python worker forked by the shared JVM
src = tempfile.mkdtemp()
spark.range(5).write.json(src + "/in")
seen = []  # foreachBatch: the JVM calls back into this process, not into the one before it
query = (spark.readStream.schema("id long").json(src + "/in").writeStream
         .foreachBatch(lambda df, _i: seen.append(df.count())).trigger(availableNow=True).start())
query.awaitTermination()
print(json.dumps({"jvm": jvm_pid, "doubled": doubled, "batches": seen}))
"""


def test_processes_in_a_shared_driver_block_use_its_one_jvm_one_after_another(tmp_path):
    """run_all's kernels: each child process gets its own SparkContext in the block's JVM (Python workers and
    foreachBatch callbacks reach the right process), even when the one before left its context running; the JVM
    ends with the block."""
    import os
    import subprocess
    import sys
    import yaml
    from tootpipe import config
    from tootpipe.spark_session import shared_driver
    params = config.load(None, {"spark.master": "local[2]", "spark.shuffle_partitions": 2}, use_env=False)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params.model_dump()))
    runs = []
    with shared_driver(params) as release:
        for _ in range(2):  # neither child stops its context: release() does
            out = subprocess.run([sys.executable, "-c", SHARED_CHILD, str(tmp_path / "p.yaml")], capture_output=True,
                                 text=True, timeout=300)
            assert out.returncode == 0, out.stderr[-3000:]
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            release()
        jvm = runs[0]["jvm"]
        os.kill(jvm, 0)  # alive while the block lasts
    assert [r["jvm"] for r in runs] == [jvm, jvm]
    assert all(r["doubled"] == [0, 2, 4] and sum(r["batches"]) == 5 for r in runs), runs
    assert "PYSPARK_GATEWAY_PORT" not in os.environ
    wait_until(lambda: not os.path.exists(f"/proc/{jvm}"), timeout=60, what="the shared JVM to exit")
