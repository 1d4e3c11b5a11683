"""The exactly-once PostgreSQL sink of the streaming job (a `foreachBatch` function), in named steps with their SQL.

Guarantees: exactly-once into PostgreSQL. Spark parses the micro-batch (in the JVM) and hands it to the driver as
Arrow, where the ledger's figures are taken (:mod:`tootpipe.stream_batch`); ONE transaction claims the batch's
ledger row keyed by (checkpoint, batch_id), COPYs the rows to apply into a temporary table, applies posts and
deletes, refreshes the windows the batch touched, and stores errors and progress. A batch Spark replays after a
crash finds its ledger row and is skipped. Posts are upserted on `uri` (an edit wins only when newer); a delete
removes the toot wherever it was seen. Window tables are recomputed from the stored posts for the windows a batch touched, so they
hold true counts; an event older than the watermark (max event time seen minus `stream.watermark_minutes`) is
stored but does not refresh its (finalised) window. The ledger counts every message of the batch, also those the
filters drop.
"""
from __future__ import annotations

import json
import logging
import time

from psycopg2 import sql

from .config import Params
from .db import KeptConnection, connect, copy_arrow, ensure_schema
from .services import Endpoints, cluster_of
from .stream_batch import BatchSummary, errors_part, latencies_ms, posts_part, summarise
from .transforms import POST_COLUMNS, parse_kafka, to_post_rows

__all__ = ["PostgresSink"]

log = logging.getLogger(__name__)

# the arrays arrive as PostgreSQL literals (text) and are cast when applied: the stage's types are exactly the
# Arrow batch's, which a binary COPY needs
_ARRAYS = ("hashtags", "mentions", "urls")
_STAGE_DDL = ("CREATE TEMP TABLE stage_posts ON COMMIT DROP AS SELECT NULL::text AS event, {cols} "
              "FROM mastodon_posts WITH NO DATA")
_ERRORS_DDL = ("CREATE TEMP TABLE stage_errors ON COMMIT DROP AS SELECT topic, kafka_partition, kafka_offset, raw, "
               "error FROM stream_errors WITH NO DATA")

_CLAIM = """
INSERT INTO stream_ledger (checkpoint, batch_id, end_offsets, input_rows, max_event_time)
VALUES (%s, %s, %s, %s, greatest(%s::timestamptz, %s::timestamptz)) ON CONFLICT DO NOTHING
"""

_UPSERT_POSTS = """
INSERT INTO mastodon_posts ({cols}, batch_id)
SELECT DISTINCT ON (uri) {staged}, %(batch_id)s FROM stage_posts s
WHERE s.event <> 'delete'
  AND NOT EXISTS (SELECT 1 FROM toot_ids i JOIN toot_deletes d USING (instance, id) WHERE i.uri = s.uri)
ORDER BY uri, coalesce(edited_at, created_at) DESC, kafka_partition, kafka_offset DESC
ON CONFLICT (uri) DO UPDATE SET {updates}, batch_id = EXCLUDED.batch_id, written_at = now()
WHERE coalesce(EXCLUDED.edited_at, EXCLUDED.created_at) > coalesce(mastodon_posts.edited_at, mastodon_posts.created_at)
"""

_APPLY_DELETES = """
WITH deleted_uris AS (
    SELECT i.uri FROM toot_ids i JOIN stage_posts s ON s.event = 'delete' AND s.instance = i.instance AND s.id = i.id
    UNION
    SELECT i.uri FROM toot_ids i JOIN toot_deletes d USING (instance, id)
    JOIN stage_posts s ON s.event <> 'delete' AND s.uri = i.uri),
removed AS (DELETE FROM mastodon_posts p USING deleted_uris WHERE p.uri = deleted_uris.uri RETURNING p.uri, p.username, p.created_at)
INSERT INTO removed_posts SELECT * FROM removed
"""

_REFRESH_COUNTS = """
WITH touched AS (
    SELECT DISTINCT date_trunc('minute', created_at) AS ws FROM stage_posts
    WHERE event <> 'delete' AND created_at >= %(cutoff)s
    UNION SELECT date_trunc('minute', created_at) FROM removed_posts)
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
    UNION SELECT username, date_bin(%(width)s::interval, created_at, TIMESTAMPTZ '2000-01-01') FROM removed_posts),
agg AS (  -- per touched window, its posts through the (username, created_at) index: never the whole table
    SELECT t.username, t.ws, a.n, a.avg_length FROM touched t CROSS JOIN LATERAL (
        SELECT count(*) AS n, coalesce(avg(length(p.content)), 0) AS avg_length FROM mastodon_posts p
        WHERE p.username = t.username AND p.created_at >= t.ws AND p.created_at < t.ws + %(width)s::interval) a)
INSERT INTO avg_toot_length_by_user (username, window_start, window_end, n, avg_length, batch_id)
SELECT username, ws, ws + %(width)s::interval, n, avg_length, %(batch_id)s FROM agg
ON CONFLICT (username, window_start) DO UPDATE
SET n = EXCLUDED.n, avg_length = EXCLUDED.avg_length, batch_id = EXCLUDED.batch_id
"""

