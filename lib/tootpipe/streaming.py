"""The streaming job: Kafka -> parse -> filters -> PostgreSQL, exactly once.

Guarantees: at-least-once out of Kafka, exactly-once into PostgreSQL. Everything one micro-batch writes (posts,
deletes, window counts, per-user averages, errors, progress) commits in ONE transaction together with a ledger
row keyed by (checkpoint, batch_id); a batch Spark replays after a crash finds its ledger row and is skipped.
Posts are upserted on `uri` (an edit wins only when newer); a delete removes the toot wherever it was seen.
Window tables are recomputed from the stored posts for the windows a batch touched, so they always hold true
counts; an event older than the watermark (max event time seen minus `stream.watermark_minutes`) is stored but
does not refresh its (finalised) window.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .config import Params
from .db import connect, copy_arrow, ensure_schema
from .progress import wait_for, watch
from .services import Endpoints, cluster_of
from .transforms import POST_COLUMNS, parse_kafka, to_post_rows

__all__ = ["PostgresSink", "start_stream", "run_available_now", "run_until_caught_up", "checkpoint_path",
           "kafka_stream", "bind_checkpoint", "CheckpointMismatch"]

log = logging.getLogger(__name__)

_STAGE_COLUMNS = ["event"] + POST_COLUMNS

_UPSERT_POSTS = """
INSERT INTO mastodon_posts ({cols}, batch_id)
SELECT DISTINCT ON (uri) {cols}, %(batch_id)s FROM stage_posts s
WHERE s.event <> 'delete'
  AND NOT EXISTS (SELECT 1 FROM toot_ids i JOIN toot_deletes d USING (instance, id) WHERE i.uri = s.uri)
ORDER BY uri, coalesce(edited_at, created_at) DESC, kafka_partition, kafka_offset DESC
ON CONFLICT (uri) DO UPDATE SET {updates}, batch_id = EXCLUDED.batch_id, written_at = now()
WHERE coalesce(EXCLUDED.edited_at, EXCLUDED.created_at) > coalesce(mastodon_posts.edited_at, mastodon_posts.created_at)
"""

_APPLY_DELETES = """
WITH hit AS (
    SELECT i.uri FROM toot_ids i JOIN stage_posts s ON s.event = 'delete' AND s.instance = i.instance AND s.id = i.id
    UNION
    SELECT i.uri FROM toot_ids i JOIN toot_deletes d USING (instance, id)
    JOIN stage_posts s ON s.event <> 'delete' AND s.uri = i.uri),
removed AS (DELETE FROM mastodon_posts p USING hit WHERE p.uri = hit.uri RETURNING p.uri, p.username, p.created_at)
INSERT INTO gone SELECT * FROM removed
"""

_REFRESH_COUNTS = """
WITH touched AS (
    SELECT DISTINCT date_trunc('minute', created_at) AS ws FROM stage_posts
    WHERE event <> 'delete' AND created_at >= %(cutoff)s
    UNION SELECT date_trunc('minute', created_at) FROM gone)
INSERT INTO streamed_toot_counts (window_start, window_end, cnt, batch_id, updated_at)
SELECT ws, ws + interval '1 minute',
       (SELECT count(*) FROM mastodon_posts p WHERE p.created_at >= ws AND p.created_at < ws + interval '1 minute'),
       %(batch_id)s, now()
FROM touched
ON CONFLICT (window_start) DO UPDATE SET cnt = EXCLUDED.cnt, batch_id = EXCLUDED.batch_id, updated_at = now()
"""

_REFRESH_USER_AVG = """
WITH touched AS (
    SELECT DISTINCT username, date_bin(%(width)s::interval, created_at, TIMESTAMPTZ '2000-01-01') AS ws
    FROM stage_posts WHERE event <> 'delete' AND created_at >= %(cutoff)s
    UNION SELECT username, date_bin(%(width)s::interval, created_at, TIMESTAMPTZ '2000-01-01') FROM gone),
agg AS (
    SELECT t.username, t.ws, count(p.uri) AS n, coalesce(avg(length(p.content)), 0) AS avg_length
    FROM touched t LEFT JOIN mastodon_posts p
      ON p.username = t.username AND p.created_at >= t.ws AND p.created_at < t.ws + %(width)s::interval
    GROUP BY t.username, t.ws)
