"""Stages 03-04, batch: backfill ranges, idempotent backfill, clean and analytics reuse (the tables: test_analytics.py)."""
import pytest
from conftest import produce_raw, publish

from tootpipe import kafka, steps
from tootpipe.batch import backfill as batch
from tootpipe.ingest.sample import expected_posts, generate
from tootpipe.postgres import db


def test_explicit_backfill_ranges():
    import pytest

    from tootpipe.batch.backfill import explicit_ranges
    latest = {0: 10, 1: 20, 2: 0}
    assert explicit_ranges({0: 4}, None, latest) == {0: (4, 10)}
    assert explicit_ranges(None, {1: 5}, latest) == {1: (0, 5)}
    assert explicit_ranges({0: 2, 1: 3}, {0: 6}, latest) == {0: (2, 6), 1: (3, 20)}
    with pytest.raises(ValueError, match="partitions \\[7\\] do not exist"):
        explicit_ranges({7: 0}, None, latest)
    with pytest.raises(ValueError, match="beyond the end"):
        explicit_ranges(None, {0: 11}, latest)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_backfill_is_idempotent_and_clean_agrees_with_the_stream(fresh, spark):
    params, endpoints = fresh
    publish(params, endpoints, n=250, seed=5)
    first = batch.backfill(spark, params, endpoints)
    assert first["inserted"] == first["rows"] > 0
    assert batch.backfill(spark, params, endpoints)["rows"] == 0
    # an explicit range over rows already loaded (a crash before the ledger was written) adds nothing twice
    ends = kafka.end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
    overlap = batch.backfill(spark, params, endpoints, ranges={0: (0, ends[0])})
    assert overlap["rows"] == ends[0] > 0 and overlap["inserted"] == 0
    cleaned, rejects = batch.clean(batch.load_raw(spark, endpoints.database_url), params.filters)
    assert {r.uri for r in cleaned.select("uri").collect()} == set(expected_posts(generate(250, 5), params.filters))


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_backfill_loads_only_new_offsets_of_the_partitions_that_grew(fresh, spark):
    params, endpoints = fresh
    publish(params, endpoints, n=60, seed=8)
    first = batch.backfill(spark, params, endpoints)
    produce_raw(endpoints.bootstrap_servers, params.kafka.topic,
                [b'{"event": "delete", "id": "%d", "instance": "x"}' % i for i in range(5)], partition=1)
    second = batch.backfill(spark, params, endpoints)
    assert list(second["ranges"]) == ["1"] and second["rows"] == second["inserted"] == 5
    total = db.scalar(endpoints.database_url, "SELECT count(*) FROM toots_raw")
    assert total == first["rows"] + 5


def test_the_first_unloaded_offset_is_the_first_hole_whatever_the_order_of_the_ranges():
    assert batch.first_unloaded([]) == 0
    assert batch.first_unloaded([(0, 10), (10, 25)]) == 25
    assert batch.first_unloaded([(5, 10)]) == 0  # an explicit --from 5 left 0..4
    assert batch.first_unloaded([(10, 20), (0, 12), (30, 40)]) == 20  # overlapping, unordered; 20..29 is a hole
    assert batch.first_unloaded([(0, 50), (0, 20), (20, 30)]) == 50


@pytest.mark.integration
def test_an_explicit_range_leaves_no_hole_that_the_default_backfill_never_fills(fresh, spark):
    """`batch backfill --from 0=5 --to 0=9`, then the default backfill: every offset of the topic is in toots_raw
    once (the hole below the explicit range too), and a further default run finds nothing to load."""
    params, endpoints = fresh
    ends = publish(params, endpoints, n=60, seed=8)["topic_end_offsets"]
    explicit = batch.backfill(spark, params, endpoints, batch.explicit_ranges({0: 5}, {0: 9}, ends))
    assert explicit["inserted"] == 4
    default = batch.backfill(spark, params, endpoints)
    assert default["ranges"]["0"] == [0, ends[0]] and default["inserted"] == sum(ends.values()) - 4
    assert db.scalar(endpoints.database_url, "SELECT count(*) FROM toots_raw") == sum(ends.values())
    assert batch.backfill(spark, params, endpoints)["ranges"] == {}


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_clean_and_analytics_are_reused_only_while_nothing_they_read_changed(fresh, spark):
    params, endpoints = fresh
    url = endpoints.database_url
    publish(params, endpoints, n=120, seed=6)
    batch.backfill(spark, params, endpoints)
    first = steps.clean_step(params, endpoints)
    assert not first.get("reused") and first["toots_clean"] > 0
    again = steps.clean_step(params, endpoints)
    assert again["reused"] and again["toots_clean"] == first["toots_clean"]
    tables = steps.analytics_step(params, endpoints)
    assert not tables.get("reused") and steps.analytics_step(params, endpoints)["reused"]
    # new raw rows: both run again, and the analytics see the new clean run
    produce_raw(endpoints.bootstrap_servers, params.kafka.topic,
                [b'{"event": "delete", "id": "%d", "instance": "x"}' % i for i in range(3)])
    batch.backfill(spark, params, endpoints)
    assert not steps.clean_step(params, endpoints).get("reused")
    assert not steps.analytics_step(params, endpoints).get("reused")
    # other filters, or an output table changed behind the step's back: run again
    stricter = params.model_copy(deep=True)
    stricter.filters.languages = ["en"]
    narrower = steps.clean_step(stricter, endpoints)
    assert not narrower.get("reused") and narrower["toots_clean"] < first["toots_clean"]
    assert db.scalar(url, "WITH d AS (DELETE FROM toots_clean WHERE uri = (SELECT min(uri) FROM toots_clean) "
                          "RETURNING 1) SELECT count(*) FROM d") == 1
    repaired = steps.clean_step(stricter, endpoints)
    assert not repaired.get("reused") and repaired["toots_clean"] == narrower["toots_clean"]
    assert steps.clean_step(stricter, endpoints, force=False)["reused"]
    assert not steps.clean_step(stricter, endpoints, force=True).get("reused")
