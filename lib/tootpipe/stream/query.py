"""The streaming query: Kafka (Spark's own connector) -> parse -> filters -> PostgreSQL, exactly once.

Guarantees: at-least-once out of Kafka, exactly-once into PostgreSQL through :class:`PostgresSink` (one
transaction per micro-batch with its ledger row; see :mod:`tootpipe.stream.sink`). A checkpoint is bound to one
Kafka cluster and topic: reading another with it is a :class:`CheckpointMismatch`, never a silent re-read or skip.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from tootpipe.core.config import Params
from tootpipe.core.errors import CheckpointMismatch
from tootpipe.core.paths import write_atomic
from tootpipe.kafka import end_offsets, ensure_topics, start_offsets
from tootpipe.postgres.db import query_df
from tootpipe.postgres.locks import acquire, held_here, holder
from tootpipe.services.embedded import Endpoints, cluster_of
from tootpipe.spark.kafka_source import kafka_ranges, kafka_stream
from tootpipe.spark.transforms import parse_kafka, to_post_rows
from tootpipe.stream.progress import lag, on_end, wait_for, watch
from tootpipe.stream.sink import PostgresSink

__all__ = ["PostgresSink", "start_stream", "run_available_now", "run_until_caught_up", "nothing_new",
           "running_elsewhere", "live_progress",
           "checkpoint_path", "kafka_stream", "kafka_ranges", "apply_pending", "finish", "bind_checkpoint",
           "CheckpointMismatch"]

log = logging.getLogger(__name__)

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
    write_atomic(stamp, json.dumps(want), mode=0o644)  # a torn stamp would refuse the checkpoint at every start


def apply_pending(spark, params: Params, endpoints: Endpoints, sink: PostgresSink) -> int:
    """Apply the batches Spark recorded but PostgreSQL had not applied when the last run's driver stopped (an
    overlapped sink's batch in flight), oldest first: each one's claimed offset ranges are read again from Kafka.
    Returns how many. Runs before the query starts, so the batches after them find PostgreSQL up to date."""
    pending = sink.pending()
    if not pending:
        return 0
    earliest = start_offsets(endpoints.bootstrap_servers, params.kafka.topic)
    latest = end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
    for batch_id, starts, ends, messages in pending:
        if any(int(o) < earliest.get(int(p), 0) for p, o in starts.items()):
            raise RuntimeError(
                f"batch {batch_id} of {sink.checkpoint} claimed offsets {starts} to {ends}, which Kafka no longer holds "
                f"(the topic now starts at {earliest}: retention or a deletion removed them), so its toots cannot "
                "reach PostgreSQL. It stays claimed and nothing was written. To go on without them, delete its "
                f"claim (DELETE FROM stream_ledger WHERE checkpoint = '{sink.checkpoint}' AND batch_id = {batch_id} "
                "AND NOT applied); the stream's checks will then report those messages as missing.")
        log.warning("batch %d of %s was claimed but not applied when the last run stopped: re-read from Kafka "
                    "(offsets %s to %s) and applied", batch_id, sink.checkpoint, starts, ends)
        ranges = {int(p): (starts[p], ends[p]) for p in starts}
        df = kafka_ranges(spark, endpoints.bootstrap_servers, params.kafka.topic, ranges, latest=latest)
        sink.apply_pending(to_post_rows(parse_kafka(df), params.filters), batch_id, ends, messages)
    return len(pending)


def finish(query, sink) -> None:
    """After a query ended or was stopped: wait until its sink's last batch is in PostgreSQL; raises the error of
    the query, or of that batch."""
    if query.exception():
        raise RuntimeError(f"streaming query failed: {query.exception()}")
    if callable(getattr(sink, "flush", None)):
        sink.flush()


def start_stream(spark, params: Params, endpoints: Endpoints, *, available_now: bool | None = None,
                 sink=None, after_commit=None):
    """Start the query; returns (StreamingQuery, sink). `sink` defaults to a PostgresSink on the query's checkpoint
    (overlapped as `stream.overlap_apply` says, with `after_commit` as its hook), which first applies the batches
    the last run left claimed (:func:`apply_pending`); any foreachBatch function (df, batch_id) may be given instead.
    Each batch arrives parsed and filtered (the columns of :func:`tootpipe.spark.transforms.to_post_rows`, with `kept`).
    Call :func:`finish` once the query ended."""
    ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic, params.kafka.dlq_topic], params.kafka.partitions,
                  params.kafka.replication_factor)
    ck = checkpoint_path(params, endpoints)
    bind_checkpoint(ck, cluster_of(endpoints), params.kafka.topic)
    release = acquire(endpoints.database_url, "stream", str(ck))  # one query per checkpoint: a second refuses
    try:
        query, sink = _start(spark, params, endpoints, ck, available_now, sink, after_commit)
    except BaseException:
        release()
        raise
    closers = [c for c in (getattr(sink, "close", None), release) if callable(c)]
    on_end(spark, query, lambda: [close() for close in closers])  # the sink's connection and the lock go with it
    return query, sink


def _start(spark, params: Params, endpoints: Endpoints, ck: Path, available_now: bool | None, sink, after_commit):
    if sink is None:
        sink = PostgresSink(params, endpoints, str(ck), overlap=params.stream.overlap_apply)
        sink.after_commit = after_commit
    if isinstance(sink, PostgresSink):
        apply_pending(spark, params, endpoints, sink)
    watch(spark, params.stream.query_name, endpoints.database_url, str(ck))
    # parsed and filtered in the query's own plan: analysed once, not once per micro-batch in the sink
    rows = to_post_rows(parse_kafka(kafka_stream(spark, params, endpoints)), params.filters)
    writer = (rows.writeStream.foreachBatch(sink)
              .queryName(params.stream.query_name).option("checkpointLocation", str(ck)))
    if available_now if available_now is not None else params.stream.trigger == "available_now":
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=params.stream.processing_time)
    return writer.start(), sink


def run_until_caught_up(spark, params: Params, endpoints: Endpoints, timeout_s: float = 600,
                        after_commit=None) -> dict:
    """Run the processing-time query (which honours `stream.max_offsets_per_trigger`) until everything that was in
    the topic when it started is committed, then stop; returns a summary. Raises when the query fails."""
    t0 = time.monotonic()
    target = end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
    query, sink = start_stream(spark, params, endpoints, available_now=False, after_commit=after_commit)
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
    finish(query, sink)
    wait_for(spark, query)
    progress = query.recentProgress
    return {"seconds": round(time.monotonic() - t0, 2), "batches": len(progress),
            "input_rows": sum(p["numInputRows"] for p in progress), "checkpoint": sink.checkpoint,
            "target_end_offsets": target}


def nothing_new(params: Params, endpoints: Endpoints) -> dict | None:
    """The summary of an availableNow run that would find nothing to do, found without Spark: the query's
    checkpoint (bound to this cluster and topic, else :class:`CheckpointMismatch`) has committed into PostgreSQL
    exactly the end offsets the topic has now, partition by partition (the ledger, see :mod:`tootpipe.stream.sink`).
    None when there is anything else: a new checkpoint, new messages, other partitions."""
    t0 = time.monotonic()
    ck = checkpoint_path(params, endpoints)
    if not (ck / "tootpipe-source.json").exists():
        return None
    bind_checkpoint(ck, cluster_of(endpoints), params.kafka.topic)
    target = end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
    done = PostgresSink(params, endpoints, str(ck)).committed_ends()
    if not target or set(done) - set(target) or any(done.get(p, 0) != end for p, end in target.items()):
        return None
    return {"seconds": round(time.monotonic() - t0, 2), "batches": 0, "input_rows": 0, "checkpoint": str(ck),
            "nothing_new": True}


def running_elsewhere(params: Params, endpoints: Endpoints) -> str | None:
    """Who runs this query's checkpoint in another process (`make live`'s stream), or None."""
    url, ck = endpoints.database_url, str(checkpoint_path(params, endpoints))
    return None if held_here(url, "stream", ck) else holder(url, "stream", ck)


def live_progress(params: Params, endpoints: Endpoints, who: str) -> dict:
    """What the query another process runs on this checkpoint has done, read without Spark: its batches and rows,
    its newest commit, and its lag (messages in the topic it has not committed yet)."""
    t0 = time.monotonic()
    ck = str(checkpoint_path(params, endpoints))
    done = PostgresSink(params, endpoints, ck).committed_ends()
    ends = end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
    row = query_df(endpoints.database_url, "SELECT count(*) AS batches, coalesce(sum(input_rows), 0) AS rows, "
                   "max(committed_at) AS newest FROM stream_ledger WHERE checkpoint = %s", (ck,)).iloc[0]
    return {"live": who, "checkpoint": ck, "batches": int(row.batches), "input_rows": int(row.rows),
            "newest_batch_at": str(row.newest), "lag": lag(ends, done),
            "seconds": round(time.monotonic() - t0, 2)}


def run_available_now(spark, params: Params, endpoints: Endpoints) -> dict:
    """Process everything in the topic now and stop; returns a summary of the batches."""
    t0 = time.monotonic()
    query, sink = start_stream(spark, params, endpoints, available_now=True)
    query.awaitTermination()
    finish(query, sink)
    wait_for(spark, query)
    progress = query.recentProgress
    return {"seconds": round(time.monotonic() - t0, 2), "batches": len(progress),
            "input_rows": sum(p["numInputRows"] for p in progress), "checkpoint": sink.checkpoint}
