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
from urllib.parse import urlsplit

import psycopg2
from psycopg2 import sql

from tootpipe.core.errors import DatabaseUnavailable
from tootpipe.postgres.schema import SCHEMA_LOCK, SCHEMA_SQL

__all__ = ["connect", "transaction", "KeptConnection", "ensure_schema", "copy_arrow", "binary_copy_available", "replace_table_with", "replace_table_as", "query_df", "scalar",
           "DatabaseUnavailable", "SCHEMA_SQL", "table_counts"]


def connect(url: str, retries: int = 0, wait_s: float = 1.0, application_name: str | None = None,
            settings: dict[str, str] | None = None):
    """A psycopg2 connection (named `application_name` in pg_stat_activity when given; with the server `settings`
    of its session); DatabaseUnavailable (naming host and port, never the password) when it fails."""
    last = None
    named = {"application_name": application_name[:63]} if application_name else {}
    if settings:
        named["options"] = " ".join(f"-c {k}={v}" for k, v in settings.items())
    for attempt in range(retries + 1):
        try:
            return psycopg2.connect(url, connect_timeout=10, **named)
        except psycopg2.OperationalError as exc:
            last = exc
            if attempt < retries:
                time.sleep(wait_s)
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

    def __init__(self, url: str, retries: int = 0, wait_s: float = 1.0, application_name: str | None = None,
                 settings: dict[str, str] | None = None) -> None:
        self.url, self.retries, self.wait_s, self.application_name = url, retries, wait_s, application_name
        self.settings = settings
        self._conn = None

    def get(self):
        """The open connection, or a new one (:func:`connect` with this object's settings)."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url, self.retries, self.wait_s, self.application_name, self.settings)
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
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))  # first runs do not race on DDL
        cur.execute(SCHEMA_SQL)


def _is_text(kind) -> bool:
    import pyarrow as pa  # lazy: pyarrow
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_text_list(kind) -> bool:
    import pyarrow as pa  # lazy: pyarrow
    return pa.types.is_list(kind) and _is_text(kind.value_type)


def _safe_text(col):
    """A text column with invalid UTF-8 replaced and NUL characters removed (the same object when clean)."""
    import pyarrow as pa  # lazy: pyarrow
    import pyarrow.compute as pc  # lazy: pyarrow
    try:
        col.validate(full=True)
    except pa.ArrowInvalid:  # not UTF-8: decode each value with replacement characters
        col = pa.chunked_array([pa.array([None if b is None else b.decode("utf-8", "replace")
                                          for b in chunk.cast(pa.binary()).to_pylist()], pa.string())
                                for chunk in col.chunks], pa.string())
    if _may_hold_nul(col) and pc.any(pc.match_substring(col, "\x00")).as_py():
        col = pc.replace_substring(col, "\x00", "")
    return col


def _may_hold_nul(col) -> bool:
    """Whether a text column may hold a NUL character: a scan of the bytes of its data buffers, ~40x faster than
    the substring search it spares (which ran over every text column of every micro-batch); it errs only towards
    yes (bytes outside the column's slice), never misses one."""
    import numpy as np  # lazy: numpy
    for chunk in col.chunks:
        data = chunk.buffers()[2]
        if data is not None and data.size and not np.frombuffer(data, dtype=np.uint8).all():
            return True
    return False


def _map_list_values(col, fn):
    """A list column with `fn` (Array -> Array of the same length) applied to its values; offsets and nulls kept."""
    import pyarrow as pa  # lazy: pyarrow
    import pyarrow.compute as pc  # lazy: pyarrow
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
    import pyarrow as pa  # lazy: pyarrow
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
    import pyarrow as pa  # lazy: pyarrow
    import pyarrow.compute as pc  # lazy: pyarrow

    def quoted(values):  # each value "..." with \\ and " escaped; a null value the unquoted NULL
        escaped = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
        return pc.coalesce(pc.binary_join_element_wise('"', escaped, '"', ""), pa.scalar("NULL"))
    lists = _map_list_values(col, quoted)
    return pc.binary_join_element_wise("{", pc.binary_join(lists, ","), "}", "")


def binary_copy_available() -> bool:
    """Whether :func:`copy_arrow` can use PostgreSQL's binary COPY (pgpq has wheels for x86-64 Linux, macOS and
    Windows; elsewhere CSV is used)."""
    try:
        import pgpq  # noqa: F401  # lazy: pgpq
    except ImportError:
        return False
    return True


def _binary(arrow_table) -> io.BytesIO:
    import pgpq  # lazy: pgpq
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
    import pyarrow.csv as pacsv  # lazy: pyarrow
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
    import pandas as pd  # lazy: pandas
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
