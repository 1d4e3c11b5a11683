"""PostgreSQL: connections, the schema, COPY-based bulk writes, atomic table replacement, reads.

Guarantees: SQL values are always parameterised; bulk writes go through COPY into a staging table inside the
caller's transaction; :func:`replace_table_with` and :func:`replace_table_as` swap a new table in within one
transaction, so a reader never sees a half-written table and a failed run leaves the previous one intact.
"""
from __future__ import annotations

import io
import time
from contextlib import contextmanager
from typing import Iterator

import psycopg2
from psycopg2 import sql

__all__ = ["connect", "transaction", "KeptConnection", "ensure_schema", "copy_arrow", "binary_copy_available", "replace_table_with", "replace_table_as", "query_df", "scalar",
           "DatabaseUnavailable", "SCHEMA_SQL", "table_counts"]


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached; the message names the address (without credentials)."""


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
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS mastodon_posts_created_at ON mastodon_posts (created_at);
CREATE INDEX IF NOT EXISTS mastodon_posts_user_time ON mastodon_posts (username, created_at);  -- user windows
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
    n bigint NOT NULL, avg_length double precision NOT NULL, batch_id bigint,
    PRIMARY KEY (username, window_start));
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


def connect(url: str, retries: int = 0, wait_s: float = 1.0, application_name: str | None = None):
    """A psycopg2 connection (named `application_name` in pg_stat_activity when given); DatabaseUnavailable
    (naming host and port, never the password) when it fails."""
    last = None
    named = {"application_name": application_name[:63]} if application_name else {}
    for attempt in range(retries + 1):
        try:
            return psycopg2.connect(url, connect_timeout=10, **named)
        except psycopg2.OperationalError as exc:
            last = exc
            if attempt < retries:
                time.sleep(wait_s)
    from urllib.parse import urlsplit
    u = urlsplit(url)
    raise DatabaseUnavailable(f"cannot reach PostgreSQL at {u.hostname}:{u.port}{u.path}: "
                              f"{str(last).strip().splitlines()[0] if last else ''}")


@contextmanager
def transaction(url: str) -> Iterator:
    """A connection inside one transaction: committed on success, rolled back on any exception."""
    conn = connect(url)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


class KeptConnection:
    """One connection reused from call to call (each micro-batch would otherwise pay a new connection and its
    password exchange), opened again when it was closed or broke. For one caller at a time."""

    def __init__(self, url: str, retries: int = 0, wait_s: float = 1.0, application_name: str | None = None) -> None:
        self.url, self.retries, self.wait_s, self.application_name = url, retries, wait_s, application_name
        self._conn = None

    def get(self):
        """The open connection, or a new one (:func:`connect` with this object's settings)."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url, self.retries, self.wait_s, self.application_name)
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                conn.close()
            except psycopg2.Error:
                pass

    @contextmanager
    def transaction(self) -> Iterator:
        """A cursor inside one transaction: committed on success, rolled back on any exception, after which the
        connection is closed (it may be broken; the next call opens another)."""
        conn = self.get()
        try:
            with conn, conn.cursor() as cur:
                yield cur
        except BaseException:
            self.close()
            raise

    def read(self, fn):
        """`fn(cursor)` in a transaction; when a kept connection turns out dead (the server restarted since), once
        again on a new one. For reads, and for transactions safe to repeat (the failed attempt rolled back)."""
        fresh = self._conn is None or bool(self._conn.closed)
        try:
            with self.transaction() as cur:
                return fn(cur)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if fresh:
                raise
        with self.transaction() as cur:
            return fn(cur)


def ensure_schema(url: str) -> None:
    with transaction(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(4242)")  # concurrent first runs do not race on DDL
        cur.execute(SCHEMA_SQL)


def _is_text(kind) -> bool:
    import pyarrow as pa
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_text_list(kind) -> bool:
    import pyarrow as pa
    return pa.types.is_list(kind) and _is_text(kind.value_type)


def _safe_text(col):
    """A text column with invalid UTF-8 replaced and NUL characters removed (the same object when clean)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    try:
        col.validate(full=True)
    except pa.ArrowInvalid:  # not UTF-8: decode each value with replacement characters
        col = pa.chunked_array([pa.array([None if b is None else b.decode("utf-8", "replace")
                                          for b in chunk.cast(pa.binary()).to_pylist()], pa.string())
                                for chunk in col.chunks], pa.string())
    if col.null_count < len(col) and pc.any(pc.match_substring(col, "\x00")).as_py():
        col = pc.replace_substring(col, "\x00", "")
    return col


def _map_list_values(col, fn):
    """A list column with `fn` (Array -> Array of the same length) applied to its values; offsets and nulls kept."""
    import pyarrow as pa
    import pyarrow.compute as pc
    chunks = []
    for chunk in col.chunks:
        start, end = chunk.offsets[0].as_py(), chunk.offsets[-1].as_py()
        values = fn(chunk.values.slice(start, end - start))
        offsets = pc.subtract(chunk.offsets, pa.scalar(start, chunk.offsets.type))
        chunks.append(pa.ListArray.from_arrays(offsets, values, mask=chunk.is_null()))
    return pa.chunked_array(chunks, pa.list_(chunks[0].type.value_type) if chunks else col.type)


def pg_safe(arrow_table):
    """The table with every text column, and every text inside a list column, acceptable to PostgreSQL: invalid
    UTF-8 (bytes from any producer) replaced, NUL characters removed (PostgreSQL text cannot hold them). Columns
    that need nothing are passed through."""
    import pyarrow as pa
    for i, field in enumerate(arrow_table.schema):
        col = arrow_table.column(i)
        if _is_text(field.type):
            col = _safe_text(col)
        elif _is_text_list(field.type):
            col = _map_list_values(col, lambda v: _safe_text(pa.chunked_array([v], v.type)).combine_chunks())
        if col is not arrow_table.column(i):
            arrow_table = arrow_table.set_column(i, field.name, col)
    return arrow_table


def _array_literals(col):
    """A list<string> column as PostgreSQL array literals ('{"a","b \\"c\\""}'), for CSV; a null list stays null,
    a null element is NULL."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def quoted(values):  # each value "..." with \\ and " escaped; a null value the unquoted NULL
        escaped = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
        return pc.coalesce(pc.binary_join_element_wise('"', escaped, '"', ""), pa.scalar("NULL"))
    lists = _map_list_values(col, quoted)
    return pc.binary_join_element_wise("{", pc.binary_join(lists, ","), "}", "")


def binary_copy_available() -> bool:
    """Whether :func:`copy_arrow` can use PostgreSQL's binary COPY (pgpq has wheels for x86-64 Linux, macOS and
    Windows; elsewhere CSV is used)."""
    try:
        import pgpq  # noqa: F401
    except ImportError:
        return False
    return True


def _binary(arrow_table) -> io.BytesIO:
    import pgpq
    encoder = pgpq.ArrowToPostgresBinaryEncoder(arrow_table.schema)
    buf = io.BytesIO()
    buf.write(encoder.write_header())
    for batch in arrow_table.to_batches():
        buf.write(encoder.write_batch(batch))
    buf.write(encoder.finish())
    buf.seek(0)
    return buf


def copy_arrow(cur, table: str, arrow_table, columns: list[str] | None = None, binary: bool = False) -> int:
    """COPY an Arrow table into `table` (CSV: unquoted empty = NULL, quoted empty = ''), text made acceptable to
    PostgreSQL first (:func:`pg_safe`), so one toot with a NUL or bad bytes cannot fail a whole COPY; list<string>
    columns go to text[] columns (as array literals in CSV). With
    `binary` (and pgpq installed) PostgreSQL's binary format instead: 2.3x faster for a batch of toots (measured),
    but every column's type must then be exactly the Arrow type's (text, int4, int8, bool, timestamptz, ...)."""
    import pyarrow.csv as pacsv
    if arrow_table.num_rows == 0:
        return 0
    arrow_table = pg_safe(arrow_table)
    cols = sql.SQL(", ").join(map(sql.Identifier, columns or arrow_table.column_names))
    if binary and binary_copy_available():
        cur.copy_expert(sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary)").format(
            sql.Identifier(table), cols).as_string(cur), _binary(arrow_table))
        return arrow_table.num_rows
    for i, field in enumerate(arrow_table.schema):
        if _is_text_list(field.type):
            arrow_table = arrow_table.set_column(i, field.name, _array_literals(arrow_table.column(i)))
    buf = io.BytesIO()
    pacsv.write_csv(arrow_table, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    buf.seek(0)
    cur.copy_expert(sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        sql.Identifier(table), cols).as_string(cur), buf)
    return arrow_table.num_rows


