"""The tables of the pipeline, and the migrations of databases an older tootpipe created
(:func:`tootpipe.db.ensure_schema` runs it, idempotent, at every start).
"""
from __future__ import annotations

from .stream_sql import MINUTE_START, USER_WINDOW, USER_WINDOW_START

__all__ = ["SCHEMA_SQL"]

# Identifiers (uri, id, instance, username) are compared byte by byte (COLLATE "C"): their indexes, sorts and
# joins skip the locale's comparison routine (-11% of the stream sink's PostgreSQL time on a C.UTF-8 server, more
# under a language locale). Every column joined with another carries the same collation.
SCHEMA_SQL = f"""
CREATE TABLE IF NOT EXISTS mastodon_posts (
    uri text COLLATE "C" PRIMARY KEY,
    id text COLLATE "C" NOT NULL,
    instance text COLLATE "C" NOT NULL,
    username text COLLATE "C" NOT NULL,
    acct text,
    account_id text,
    display_name text,
    bot boolean,
    followers_count bigint,
    content text,
    content_html text,
    language text,
    visibility text,
    created_at timestamptz NOT NULL,
    edited_at timestamptz,
    hashtags text[],
    mentions text[],
    urls text[],
    media_count int,
    is_reblog boolean,
    reblog_uri text,
    is_reply boolean,
    in_reply_to_id text,
    replies_count bigint,
    reblogs_count bigint,
    favourites_count bigint,
    sensitive boolean,
    spoiler_text text,
    ingested_at timestamptz,
    kafka_partition int,
    kafka_offset bigint,
    kafka_timestamp timestamptz,
    batch_id bigint,
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS mastodon_posts_created_at ON mastodon_posts (created_at);
-- counted: the toot is in the stream's windows (it arrived within the watermark; its edits keep its place)
ALTER TABLE mastodon_posts ADD COLUMN IF NOT EXISTS counted boolean NOT NULL DEFAULT true;
DROP INDEX IF EXISTS mastodon_posts_user_time;  -- the user windows were recounted through it; now kept by deltas
CREATE TABLE IF NOT EXISTS toot_ids (
    instance text COLLATE "C" NOT NULL, id text COLLATE "C" NOT NULL, uri text COLLATE "C" NOT NULL,
    PRIMARY KEY (instance, id));
CREATE TABLE IF NOT EXISTS toot_deletes (
    instance text COLLATE "C" NOT NULL, id text COLLATE "C" NOT NULL, deleted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance, id));
-- every uri some deleted (instance, id) maps to: a batch looks its own uris up here instead of joining the whole
-- history of toot_ids and toot_deletes; a database from before gets it filled once from those two
DO $$ BEGIN
    IF to_regclass('deleted_uris') IS NULL THEN
        CREATE TABLE deleted_uris (uri text COLLATE "C" PRIMARY KEY, deleted_at timestamptz NOT NULL DEFAULT now());
        INSERT INTO deleted_uris (uri) SELECT DISTINCT i.uri FROM toot_ids i JOIN toot_deletes d USING (instance, id);
    END IF;
END $$;
DROP INDEX IF EXISTS toot_ids_uri;  -- nothing looks toot_ids up by uri since deleted_uris
CREATE TABLE IF NOT EXISTS streamed_toot_counts (
    window_start timestamptz PRIMARY KEY, window_end timestamptz NOT NULL, cnt bigint NOT NULL,
    batch_id bigint, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS avg_toot_length_by_user (
    username text COLLATE "C" NOT NULL, window_start timestamptz NOT NULL, window_end timestamptz NOT NULL,
    n bigint NOT NULL, batch_id bigint, total_length bigint NOT NULL,
    avg_length double precision GENERATED ALWAYS AS (CASE WHEN n > 0 THEN total_length::float8 / n ELSE 0 END) STORED,
    PRIMARY KEY (username, window_start));
-- windows kept by adding each batch's changes need the total length; a database from before (windows recounted
-- from the stored toots) gets it, and both window tables are rebuilt once from its stored toots (all counted)
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'avg_toot_length_by_user'::regclass
                   AND attname = 'total_length' AND NOT attisdropped) THEN
        ALTER TABLE avg_toot_length_by_user DROP COLUMN avg_length, ADD COLUMN total_length bigint NOT NULL DEFAULT 0,
            ADD COLUMN avg_length double precision
                GENERATED ALWAYS AS (CASE WHEN n > 0 THEN total_length::float8 / n ELSE 0 END) STORED;
        TRUNCATE streamed_toot_counts, avg_toot_length_by_user;
        INSERT INTO streamed_toot_counts (window_start, window_end, cnt)
        SELECT {MINUTE_START}, {MINUTE_START} + interval '1 minute', count(*)
        FROM mastodon_posts WHERE counted GROUP BY 1;
        INSERT INTO avg_toot_length_by_user (username, window_start, window_end, n, total_length)
        SELECT username, {USER_WINDOW_START}, {USER_WINDOW_START} + interval '{USER_WINDOW}', count(*),
               sum(coalesce(length(content), 0))
        FROM mastodon_posts WHERE counted GROUP BY 1, 2;
    END IF;
END $$;
DO $$ BEGIN  -- the ledger was called stream_batches before: keep a database's history under the new name
    IF to_regclass('stream_batches') IS NOT NULL AND to_regclass('stream_ledger') IS NULL THEN
        ALTER TABLE stream_batches RENAME TO stream_ledger;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS stream_ledger (
    checkpoint text NOT NULL, batch_id bigint NOT NULL, end_offsets jsonb, input_rows bigint,
    max_event_time timestamptz, committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (checkpoint, batch_id));
-- applied = false: claimed by an overlapped sink, not in PostgreSQL yet (re-read from its start_offsets at start)
ALTER TABLE stream_ledger ADD COLUMN IF NOT EXISTS start_offsets jsonb,
    ADD COLUMN IF NOT EXISTS applied boolean NOT NULL DEFAULT true;
CREATE TABLE IF NOT EXISTS stream_progress (
    checkpoint text NOT NULL, batch_id bigint NOT NULL, query_name text, input_rows bigint,
    posts_written bigint, deletes bigint, errors bigint, late_rows bigint, collect_s double precision,
    write_s double precision, rows_per_s double precision, latency_p50_ms double precision,
    latency_p95_ms double precision, committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (checkpoint, batch_id));
-- columns added after the first release: databases created before get them here
ALTER TABLE stream_progress ADD COLUMN IF NOT EXISTS filtered bigint,
    ADD COLUMN IF NOT EXISTS start_offsets jsonb,
    ADD COLUMN IF NOT EXISTS latest_offsets jsonb, ADD COLUMN IF NOT EXISTS lag bigint,
    ADD COLUMN IF NOT EXISTS trigger_ms double precision, ADD COLUMN IF NOT EXISTS commit_ms double precision,
    ADD COLUMN IF NOT EXISTS durations_ms jsonb;
CREATE TABLE IF NOT EXISTS stream_errors (
    cluster text NOT NULL, topic text NOT NULL, kafka_partition int NOT NULL, kafka_offset bigint NOT NULL,
    raw text, error text NOT NULL, batch_id bigint, at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster, topic, kafka_partition, kafka_offset));
CREATE TABLE IF NOT EXISTS mastodon_sentiments (
    uri text COLLATE "C" PRIMARY KEY, language text, sentiment int, sentiment_name text NOT NULL,
    probability double precision, model_version text NOT NULL, scored_at timestamptz NOT NULL DEFAULT now());
ALTER TABLE mastodon_sentiments ADD COLUMN IF NOT EXISTS text_md5 text;  -- the text scored: an edit rescores
"""
