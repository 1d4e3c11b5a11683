"""The SQL of the exactly-once stream sink (:mod:`tootpipe.stream.sink`), named by what each statement does: every
statement the sink runs is here, save its savepoints.

The statements that apply a batch run inside the batch's transaction, over the temporary tables `stage_posts` (the batch's usable
kept rows), `stored_versions` (the stored versions of the batch's uris, as they were before it) and
`window_deltas` (what the batch adds to and takes from the windows: +1 and the length of each version it stores
that is counted, -1 and the length of each counted version it replaces or deletes).

The windows hold the toots that are `counted`: a toot new to the table is counted when its event time is at or
after the watermark (the newest event time of the batches before, less `stream.watermark_minutes`); a later
version keeps the place of the one it replaces. Each window is changed by the batch's deltas, never recounted.
"""
from __future__ import annotations

from tootpipe.postgres.schema import MINUTE_START, USER_WINDOW, USER_WINDOW_START

__all__ = ["LEDGER_ROW", "CLAIMED_NOT_APPLIED", "IS_APPLIED", "APPLIED_ENDS", "WATERMARK", "RECORD_DELETES",
           "INSERT_ERRORS", "STAGE_DDL", "ERRORS_DDL", "CLAIM", "PREV_MAX", "MARK_APPLIED", "NOT_DELETED",
           "STORED_VERSIONS_DDL", "SNAPSHOT_STORED", "WINDOW_DELTAS_DDL", "INSERT_NEW_POSTS", "UPSERT_POSTS",
           "INSERT_NEW_IDS", "UPSERT_IDS", "APPLY_DELETES", "REFRESH_COUNTS", "REFRESH_USER_AVG", "PROGRESS",
           "PROGRESS_APPLIED"]


# the stage has the types of the Arrow batch (a binary COPY needs them exactly): those of mastodon_posts
STAGE_DDL = ("CREATE TEMP TABLE stage_posts ON COMMIT DROP AS SELECT NULL::text AS event, NULL::boolean AS newest, "
             "{cols} FROM mastodon_posts WITH NO DATA")
ERRORS_DDL = ("CREATE TEMP TABLE stage_errors ON COMMIT DROP AS SELECT topic, kafka_partition, kafka_offset, raw, "
              "error FROM stream_errors WITH NO DATA")

CLAIM = """
INSERT INTO stream_ledger (checkpoint, batch_id, start_offsets, end_offsets, input_rows, max_event_time, applied)
VALUES (%s, %s, %s, %s, %s, greatest(%s::timestamptz, %s::timestamptz), false) ON CONFLICT DO NOTHING
"""
PREV_MAX = "SELECT max(max_event_time) FROM stream_ledger WHERE checkpoint = %s AND batch_id < %s"
MARK_APPLIED = ("UPDATE stream_ledger SET applied = true, committed_at = now() "
                "WHERE checkpoint = %s AND batch_id = %s AND NOT applied")

STORED_VERSIONS_DDL = ("CREATE TEMP TABLE stored_versions (uri text COLLATE \"C\", username text COLLATE \"C\", "
                       "created_at timestamptz, len int, counted boolean) ON COMMIT DROP")
# the stored versions of the batch's toots ({only}: those not taken yet, when a concurrent batch inserted some),
# locked until the batch commits (in uri order, the same in every batch): another sink's batch cannot change one
# between this look and the upsert that replaces it, so what the windows lose is what was stored
SNAPSHOT_STORED = """
INSERT INTO stored_versions
SELECT p.uri, p.username, p.created_at, coalesce(length(p.content), 0), p.counted
FROM stage_posts s JOIN mastodon_posts p USING (uri) WHERE s.newest {only}
ORDER BY p.uri FOR UPDATE OF p
"""
WINDOW_DELTAS_DDL = ("CREATE TEMP TABLE window_deltas (username text COLLATE \"C\", created_at timestamptz, n int, "
                     "len bigint) ON COMMIT DROP")