def _swap_in(cur, new: str, table: str) -> None:
    """Inside the caller's transaction: `new` takes the place of `table` (which may not exist yet)."""
    old = f"{table}__old"
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(old)))
    cur.execute(sql.SQL("ALTER TABLE IF EXISTS {} RENAME TO {}").format(sql.Identifier(table), sql.Identifier(old)))
    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(new), sql.Identifier(table)))
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(old)))


def replace_table_with(url: str, table: str, ddl_columns: str, fill) -> int:
    """Replace `table` atomically with rows written by others (for example Spark tasks): `fill(new_table)` writes
    into the empty `table__new` and returns how many rows it wrote; the count is checked, then `table__new` is
    swapped in, in one transaction. On any failure the previous table stays as it was."""
    new = f"{table}__new"
    with transaction(url) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(new)))
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(new), sql.SQL(ddl_columns)))
    n = fill(new)
    with transaction(url) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(new)))
        found = cur.fetchone()[0]
        if found != n:
            raise RuntimeError(f"{table}: {found} rows staged but the writers reported {n}; previous table kept")
        _swap_in(cur, new, table)
    return n


def replace_table_as(url: str, table: str, select_sql: str) -> int:
    """Replace `table` with the result of a query, atomically (as :func:`replace_table_with`); returns its rows."""
    new = f"{table}__new"
    with transaction(url) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(new)))
        cur.execute(sql.SQL("CREATE TABLE {} AS ").format(sql.Identifier(new)) + sql.SQL(select_sql))
        n = cur.rowcount
        _swap_in(cur, new, table)
    return n


def query_df(url: str, query: str, params: tuple | dict | None = None):
    """A query's result as a pandas DataFrame."""
    import pandas as pd
    with transaction(url) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        cols = [d.name for d in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=cols)


def scalar(url: str, query: str, params: tuple | dict | None = None):
    with transaction(url) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        row = cur.fetchone()
        return row[0] if row else None


def table_counts(url: str, tables: list[str]) -> dict[str, int | None]:
    """Row counts of the tables that exist (None for those that do not)."""
    out: dict[str, int | None] = {}
    with transaction(url) as conn, conn.cursor() as cur:
        for t in tables:
            cur.execute("SELECT to_regclass(quote_ident(%s))", (t,))  # mixed case: active_users_gtX
            if cur.fetchone()[0] is None:
                out[t] = None
            else:
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t)))
                out[t] = cur.fetchone()[0]
    return out
