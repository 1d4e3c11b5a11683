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


def test_the_resume_point_of_an_instance_is_below_every_record_still_in_flight(tmp_path):
    """Acknowledged ids count only once nothing older of their instance is in flight (gap-fill sends older ids
    after newer ones); a send that never reached the queue is forgotten; the figures survive a restart (file)."""
    from tootpipe.ingest.resume import AckedThrough, load_acked_through
    t = AckedThrough(tmp_path / "acked.json")
    for sid in ("105", "103", "109"):
        t.sent("a.example", sid)
    t.sent("b.example", "7")
    t.acked("a.example", "109")
    assert t.through() == {"a.example": "102", "b.example": "6"}, \
        "109 is acknowledged, but 103 and 105 are still in flight: just below the lowest id sent"
    t.acked("a.example", "103")
    assert t.through() == {"a.example": "103", "b.example": "6"}
    t.acked("b.example", "7")
    t.sent("a.example", "104")
    t.failed("a.example", "104")  # refused before it was queued (too large: a dead letter instead)
    t.acked("a.example", "105")
    assert t.through() == {"a.example": "109", "b.example": "7"}
    t.sent("a.example", "110")
    t.save()
    assert load_acked_through(tmp_path / "acked.json") == {"a.example": "109", "b.example": "7"}
    assert AckedThrough(tmp_path / "acked.json").through() == {}  # a new run starts from what it acknowledges
    assert load_acked_through(tmp_path / "missing.json") == {}


def test_an_instance_has_a_resume_point_from_its_first_send_and_a_resumed_run_from_its_start(tmp_path):
    """Without a saved resume point a restart falls back to the newest id in the topic, which skips a record lost
    in flight in another partition: a kill -9 in ingest's first seconds, or before anything of a resumed run was
    acknowledged below a gap it is filling, must already find the file (found by tests/test_chaos.py: 498 lost)."""
    from tootpipe.ingest.resume import AckedThrough, load_acked_through
    t = AckedThrough(tmp_path / "acked.json", every_s=3600)
    t.sent("a.example", "100")
    assert load_acked_through(tmp_path / "acked.json") == {"a.example": "99"}  # at once, before any ack
    t.sent("a.example", "98")  # an older one after it: lower, saved again
    assert load_acked_through(tmp_path / "acked.json") == {"a.example": "97"}
    t.acked("a.example", "100")
    t.acked("a.example", "98")
    assert t.through() == {"a.example": "100"}
    AckedThrough(tmp_path / "resumed.json", start={"a.example": "50"})
    assert load_acked_through(tmp_path / "resumed.json") == {"a.example": "50"}


def test_a_gap_being_filled_holds_the_resume_point_below_it_until_it_is_released():
    """While the statuses after 105 are still being fetched over REST, newer ones acknowledged from the stream
    must not move the resume point past 105: a restart then would skip what the fill had not fetched yet."""
    from tootpipe.ingest.resume import AckedThrough
    t = AckedThrough()
    for sid in ("104", "105"):
        t.sent("a.example", sid)
        t.acked("a.example", sid)
    t.hold("a.example", "105")
    t.sent("a.example", "120")
    t.acked("a.example", "120")
    assert t.through() == {"a.example": "104"}
    t.release("a.example", "105")
    assert t.through() == {"a.example": "120"}


def test_an_acknowledged_id_of_another_kind_never_moves_the_resume_point():
    """A hostile instance's status with an opaque id ("zzz" sorts after every snowflake) must not become the point
    a restart gap-fills from: every later status would lie below it and never be fetched."""
    from tootpipe.ingest.resume import AckedThrough
    t = AckedThrough()
    for sid in ("100", "zzz", "101"):
        t.sent("a.example", sid)
        t.acked("a.example", sid)
    assert t.through() == {"a.example": "101"}


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_live_ingest_resumes_below_what_was_in_flight_and_a_refused_send_stops_it_at_once(fresh, tmp_path):
    """The producer's acknowledgements decide where a restart resumes (not the newest id in the topic), and a send
    the broker refuses for good stops the next one instead of being counted and forgotten."""
    from tootpipe.core.errors import KafkaUnavailable
    from tootpipe.ingest.resume import AckedThrough, resume_points
    from tootpipe.kafka import Publisher, ensure_topics
    params, endpoints = fresh
    ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic, params.kafka.dlq_topic], 3, 1)
    tracker = AckedThrough(tmp_path / "acked.json")
    pub = Publisher(endpoints.bootstrap_servers, params.kafka.topic, params.kafka.dlq_topic, tracker=tracker)
    for sid in ("5", "3", "9"):
        pub.send_record({"event": "update", "uri": f"https://h.example/s/{sid}", "id": sid, "instance": "h.example"})
    pub.close()
    assert tracker.through() == {"h.example": "9"}
    assert resume_points(endpoints.bootstrap_servers, params.kafka.topic, ["h.example"], tmp_path / "acked.json") \
        == {"h.example": "9"}
    (tmp_path / "acked.json").write_text('{"h.example": "3"}')  # a run that died with 5 and 9 in flight
    assert resume_points(endpoints.bootstrap_servers, params.kafka.topic, ["h.example"],
                         tmp_path / "acked.json") == {"h.example": "3"}, "resumed above a record that was lost"
    assert resume_points(endpoints.bootstrap_servers, params.kafka.topic, ["h.example"],
                         tmp_path / "none.json") == {"h.example": "9"}  # no record: the topic's newest id
    bad = Publisher(endpoints.bootstrap_servers, "no_such_topic_" + params.kafka.topic, params.kafka.dlq_topic,
            tracker=AckedThrough(), **{"topic.metadata.propagation.max.ms": 200})
    bad.send_record({"event": "update", "uri": "https://h.example/s/11", "id": "11", "instance": "h.example"})
    wait_until(lambda: bad._producer.poll(0.2) or bad._errors, 120, "the broker to refuse the send")
    with pytest.raises(KafkaUnavailable, match="stopped at once"):
        bad.send_record({"event": "update", "uri": "https://h.example/s/12", "id": "12", "instance": "h.example"})
    assert bad.tracker.through() == {"h.example": "10"}  # below the refused 11: a restart fetches it again
