"""The pipeline's invariants, checked against PostgreSQL and Kafka: the notebooks display them, the tests assert
the same functions.

Each check returns a dict of the figures it compared and `failures` (empty when every invariant holds);
:func:`require` turns failures into one AssertionError naming each.
"""
from __future__ import annotations

from . import db

__all__ = ["stream_invariants", "sample_expectation", "reconciliation_summary", "require"]

_STREAM_SQL = """
SELECT (SELECT count(*) FROM mastodon_posts) AS posts,
       (SELECT count(DISTINCT uri) FROM mastodon_posts) AS distinct_uris,
       (SELECT coalesce(sum(input_rows), 0)::bigint FROM stream_ledger WHERE checkpoint = %(ck)s AND applied) AS ledger_rows,
       (SELECT coalesce(sum(cnt), 0)::bigint FROM streamed_toot_counts) AS sum_of_window_counts,
       (SELECT coalesce(sum(late_rows), 0)::bigint FROM stream_progress) AS beyond_watermark,
       (SELECT coalesce(sum(late_rows), 0)::bigint FROM stream_progress WHERE checkpoint = %(ck)s)
           AS beyond_watermark_this_query,
       (SELECT count(*) FROM stream_errors) AS error_rows"""


def stream_invariants(url: str, bootstrap: str, topic: str, checkpoint: str) -> dict:
    """Exactly-once figures of the query writing with `checkpoint`: each uri stored once; its ledger accounts for
    every message in the topic exactly once; the window counts equal the stored toots, less those that arrived
    beyond the watermark (stored, their final window not recounted; counted over every query of the database,
    since the windows are shared)."""
    from .kafka_io import end_offsets, start_offsets
    row = db.query_df(url, _STREAM_SQL, {"ck": checkpoint}).iloc[0].to_dict()
    out = {k: int(v) for k, v in row.items()}
    out["in_topic"] = sum(end_offsets(bootstrap, topic).values()) - sum(start_offsets(bootstrap, topic).values())
    failures = []
    if out["posts"] != out["distinct_uris"]:
        failures.append(f"{out['posts'] - out['distinct_uris']} uris are stored twice")
    if out["ledger_rows"] != out["in_topic"]:
        failures.append(f"the ledger holds {out['ledger_rows']} messages, the topic {out['in_topic']}: not every "
                        "message exactly once")
    if not out["posts"] - out["beyond_watermark"] <= out["sum_of_window_counts"] <= out["posts"]:
        failures.append(f"window counts add up to {out['sum_of_window_counts']} for {out['posts']} stored toots, "
                        f"of which {out['beyond_watermark']} arrived beyond the watermark")
    return {**out, "failures": failures}


def sample_expectation(url: str, expected: dict) -> dict:
    """The bundled sample's toots (`expected`: uri -> record, from :func:`tootpipe.sample.expected_posts`) are all
    stored, except those a delete of an earlier run in this database removed (a delete is final)."""
    stored = set(db.query_df(url, "SELECT uri FROM mastodon_posts").uri)
    deleted_before = set(db.query_df(url, "SELECT i.uri FROM toot_ids i JOIN toot_deletes d USING (instance, id)").uri)
    missing = set(expected) - stored - deleted_before
    out = {"expected": len(expected), "missing": len(missing), "from_other_runs": len(stored - set(expected)),
           "removed_by_earlier_deletes": len(set(expected) & deleted_before)}
    return {**out, "failures": [f"{len(missing)} expected toots are missing"] if missing else []}


def reconciliation_summary(url: str) -> dict:
    """The stream's and the batch's hourly counts (`stream_batch_reconciliation`): hours compared, totals, the
    hours where they differ, and how many rows reached the stream beyond its watermark (their final windows are
    not recounted by the stream; the batch recounts everything). Informational: no failures (a delete that arrives
    after its window was final also separates them)."""
    rec = db.query_df(url, "SELECT * FROM stream_batch_reconciliation ORDER BY hour")
    disagree = rec[rec["diff"] != 0]
    beyond = int(db.scalar(url, "SELECT coalesce(sum(late_rows), 0)::bigint FROM stream_progress"))
    out = {"hours": len(rec), "stream_total": int(rec.stream_cnt.sum()), "batch_total": int(rec.batch_cnt.sum()),
           "hours_differing": len(disagree), "beyond_watermark": beyond, "table": rec, "differing": disagree}
    return {**out, "failures": []}


def require(*results: dict) -> None:
    """Raise one AssertionError listing every failure of the given check results."""
    failures = [f for r in results for f in r["failures"]]
    if failures:
        raise AssertionError("; ".join(failures))