NOT_DELETED = "NOT EXISTS (SELECT 1 FROM deleted_uris du WHERE du.uri = s.uri)"
# one version per uri: the batch's newest (`newest`, marked in the Arrow batch: stream_batch.newest_versions).
# Toots new to the table (not among the stored versions): a plain INSERT, without the upsert's speculative insertion;
# {only} narrows the upsert to the stored ones (or, as the fallback, nothing). Each returns its figures and adds the
# windows' deltas: a new toot counts when at or after the watermark (%(cutoff)s), a newer version keeps
# the place of the one it replaces (the upsert leaves `counted` as it was)
_WRITTEN = "RETURNING uri, username, created_at, coalesce(length(content), 0) AS len, counted"
# (toots written, toots new to the table stored beyond the watermark: the batch's late rows)
_FIGURES = ("SELECT count(*), count(*) FILTER (WHERE NOT counted AND NOT EXISTS "
            "(SELECT 1 FROM stored_versions r WHERE r.uri = w.uri)) FROM w")
INSERT_NEW_POSTS = f"""
WITH w AS (
    INSERT INTO mastodon_posts ({{cols}}, batch_id, counted)
    SELECT {{cols}}, %(batch_id)s, s.created_at >= %(cutoff)s FROM stage_posts s
    WHERE s.newest AND NOT EXISTS (SELECT 1 FROM stored_versions r WHERE r.uri = s.uri) AND {NOT_DELETED}
    {_WRITTEN}),
d AS (INSERT INTO window_deltas SELECT username, created_at, 1, len FROM w WHERE counted)
{_FIGURES}
"""
UPSERT_POSTS = f"""
WITH w AS (
    INSERT INTO mastodon_posts ({{cols}}, batch_id, counted)
    SELECT {{cols}}, %(batch_id)s, s.created_at >= %(cutoff)s FROM stage_posts s
    WHERE s.newest {{only}} AND {NOT_DELETED}
    ON CONFLICT (uri) DO UPDATE SET {{updates}}, batch_id = EXCLUDED.batch_id, written_at = now()
    WHERE coalesce(EXCLUDED.edited_at, EXCLUDED.created_at)
          > coalesce(mastodon_posts.edited_at, mastodon_posts.created_at)
    {_WRITTEN}),
d AS (INSERT INTO window_deltas
      SELECT username, created_at, 1, len FROM w WHERE counted
      UNION ALL SELECT r.username, r.created_at, -1, -r.len FROM stored_versions r JOIN w USING (uri) WHERE r.counted)
{_FIGURES}
"""
INSERT_NEW_IDS = ("INSERT INTO toot_ids (instance, id, uri) SELECT DISTINCT ON (instance, id) instance, id, uri "
                   "FROM stage_posts s WHERE event <> 'delete' AND NOT EXISTS "
                   "(SELECT 1 FROM toot_ids i WHERE i.instance = s.instance AND i.id = s.id)")
UPSERT_IDS = ("INSERT INTO toot_ids (instance, id, uri) SELECT DISTINCT instance, id, uri FROM stage_posts "
               "WHERE event <> 'delete' ON CONFLICT DO NOTHING")

# the uris this batch makes deleted: those its delete events name (through the (instance, id) -> uri map, this batch's
# pairs included), and those of its posts whose (instance, id) was deleted before (a delete may arrive first); the
# stored versions go, and leave their windows. Returns how many went.
APPLY_DELETES = """
WITH newly AS (
    INSERT INTO deleted_uris (uri)
    SELECT i.uri FROM stage_posts s JOIN toot_ids i ON s.event = 'delete' AND i.instance = s.instance AND i.id = s.id
    UNION
    SELECT s.uri FROM stage_posts s WHERE s.event <> 'delete'
        AND EXISTS (SELECT 1 FROM toot_deletes d WHERE d.instance = s.instance AND d.id = s.id)
        AND EXISTS (SELECT 1 FROM toot_ids i WHERE i.instance = s.instance AND i.id = s.id AND i.uri = s.uri)
    ON CONFLICT DO NOTHING RETURNING uri),
removed AS (DELETE FROM mastodon_posts p USING newly WHERE p.uri = newly.uri
            RETURNING p.username, p.created_at, coalesce(length(p.content), 0) AS len, p.counted),
d AS (INSERT INTO window_deltas SELECT username, created_at, -1, -len FROM removed WHERE counted)
SELECT count(*) FROM removed
"""

