"""The exactly-once PostgreSQL sink of the streaming job (a `foreachBatch` function), in named steps (their SQL, named,
is in :mod:`tootpipe.stream.sql`).

Guarantees: exactly-once into PostgreSQL. Spark parses the micro-batch (in the JVM) and hands it to the driver as
Arrow, where the ledger's figures are taken (:mod:`tootpipe.stream.microbatch`). The batch's ledger row, keyed by
(checkpoint, batch_id) and holding its Kafka offset ranges, is claimed, and ONE transaction COPYs the rows to apply
into a temporary table, applies posts and deletes, refreshes the windows the batch touched, stores errors and
progress, and marks the ledger row applied. A batch Spark replays after a crash finds its ledger row and is skipped.

Serial (`overlap=False`): claim and apply are one transaction, committed before Spark records the batch. Overlapped
(`overlap=True`, what the streaming query uses): the claim commits on its own, the apply runs on the sink's thread
while Spark already reads and parses the next batch (each apply waits for the one before: batches are applied in
order, one at a time). A batch Spark recorded but PostgreSQL had not applied when the driver died stays claimed
and unapplied in the ledger: the next start re-reads exactly its offset ranges from Kafka and applies it before the
query goes on (:func:`tootpipe.stream.query.apply_pending`). Posts are upserted on `uri` (an edit wins only when newer); a delete
removes the toot wherever it was seen. The window tables change by each batch's deltas (:mod:`tootpipe.stream.sql`):
they hold exactly the stored toots marked `counted`. A toot new to the table whose event time is older than the
watermark (the max event time of the batches before, minus `stream.watermark_minutes`) is stored, not counted: its
window is final. An edit keeps the place of the version it replaces; a delete takes it out. The ledger counts every
message of the batch, also those the filters drop.
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import psycopg2.errors
import pyarrow as pa
from psycopg2 import sql

from tootpipe.core.config import Params
from tootpipe.postgres.db import KeptConnection, connect, copy_arrow, ensure_schema
from tootpipe.services.embedded import Endpoints, cluster_of
from tootpipe.spark.transforms import POST_COLUMNS, parse_kafka, to_post_rows
from tootpipe.stream import sql as Q
from tootpipe.stream.microbatch import BatchSummary, errors_part, latencies_ms, posts_part, summarise

__all__ = ["PostgresSink"]

log = logging.getLogger(__name__)


@dataclass
class _Batch:
    """A collected micro-batch on its way to PostgreSQL."""
    batch_id: int
    rows: pa.Table
    summary: BatchSummary
    t0: float  # when the sink received it (time.monotonic)
    collect_s: float
    prev_max: object = None  # the newest event time before this batch (False: the batch was applied before)


class PostgresSink:
    """The `foreachBatch` function: writes one micro-batch in one transaction, with its ledger row.

    `overlap`: apply each batch on the sink's thread while Spark prepares the next (see the module's docstring);
    :meth:`flush` waits for the batch in flight and raises its error. `after_commit(batch_id)`, when set, runs right
    after the batch's transaction committed (serial: before Spark records the batch as done; the reliability tests
    put a crash there). `keep_latencies` keeps each row's Kafka timestamp -> commit latency of the batch just
    committed in `committed_latencies_ms`, set before `after_commit` runs (the latency benchmark reads it there).
    """

    def __init__(self, params: Params, endpoints: Endpoints, checkpoint: str, overlap: bool = False) -> None:
        self.params, self.url, self.checkpoint = params, endpoints.database_url, checkpoint
        self.cluster = cluster_of(endpoints)
        self.overlap = overlap
        self.last: dict = {}
        self.after_commit = None
        self.keep_latencies = False
        self.committed_latencies_ms = None
        # one connection for all batches: a new one per batch (its password exchange and start) took ~20 ms of
        # each live trigger. Closed by :meth:`close` (start_stream calls it when its query ends). Its temporary
        # tables stay in the session's memory (temp_buffers: PostgreSQL's 8 MB default held a sixth of a stage of
        # 50,000 toots, ~40 MB, and every scan of it read the rest back from the kernel); allocated as used
        self._db = KeptConnection(self.url, retries=2, application_name=f"tootpipe sink {params.stream.query_name}",
                                  settings={"temp_buffers": "256MB"})
        self._worker: ThreadPoolExecutor | None = None
        self._inflight: Future | None = None
        ensure_schema(self.url)

    def close(self) -> None:
        """Wait for the batch in flight (its error is logged here; :meth:`flush` raises it), then close the sink's
        connection (a later batch opens a new one)."""
        worker, self._worker = self._worker, None
        if worker is not None:  # after the apply in flight, on the thread that uses the connection
            worker.submit(self._db.close)
            worker.shutdown(wait=True)
        self._db.close()
        inflight = self._inflight
        if inflight is not None and inflight.exception() is not None:
            log.error("the last batch of %s was not applied: %s (it stays claimed in the ledger; the next start "
                      "reads it again from Kafka)", self.checkpoint, inflight.exception())

    def flush(self) -> None:
        """Wait until the batch being applied (overlap) is in PostgreSQL; raises the error that stopped it."""
        inflight = self._inflight
        if inflight is not None:
            inflight.result()
            if self._inflight is inflight:
                self._inflight = None

    def post_rows(self, df):
        """A micro-batch as the rows this sink writes: Kafka rows are parsed and filtered here, unless the query
        already did (:func:`tootpipe.stream.query.start_stream` does it in the query's plan, analysed once instead
        of once per batch)."""
        return df if "kept" in df.columns else to_post_rows(parse_kafka(df), self.params.filters)

    def already_applied(self, batch_id: int) -> bool:
        """Whether the ledger holds this batch (applied, or claimed and left for :meth:`pending`)."""
        def ledger_row(cur):
            cur.execute(Q.LEDGER_ROW, (self.checkpoint, batch_id))
            return cur.fetchone() is not None
        return self._db.read(ledger_row)

    def __call__(self, df, batch_id: int) -> None:
        t0 = time.monotonic()
        if self._inflight is None and self.already_applied(batch_id):  # not read twice after a crash
            return self._skip(batch_id)
        rows = self.post_rows(df).toArrow()
        batch = _Batch(batch_id, rows, summarise(rows), t0, 0.0)  # every message counts in the ledger
        batch.collect_s = time.monotonic() - t0
        self.flush()  # the batch before is in PostgreSQL (or its error stops the query here)
        if not (self.overlap and rows.num_rows):
            return self._write(batch, claim=True)
        batch.prev_max = self._db.read(lambda cur: self._claim(cur, batch))  # committed before Spark records it
        if batch.prev_max is False:
            return self._skip(batch_id)
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="tootpipe-sink")
        self._inflight = self._worker.submit(self._write, batch, claim=False)

    def pending(self) -> list[tuple[int, dict[str, int], dict[str, int], int]]:
        """The batches claimed and not applied (an overlapped apply the driver did not finish), oldest first:
        (batch_id, start offsets, end offsets, messages)."""
        def rows(cur):
            cur.execute(Q.CLAIMED_NOT_APPLIED, (self.checkpoint,))
            return [(int(b), _offsets(s), _offsets(e), int(n)) for b, s, e, n in cur.fetchall()]
        return self._db.read(rows)

    def apply_pending(self, df, batch_id: int, ends: dict[str, int], messages: int) -> None:
        """Apply a claimed batch from its messages read again from Kafka (`df`, the claimed offset ranges); they
        must be the very messages claimed, else nothing is written."""
        t0 = time.monotonic()
        rows = self.post_rows(df).toArrow()
        batch = _Batch(batch_id, rows, summarise(rows), t0, time.monotonic() - t0)
        if batch.summary.ends != ends or batch.summary.rows != messages:
            raise RuntimeError(f"batch {batch_id} of {self.checkpoint}, read again from Kafka, has {batch.summary.rows} "
                               f"messages ending at {batch.summary.ends}, not the {messages} ending at {ends} it "
                               "claimed: not applied")
        batch.prev_max = self._db.read(lambda cur: self._prev_max(cur, batch_id))
        self._write(batch, claim=False)

    def _skip(self, batch_id: int) -> None:
        log.warning("batch %d of %s was already committed: skipped (replay after a crash)", batch_id, self.checkpoint)
        self.last = {"batch_id": batch_id, "skipped": True}

    def _write(self, b: _Batch, claim: bool) -> None:
        """ONE transaction: the claim (unless claimed before), the ledger row marked applied, everything the batch
        changes. On a kept connection that turned out dead (the server ended the session) once again on a new one:
        the transaction rolled back, and the claim and the mark are safe to repeat."""
        def tx(cur):
            if claim:
                b.prev_max = self._claim(cur, b)
                if b.prev_max is False:  # an earlier run applied this batch
                    return None
            cur.execute(Q.MARK_APPLIED, (self.checkpoint, b.batch_id))
            return self._apply(cur, b, b.prev_max) if cur.rowcount else None  # 0: applied meanwhile
        figures = self._db.read(tx)
        if figures is None:
            return self._skip(b.batch_id)
        self._applied(b, figures)

    def _apply(self, cur, b: _Batch, prev_max) -> dict:
        """Everything the batch changes, in the caller's transaction; returns what it did."""
        t1 = time.monotonic()
        self._stage(cur, b.rows)
        cutoff = self._cutoff(cur, prev_max)
        figures = self._apply_posts_and_deletes(cur, b.batch_id, cutoff)
        self._refresh_windows(cur, b.batch_id)
        self._store_errors(cur, b.rows, b.batch_id, b.summary)
        self._record_progress(cur, b, figures, time.monotonic() - t1)
        return figures

    def _applied(self, b: _Batch, figures: dict) -> None:
        if self.keep_latencies:
            self.committed_latencies_ms = latencies_ms(b.rows, time.time())
        if self.after_commit:
            self.after_commit(b.batch_id)
        s = b.summary
        self.last = {"batch_id": b.batch_id, "input_rows": s.rows, **figures, "errors": s.errors,
                     "filtered": s.filtered}

    # -- the steps ------------------------------------------------------------------------------------------
    @staticmethod
    def _stage(cur, rows) -> None:
        """The rows to apply (usable and kept) in a temporary table."""
        cur.execute(sql.SQL(Q.STAGE_DDL).format(cols=sql.SQL(", ").join(map(sql.Identifier, POST_COLUMNS))))
        copy_arrow(cur, "stage_posts", posts_part(rows), binary=True)

    def _claim(self, cur, b: _Batch):
        """The ledger row (not applied yet) and the progress row; returns the max event time seen before this batch,
        or False when the ledger has the batch applied. A batch claimed and not applied (the reply to a claim's
        commit was lost, and the claim repeated) is the caller's to apply."""
        s = b.summary
        prev_max = self._prev_max(cur, b.batch_id)
        cur.execute(Q.CLAIM, (self.checkpoint, b.batch_id, json.dumps(s.starts), json.dumps(s.ends), s.rows, prev_max,
                             s.max_event_time))
        if cur.rowcount == 0:
            cur.execute(Q.IS_APPLIED, (self.checkpoint, b.batch_id))
            return False if cur.fetchone()[0] else prev_max
        cur.execute(Q.PROGRESS, {"checkpoint": self.checkpoint, "batch_id": b.batch_id,
                                "query": self.params.stream.query_name, "input_rows": s.rows, "errors": s.errors,
                                "filtered": s.filtered, "collect_s": b.collect_s, "starts": json.dumps(s.starts)})
        return prev_max

    def _prev_max(self, cur, batch_id: int):
        """The newest event time of the batches before `batch_id` (None before the first)."""
        cur.execute(Q.PREV_MAX, (self.checkpoint, batch_id))
        return cur.fetchone()[0]

    def _cutoff(self, cur, prev_max):
        if prev_max is None:
            return None
        cur.execute(Q.WATERMARK, (prev_max, self.params.stream.watermark_minutes))
        return cur.fetchone()[0]

    def _apply_posts_and_deletes(self, cur, batch_id: int, cutoff) -> dict:
        """The (instance, id) -> uri map and the deletes first, then the posts: a deleted uri is never stored. What
        they change in the windows goes to `window_deltas`. Returns posts written, deletes, and late rows (toots
        new to the table stored beyond the watermark, outside their final window)."""
        cols = ", ".join(POST_COLUMNS)
        _insert_new(cur, Q.INSERT_NEW_IDS, Q.UPSERT_IDS)
        cur.execute(Q.RECORD_DELETES)
        cur.execute(Q.STORED_VERSIONS_DDL)
        cur.execute(Q.WINDOW_DELTAS_DDL)
        cur.execute(Q.SNAPSHOT_STORED.format(only=""))
        (deletes,) = _counts(cur, Q.APPLY_DELETES)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in POST_COLUMNS if c != "uri")
        args = {"batch_id": batch_id, "cutoff": cutoff or "-infinity"}
        upsert = Q.UPSERT_POSTS.format(cols=cols, updates=updates, only="{only}")
        # the fallback (a concurrent batch inserted some of these toots): their stored versions are taken first
        taken = "AND NOT EXISTS (SELECT 1 FROM stored_versions r WHERE r.uri = s.uri)"
        (written, late), fell_back = _insert_new(cur, Q.INSERT_NEW_POSTS.format(cols=cols), upsert.format(only=""),
                                                 args, before_fallback=Q.SNAPSHOT_STORED.format(only=taken))
        if not fell_back:  # the stored toots of the batch: newer versions replace them
            more, _ = _counts(cur, upsert.format(only="AND s.uri IN (SELECT uri FROM stored_versions)"), args)
            written += more
        return {"posts_written": written, "deletes": deletes, "late_rows": late}

    @staticmethod
    def _refresh_windows(cur, batch_id: int) -> None:
        """Apply the batch's window deltas."""
        cur.execute(Q.REFRESH_COUNTS, {"batch_id": batch_id})
        cur.execute(Q.REFRESH_USER_AVG, {"batch_id": batch_id})

    def _store_errors(self, cur, rows, batch_id: int, s: BatchSummary) -> None:
        if s.errors:
            cur.execute(Q.ERRORS_DDL)
            copy_arrow(cur, "stage_errors", errors_part(rows))
            cur.execute(Q.INSERT_ERRORS, (self.cluster, batch_id))

    def _record_progress(self, cur, b: _Batch, figures: dict, write_s: float) -> None:
        import numpy as np  # lazy: numpy
        latencies = latencies_ms(b.rows, time.time())
        p50, p95 = (float(v) for v in np.percentile(latencies, [50, 95])) if len(latencies) else (None, None)
        total_s = time.monotonic() - b.t0
        cur.execute(Q.PROGRESS_APPLIED, {
            "checkpoint": self.checkpoint, "batch_id": b.batch_id, "written": figures["posts_written"],
            "deletes": figures["deletes"], "late": figures["late_rows"], "write_s": write_s,
            "rows_per_s": b.summary.rows / total_s if total_s else None, "p50": p50, "p95": p95})

    def committed_ends(self) -> dict[int, int]:
        """Per partition, the end offset of everything this checkpoint has applied (from the ledger)."""
        conn = connect(self.url, retries=2)
        try:
            with conn.cursor() as cur:
                cur.execute(Q.APPLIED_ENDS, (self.checkpoint,))
                ends: dict[int, int] = {}
                for (value,) in cur.fetchall():
                    for p, o in _offsets(value).items():
                        ends[int(p)] = max(ends.get(int(p), 0), int(o))
                return ends
        finally:
            conn.close()


