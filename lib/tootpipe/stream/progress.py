"""Spark's own view of every micro-batch, added to `stream_progress`: trigger and commit durations, the topic's
latest offsets when the batch was planned, and the lag behind them (messages waiting after the batch's end).

One StreamingQueryListener per SparkContext receives the progress events of the queries registered with
:func:`watch` (by query name) after Spark committed each batch, and adds them to the row the sink wrote inside
the batch's transaction: an UPDATE keyed by (checkpoint, batch_id), so a replayed or skipped batch changes
nothing. Best effort by design: metrics never fail or slow the query; an event that cannot be stored is logged.
"""
from __future__ import annotations

import json
import logging
import threading

from pyspark.sql.streaming import StreamingQueryListener

from tootpipe.postgres.db import KeptConnection

__all__ = ["watch", "on_end", "wait_for", "lag", "source_offsets", "ProgressRecorder"]

log = logging.getLogger(__name__)

_UPDATE = """
UPDATE stream_progress SET latest_offsets = %s, lag = %s, trigger_ms = %s, commit_ms = %s, durations_ms = %s
WHERE checkpoint = %s AND batch_id = %s
"""


def source_offsets(offset_json: str | dict | None) -> dict[str, int]:
    """Per-partition offsets from a source progress offset of Spark's Kafka source, {"topic": {"0": n}}, as JSON
    text or parsed; {} for anything else (a restarted query's first event may carry text that is not JSON). Pure."""
    if not offset_json:
        return {}
    try:
        value = json.loads(offset_json) if isinstance(offset_json, str) else offset_json
    except ValueError:
        return {}
    if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), dict):
        return {str(p): int(o) for p, o in next(iter(value.values())).items()}
    return {}


def lag(latest: dict[str, int], end: dict[str, int]) -> int | None:
    """Messages in the topic after the batch's end, summed over partitions (None when the latest is unknown). Pure."""
    if not latest:
        return None
    return sum(max(0, o - end.get(p, 0)) for p, o in latest.items())


