"""Batch jobs: backfill from Kafka offsets, clean and de-duplicate (the analytics are in :mod:`.analytics`).

Guarantees: backfill appends to `toots_raw` idempotently (unique on cluster, topic, partition, offset) and records
every loaded range in `backfill_ranges` in the same transaction, so a re-run loads nothing twice. `toots_clean`,
`toots_rejects` are replaced atomically (staging table + swap in one transaction).
"""
from __future__ import annotations

import time

from pyspark.sql import DataFrame, SparkSession, Window, functions as F

from tootpipe.core.config import Params
from tootpipe.kafka import end_offsets
from tootpipe.postgres.db import ensure_schema, query_df, transaction
from tootpipe.postgres.schema import BATCH_SCHEMA_LOCK, BATCH_SCHEMA_SQL
from tootpipe.services.embedded import Endpoints, cluster_of
from tootpipe.spark.kafka_source import kafka_ranges
from tootpipe.spark.postgres import copy_from_tasks, read_query, split_tags, write_table
from tootpipe.spark.session import get_spark
from tootpipe.spark.transforms import apply_filters, parse_kafka

__all__ = ["ensure_batch_schema", "backfill", "explicit_ranges", "load_raw", "clean", "BATCH_SCHEMA_SQL", "pending_ranges", "read_query",
           "write_table"]

_RAW_COLUMNS = ["cluster", "topic", "kafka_partition", "kafka_offset", "kafka_timestamp", "event", "uri", "id",
                "instance", "username", "content", "language", "visibility", "created_at", "edited_at", "hashtags",
                "is_reblog", "is_reply", "error", "raw"]

# the record fields behind _RAW_COLUMNS: the backfill parses only these (see parse_kafka)
_RECORD_FIELDS = frozenset({"event", "uri", "id", "instance", "account", "text", "language", "visibility",
                            "created_at", "edited_at", "hashtags", "is_reblog", "is_reply"})



def ensure_batch_schema(url: str) -> None:
    """The stream's and the backfill's tables (idempotent; concurrent first runs do not race on the DDL)."""
    ensure_schema(url)
    with transaction(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (BATCH_SCHEMA_LOCK,))
        cur.execute(BATCH_SCHEMA_SQL)


def first_unloaded(loaded: list[tuple[int, int]]) -> int:
    """The first offset from 0 that no [start, end) range of `loaded` (any order, overlapping or not) covers. Pure."""
    offset = 0
    for start, end in sorted(loaded):
        if start > offset:
            break
        offset = max(offset, end)
    return offset


def pending_ranges(url: str, cluster: str, topic: str, latest: dict[int, int]) -> dict[int, tuple[int, int]]:
    """Per partition, the offsets not backfilled yet: from the first offset no loaded range covers to `latest`. A
    hole an explicit `--from`/`--to` left below its range is loaded too (the offsets loaded above the hole are read
    again and skipped: `toots_raw` takes each offset once)."""
    df = query_df(url, "SELECT kafka_partition, start_offset, end_offset FROM backfill_ranges WHERE cluster = %s "
                       "AND topic = %s", (cluster, topic))
    loaded: dict[int, list[tuple[int, int]]] = {}
    for r in df.itertuples():
        loaded.setdefault(int(r.kafka_partition), []).append((int(r.start_offset), int(r.end_offset)))
    starts = {p: first_unloaded(loaded.get(p, [])) for p in latest}
    return {p: (starts[p], e) for p, e in latest.items() if e > starts[p]}


def explicit_ranges(start: dict[int, int] | None, end: dict[int, int] | None,
                    latest: dict[int, int]) -> dict[int, tuple[int, int]]:
    """Ranges for `--from`/`--to`: the partitions named in either (all when only --to names some), from `start`
    (default 0) to `end` (default the current end). Raises ValueError for an unknown partition or an end beyond
    the topic's end. Pure."""
    named = set(start or {}) | set(end or {})
    unknown = named - set(latest)
    if unknown:
        raise ValueError(f"partitions {sorted(unknown)} do not exist (the topic has {sorted(latest)})")
    out = {}
    for p in sorted(named or latest):
        s, e = (start or {}).get(p, 0), (end or {}).get(p, latest[p])
        if e > latest[p]:
            raise ValueError(f"partition {p}: --to {e} is beyond the end of the topic ({latest[p]})")
        if s < e:
            out[p] = (s, e)
    return out


