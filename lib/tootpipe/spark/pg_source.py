"""PostgreSQL for Spark without a JDBC jar: a Spark 4 Python Data Source named ``pgquery`` (batch reads).

The rows of a query are read in parallel slices of an integer column (like Spark's JDBC ``partitionColumn``,
``lowerBound``, ``upperBound``, ``numPartitions``), each slice by one task with ``COPY (...) TO STDOUT`` in CSV
and parsed by Arrow, so nothing passes through the driver. Columns may be strings, integers, doubles, booleans
and timestamps (read in UTC); select arrays as text (for example ``array_to_string(tags, ' ')``).

    spark.read.format("pgquery").option("url", url).option("query", "SELECT ... FROM toots_raw")
        .option("partitionColumn", "kafka_offset").option("lowerBound", 0).option("upperBound", 10**6)
        .option("numPartitions", 4).schema("uri string, created_at timestamp, ...").load()

Guarantees: each slice is one consistent snapshot of its rows; slices never overlap and together cover every
row (the first is open below, the last open above, NULLs go to the first).
"""
from __future__ import annotations

import io
from typing import Iterator

import psycopg2
from psycopg2 import sql
from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition

__all__ = ["PgQueryDataSource", "slice_bounds", "register"]


def slice_bounds(lower: int, upper: int, n: int) -> list[tuple[int | None, int | None]]:
    """`n` half-open slices [a, b) covering all integers, with the interior split evenly over [lower, upper]."""
    n = max(1, n)
    if upper <= lower or n == 1:
        return [(None, None)]
    step = (upper - lower) / n
    cuts = sorted({int(lower + step * i) for i in range(1, n)})
    edges: list[int | None] = [None, *cuts, None]
    return list(zip(edges[:-1], edges[1:]))


class _Slice(InputPartition):
    def __init__(self, lo, hi):
        super().__init__((lo, hi))
        self.lo, self.hi = lo, hi


def _arrow_type(spark_type):
    import pyarrow as pa  # lazy: pyarrow
    from pyspark.sql import types as T  # lazy: pyspark
    return {T.StringType: pa.string(), T.IntegerType: pa.int32(), T.LongType: pa.int64(),
            T.DoubleType: pa.float64(), T.FloatType: pa.float32(), T.BooleanType: pa.bool_(),
            T.TimestampType: pa.timestamp("us", tz="UTC"), T.ShortType: pa.int16()}[type(spark_type)]


class _Reader(DataSourceReader):
    def __init__(self, options: dict, schema):
        self.url = options["url"]
        self.query = options["query"]
        self.column = options.get("partitionColumn")
        self.bounds = slice_bounds(int(options.get("lowerBound", 0)), int(options.get("upperBound", 0)),
                                   int(options.get("numPartitions", 1))) if self.column else [(None, None)]
        self.schema = schema

    def partitions(self):
        return [_Slice(lo, hi) for lo, hi in self.bounds]

    def read(self, partition: _Slice) -> Iterator:

        import pyarrow.csv as pacsv  # lazy: pyarrow

        names = [f.name for f in self.schema.fields]
        types = {f.name: _arrow_type(f.dataType) for f in self.schema.fields}
        where = []
        col = sql.Identifier(self.column) if self.column else None
        if partition.lo is not None:
            where.append(sql.SQL("{} >= {}").format(col, sql.Literal(partition.lo)))
        if partition.hi is not None:
            cond = sql.SQL("{} < {}").format(col, sql.Literal(partition.hi))
            if partition.lo is None:
                cond = sql.SQL("({} OR {} IS NULL)").format(cond, col)
            where.append(cond)
        q = sql.SQL("SELECT * FROM ({}) AS q").format(sql.SQL(self.query))
        if where:
            q = sql.SQL("{} WHERE {}").format(q, sql.SQL(" AND ").join(where))
        buf = io.BytesIO()
        conn = psycopg2.connect(self.url, connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'; SET DateStyle = 'ISO'")
                cur.copy_expert(sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(q).as_string(cur), buf)
        finally:
            conn.close()
        if buf.tell() == 0:
            return
        buf.seek(0)
        table = pacsv.read_csv(buf, read_options=pacsv.ReadOptions(column_names=names, block_size=8 << 20),
                               parse_options=pacsv.ParseOptions(newlines_in_values=True),
                               convert_options=pacsv.ConvertOptions(
                                   column_types=types, true_values=["t"], false_values=["f"], null_values=[""],
                                   strings_can_be_null=True, quoted_strings_can_be_null=False))
        yield from table.to_batches(max_chunksize=10000)


class PgQueryDataSource(DataSource):
    @classmethod
    def name(cls) -> str:
        return "pgquery"

    def schema(self):
        raise ValueError("pgquery needs an explicit schema: .schema('col type, ...')")

    def reader(self, schema):
        return _Reader(self.options, schema)


def register(spark) -> None:
    spark.dataSource.register(PgQueryDataSource)
