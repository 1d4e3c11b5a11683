"""The SQL of the exactly-once stream sink (:mod:`tootpipe.stream_sink`), named by what each statement does.

Every statement runs inside the batch's transaction, over the temporary table `stage_posts` (the batch's usable
kept rows) and, for the window refreshes, `removed_posts` (the stored versions the
batch replaces or removes).
"""
from __future__ import annotations

__all__ = ["STAGE_DDL", "ERRORS_DDL", "CLAIM", "PREV_MAX", "MARK_APPLIED", "NOT_DELETED",
           "INSERT_NEW_POSTS", "UPSERT_POSTS", "INSERT_NEW_IDS", "UPSERT_IDS", "APPLY_DELETES", "REFRESH_COUNTS",
           "REFRESH_USER_AVG", "PROGRESS", "PROGRESS_APPLIED"]

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

NOT_DELETED = "NOT EXISTS (SELECT 1 FROM deleted_uris du WHERE du.uri = s.uri)"
# one version per uri: the batch's newest (`newest`, marked in the Arrow batch: stream_batch.newest_versions).
# Toots new to the table (not among the stored versions the batch replaces, "removed_posts"): a plain INSERT, without
# the upsert's speculative insertion; {only} narrows the upsert to the stored ones (or, as the fallback, nothing)
INSERT_NEW_POSTS = f"""
INSERT INTO mastodon_posts ({{cols}}, batch_id)
SELECT {{cols}}, %(batch_id)s FROM stage_posts s
WHERE s.newest AND NOT EXISTS (SELECT 1 FROM removed_posts r WHERE r.uri = s.uri) AND {NOT_DELETED}
"""
UPSERT_POSTS = f"""
INSERT INTO mastodon_posts ({{cols}}, batch_id)
SELECT {{cols}}, %(batch_id)s FROM stage_posts s
WHERE s.newest {{only}} AND {NOT_DELETED}
ON CONFLICT (uri) DO UPDATE SET {{updates}}, batch_id = EXCLUDED.batch_id, written_at = now()
WHERE coalesce(EXCLUDED.edited_at, EXCLUDED.created_at) > coalesce(mastodon_posts.edited_at, mastodon_posts.created_at)
"""
INSERT_NEW_IDS = ("INSERT INTO toot_ids (instance, id, uri) SELECT DISTINCT ON (instance, id) instance, id, uri "
                   "FROM stage_posts s WHERE event <> 'delete' AND NOT EXISTS "
                   "(SELECT 1 FROM toot_ids i WHERE i.instance = s.instance AND i.id = s.id)")
UPSERT_IDS = ("INSERT INTO toot_ids (instance, id, uri) SELECT DISTINCT instance, id, uri FROM stage_posts "
               "WHERE event <> 'delete' ON CONFLICT DO NOTHING")

# the uris this batch makes deleted: those its delete events name (through the (instance, id) -> uri map, this batch's
# pairs included), and those of its posts whose (instance, id) was deleted before (a delete may arrive first); the
# stored versions go, and their windows are recounted ("removed_posts")
APPLY_DELETES = """
WITH newly AS (
    INSERT INTO deleted_uris (uri)
    SELECT i.uri FROM stage_posts s JOIN toot_ids i ON s.event = 'delete' AND i.instance = s.instance AND i.id = s.id
    UNION
    SELECT s.uri FROM stage_posts s WHERE s.event <> 'delete'
        AND EXISTS (SELECT 1 FROM toot_deletes d WHERE d.instance = s.instance AND d.id = s.id)
        AND EXISTS (SELECT 1 FROM toot_ids i WHERE i.instance = s.instance AND i.id = s.id AND i.uri = s.uri)
    ON CONFLICT DO NOTHING RETURNING uri),
removed AS (DELETE FROM mastodon_posts p USING newly WHERE p.uri = newly.uri RETURNING p.uri, p.username, p.created_at)
INSERT INTO removed_posts SELECT * FROM removed
"""

REFRESH_COUNTS = """
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

REFRESH_USER_AVG = """
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
