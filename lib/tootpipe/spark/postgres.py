"""Spark <-> PostgreSQL without the driver in the way: Spark tasks COPY their rows in, tasks read query slices out.

Guarantees: :func:`copy_from_tasks` writes each task's rows in one transaction (with `unique`, rows already in the
table are skipped, so a retried task adds nothing twice); :func:`write_table` replaces a table atomically (staging
table + swap, counted before the swap); :func:`read_query` reads every row of a query exactly once, in slices.
"""
from __future__ import annotations

import psycopg2.errors
from pyspark.sql import DataFrame, SparkSession, functions as F

from tootpipe.postgres.db import connect, copy_arrow, query_df, replace_table_with
from tootpipe.spark.transforms import pg_array

__all__ = ["copy_from_tasks", "read_query", "write_table", "split_tags"]


def copy_from_tasks(df: DataFrame, url: str, table: str, unique: bool = False,
                    binary: bool = False) -> tuple[int, int]:
    """Write a DataFrame into PostgreSQL from the Spark tasks themselves (nothing passes through the driver);
    each task writes its rows in one transaction with COPY. With `unique`, rows whose key is already in `table`
    are skipped: each Arrow batch is COPYed straight in, and only a batch that hits a duplicate key is loaded again
    through a staging table with ON CONFLICT DO NOTHING (so a re-run or a retried task adds nothing twice at the
    price of one extra pass over that batch). `binary`: PostgreSQL's binary COPY (see
    :func:`tootpipe.postgres.db.copy_arrow`: every column's type must then match). Returns (rows, rows inserted)."""
    columns = df.columns

    def write(batches):
        import pyarrow as pa  # lazy: pyarrow
        rows = inserted = 0
        conn = connect(url, retries=3)
        cols = ", ".join(f'"{c}"' for c in columns)
        try:
            with conn, conn.cursor() as cur:
                if unique:
                    cur.execute(f'CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT {cols} FROM "{table}" WITH NO DATA')
                for batch in batches:
                    arrow = pa.Table.from_batches([batch])
                    rows += arrow.num_rows
                    if not unique:
                        inserted += copy_arrow(cur, table, arrow, columns, binary)
                        continue
                    cur.execute("SAVEPOINT batch")
                    try:
                        inserted += copy_arrow(cur, table, arrow, columns, binary)
                        cur.execute("RELEASE SAVEPOINT batch")
                    except psycopg2.errors.UniqueViolation:
                        cur.execute("ROLLBACK TO SAVEPOINT batch")
                        copy_arrow(cur, "stage", arrow, columns, binary)
                        cur.execute(f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM stage ON CONFLICT DO NOTHING')
                        inserted += cur.rowcount
                        cur.execute("TRUNCATE stage")
        finally:
            conn.close()
        yield pa.RecordBatch.from_pydict({"rows": [rows], "inserted": [inserted]})

    out = df.mapInArrow(write, "rows long, inserted long").agg(F.sum("rows"), F.sum("inserted")).collect()[0]
    return int(out[0] or 0), int(out[1] or 0)


def read_query(spark: SparkSession, url: str, query: str, schema: str, column: str | None = None,
               partitions: int = 4) -> DataFrame:
    """A query's rows as a DataFrame, read by the tasks in `partitions` slices of the integer `column`."""
    reader = spark.read.format("pgquery").option("url", url).option("query", query).schema(schema)
    if column:
        bounds = query_df(url, f"SELECT min({column}), max({column}) FROM ({query}) q").iloc[0]
        if bounds.iloc[0] is not None:
            reader = (reader.option("partitionColumn", column).option("lowerBound", int(bounds.iloc[0]))
                      .option("upperBound", int(bounds.iloc[1]) + 1).option("numPartitions", partitions))
    return reader.load()


_PG_TYPES = {"string": "text", "int": "integer", "bigint": "bigint", "double": "double precision",
             "boolean": "boolean", "date": "date", "timestamp": "timestamptz", "smallint": "smallint",
             "float": "real"}


def write_table(url: str, table: str, df: DataFrame) -> int:
    """Replace `table` with a DataFrame's rows, atomically (staging table + swap); the Spark tasks write the rows
    themselves. Array columns become text[]."""
    cols = []
    for f in df.schema.fields:
        kind = f.dataType.simpleString()
        if kind.startswith("array"):
            df = df.withColumn(f.name, pg_array(F.col(f.name)))
            cols.append(f'"{f.name}" text[]')
        else:
            cols.append(f'"{f.name}" {_PG_TYPES.get(kind, "text")}')
    return replace_table_with(url, table, ", ".join(cols), lambda new: copy_from_tasks(df, url, new)[0])


def split_tags(col: str):
    """A text column of space-joined hashtags (as read from PostgreSQL) back to an array: 'a b' -> [a, b];
    '' -> []; NULL stays NULL (hashtags never contain spaces)."""
    from pyspark.sql import functions as F  # lazy: pyspark
    return F.when(F.col(col) == "", F.array().cast("array<string>")).otherwise(F.split(F.col(col), " "))
