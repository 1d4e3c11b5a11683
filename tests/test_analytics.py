"""Analytics on hand-written rows with hand-computed expected tables."""
from datetime import datetime, timezone

import pytest
from pyspark.testing import assertDataFrameEqual

from tootpipe.batch.analytics import analytics
from tootpipe.core.config import AnalyticsParams

pytestmark = pytest.mark.integration


def ts(s):
    return datetime.fromisoformat(s).replace(tzinfo=timezone.utc)


@pytest.fixture
def clean_df(spark):
    rows = [  # uri, username, created_at, hashtags, content_length
        ("u1", "ann", ts("2026-11-26 23:59:59"), ["b", "a"], 10),
        ("u2", "ann", ts("2026-11-27 00:00:00"), ["a"], 20),   # crosses midnight UTC
        ("u3", "bob", ts("2026-11-27 00:30:00"), ["b"], 30),
        ("u4", "ann", ts("2026-11-27 01:00:00"), [], 30),
        ("u5", "cy", ts("2026-11-26 23:00:00"), ["a", "b"], 5),
    ]
    return spark.createDataFrame(rows, "uri string, username string, created_at timestamp, hashtags array<string>, "
                                       "content_length int")


def test_tables(spark, clean_df):
    t = analytics(clean_df, AnalyticsParams(active_min=2))
    assertDataFrameEqual(t["daily_toot_counts"], spark.createDataFrame(
        [(datetime(2026, 11, 26).date(), 2), (datetime(2026, 11, 27).date(), 3)], "day date, cnt long"))
    assertDataFrameEqual(t["user_activity_counts"], spark.createDataFrame(
        [("ann", 3), ("bob", 1), ("cy", 1)], "username string, cnt long"))
    # ACTIVE_MIN boundary: more than 2 toots
    assertDataFrameEqual(t["active_users_gtX"], spark.createDataFrame([("ann", 3)], "username string, cnt long"))
    # 26th: a=2, b=2 -> tie broken alphabetically; 27th: a=1, b=1 -> a
    assertDataFrameEqual(t["top_hashtag_per_day"], spark.createDataFrame(
        [(datetime(2026, 11, 26).date(), "a", 2), (datetime(2026, 11, 27).date(), "a", 1)],
        "day date, hashtag string, cnt long"))
    hourly = {r["hour"].hour: r["cnt"] for r in t["hourly_toot_counts"].collect()}
    assert hourly == {23: 2, 0: 2, 1: 1}
    avg = {r["username"]: (r["n"], r["avg_length"]) for r in t["avg_toot_length_by_user_batch"].collect()}
    assert avg["ann"] == (3, pytest.approx((10 + 20 + 30) / 3))


RAW = ("cluster string, topic string, kafka_partition int, kafka_offset long, kafka_timestamp timestamp, event string, "
       "uri string, id string, instance string, username string, content string, language string, visibility string, "
       "created_at timestamp, edited_at timestamp, hashtags array<string>, is_reblog boolean, is_reply boolean, "
       "error string")


def raw_row(offset, event, uri, id_, instance="a", user="ann", content="x", created="2026-11-26 10:00:00",
            edited=None, reblog=False, error=None, language="en"):
    return ("c", "t", 0, offset, ts("2026-11-26 12:00:00"), event, uri, id_, instance, user, content, language,
            "public", ts(created) if created else None, ts(edited) if edited else None, [], reblog, False, error)


def test_timestamp_formats_are_coalesced_to_utc(spark):
    from tootpipe.spark.transforms import parse_time_col
    cases = [("2026-11-26T23:59:59.123Z", "2026-11-26 23:59:59.123"), ("2026-11-26T23:59:59+01:00", "2026-11-26 22:59:59"),
             ("2026-11-26 23:59:59", "2026-11-26 23:59:59"), ("1795737599", "2026-11-26 23:59:59"),
             ("1795737599000", "2026-11-26 23:59:59"), (" 2026-11-27T00:00:01Z ", "2026-11-27 00:00:01"),
             ("the day after", None), ("", None), (None, None)]
    df = spark.createDataFrame([(i, c) for i, (c, _) in enumerate(cases)], "i int, s string")
    got = [r.t for r in df.select("i", parse_time_col(df.s).alias("t")).orderBy("i").collect()]
    assert [t.isoformat(sep=" ") if t else None for t in got] == \
        [(datetime.fromisoformat(e).isoformat(sep=" ") if e else None) for _, e in cases]


def test_clean_dedups_keeps_the_latest_edit_applies_deletes_and_rejects_with_reasons(spark):
    from tootpipe.batch.backfill import clean
    from tootpipe.core.config import FilterParams
    rows = [
        raw_row(0, "update", "u1", "1", user=" ann ", content="  hello "),
        raw_row(5, "status.update", "u1", "1", content=" hello edited ", edited="2026-11-26 10:05:00"),
        raw_row(7, "update", "u1", "1", content="hello"),                        # re-delivered original
        raw_row(8, "update", "u2", "2", created=None),                           # unreadable created_at
        raw_row(9, None, None, None, error="not a toot record: missing uri"),   # malformed
        raw_row(10, "update", "u3", "33"),
        raw_row(11, "delete", None, "33", instance="a"),                         # deletes u3
        raw_row(12, "update", "u4", "44", instance="b"),                         # federated copy ...
        raw_row(13, "update", "u4", "45", instance="a"),
        raw_row(14, "delete", None, "44", instance="b"),                         # ... deleted at its origin
        raw_row(15, "update", "u5", "5", reblog=True),                           # filtered: reblog
        raw_row(16, "update", "u6", "6", user="cy", language=" EN ", created="2026-11-26 23:59:59"),
    ]
    cleaned, rejects = clean(spark.createDataFrame(rows, RAW), FilterParams())
    got = {r.uri: r for r in cleaned.collect()}
    assert set(got) == {"u1", "u6"}
    assert got["u1"].content == "hello edited" and got["u1"].username == "ann" and got["u1"].content_length == 12
    assert got["u6"].language == "en"
    assertDataFrameEqual(rejects.select("kafka_offset", "reason"), spark.createDataFrame(
        [(8, "no readable created_at"), (9, "not a toot record: missing uri")], "kafka_offset long, reason string"))


def test_timestamp_parity_python_and_spark_read_every_format_to_the_same_instant(spark):
    """Both parsers take their formats from schema.TIME_FORMATS: one string per format (and epochs) through both."""
    from tootpipe.core.schema import TIME_FORMATS
    from tootpipe.ingest.normalize import parse_time
    from tootpipe.spark.transforms import parse_time_col
    instant = datetime(2026, 11, 26, 23, 59, 58, 123000, tzinfo=timezone.utc)
    samples = [instant.strftime(f).replace("+0000", "+00:00") if "%z" in f and "%a" not in f else instant.strftime(f)
               for f, _, _ in TIME_FORMATS]
    samples += ["1795737598", "1795737598123", "2026-11-26T23:59:58.123Z", "2026-11-27T00:59:58.123+01:00"]
    df = spark.createDataFrame(list(enumerate(samples)), "i int, s string")
    got = [r.t for r in df.select("i", parse_time_col(df.s).alias("t")).orderBy("i").collect()]
    for s, spark_t in zip(samples, got):
        python_t = parse_time(s)
        assert spark_t is not None, s
        assert spark_t.replace(tzinfo=timezone.utc) == python_t, (s, spark_t, python_t)
