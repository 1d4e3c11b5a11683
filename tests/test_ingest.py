"""Stage 01, ingest: the sample, the published-once record (the live sources: test_live_source.py, the record: test_normalize.py)."""
import pytest
from conftest import wait_until

from tootpipe import kafka, steps
from tootpipe.core.config import FilterParams
from tootpipe.ingest.sample import expected_posts, generate


def test_sample_is_deterministic_and_varied():
    a, b = generate(300, 5), generate(300, 5)
    assert a == b and generate(300, 6) != a
    kinds = {e["event"] for e in generate(2000, 1)}
    assert kinds == {"update", "status.update", "delete"}


def test_expected_posts_rules():
    status = generate(1, 1, edit_rate=0, delete_rate=0, duplicate_rate=0, malformed_rate=0,
                      federated_copy_rate=0)[0]["data"]
    status = {**status, "visibility": "public", "reblog": None, "account": {**status["account"], "discoverable": True}}
    newer = {**status, "edited_at": "2030-01-01T00:00:00.000Z", "content": "<p>edited</p>"}
    ev = [{"event": "update", "instance": "a", "data": status}, {"event": "status.update", "instance": "a", "data": newer},
          {"event": "update", "instance": "a", "data": status}]
    got = expected_posts(ev, FilterParams())
    assert list(got) == [status["uri"]] and got[status["uri"]]["text"] == "edited"
    copy = {**status, "id": "999"}
    ev += [{"event": "update", "instance": "b", "data": copy}, {"event": "delete", "instance": "b", "data": "999"}]
    assert expected_posts(ev, FilterParams()) == {}


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_sample_is_published_once_per_topic_unless_asked_again(fresh):
    params, endpoints = fresh
    params.source.sample_n, params.source.sample_seed = 80, 21
    first = steps.ingest_step(params, endpoints)
    sent_first = sum(first["topic_end_offsets"].values())
    assert not first.get("reused") and first["published"] > 0 and sent_first > 0
    again = steps.ingest_step(params, endpoints)
    assert again["reused"] and again["published"] == first["published"]
    assert again["topic_end_offsets"] == first["topic_end_offsets"]  # nothing sent
    other = params.model_copy(deep=True)
    other.source.sample_seed = 22  # another sample: published
    grown = sum(steps.ingest_step(other, endpoints)["topic_end_offsets"].values())
    assert grown > sent_first
    assert steps.ingest_step(params, endpoints)["reused"]  # the first sample is still in the topic
    params.source.republish = True
    resent = steps.ingest_step(params, endpoints)
    assert not resent.get("reused") and sum(resent["topic_end_offsets"].values()) == grown + sent_first
    # a recreated topic no longer holds it: published again
    params.source.republish = False
    kafka.delete_topics(endpoints.bootstrap_servers, [params.kafka.topic])
    wait_until(lambda: params.kafka.topic not in kafka.admin._metadata(endpoints.bootstrap_servers).topics, 60,
               "the topic to be deleted")
    recreated = steps.ingest_step(params, endpoints)
    assert not recreated.get("reused") and sum(recreated["topic_end_offsets"].values()) == sent_first