def backfill(spark: SparkSession | None, params: Params, endpoints: Endpoints,
             ranges: dict[int, tuple[int, int]] | None = None) -> dict:
    """Load Kafka offset ranges into `toots_raw` (default: everything not loaded yet). `spark` None: the process's
    session, started only when there is something to load."""
    ensure_batch_schema(endpoints.database_url)
    cluster = cluster_of(endpoints)
    topic = params.kafka.topic
    t0 = time.monotonic()
    latest = end_offsets(endpoints.bootstrap_servers, topic)
    if ranges is None:
        ranges = pending_ranges(endpoints.database_url, cluster, topic, latest)
    if not ranges:
        return {"rows": 0, "inserted": 0, "ranges": {}, "seconds": round(time.monotonic() - t0, 2)}
    if spark is None:
        spark = get_spark(params)
    kafka = kafka_ranges(spark, endpoints.bootstrap_servers, topic, ranges,
                         _task_count(spark, sum(e - s for s, e in ranges.values())), latest)
    parsed = parse_kafka(kafka, _RECORD_FIELDS).withColumn("cluster", F.lit(cluster))
    rows = parsed.withColumn("raw", F.when(F.col("error").isNotNull(), F.col("raw"))).select(_RAW_COLUMNS)
    # every task COPYs its rows (binary: the hashtags go as Arrow lists to text[]); offsets already in toots_raw
    # are skipped (a retried task adds nothing twice)
    read, inserted = copy_from_tasks(rows, endpoints.database_url, "toots_raw", unique=True, binary=True)
    with transaction(endpoints.database_url) as conn, conn.cursor() as cur:
        for p, (s, e) in ranges.items():
            cur.execute(_RECORD_RANGE, (cluster, topic, p, s, e, e - s))
    seconds = time.monotonic() - t0
    return {"rows": read, "inserted": inserted, "ranges": {str(p): list(r) for p, r in ranges.items()},
            "seconds": round(seconds, 2), "toots_per_s": round(read / seconds, 1) if seconds else None}


# a range from the start of one loaded before (an explicit --from, then the default) widens that one's row
_RECORD_RANGE = """INSERT INTO backfill_ranges (cluster, topic, kafka_partition, start_offset, end_offset, rows_loaded)
    VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (cluster, topic, kafka_partition, start_offset) DO UPDATE SET
    end_offset = greatest(backfill_ranges.end_offset, EXCLUDED.end_offset),
    rows_loaded = greatest(backfill_ranges.rows_loaded, EXCLUDED.rows_loaded)"""


def _task_count(spark: SparkSession, rows: int, rows_per_task: int = 100_000) -> int:
    """Enough tasks to keep every core busy, and none larger than `rows_per_task` rows."""
    return max(spark.sparkContext.defaultParallelism, -(-rows // rows_per_task))


def load_raw(spark: SparkSession, url: str, partitions: int = 4) -> DataFrame:
    """`toots_raw` as a Spark DataFrame, read in parallel slices of `kafka_offset`."""
    df = read_query(spark, url, "SELECT cluster, topic, kafka_partition, kafka_offset, kafka_timestamp, event, uri, "
                                "id, instance, username, content, language, visibility, created_at, edited_at, "
                                "array_to_string(hashtags, ' ') AS hashtags, is_reblog, is_reply, error FROM toots_raw",
                    "cluster string, topic string, kafka_partition int, kafka_offset long, kafka_timestamp timestamp, "
                    "event string, uri string, id string, instance string, username string, content string, "
                    "language string, visibility string, created_at timestamp, edited_at timestamp, "
                    "hashtags string, is_reblog boolean, is_reply boolean, error string", "kafka_offset", partitions)
    return df.withColumn("hashtags", split_tags("hashtags"))


def clean(raw: DataFrame, filters) -> tuple[DataFrame, DataFrame]:
    """Raw rows -> (clean toots, rejects).

    Rejects: rows with a parse error or no readable created_at, with the reason. Clean: statuses that pass the
    filters, trimmed, one row per `uri` (the latest edit; ties broken by the highest Kafka offset), minus every
    uri one of whose (instance, id) pairs was deleted.
    """
    rejects = raw.where(F.col("error").isNotNull() | (F.col("event").isin("update", "status.update")
                                                       & F.col("created_at").isNull())) \
        .select("cluster", "topic", "kafka_partition", "kafka_offset",
                F.coalesce(F.col("error"), F.lit("no readable created_at")).alias("reason"))
    ok = raw.where(F.col("error").isNull())
    deletes = ok.where(F.col("event") == "delete").select("instance", "id").distinct()
    statuses = ok.where(F.col("event").isin("update", "status.update") & F.col("created_at").isNotNull())
    ids = statuses.select("instance", "id", "uri").distinct()
    deleted_uris = ids.join(deletes, ["instance", "id"]).select("uri").distinct()
    kept = apply_filters(statuses, filters).where(F.col("event") != "delete")
    w = Window.partitionBy("uri").orderBy(F.coalesce("edited_at", "created_at").desc(), F.col("kafka_offset").desc(),
                                          F.col("kafka_partition").desc())
    latest = (kept.withColumn("rn", F.row_number().over(w)).where("rn = 1").drop("rn")
              .join(deleted_uris, "uri", "left_anti"))
    cleaned = latest.select("uri", "id", "instance", F.trim("username").alias("username"),
                            F.trim("content").alias("content"), F.lower(F.trim("language")).alias("language"),
                            "created_at", "edited_at", "hashtags", "is_reply",
                            F.length(F.trim("content")).alias("content_length"))
    return cleaned, rejects