_PROGRESS = """
INSERT INTO stream_progress (checkpoint, batch_id, query_name, input_rows, posts_written, deletes, errors, filtered,
    late_rows, collect_s, write_s, rows_per_s, latency_p50_ms, latency_p95_ms, start_offsets)
VALUES (%(checkpoint)s, %(batch_id)s, %(query)s, %(input_rows)s, %(written)s, %(deletes)s, %(errors)s, %(filtered)s,
    %(late)s, %(collect_s)s, %(write_s)s, %(rows_per_s)s, %(p50)s, %(p95)s, %(starts)s)
ON CONFLICT DO NOTHING
"""


class PostgresSink:
    """The `foreachBatch` function: writes one micro-batch in one transaction, with its ledger row.

    `after_commit(batch_id)`, when set, runs right after the batch's transaction committed and before Spark records
    the batch as done (the reliability tests put a crash there). `keep_latencies` keeps, per batch, each row's
    Kafka timestamp -> commit latency in `committed_latencies_ms` (the latency benchmark reads it).
    """

    def __init__(self, params: Params, endpoints: Endpoints, checkpoint: str, user_window: str = "1 hour") -> None:
        self.params, self.url, self.checkpoint = params, endpoints.database_url, checkpoint
        self.cluster = cluster_of(endpoints)
        self.user_window = user_window
        self.last: dict = {}
        self.after_commit = None
        self.keep_latencies = False
        self.committed_latencies_ms = None
        # one connection for all batches: a new one per batch (its password exchange and start) took ~20 ms of
        # each live trigger. Closed by :meth:`close` (start_stream calls it when its query ends).
        self._db = KeptConnection(self.url, retries=2, application_name=f"tootpipe sink {params.stream.query_name}")
        ensure_schema(self.url)

    def close(self) -> None:
        """Close the sink's connection (a later batch opens a new one)."""
        self._db.close()

    def post_rows(self, df):
        """A micro-batch as the rows this sink writes: Kafka rows are parsed and filtered here, unless the query
        already did (:func:`tootpipe.stream_query.start_stream` does it in the query's plan, analysed once instead
        of once per batch)."""
        return df if "kept" in df.columns else to_post_rows(parse_kafka(df), self.params.filters)

    def already_applied(self, batch_id: int) -> bool:
        def ledger_row(cur):
            cur.execute("SELECT 1 FROM stream_ledger WHERE checkpoint = %s AND batch_id = %s",
                        (self.checkpoint, batch_id))
            return cur.fetchone() is not None
        return self._db.read(ledger_row)

    def __call__(self, df, batch_id: int) -> None:
        t0 = time.monotonic()
        self.committed_latencies_ms = None
        if self.already_applied(batch_id):
            log.warning("batch %d of %s was already committed: skipped (replay after a crash)", batch_id,
                        self.checkpoint)
            self.last = {"batch_id": batch_id, "skipped": True}
            return
        rows = self.post_rows(df).toArrow()
        summary = summarise(rows)  # every message counts in the ledger, also those PostgreSQL never sees
        collect_s = time.monotonic() - t0
        t1 = time.monotonic()
        with self._db.transaction() as cur:  # the connection already_applied has just used
            prev_max = self._claim(cur, batch_id, summary)
            if prev_max is False:  # a concurrent or earlier run committed this batch
                cur.connection.rollback()
                self.last = {"batch_id": batch_id, "skipped": True}
                return
            self._stage(cur, rows)
            cutoff = self._cutoff(cur, prev_max)
            written, deletes = self._apply_posts_and_deletes(cur, batch_id)
            late = self._refresh_windows(cur, batch_id, cutoff)
            self._store_errors(cur, rows, batch_id, summary)
            write_s = time.monotonic() - t1
            self._record_progress(cur, batch_id, summary, written, deletes, late, collect_s, write_s,
                                  time.monotonic() - t0, latencies_ms(rows, time.time()))
        if self.keep_latencies:
            self.committed_latencies_ms = latencies_ms(rows, time.time())
        if self.after_commit:
            self.after_commit(batch_id)
        self.last = {"batch_id": batch_id, "input_rows": summary.rows, "posts_written": written,
                     "deletes": deletes, "errors": summary.errors, "filtered": summary.filtered, "late_rows": late}

    # -- the steps ------------------------------------------------------------------------------------------
    @staticmethod
    def _stage(cur, rows) -> None:
        """The rows to apply (usable and kept) in a temporary table."""
        staged = [sql.SQL("{}::text AS {}").format(sql.Identifier(c), sql.Identifier(c)) if c in _ARRAYS
                  else sql.Identifier(c) for c in POST_COLUMNS]
        cur.execute(sql.SQL(_STAGE_DDL).format(cols=sql.SQL(", ").join(staged)))
        copy_arrow(cur, "stage_posts", posts_part(rows), binary=True)

    def _claim(self, cur, batch_id: int, s: BatchSummary):
        """The ledger row; returns the max event time seen before this batch, or False when already claimed."""
        cur.execute("SELECT max(max_event_time) FROM stream_ledger WHERE checkpoint = %s", (self.checkpoint,))
        prev_max = cur.fetchone()[0]
        cur.execute(_CLAIM, (self.checkpoint, batch_id, json.dumps(s.ends), s.rows, prev_max, s.max_event_time))
        return False if cur.rowcount == 0 else prev_max

    def _cutoff(self, cur, prev_max):
        if prev_max is None:
            return None
        cur.execute("SELECT %s::timestamptz - make_interval(mins => %s)",
                    (prev_max, self.params.stream.watermark_minutes))
        return cur.fetchone()[0]

    def _apply_posts_and_deletes(self, cur, batch_id: int) -> tuple[int, int]:
        cols = ", ".join(POST_COLUMNS)
        cur.execute("INSERT INTO toot_ids (instance, id, uri) SELECT DISTINCT instance, id, uri FROM "
                    "stage_posts WHERE event <> 'delete' ON CONFLICT DO NOTHING")
        cur.execute("INSERT INTO toot_deletes (instance, id) SELECT DISTINCT instance, id FROM stage_posts "
                    "WHERE event = 'delete' ON CONFLICT DO NOTHING")
        # windows of the rows this batch replaces or removes are refreshed too ("removed_posts" = old versions)
        cur.execute("CREATE TEMP TABLE removed_posts ON COMMIT DROP AS SELECT p.uri, p.username, p.created_at "
                    "FROM mastodon_posts p JOIN (SELECT DISTINCT uri FROM stage_posts) s USING (uri)")
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in POST_COLUMNS if c != "uri")
        staged = ", ".join(f"{c}::text[]" if c in _ARRAYS else c for c in POST_COLUMNS)
        cur.execute(_UPSERT_POSTS.format(cols=cols, staged=staged, updates=updates), {"batch_id": batch_id})
        written = cur.rowcount
        cur.execute(_APPLY_DELETES)
        return written, cur.rowcount

    def _refresh_windows(self, cur, batch_id: int, cutoff) -> int:
        """Recount the windows the batch touched (at or after the watermark); returns the rows beyond it."""
        window_params = {"batch_id": batch_id, "cutoff": cutoff or "-infinity", "width": self.user_window}
        cur.execute(_REFRESH_COUNTS, window_params)
        cur.execute(_REFRESH_USER_AVG, window_params)
        cur.execute("SELECT count(*) FROM stage_posts WHERE event <> 'delete' AND created_at < %s",
                    (cutoff or "-infinity",))
        return cur.fetchone()[0]

    def _store_errors(self, cur, rows, batch_id: int, s: BatchSummary) -> None:
        if s.errors:
            cur.execute(_ERRORS_DDL)
            copy_arrow(cur, "stage_errors", errors_part(rows))
            cur.execute("INSERT INTO stream_errors (cluster, topic, kafka_partition, kafka_offset, raw, error, "
                        "batch_id) SELECT %s, topic, kafka_partition, kafka_offset, raw, error, %s FROM stage_errors "
                        "ON CONFLICT DO NOTHING", (self.cluster, batch_id))

    def _record_progress(self, cur, batch_id, s: BatchSummary, written, deletes, late, collect_s, write_s,
                         total_s, latencies) -> None:
        import numpy as np
        p50, p95 = (float(v) for v in np.percentile(latencies, [50, 95])) if len(latencies) else (None, None)
        cur.execute(_PROGRESS, {
            "checkpoint": self.checkpoint, "batch_id": batch_id, "query": self.params.stream.query_name,
            "input_rows": s.rows, "written": written, "deletes": deletes, "errors": s.errors,
            "filtered": s.filtered, "late": late, "collect_s": collect_s, "write_s": write_s,
            "rows_per_s": s.rows / total_s if total_s else None, "p50": p50, "p95": p95,
            "starts": json.dumps(s.starts)})  # the end offsets are the ledger's

    def committed_ends(self) -> dict[int, int]:
        """Per partition, the end offset of everything this checkpoint has committed (from the ledger)."""
        conn = connect(self.url, retries=2)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT end_offsets FROM stream_ledger WHERE checkpoint = %s", (self.checkpoint,))
                ends: dict[int, int] = {}
                for (value,) in cur.fetchall():
                    for p, o in (json.loads(value) if isinstance(value, str) else value).items():
                        ends[int(p)] = max(ends.get(int(p), 0), int(o))
                return ends
        finally:
            conn.close()