INSERT INTO avg_toot_length_by_user (username, window_start, window_end, n, avg_length, batch_id)
SELECT username, ws, ws + %(width)s::interval, n, avg_length, %(batch_id)s FROM agg
ON CONFLICT (username, window_start) DO UPDATE
SET n = EXCLUDED.n, avg_length = EXCLUDED.avg_length, batch_id = EXCLUDED.batch_id
"""


class PostgresSink:
    """The `foreachBatch` function: writes one micro-batch in one transaction, with its ledger row."""

    def __init__(self, params: Params, endpoints: Endpoints, checkpoint: str, user_window: str = "1 hour") -> None:
        self.params, self.url, self.checkpoint = params, endpoints.database_url, checkpoint
        self.cluster = cluster_of(endpoints)
        self.user_window = user_window
        self.last: dict = {}
        self.committed_latencies_ms = None
        ensure_schema(self.url)

    def already_applied(self, batch_id: int) -> bool:
        conn = connect(self.url, retries=2)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM stream_batches WHERE checkpoint = %s AND batch_id = %s",
                            (self.checkpoint, batch_id))
                return cur.fetchone() is not None
        finally:
            conn.close()

    def __call__(self, df, batch_id: int) -> None:
        import pyarrow.compute as pc
        t0 = time.monotonic()
        self.committed_latencies_ms = None
        if self.already_applied(batch_id):
            log.warning("batch %d of %s was already committed: skipped (replay after a crash)", batch_id,
                        self.checkpoint)
            self.last = {"batch_id": batch_id, "skipped": True}
            return
        # filtered in Arrow, not in Spark: the ledger's end offsets and input_rows count every message of the batch
        rows = to_post_rows(parse_kafka(df), self.params.filters).toArrow()
        collect_s = time.monotonic() - t0
        bad_mask = pc.is_valid(rows["error"])
        errors = rows.filter(bad_mask)
        good = rows.filter(pc.and_(pc.invert(bad_mask), rows["kept"]))
        filtered = rows.num_rows - errors.num_rows - good.num_rows
        stage = good.select(_STAGE_COLUMNS)
        span = rows.group_by("kafka_partition").aggregate([("kafka_offset", "min"), ("kafka_offset", "max")])
        parts = span["kafka_partition"].to_pylist()
        starts = {str(p): o for p, o in zip(parts, span["kafka_offset_min"].to_pylist())}
        ends = {str(p): o + 1 for p, o in zip(parts, span["kafka_offset_max"].to_pylist())}
        t1 = time.monotonic()
        conn = connect(self.url, retries=5, wait_s=2)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT max(max_event_time) FROM stream_batches WHERE checkpoint = %s", (self.checkpoint,))
                prev_max = cur.fetchone()[0]
                statuses = good.filter(pc.not_equal(good["event"], "delete"))
                batch_max = pc.max(statuses["created_at"]).as_py() if statuses.num_rows else None
                cur.execute(
                    "INSERT INTO stream_batches (checkpoint, batch_id, end_offsets, input_rows, max_event_time) "
                    "VALUES (%s, %s, %s, %s, greatest(%s::timestamptz, %s::timestamptz)) "
                    "ON CONFLICT DO NOTHING", (self.checkpoint, batch_id, json.dumps(ends), rows.num_rows,
                                               prev_max, batch_max))
                if cur.rowcount == 0:  # a concurrent or earlier run committed this batch
                    conn.rollback()
                    self.last = {"batch_id": batch_id, "skipped": True}
                    return
                cutoff = None
                if prev_max is not None:
                    cur.execute("SELECT %s::timestamptz - make_interval(mins => %s)",
                                (prev_max, self.params.stream.watermark_minutes))
                    cutoff = cur.fetchone()[0]
                cur.execute("CREATE TEMP TABLE stage_posts ON COMMIT DROP AS "
                            "SELECT *, NULL::text AS event FROM mastodon_posts WITH NO DATA")
                copy_arrow(cur, "stage_posts", stage)
                cur.execute("INSERT INTO toot_ids (instance, id, uri) SELECT DISTINCT instance, id, uri FROM "
                            "stage_posts WHERE event <> 'delete' ON CONFLICT DO NOTHING")
                cur.execute("INSERT INTO toot_deletes (instance, id) SELECT DISTINCT instance, id FROM stage_posts "
                            "WHERE event = 'delete' ON CONFLICT DO NOTHING")
                # windows of the rows this batch replaces or removes are refreshed too ("gone" = old versions)
                cur.execute("CREATE TEMP TABLE gone ON COMMIT DROP AS SELECT p.uri, p.username, p.created_at "
                            "FROM mastodon_posts p JOIN (SELECT DISTINCT uri FROM stage_posts) s USING (uri)")
                cols = ", ".join(POST_COLUMNS)
                updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in POST_COLUMNS if c != "uri")
                cur.execute(_UPSERT_POSTS.format(cols=cols, updates=updates), {"batch_id": batch_id})
                written = cur.rowcount
                cur.execute(_APPLY_DELETES)
                deletes = cur.rowcount
                window_params = {"batch_id": batch_id, "cutoff": cutoff or "-infinity", "width": self.user_window}
                cur.execute(_REFRESH_COUNTS, window_params)
                cur.execute(_REFRESH_USER_AVG, window_params)
                cur.execute("SELECT count(*) FROM stage_posts WHERE event <> 'delete' AND created_at < %s",
                            (cutoff or "-infinity",))
                late = cur.fetchone()[0]
                if errors.num_rows:
                    err = errors.select(["topic", "kafka_partition", "kafka_offset", "raw", "error"])
                    cur.execute("CREATE TEMP TABLE stage_errors (topic text, kafka_partition int, kafka_offset "
                                "bigint, raw text, error text) ON COMMIT DROP")
                    copy_arrow(cur, "stage_errors", err)
                    cur.execute("INSERT INTO stream_errors (cluster, topic, kafka_partition, kafka_offset, raw, "
                                "error, batch_id) SELECT %s, topic, kafka_partition, kafka_offset, raw, error, %s "
                                "FROM stage_errors ON CONFLICT DO NOTHING", (self.cluster, batch_id))
                write_s = time.monotonic() - t1
                lat = _latency_ms(rows["kafka_timestamp"])
                total = time.monotonic() - t0
                cur.execute(
                    "INSERT INTO stream_progress (checkpoint, batch_id, query_name, input_rows, posts_written, "
                    "deletes, errors, filtered, late_rows, collect_s, write_s, rows_per_s, latency_p50_ms, "
                    "latency_p95_ms, start_offsets) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                    (self.checkpoint, batch_id, self.params.stream.query_name, rows.num_rows, written, deletes,
                     errors.num_rows, filtered, late, collect_s, write_s, rows.num_rows / total if total else None,
                     lat[0], lat[1], json.dumps(starts)))  # the end offsets are the ledger's
        finally:
            conn.close()
        self.committed_latencies_ms = _latencies_ms(rows["kafka_timestamp"])  # Kafka timestamp -> committed
        _inject_fault(batch_id)
        self.last = {"batch_id": batch_id, "input_rows": rows.num_rows, "posts_written": written,
                     "deletes": deletes, "errors": errors.num_rows, "filtered": filtered, "late_rows": late}

    def committed_ends(self) -> dict[int, int]:
        """Per partition, the end offset of everything this checkpoint has committed (from the ledger)."""
        conn = connect(self.url, retries=2)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT end_offsets FROM stream_batches WHERE checkpoint = %s", (self.checkpoint,))
                ends: dict[int, int] = {}
                for (value,) in cur.fetchall():
                    for p, o in (json.loads(value) if isinstance(value, str) else value).items():
                        ends[int(p)] = max(ends.get(int(p), 0), int(o))
                return ends
        finally:
            conn.close()


def _inject_fault(batch_id: int) -> None:
    """Fault injection for the reliability tests: ``TOOTPIPE_FAULT=kill_after_commit:N`` kills this driver with
    SIGKILL right after batch N committed in PostgreSQL and before Spark records it as done (the crash the ledger
    exists for). Unset in normal runs."""
    import os
    fault = os.environ.get("TOOTPIPE_FAULT", "")
    if fault == f"kill_after_commit:{batch_id}":
        import signal
        log.warning("TOOTPIPE_FAULT: killing the driver after committing batch %d", batch_id)
        os.kill(os.getpid(), signal.SIGKILL)


def _latencies_ms(ts_column):
    """Now minus each Kafka timestamp (microsecond Arrow timestamps), in milliseconds, as a numpy array."""
    import pyarrow as pa
    vals = ts_column.drop_null().cast(pa.int64()).to_numpy()
    return (time.time() * 1e6 - vals) / 1000


def _latency_ms(ts_column) -> tuple[float | None, float | None]:
    """p50 and p95 of now minus the Kafka timestamps, in milliseconds."""
    import numpy as np
    lat = _latencies_ms(ts_column)
    if lat.size == 0:
        return None, None
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 95))


class CheckpointMismatch(RuntimeError):
    """A checkpoint written for another Kafka cluster or topic; the message says how to go on."""


def checkpoint_path(params: Params, endpoints: Endpoints) -> Path:
    """Checkpoints live inside the project, one folder per query (bound to one cluster and topic: see
    :func:`bind_checkpoint`)."""
    return params.path(params.stream.checkpoint_dir) / params.stream.query_name


def bind_checkpoint(ck: Path, cluster: str, topic: str) -> None:
    """Tie a checkpoint to the Kafka cluster and topic it reads. Spark's checkpoint holds bare offsets: offsets of
    another cluster (or of a recreated topic) would be read as if they were the same history, skipping or
    re-reading messages without a word. A checkpoint bound to something else raises :class:`CheckpointMismatch`."""
    stamp = ck / "tootpipe-source.json"
    want = {"cluster_id": cluster, "topic": topic}
    if stamp.exists():
        have = json.loads(stamp.read_text())
        if have != want:
            raise CheckpointMismatch(
                f"the checkpoint {ck} belongs to Kafka cluster {have.get('cluster_id')!r}, topic "
                f"{have.get('topic')!r}, but the stream now reads cluster {cluster!r}, topic {topic!r}. Its offsets "
                "mean nothing there. Either give this run its own stream.query_name, or delete that folder to "
                "read the topic from its earliest offset (the ledger keeps PostgreSQL free of duplicates).")
        return
    if (ck / "offsets").is_dir() and any((ck / "offsets").iterdir()):
        raise CheckpointMismatch(f"the checkpoint {ck} has offsets but no record of the cluster and topic they "
                                 "belong to (written by an older tootpipe): delete it, or choose another "
                                 "stream.query_name")
    ck.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(want))


def kafka_stream(spark, params: Params, endpoints: Endpoints):
    """The topic as a streaming DataFrame through Spark's own Kafka connector, from the earliest offset on a new
    checkpoint. ``failOnDataLoss`` stays true: with a durable broker, offsets that vanished (retention, a deleted
    topic) are lost toots, and the query stops and says so instead of skipping them."""
    return (spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", endpoints.bootstrap_servers)
            .option("subscribe", params.kafka.topic).option("startingOffsets", "earliest")
            .option("maxOffsetsPerTrigger", str(params.stream.max_offsets_per_trigger))
            .option("failOnDataLoss", "true").load())


def start_stream(spark, params: Params, endpoints: Endpoints, *, available_now: bool | None = None,
                 sink=None):
    """Start the query; returns (StreamingQuery, sink). `sink` defaults to a PostgresSink on the query's checkpoint;
    any foreachBatch function (df, batch_id) may be given instead."""
    from .kafka_io import ensure_topics
    ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic, params.kafka.dlq_topic], params.kafka.partitions,
                  params.kafka.replication_factor)
    ck = checkpoint_path(params, endpoints)
    bind_checkpoint(ck, cluster_of(endpoints), params.kafka.topic)
    sink = sink or PostgresSink(params, endpoints, str(ck))
    watch(spark, params.stream.query_name, endpoints.database_url, str(ck))
    writer = (kafka_stream(spark, params, endpoints).writeStream.foreachBatch(sink)
              .queryName(params.stream.query_name).option("checkpointLocation", str(ck)))
    if available_now if available_now is not None else params.stream.trigger == "available_now":
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=params.stream.processing_time)
    return writer.start(), sink


def run_until_caught_up(spark, params: Params, endpoints: Endpoints, timeout_s: float = 600) -> dict:
    """Run the processing-time query (which honours `stream.max_offsets_per_trigger`) until everything that was in
    the topic when it started is committed, then stop; returns a summary. Raises when the query fails."""
    from .kafka_io import end_offsets
    t0 = time.monotonic()
    target = end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
    query, sink = start_stream(spark, params, endpoints, available_now=False)
    try:
        while True:
            if query.awaitTermination(0.5) or query.exception():
                raise RuntimeError(f"streaming query failed: {query.exception()}")
            done = sink.committed_ends()
            if all(done.get(p, 0) >= o for p, o in target.items()):
                break
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"not caught up after {timeout_s:.0f} s: committed {done}, target {target}")
    finally:
        if query.isActive:
            query.stop()
    wait_for(spark, query)
    progress = query.recentProgress
    return {"seconds": round(time.monotonic() - t0, 2), "batches": len(progress),
            "input_rows": sum(p["numInputRows"] for p in progress), "checkpoint": sink.checkpoint,
            "target_end_offsets": target}


def run_available_now(spark, params: Params, endpoints: Endpoints) -> dict:
    """Process everything in the topic now and stop; returns a summary of the batches."""
    t0 = time.monotonic()
    query, sink = start_stream(spark, params, endpoints, available_now=True)
    query.awaitTermination()
    if query.exception():
        raise RuntimeError(f"streaming query failed: {query.exception()}")
    wait_for(spark, query)
    progress = query.recentProgress
    return {"seconds": round(time.monotonic() - t0, 2), "batches": len(progress),
            "input_rows": sum(p["numInputRows"] for p in progress), "checkpoint": sink.checkpoint}
