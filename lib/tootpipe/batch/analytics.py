"""Analytics tables from `toots_clean`, each declared once in :data:`TABLES`, and the stream/batch
reconciliation.

Adding an analytics table = one function decorated with ``@table("its_name")`` (clean toots and the parameters
in, a DataFrame out): the analytics step writes it (replaced atomically), the run's table counts, the pipeline
contract (:mod:`tootpipe.pipeline`) and the README's table list name it.
"""
from __future__ import annotations

from typing import Callable

from pyspark.sql import DataFrame, SparkSession, Window, functions as F

from tootpipe.postgres.db import replace_table_as
from tootpipe.spark.postgres import read_query, split_tags

__all__ = ["TABLES", "table", "analytics", "load_clean", "reconcile", "RECONCILIATION"]

TABLES: dict[str, Callable] = {}  # table name -> builder(clean toots, params.analytics) -> DataFrame
RECONCILIATION = "stream_batch_reconciliation"


def table(name: str):
    """Register an analytics table builder under its table name."""
    def register(build):
        TABLES[name] = build
        return build
    return register


@table("hourly_toot_counts")
def _hourly(c: DataFrame, p) -> DataFrame:
    return c.groupBy(F.date_trunc("hour", "created_at").alias("hour")).agg(F.count("*").alias("cnt")).orderBy("hour")


@table("daily_toot_counts")
def _daily(c: DataFrame, p) -> DataFrame:
    return c.groupBy(F.to_date("created_at").alias("day")).agg(F.count("*").alias("cnt")).orderBy("day")


def _per_user(c: DataFrame) -> DataFrame:
    return c.groupBy("username").agg(F.count("*").alias("cnt"))


@table("user_activity_counts")
def _users(c: DataFrame, p) -> DataFrame:
    return _per_user(c).orderBy(F.col("cnt").desc(), "username")


@table("active_users_gtX")
def _active(c: DataFrame, p) -> DataFrame:
    """Users with more than `analytics.active_min` toots."""
    return _per_user(c).where(F.col("cnt") > p.active_min).orderBy(F.col("cnt").desc(), "username")


def _tags(c: DataFrame) -> DataFrame:
    return (c.select(F.to_date("created_at").alias("day"), F.explode("hashtags").alias("hashtag"))
            .groupBy("day", "hashtag").agg(F.count("*").alias("cnt")))


@table("hashtags_per_day_counts")
def _tags_per_day(c: DataFrame, p) -> DataFrame:
    return _tags(c).orderBy("day", F.col("cnt").desc(), "hashtag")


@table("top_hashtag_per_day")
def _top_tag(c: DataFrame, p) -> DataFrame:
    w = Window.partitionBy("day").orderBy(F.col("cnt").desc(), F.col("hashtag").asc())
    return _tags(c).withColumn("rn", F.row_number().over(w)).where("rn = 1").drop("rn").orderBy("day")


@table("avg_toot_length_by_user_batch")
def _avg_length(c: DataFrame, p) -> DataFrame:
    return (c.groupBy("username").agg(F.count("*").alias("n"), F.avg("content_length").alias("avg_length"))
            .orderBy("username"))


def analytics(clean_df: DataFrame, params) -> dict[str, DataFrame]:
    """Every registered table from clean toots (timestamps in UTC); `params` is the `analytics` section."""
    c = clean_df.select("uri", "username", "created_at", "hashtags", "content_length")
    return {name: build(c, params) for name, build in TABLES.items()}


def load_clean(spark: SparkSession, url: str, partitions: int = 4) -> DataFrame:
    """The columns of `toots_clean` the analytics need, read in parallel slices of a hash of `uri`."""
    df = read_query(spark, url, "SELECT uri, username, created_at, array_to_string(hashtags, ' ') AS hashtags, "
                                "content_length, hashtext(uri) AS h FROM toots_clean",
                    "uri string, username string, created_at timestamp, hashtags string, content_length int, h int",
                    "h", partitions)
    return df.withColumn("hashtags", split_tags("hashtags")).drop("h")


def reconcile(url: str) -> int:
    """`stream_batch_reconciliation`: per hour, the stream's one-minute counts summed vs the batch count."""
    return replace_table_as(url, RECONCILIATION, """
        WITH s AS (SELECT date_trunc('hour', window_start) AS hour, sum(cnt)::bigint AS stream_cnt
                   FROM streamed_toot_counts GROUP BY 1),
             b AS (SELECT hour, cnt::bigint AS batch_cnt FROM hourly_toot_counts)
        SELECT coalesce(s.hour, b.hour) AS hour, coalesce(stream_cnt, 0) AS stream_cnt,
               coalesce(batch_cnt, 0) AS batch_cnt, coalesce(stream_cnt, 0) - coalesce(batch_cnt, 0) AS diff
        FROM s FULL OUTER JOIN b ON s.hour = b.hour ORDER BY 1""")
