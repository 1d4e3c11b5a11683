"""Analytics on hand-written rows with hand-computed expected tables."""
from datetime import datetime, timezone

import pytest
from pyspark.testing import assertDataFrameEqual

from tootpipe.batch import analytics

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
    t = analytics(clean_df, active_min=2)
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
