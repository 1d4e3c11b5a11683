"""Every table, index and advisory lock id of the pipeline, in one place (no DDL lives anywhere else), and the
binning of `created_at` into the stream's windows, which the sink's deltas and the checks' recount share.

:data:`SCHEMA_SQL` is the stream's and the sentiment's tables (:func:`tootpipe.postgres.db.ensure_schema` runs it,
idempotent, at every start), :data:`BATCH_SCHEMA_SQL` the backfill's, :data:`STEP_RUNS_SQL` the reuse record. This
is 0.1.0: no migrations of older databases (`make clean` starts afresh).
"""
from __future__ import annotations

__all__ = ["SCHEMA_SQL", "BATCH_SCHEMA_SQL", "STEP_RUNS_SQL", "SCHEMA_LOCK", "BATCH_SCHEMA_LOCK", "USER_WINDOW",
           "MINUTE_START", "USER_WINDOW_START"]

# advisory lock ids: concurrent first runs do not race on the DDL
SCHEMA_LOCK = 4242
BATCH_SCHEMA_LOCK = 4243

USER_WINDOW = "1 hour"  # the width of avg_toot_length_by_user's windows
# the window a toot (its `created_at`) falls in, per minute and per user window: the sink's deltas and the checks'
# recount both bin with these
MINUTE_START = "date_trunc('minute', created_at)"
USER_WINDOW_START = f"date_bin('{USER_WINDOW}', created_at, TIMESTAMPTZ '2000-01-01')"

# Identifiers (uri, id, instance, username) are compared byte by byte (COLLATE "C"): their indexes, sorts and
# joins skip the locale's comparison routine (-11% of the stream sink's PostgreSQL time on a C.UTF-8 server, more
# under a language locale). Every column joined with another carries the same collation.
SCHEMA_SQL = """
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
    written_at timestamptz NOT NULL DEFAULT now(),
    -- the toot is in the stream's windows (it arrived within the watermark; its edits keep its place)
    counted boolean NOT NULL DEFAULT true
);
CREATE INDEX IF NOT EXISTS mastodon_posts_created_at ON mastodon_posts (created_at);
CREATE TABLE IF NOT EXISTS toot_ids (
    instance text COLLATE "C" NOT NULL, id text COLLATE "C" NOT NULL, uri text COLLATE "C" NOT NULL,
    PRIMARY KEY (instance, id));
CREATE TABLE IF NOT EXISTS toot_deletes (
    instance text COLLATE "C" NOT NULL, id text COLLATE "C" NOT NULL, deleted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance, id));
-- every uri some deleted (instance, id) maps to: a batch looks its own uris up here instead of joining the whole
-- history of toot_ids and toot_deletes
CREATE TABLE IF NOT EXISTS deleted_uris (
    uri text COLLATE "C" PRIMARY KEY, deleted_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS streamed_toot_counts (
    window_start timestamptz PRIMARY KEY, window_end timestamptz NOT NULL, cnt bigint NOT NULL,
    batch_id bigint, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS avg_toot_length_by_user (
    username text COLLATE "C" NOT NULL, window_start timestamptz NOT NULL, window_end timestamptz NOT NULL,
    n bigint NOT NULL, batch_id bigint, total_length bigint NOT NULL,
    avg_length double precision GENERATED ALWAYS AS (CASE WHEN n > 0 THEN total_length::float8 / n ELSE 0 END) STORED,
    PRIMARY KEY (username, window_start));
CREATE TABLE IF NOT EXISTS stream_ledger (
    checkpoint text NOT NULL, batch_id bigint NOT NULL, end_offsets jsonb, input_rows bigint,
    max_event_time timestamptz, committed_at timestamptz NOT NULL DEFAULT now(),
    -- applied = false: claimed by an overlapped sink, not in PostgreSQL yet (re-read from start_offsets at start)
    start_offsets jsonb, applied boolean NOT NULL DEFAULT true,
    PRIMARY KEY (checkpoint, batch_id));
CREATE TABLE IF NOT EXISTS stream_progress (
    checkpoint text NOT NULL, batch_id bigint NOT NULL, query_name text, input_rows bigint,
    posts_written bigint, deletes bigint, errors bigint, late_rows bigint, collect_s double precision,
    write_s double precision, rows_per_s double precision, latency_p50_ms double precision,
    latency_p95_ms double precision, committed_at timestamptz NOT NULL DEFAULT now(),
    filtered bigint, start_offsets jsonb, latest_offsets jsonb, lag bigint, trigger_ms double precision,
    commit_ms double precision, durations_ms jsonb,
    PRIMARY KEY (checkpoint, batch_id));
CREATE TABLE IF NOT EXISTS stream_errors (
    cluster text NOT NULL, topic text NOT NULL, kafka_partition int NOT NULL, kafka_offset bigint NOT NULL,
    raw text, error text NOT NULL, batch_id bigint, at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster, topic, kafka_partition, kafka_offset));
CREATE TABLE IF NOT EXISTS mastodon_sentiments (
    uri text COLLATE "C" PRIMARY KEY, language text, sentiment int, sentiment_name text NOT NULL,
    probability double precision, model_version text NOT NULL, scored_at timestamptz NOT NULL DEFAULT now(),
    text_md5 text);  -- the text scored: an edit rescores
"""

BATCH_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS toots_raw (
    cluster text NOT NULL, topic text NOT NULL, kafka_partition int NOT NULL, kafka_offset bigint NOT NULL,
    kafka_timestamp timestamptz, event text, uri text, id text, instance text, username text, content text,
    language text, visibility text, created_at timestamptz, edited_at timestamptz, hashtags text[],
    is_reblog boolean, is_reply boolean, error text, raw text, loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster, topic, kafka_partition, kafka_offset));
CREATE TABLE IF NOT EXISTS backfill_ranges (
    cluster text NOT NULL, topic text NOT NULL, kafka_partition int NOT NULL, start_offset bigint NOT NULL,
    end_offset bigint NOT NULL, rows_loaded bigint, loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster, topic, kafka_partition, start_offset));
"""

STEP_RUNS_SQL = """CREATE TABLE IF NOT EXISTS step_runs (step text PRIMARY KEY, fingerprint text NOT NULL,
    result jsonb NOT NULL, finished_at timestamptz NOT NULL DEFAULT now())"""