def _insert_new(cur, plain: str, upsert: str, args=None,
                before_fallback: str | None = None) -> tuple[tuple[int, ...], bool]:
    """Run `plain`, an INSERT of the rows whose keys were not in the table when it looked (cheaper than an
    upsert: no speculative insertion), inside a savepoint; when another transaction inserted one of those keys
    meanwhile, roll it back, run `before_fallback` (when given) and `upsert`, its ON CONFLICT form. Returns (the
    statement's counts: :func:`_counts`, whether it fell back)."""
    cur.execute("SAVEPOINT insert_new")
    try:
        counts = _counts(cur, plain, args)
    except psycopg2.errors.UniqueViolation:
        cur.execute("ROLLBACK TO SAVEPOINT insert_new")
        if before_fallback:
            cur.execute(before_fallback)
        return _counts(cur, upsert, args), True
    cur.execute("RELEASE SAVEPOINT insert_new")
    return counts, False


def _counts(cur, statement: str, args=None) -> tuple[int, ...]:
    """Run a statement; the counts it returns (a `SELECT count(*), ...` after data-modifying CTEs), else
    (its row count,)."""
    cur.execute(statement, args)
    return tuple(int(v) for v in cur.fetchone()) if cur.description else (cur.rowcount,)


def _offsets(value) -> dict[str, int]:
    """A ledger's offsets column (jsonb: a dict, or its text from an older driver) as {partition: offset}."""
    return {str(p): int(o) for p, o in (json.loads(value) if isinstance(value, str) else value or {}).items()}
