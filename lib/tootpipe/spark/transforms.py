"""Pure Spark transforms shared by the streaming and batch jobs: DataFrame in, DataFrame out.

`parse_kafka` turns Kafka rows (the columns of Spark's Kafka source) into flat toot rows with an `error` column
(null for a usable row); `apply_filters` applies the same filters as the producer; `POST_COLUMNS` is the
column list of `mastodon_posts`.

The column expressions are built once per SparkContext and reused: building the ~40 parsed columns through
py4j took ~0.3 s, which every live micro-batch paid before its data was even read.
"""
from __future__ import annotations

import functools

from pyspark.sql import Column, DataFrame, functions as F

from tootpipe.core.config import FilterParams
from tootpipe.core.filters import keep_column
from tootpipe.core.schema import ACCOUNT_FIELDS, EPOCH_PATTERN, EVENTS, FIELDS, LIMITS, TIME_FORMATS, spark_ddl

__all__ = ["parse_kafka", "parse_time_col", "apply_filters", "pg_array", "POST_COLUMNS", "to_post_rows"]

POST_COLUMNS = [
    "uri", "id", "instance", "username", "acct", "account_id", "display_name", "bot", "followers_count", "content",
    "content_html", "language", "visibility", "created_at", "edited_at", "hashtags", "mentions", "urls",
    "media_count", "is_reblog", "reblog_uri", "is_reply", "in_reply_to_id", "replies_count", "reblogs_count",
    "favourites_count", "sensitive", "spoiler_text", "ingested_at", "kafka_partition", "kafka_offset",
    "kafka_timestamp",
]


def parse_time_col(c: Column) -> Column:
    """A timestamp column from the formats of :data:`tootpipe.core.schema.TIME_FORMATS` (the Python parser's list) and
    epoch seconds or milliseconds. Unreadable -> null (never an exception under ANSI mode)."""
    s = F.trim(c.cast("string"))
    epoch = F.when(s.rlike(f"^{EPOCH_PATTERN}$"),
                   F.timestamp_seconds(F.when(F.length(F.split(s, r"\.")[0]) > 11, s.cast("double") / 1000)
                                       .otherwise(s.cast("double"))))
    # the formats first (no format reads a string of digits), the epoch's regular expression last
    return F.coalesce(*[F.try_to_timestamp(F.regexp_replace(s, strip, "") if strip else s, F.lit(pattern))
                        for _, pattern, strip in TIME_FORMATS], epoch)


def _per_context(build):
    """Memoise a function that builds Column expressions, per SparkContext (Columns are JVM objects of one
    context) and per (hashable) arguments."""
    cache: dict = {}

    @functools.wraps(build)
    def cached(*args):
        from pyspark import SparkContext  # lazy: pyspark
        sc = SparkContext._active_spark_context
        if cache.get("context") is not sc:
            cache.clear()
            cache["context"] = sc
        if args not in cache:
            cache[args] = build(*args)
        return cache[args]
    return cached


# what the `error` column reads: always parsed
_ERROR_FIELDS = frozenset({"event", "uri", "id", "instance", "account", "created_at"})


def parse_kafka(df: DataFrame, fields: frozenset[str] | None = None) -> DataFrame:
    """Kafka rows -> one flat row per message: record fields, parsed timestamps, Kafka coordinates, `raw`, and
    `error` (null when the row is usable; otherwise why not). `fields`: parse only these top-level record fields
    (and those `error` reads); the columns of the others are null. For a caller that keeps few columns: the
    JSON parser then skips the rest (`content_html`, the largest, among them) instead of building their values.
    `error` is the same either way (a field of the wrong type becomes null without nulling the others)."""
    decode, columns, error = _parse_columns(None if fields is None else frozenset(fields) | _ERROR_FIELDS)
    flat = df.select(*decode).select(*columns)
    return flat.select(*[c for c in flat.columns if c != "created_at_raw"], error)