class ProgressRecorder(StreamingQueryListener):
    """Writes each progress event of a watched query into its `stream_progress` row.

    Spark hands it each event as the event's JSON (:class:`_JsonEvents`), not as PySpark's event objects: PySpark
    builds those field by field over py4j, and reading each Java map to its end raises an exception that PySpark
    then classifies with ~14 class lookups, each a miss that searches every jar on the classpath. At 5 events/s that
    was the driver JVM's busiest thread after the query's own (22% of its samples in a live run, profiled)."""

    def __init__(self) -> None:
        self.queries: dict[str, tuple[str, str]] = {}  # query name -> (database url, checkpoint)
        self.recorded: dict[str, int] = {}              # query name -> last batch id handled
        self.connections: dict[str, KeptConnection] = {}  # query name -> its connection, while it runs
        self.names: dict[str, str] = {}                 # run id -> query name
        self.closers: dict[str, object] = {}            # run id -> what to call when that run ends
        self._changed = threading.Condition()

    @property
    def _jlistener(self):
        if not hasattr(self, "_jlistenerobj"):
            from pyspark import SparkContext  # lazy: pyspark
            self._jlistenerobj = SparkContext._jvm.PythonStreamingQueryListenerWrapper(_JsonEvents(self))
        return self._jlistenerobj

    # PySpark's event objects (the interface's methods): turned into what _JsonEvents passes
    def onQueryStarted(self, event) -> None:
        self.started(str(event.runId), event.name)

    def onQueryIdle(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        self.terminated(str(event.runId))

    def onQueryProgress(self, event) -> None:
        self.progressed(json.loads(event.progress.json))

    def started(self, run: str, name: str | None) -> None:
        self.names[run] = name or ""

    def terminated(self, run: str) -> None:
        conn = self.connections.pop(self.names.pop(run, None) or "", None)
        for close in (conn.close if conn else None, self.closers.pop(run, None)):
            try:
                if close:
                    close()
            except Exception as exc:  # noqa: BLE001 - the listener thread must go on
                log.warning("closing after query run %s: %s", run, exc)

    def progressed(self, p: dict) -> None:
        """One progress event, as Spark's JSON of it."""
        name = p.get("name") or ""
        target = self.queries.get(name)
        if target is None:
            return
        try:
            self._store(target, name, p)
        except Exception as exc:  # noqa: BLE001 - a metrics failure must never reach the query
            log.warning("could not record the progress of batch %s of %s: %s", p.get("batchId"), name, exc)
        finally:
            with self._changed:
                self.recorded[name] = max(self.recorded.get(name, -1), p["batchId"])
                self._changed.notify_all()

    def _store(self, target: tuple[str, str], name: str, p: dict) -> None:
        url, checkpoint = target
        latest, end = {}, {}
        for s in p.get("sources", []):
            latest.update(source_offsets(s.get("latestOffset")))
            end.update(source_offsets(s.get("endOffset")))
        d = p.get("durationMs", {})
        kept = self.connections.get(name)
        if kept is None or kept.url != url:
            kept = self.connections[name] = KeptConnection(url, application_name=f"tootpipe progress {name}")
        with kept.transaction() as cur:
            cur.execute(_UPDATE, (json.dumps(latest) if latest else None, lag(latest, end),
                                  d.get("triggerExecution"), d.get("walCommit", 0) + d.get("commitOffsets", 0),
                                  json.dumps(d), checkpoint, p["batchId"]))

    def wait_for(self, name: str, batch_id: int, timeout_s: float) -> bool:
        """Wait until the event of `batch_id` (or a later one) of query `name` was handled; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self.recorded.get(name, -1) >= batch_id, timeout_s)


class _JsonEvents:
    """Spark's listener interface, implemented over py4j: each event reaches the recorder in one or two calls."""

    def __init__(self, recorder: ProgressRecorder) -> None:
        self.recorder = recorder

    def onQueryStarted(self, jevent) -> None:
        self.recorder.started(jevent.runId().toString(), jevent.name())

    def onQueryProgress(self, jevent) -> None:
        self.recorder.progressed(json.loads(jevent.progress().json()))

    def onQueryIdle(self, jevent) -> None:
        pass

    def onQueryTerminated(self, jevent) -> None:
        self.recorder.terminated(jevent.runId().toString())

    class Java:
        implements = ["org.apache.spark.sql.streaming.PythonStreamingQueryListener"]


_RECORDERS: list[tuple[object, ProgressRecorder]] = []  # (SparkContext, its listener); the context is held
_LOCK = threading.Lock()


def _recorder(spark) -> ProgressRecorder:
    sc = spark.sparkContext
    with _LOCK:
        for context, rec in _RECORDERS:
            if context is sc:
                return rec
        rec = ProgressRecorder()
        spark.streams.addListener(rec)
        _RECORDERS.append((sc, rec))
        return rec


def watch(spark, query_name: str, database_url: str, checkpoint: str) -> None:
    """Record the progress of the query called `query_name` (register before starting it)."""
    _recorder(spark).queries[query_name] = (database_url, checkpoint)


def on_end(spark, query, close) -> None:
    """Call `close()` once `query` (this run of it) has ended; at once when it already has."""
    run = str(query.runId)
    rec = _recorder(spark)
    rec.closers[run] = close
    if not query.isActive and rec.closers.pop(run, None):
        close()


def wait_for(spark, query) -> bool:
    """After a query stopped: wait (up to 10 s) until the progress of its last executed batch was recorded. A
    trigger that found no new data also leaves a progress in `recentProgress` (no `addBatch` in its durations) but
    no event reaches the listeners: waiting for it would always time out."""
    progress = [p for p in query.recentProgress if "addBatch" in p.get("durationMs", {})]
    if not progress:
        return True
    done = _recorder(spark).wait_for(query.name, progress[-1]["batchId"], 10.0)
    if not done:
        log.warning("the progress of batch %s of %s was not recorded within 10 s: its stream_progress row lacks "
                    "Spark's durations and the lag", progress[-1]["batchId"], query.name)
    return done
