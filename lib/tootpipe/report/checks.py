"""The pipeline's invariants, checked against PostgreSQL and Kafka: the notebooks display them, the tests assert
the same functions.

Each check returns a dict of the figures it compared and `failures` (empty when every invariant holds);
:func:`require` turns failures into one AssertionError naming each.
"""
from __future__ import annotations

from tootpipe.kafka import end_offsets, start_offsets
from tootpipe.postgres import db
from tootpipe.postgres.schema import MINUTE_START, USER_WINDOW_START

__all__ = ["stream_invariants", "sample_expectation", "reconciliation_summary", "require"]

_STREAM_SQL = f"""
SELECT (SELECT count(*) FROM mastodon_posts) AS posts,
       (SELECT count(DISTINCT uri) FROM mastodon_posts) AS distinct_uris,
       (SELECT coalesce(sum(input_rows), 0)::bigint FROM stream_ledger WHERE checkpoint = %(ck)s AND applied) AS ledger_rows,
       (SELECT coalesce(sum(e), 0)::bigint FROM (SELECT max(o.value::bigint) AS e FROM stream_ledger l,
            jsonb_each_text(l.end_offsets) o WHERE l.checkpoint = %(ck)s AND l.applied GROUP BY o.key) m)
           AS ledger_ends,
       (SELECT coalesce(sum(cnt), 0)::bigint FROM streamed_toot_counts) AS sum_of_window_counts,
       (SELECT coalesce(sum(late_rows), 0)::bigint FROM stream_progress) AS beyond_watermark,
       (SELECT coalesce(sum(late_rows), 0)::bigint FROM stream_progress WHERE checkpoint = %(ck)s)
           AS beyond_watermark_this_query,
       (SELECT count(*) FROM stream_errors) AS error_rows,
       (SELECT count(*) FROM mastodon_posts WHERE counted) AS counted_posts,
       (SELECT count(*) FROM (SELECT {MINUTE_START} AS ws, count(*) AS n FROM mastodon_posts
                              WHERE counted GROUP BY 1) t
        FULL JOIN (SELECT window_start AS ws, cnt AS n FROM streamed_toot_counts WHERE cnt <> 0) c USING (ws)
        WHERE t.n IS DISTINCT FROM c.n) AS count_windows_off,
       (SELECT count(*) FROM (SELECT username, count(*) AS n, sum(coalesce(length(content), 0)) AS len,
                                     {USER_WINDOW_START} AS ws
                              FROM mastodon_posts WHERE counted GROUP BY 1, 4) t
        FULL JOIN (SELECT username, window_start AS ws, n, total_length AS len FROM avg_toot_length_by_user
                   WHERE n <> 0 OR total_length <> 0) a USING (username, ws)
        WHERE (t.n, t.len) IS DISTINCT FROM (a.n, a.len)) AS user_windows_off"""


def stream_invariants(url: str, bootstrap: str, topic: str, checkpoint: str, live: bool = False) -> dict:
    """Exactly-once figures of the query writing with `checkpoint`: each uri stored once; its ledger accounts for
    every message in the topic exactly once (`live`: a query still running elsewhere, so every message up to the
    offsets its ledger committed, read in the same snapshot; `lag` is what it has still to read); every window (per minute, and per user and hour) holds exactly the
    stored toots marked `counted` (those that arrived beyond the watermark are stored, outside their final window),
    as a recount of them finds (over every query of the database, since the windows are shared)."""
    row = db.query_df(url, _STREAM_SQL, {"ck": checkpoint}).iloc[0].to_dict()
    out = {k: int(v) for k, v in row.items()}
    first = sum(start_offsets(bootstrap, topic).values())
    out["in_topic"] = sum(end_offsets(bootstrap, topic).values()) - first
    out["lag"] = out["in_topic"] - (out["ledger_ends"] - first) if live else 0
    failures = []
    if out["posts"] != out["distinct_uris"]:
        failures.append(f"{out['posts'] - out['distinct_uris']} uris are stored twice")
    if out["ledger_rows"] != out["in_topic"] - out["lag"]:
        failures.append(f"the ledger holds {out['ledger_rows']} messages, the topic {out['in_topic']}"
                        f"{' (' + str(out['lag']) + ' not read yet)' if live else ''}: not every message exactly once")
    if out["count_windows_off"] or out["sum_of_window_counts"] != out["counted_posts"]:
        failures.append(f"window counts add up to {out['sum_of_window_counts']} for the {out['counted_posts']} "
                        f"stored toots in windows ({out['posts']} stored); {out['count_windows_off']} minute windows "
                        "differ from a recount")
    if out["posts"] - out["counted_posts"] > out["beyond_watermark"]:
        failures.append(f"{out['posts'] - out['counted_posts']} stored toots are outside the windows, but only "
                        f"{out['beyond_watermark']} arrived beyond the watermark")
    if out["user_windows_off"]:
        failures.append(f"{out['user_windows_off']} per-user windows differ from a recount of their toots")
    return {**out, "failures": failures}


def sample_expectation(url: str, expected: dict) -> dict:
    """The bundled sample's toots (`expected`: uri -> record, from :func:`tootpipe.ingest.sample.expected_posts`) are all
    stored, except those a delete of an earlier run in this database removed (a delete is final)."""
    stored = set(db.query_df(url, "SELECT uri FROM mastodon_posts").uri)
    deleted_before = set(db.query_df(url, "SELECT i.uri FROM toot_ids i JOIN toot_deletes d USING (instance, id)").uri)
    missing = set(expected) - stored - deleted_before
    out = {"expected": len(expected), "missing": len(missing), "from_other_runs": len(stored - set(expected)),
           "removed_by_earlier_deletes": len(set(expected) & deleted_before)}
    return {**out, "failures": [f"{len(missing)} expected toots are missing"] if missing else []}


def clean_unique(url: str) -> dict:
    """`toots_clean` holds each uri once (the batch's de-duplication)."""
    n = int(db.scalar(url, "SELECT count(*) - count(DISTINCT uri) FROM toots_clean"))
    return {"duplicate_uris": n, "failures": [f"{n} duplicate uris in toots_clean"] if n else []}


def reconciliation_summary(url: str) -> dict:
    """The stream's and the batch's hourly counts (`stream_batch_reconciliation`): hours compared, totals, the
    hours where they differ, and how many rows reached the stream beyond its watermark (stored, outside the stream's
    final windows; the batch counts everything). Informational: no failures."""
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
