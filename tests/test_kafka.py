"""Kafka: offsets, range reads, export, an unreachable broker."""
import pytest
from conftest import publish

from tootpipe import kafka


def test_a_topic_the_broker_does_not_know_is_an_error_after_a_short_grace_not_after_the_whole_timeout(monkeypatch):
    """A sensor tick, a check or a report on a topic nothing has written yet: KafkaUnavailable after the grace a
    topic created a moment ago by another client may need; one that shows up within it is found; one that exists
    without partitions yet is asked until the timeout."""
    import types

    from confluent_kafka import KafkaError

    from tootpipe.kafka import admin
    clock = [0.0]
    monkeypatch.setattr(admin.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(admin.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))

    def broker(answers):
        calls = []

        def metadata(_bootstrap, _timeout, topic):
            calls.append(clock[0])
            meta = answers(clock[0])
            return types.SimpleNamespace(topics={} if meta is None else {topic: meta})
        monkeypatch.setattr(admin, "_metadata", metadata)
        return calls
    unknown = types.SimpleNamespace(error=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), partitions={})
    calls = broker(lambda now: unknown)
    with pytest.raises(kafka.KafkaUnavailable, match="does it exist"):
        admin.partitions_for("b:9092", "t", timeout=300)
    assert admin.UNKNOWN_TOPIC_GRACE_S <= calls[-1] <= admin.UNKNOWN_TOPIC_GRACE_S + 0.5, calls[-1]
    clock[0] = 0.0
    broker(lambda now: None if now < 1.0 else types.SimpleNamespace(error=None, partitions={0: 0, 1: 1}))
    assert admin.partitions_for("b:9092", "t", timeout=300) == [0, 1]
    clock[0] = 0.0
    calls = broker(lambda now: types.SimpleNamespace(error=None, partitions={}))  # there, no partitions yet
    with pytest.raises(kafka.KafkaUnavailable):
        admin.partitions_for("b:9092", "t", timeout=30)
    assert calls[-1] >= 30


def test_offsets_of_a_partition_without_a_leader_for_a_moment_are_asked_again_other_errors_raise(monkeypatch):
    """A topic just created or a broker restarting answers "not leader" for a moment (seen under load): asked
    again until the timeout; any other broker error is a clear KafkaUnavailable at once."""
    from confluent_kafka import KafkaError, KafkaException

    from tootpipe import kafka
    from tootpipe.kafka import admin

    class Consumer:
        def __init__(self, errors):
            self.errors, self.asked = list(errors), 0

        def get_watermark_offsets(self, tp, timeout):
            self.asked += 1
            if self.errors:
                raise KafkaException(KafkaError(self.errors.pop(0)))
            return 0, 10 + tp.partition

        def close(self):
            pass

    flaky = Consumer([KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE])
    monkeypatch.setattr(admin, "range_consumer", lambda _b: flaky)
    assert kafka.end_offsets("b:9092", "t", [0, 1], timeout=30) == {0: 10, 1: 11} and flaky.asked == 4
    broken = Consumer([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    monkeypatch.setattr(admin, "range_consumer", lambda _b: broken)
    with pytest.raises(kafka.KafkaUnavailable, match="TOPIC_AUTHORIZATION_FAILED"):
        kafka.end_offsets("b:9092", "t", [0], timeout=30)
    assert broken.asked == 1
    leaderless = Consumer([KafkaError.NOT_LEADER_FOR_PARTITION] * 1000)
    monkeypatch.setattr(admin, "range_consumer", lambda _b: leaderless)
    with pytest.raises(kafka.KafkaUnavailable, match="NOT_LEADER"):
        kafka.end_offsets("b:9092", "t", [0], timeout=0.5)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_read_range_raises_rather_than_return_a_short_range(fresh):
    params, endpoints = fresh
    kafka.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic], 3)
    with pytest.raises(kafka.KafkaUnavailable, match="refusing to return a short range"):
        list(kafka.read_range(endpoints.bootstrap_servers, params.kafka.topic, 0, 0, 5, timeout=1.0))


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_unreachable_broker_is_a_clear_error():
    with pytest.raises(kafka.KafkaUnavailable, match="no Kafka broker answers at 127.0.0.1:9"):
        kafka.Publisher("127.0.0.1:9", "t", "d")


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_export_newest_or_from_the_beginning(fresh):
    params, endpoints = fresh
    publish(params, endpoints, n=40, seed=2)
    ends = kafka.end_offsets(endpoints.bootstrap_servers, params.kafka.topic)
    oldest = list(kafka.export(endpoints.bootstrap_servers, params.kafka.topic, 4, from_beginning=True))
    assert [(m["partition"], m["offset"]) for m in oldest] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    newest = list(kafka.export(endpoints.bootstrap_servers, params.kafka.topic, 4, from_beginning=False))
    assert len(newest) == 4 and all(m["offset"] >= ends[m["partition"]] - 4 for m in newest)
    assert all(isinstance(m["value"], dict) and m["value"]["uri"] or m["value"]["event"] == "delete" for m in newest)
    assert len(list(kafka.export(endpoints.bootstrap_servers, params.kafka.topic, None, True))) == sum(ends.values())