@_per_context
def _parse_columns(parsed: frozenset[str] | None) -> tuple[list[Column], list, Column]:
    r = F.from_json(F.col("value").cast("string"), spark_ddl(parsed), {"mode": "PERMISSIVE"})

    def rec(path: str) -> Column:
        """A field of the parsed record, or a null of its type when it is not parsed."""
        top, _, sub = path.partition(".")
        if parsed is None or top in parsed:
            return F.col(f"r.{path}")
        return F.lit(None).cast(ACCOUNT_FIELDS[sub][0] if sub else FIELDS[top][0])

    decode = [
        F.col("topic"), F.col("partition").alias("kafka_partition"), F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"), F.col("value").cast("string").alias("raw"), r.alias("r")]
    acct = rec("account.acct")
    handle = F.when(acct.contains("@"), acct).otherwise(F.concat_ws("@", acct, rec("instance")))
    fields = [
        "topic", "kafka_partition", "kafka_offset", "kafka_timestamp", "raw",
        rec("event").alias("event"), F.trim(rec("uri")).alias("uri"), F.trim(rec("id")).alias("id"),
        F.lower(F.trim(rec("instance"))).alias("instance"), handle.alias("username"), acct.alias("acct"),
        rec("account.id").alias("account_id"), rec("account.display_name").alias("display_name"),
        rec("account.bot").alias("bot"), rec("account.followers_count").alias("followers_count"),
        F.trim(rec("text")).alias("content"), rec("content_html").alias("content_html"),
        F.lower(rec("language")).alias("language"), rec("visibility").alias("visibility"),
        parse_time_col(rec("created_at")).alias("created_at"),
        parse_time_col(rec("edited_at")).alias("edited_at"),
        rec("created_at").alias("created_at_raw"),
        rec("hashtags").alias("hashtags"), rec("mentions").alias("mentions"), rec("urls").alias("urls"),
        rec("media_count").alias("media_count"), rec("is_reblog").alias("is_reblog"),
        rec("reblog_uri").alias("reblog_uri"), rec("is_reply").alias("is_reply"),
        rec("in_reply_to_id").alias("in_reply_to_id"), rec("replies_count").alias("replies_count"),
        rec("reblogs_count").alias("reblogs_count"), rec("favourites_count").alias("favourites_count"),
        rec("sensitive").alias("sensitive"), rec("spoiler_text").alias("spoiler_text"),
        parse_time_col(rec("ingested_at")).alias("ingested_at"),
    ]
    is_status = F.col("event").isin("update", "status.update")
    # the (instance, id) -> uri map and the deletes need both, not empty (as the producer's rule: a status without
    # them stalled the stream's batch, a delete with an empty one named no toot)
    no_key = _blank("id") | _blank("instance")
    error = (F.when(F.col("event").isNull(), F.lit("not a toot record (malformed JSON or wrong shape)"))
             .when(~F.col("event").isin(*EVENTS), F.concat(F.lit("unknown event: "), F.col("event")))
             .when((F.col("event") == "delete") & no_key, F.lit("delete without id or instance"))
             .when(is_status & _blank("uri"), F.lit("status without uri"))
             .when(is_status & no_key, F.lit("status without id or instance"))
             .when(_longer("uri", LIMITS["uri"]), F.lit(f"uri longer than {LIMITS['uri']} characters"))
             .when(_longer("id", LIMITS["id"]), F.lit(f"id longer than {LIMITS['id']} characters"))
             .when(_longer("instance", LIMITS["instance"]),
                   F.lit(f"instance longer than {LIMITS['instance']} characters"))
             .when(_longer("username", LIMITS["acct"] + LIMITS["instance"] + 1),
                   F.lit(f"username longer than {LIMITS['acct']} characters"))
             .when(is_status & F.col("acct").isNull(), F.lit("status without account"))
             .when(is_status & F.col("created_at").isNull(),
                   F.concat(F.lit("unreadable created_at: "), F.coalesce(F.col("created_at_raw"), F.lit("null")))))
    return decode, fields, error.alias("error")


def _blank(name: str) -> Column:
    """The (trimmed) column is null or empty."""
    return F.coalesce(F.col(name), F.lit("")) == ""


def _longer(name: str, limit: int) -> Column:
    """More than `limit` characters. The byte length is known without reading the string and bounds the character
    count from above, so only a string of more than `limit` bytes is counted (counting every one was 3% of the
    backfill's JVM time)."""
    return (F.octet_length(name) > limit) & (F.length(name) > limit)


def apply_filters(df: DataFrame, filters) -> DataFrame:
    """Keep deletes and the toots that pass `filters` (the rules of :mod:`tootpipe.core.filters`)."""
    return df.where(_filter_condition(filters.model_dump_json()))


@_per_context
def _filter_condition(filters_json: str) -> Column:
    return keep_column(FilterParams.model_validate_json(filters_json))


def pg_array(c: Column) -> Column:
    """An array<string> column as a PostgreSQL array literal (for COPY)."""
    quoted = F.transform(c, lambda x: F.concat(F.lit('"'), F.replace(F.replace(  # literal, not regex, replaces
        x, F.lit("\\"), F.lit("\\\\")), F.lit('"'), F.lit('\\"')), F.lit('"')))
    return F.when(c.isNull(), F.lit(None)).otherwise(F.concat(F.lit("{"), F.array_join(quoted, ","), F.lit("}")))


def to_post_rows(df: DataFrame, filters=None) -> DataFrame:
    """Parsed rows -> the columns of `mastodon_posts` plus `event`, `error` and `raw` (the message, for error rows
    only: the others would carry every toot twice); with
    `filters`, every row is kept and a boolean column `kept` says whether it passes them (as :func:`apply_filters`)."""
    cols = _post_row_columns()
    if filters is not None:
        cols = [*cols, _filter_condition(filters.model_dump_json()).alias("kept")]
    return df.select(*cols)


@_per_context
def _post_row_columns() -> list[Column]:
    # the arrays stay arrays (the sink COPYs them to text[]): as literals (pg_array: transform, a higher-order
    # function Spark cannot compile) they took the projection out of whole-stage code generation, and every task of
    # every micro-batch then generated its projection's code anew (a third of the executor's time in a live run)
    cols = [F.col(c) for c in POST_COLUMNS]
    raw_of_errors = F.when(F.col("error").isNotNull(), F.col("raw")).alias("raw")  # only stream_errors keeps it
    return [F.col("event"), F.col("error"), raw_of_errors, F.col("topic"), *cols]