# the batch's deltas, per window (a window they leave unchanged is not written)
REFRESH_COUNTS = f"""
INSERT INTO streamed_toot_counts AS c (window_start, window_end, cnt, batch_id, updated_at)
SELECT {MINUTE_START}, {MINUTE_START} + interval '1 minute', sum(n), %(batch_id)s, now()
FROM window_deltas GROUP BY 1 HAVING sum(n) <> 0
ON CONFLICT (window_start) DO UPDATE
SET cnt = c.cnt + EXCLUDED.cnt, batch_id = EXCLUDED.batch_id, updated_at = now()
"""

REFRESH_USER_AVG = f"""
INSERT INTO avg_toot_length_by_user AS a (username, window_start, window_end, n, total_length, batch_id)
SELECT username, ws, ws + interval '{USER_WINDOW}', sum(n), sum(len), %(batch_id)s
FROM (SELECT username, {USER_WINDOW_START} AS ws, n, len FROM window_deltas) d
GROUP BY 1, 2 HAVING sum(n) <> 0 OR sum(len) <> 0
ON CONFLICT (username, window_start) DO UPDATE
SET n = a.n + EXCLUDED.n, total_length = a.total_length + EXCLUDED.total_length, batch_id = EXCLUDED.batch_id
"""

# the progress row is written with the claim (Spark's listener adds its figures once Spark recorded the batch,
# which may be before an overlapped apply), and completed by the apply
PROGRESS = """
INSERT INTO stream_progress (checkpoint, batch_id, query_name, input_rows, errors, filtered, collect_s, start_offsets)
VALUES (%(checkpoint)s, %(batch_id)s, %(query)s, %(input_rows)s, %(errors)s, %(filtered)s, %(collect_s)s, %(starts)s)
ON CONFLICT DO NOTHING
"""
PROGRESS_APPLIED = """
UPDATE stream_progress SET posts_written = %(written)s, deletes = %(deletes)s, late_rows = %(late)s,
    write_s = %(write_s)s, rows_per_s = %(rows_per_s)s, latency_p50_ms = %(p50)s, latency_p95_ms = %(p95)s,
    committed_at = now()
WHERE checkpoint = %(checkpoint)s AND batch_id = %(batch_id)s
"""

# the ledger: is a batch recorded (a replay is skipped), the batches claimed but not applied (re-read at the next
# start), is a claimed batch applied, the end offsets the applied batches reached (per partition)
LEDGER_ROW = "SELECT 1 FROM stream_ledger WHERE checkpoint = %s AND batch_id = %s"
CLAIMED_NOT_APPLIED = ("SELECT batch_id, start_offsets, end_offsets, input_rows FROM stream_ledger "
                       "WHERE checkpoint = %s AND NOT applied ORDER BY batch_id")
IS_APPLIED = "SELECT applied FROM stream_ledger WHERE checkpoint = %s AND batch_id = %s"
APPLIED_ENDS = "SELECT end_offsets FROM stream_ledger WHERE checkpoint = %s AND applied"
# the watermark: the newest event time of the batches before, less stream.watermark_minutes
WATERMARK = "SELECT %s::timestamptz - make_interval(mins => %s)"
# a delete is final: its (instance, id) is kept, whatever order its toot's versions arrive in
RECORD_DELETES = ("INSERT INTO toot_deletes (instance, id) SELECT DISTINCT instance, id FROM stage_posts "
                  "WHERE event = 'delete' ON CONFLICT DO NOTHING")
# the batch's unusable records, once per offset (a replayed batch adds none)
INSERT_ERRORS = ("INSERT INTO stream_errors (cluster, topic, kafka_partition, kafka_offset, raw, error, batch_id) "
                 "SELECT %s, topic, kafka_partition, kafka_offset, raw, error, %s FROM stage_errors "
                 "ON CONFLICT DO NOTHING")
