"""Offline tests of pure helpers: the sample generator, offset splitting, metrics, the VADER shortcut."""
import pytest

from conftest import ROOT
from tootpipe.config import FilterParams
from tootpipe.sample import expected_posts, generate
from tootpipe.sentiment_eval import metrics_from_predictions


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


def test_metrics_hand_computed():
    # true negative x2 (one right), neutral x1 (right), positive x1 (predicted neutral)
    m = metrics_from_predictions([(0, 0), (0, 1), (1, 1), (2, 1)])
    assert m["accuracy"] == 0.5
    assert m["per_class"]["negative"]["recall"] == 0.5 and m["per_class"]["positive"]["recall"] == 0.0
    assert m["macro_recall"] == round((0.5 + 1 + 0) / 3, 4)
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_slice_bounds_cover_every_integer_once():
    from tootpipe.pg_source import slice_bounds
    b = slice_bounds(0, 100, 4)
    assert b[0][0] is None and b[-1][1] is None and len(b) == 4
    assert all(hi == lo for (_, hi), (lo, _) in zip(b, b[1:]))  # contiguous, no overlap
    assert slice_bounds(5, 5, 4) == [(None, None)]
    assert slice_bounds(0, 3, 10) == [(None, 0), (0, 1), (1, 2), (2, None)]  # more slices than values: no empties


def test_explicit_backfill_ranges():
    import pytest
    from tootpipe.batch import explicit_ranges
    latest = {0: 10, 1: 20, 2: 0}
    assert explicit_ranges({0: 4}, None, latest) == {0: (4, 10)}
    assert explicit_ranges(None, {1: 5}, latest) == {1: (0, 5)}
    assert explicit_ranges({0: 2, 1: 3}, {0: 6}, latest) == {0: (2, 6), 1: (3, 20)}
    with pytest.raises(ValueError, match="partitions \\[7\\] do not exist"):
        explicit_ranges({7: 0}, None, latest)
    with pytest.raises(ValueError, match="beyond the end"):
        explicit_ranges(None, {0: 11}, latest)


def test_a_checkpoint_is_bound_to_one_cluster_and_topic(tmp_path):
    from tootpipe.stream_query import CheckpointMismatch, bind_checkpoint
    ck = tmp_path / "q"
    bind_checkpoint(ck, "cluster-a", "toots")
    bind_checkpoint(ck, "cluster-a", "toots")  # the same again: fine
    with pytest.raises(CheckpointMismatch, match="cluster 'cluster-b', topic 'toots'"):
        bind_checkpoint(ck, "cluster-b", "toots")
    with pytest.raises(CheckpointMismatch, match="topic 'other'"):
        bind_checkpoint(ck, "cluster-a", "other")
    legacy = tmp_path / "old"
    (legacy / "offsets").mkdir(parents=True)
    (legacy / "offsets" / "0").write_text("v1")
    with pytest.raises(CheckpointMismatch, match="no record of the cluster"):
        bind_checkpoint(legacy, "cluster-a", "toots")


def test_column_expressions_are_rebuilt_for_a_new_spark_context(monkeypatch):
    from pyspark import SparkContext
    from tootpipe.transforms import _per_context
    built = []

    @_per_context
    def columns(x):
        built.append(x)
        return object()

    monkeypatch.setattr(SparkContext, "_active_spark_context", object(), raising=False)
    first = columns(1)
    assert columns(1) is first and columns(2) is not first and built == [1, 2]
    monkeypatch.setattr(SparkContext, "_active_spark_context", object(), raising=False)
    assert columns(1) is not first and built == [1, 2, 1]


def test_progress_offsets_and_lag_from_sparks_kafka_source():
    from tootpipe.progress import lag, source_offsets
    sparks = '{"t": {"0": 40, "1": 7}}'
    assert source_offsets(sparks) == source_offsets({"t": {"0": 40, "1": 7}}) == {"0": 40, "1": 7}
    assert source_offsets(None) == source_offsets("") == source_offsets("not json") == {}
    assert lag({"0": 50, "1": 7, "2": 3}, {"0": 40, "1": 7}) == 13   # a partition the batch did not touch counts
    assert lag({"0": 40}, {"0": 45}) == 0 and lag({}, {"0": 1}) is None


def test_vader_shortcut_scores_exactly_as_vadersentiment():
    import csv
    import gzip
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    from tootpipe.vader import Vader
    data = ROOT / "data" / "sentiment"
    with gzip.open(data / "semeval_2013_2016_train.tsv.gz", "rt", encoding="utf-8", newline="") as fh:
        texts = [r["text"] for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)][:6000]
    texts += (data / "xlmt" / "german" / "val_text.txt").read_text(encoding="utf-8").splitlines()[:500]
    texts += ["", "   ", "kind of good", "not kind of bad", "Good 😀", "😀😀 no", "bad but great", "☺", "\tHi! :)  "]
    reference, fast = SentimentIntensityAnalyzer(), Vader()
    emoji_free = sum(1 for t in texts if fast._emoji_chars.isdisjoint(t))
    assert 0 < emoji_free < len(texts)  # both paths are exercised
    assert [fast.polarity_scores(t) for t in texts] == [reference.polarity_scores(t) for t in texts]


def test_generated_kafka_cluster_ids_are_valid_and_never_read_as_an_option():
    import base64
    from tootpipe.kafka_broker import _new_cluster_id
    ids = [_new_cluster_id() for _ in range(3000)]  # ~1 in 64 raw ids starts with "-": ~47 expected here
    assert all(len(i) == 22 and not i.startswith("-") for i in ids) and len(set(ids)) == len(ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)


def test_lexicon_scores_are_finite_for_any_text_and_negation_moves_a_word_into_its_scope():
    import math
    from tootpipe.lexicons import LEXICON_KEYS, TEXTBLOB_KEYS, lexicon_scores, textblob_scores
    texts = ["", None, "😂🎉", "word " * 30000, "I do NOT love this!!", "I love this", "Sooooo good :)", "\x00"]
    rows = lexicon_scores(texts)
    assert len(rows) == len(texts) and all(len(r) == len(LEXICON_KEYS) for r in rows)
    assert all(math.isfinite(x) for r in rows for x in r)
    negated, plain = (dict(zip(LEXICON_KEYS, r)) for r in rows[4:6])
    assert plain["afinn_pos"] > 0 and plain["afinn_pos_negated"] == 0
    assert negated["afinn_pos"] == 0 and negated["afinn_pos_negated"] == plain["afinn_pos"]
    assert negated["caps_words"] > 0 and negated["exclaims"] > 0 and dict(zip(LEXICON_KEYS, rows[2]))["emoji_count"] > 0
    assert [len(r) for r in textblob_scores(["good", ""])] == [len(TEXTBLOB_KEYS)] * 2


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_data():
    from tootpipe.sentiment_eval import bootstrap_interval
    small = [(i % 3, i % 3 if i % 4 else (i + 1) % 3) for i in range(90)]
    large = small * 20
    m = metrics_from_predictions(small)
    lo, hi = m["macro_recall_ci"]
    assert lo <= m["macro_recall"] <= hi and hi - lo > 0.05
    lo2, hi2 = bootstrap_interval(large)
    assert hi2 - lo2 < (hi - lo) / 2 and bootstrap_interval(large) == [lo2, hi2]  # seeded: reproducible


def test_text_key_is_the_models_view_of_a_tweet():
    from tootpipe.sentiment_data import text_key, without_overlap
    assert text_key("I don't LIKE it  @bob https://x.y/z #Sad") == text_key("i do not like it @al http://a #sad")
    assert text_key("good") != text_key("not good")
    rows = [("Great game!", "positive", 2.0, 1), ("meh", "neutral", 1.0, 2)]
    assert without_overlap(rows, [("great   GAME !", "positive", 2.0, 9)]) == [rows[1]]


def test_the_jvm_class_archive_is_keyed_by_java_and_pyspark_and_used_only_when_present(monkeypatch, tmp_path):
    from tootpipe import jvm_archive
    real = jvm_archive.archive_path()
    monkeypatch.setattr(jvm_archive, "java_release", lambda: ("/usr/bin/java", 'openjdk version "17.0.99"'))
    other_java = jvm_archive.archive_path()
    monkeypatch.setattr("importlib.metadata.version", lambda name: "9.9.9")
    other_spark = jvm_archive.archive_path()
    assert len({real, other_java, other_spark}) == 3 and real.parent == other_java.parent
    archive = tmp_path / "spark-driver-x.jsa"
    monkeypatch.setattr(jvm_archive, "archive_path", lambda: archive)
    assert jvm_archive.java_options() == ""
    archive.write_bytes(b"\0")
    assert f"-XX:SharedArchiveFile={archive}" in jvm_archive.java_options().split()


def test_a_failed_class_archive_build_says_so_and_does_not_stop_the_install(monkeypatch, tmp_path, capsys):
    from tootpipe import jvm_archive

    def broken(force=False):
        raise RuntimeError("no JVM today")
    monkeypatch.setattr(jvm_archive, "project_root", lambda: tmp_path)
    monkeypatch.setattr(jvm_archive, "build", broken)
    assert jvm_archive.main([]) == 0
    assert "not written" in capsys.readouterr().out
    assert "no JVM today" in (tmp_path / ".tootpipe" / "logs" / "jvm-archive.log").read_text()


def test_offsets_of_a_partition_without_a_leader_for_a_moment_are_asked_again_other_errors_raise(monkeypatch):
    """A topic just created or a broker restarting answers "not leader" for a moment (seen under load): asked
    again until the timeout; any other broker error is a clear KafkaUnavailable at once."""
    from confluent_kafka import KafkaError, KafkaException
    from tootpipe import kafka_io

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
    monkeypatch.setattr(kafka_io, "range_consumer", lambda _b: flaky)
    assert kafka_io.end_offsets("b:9092", "t", [0, 1], timeout=30) == {0: 10, 1: 11} and flaky.asked == 4
    broken = Consumer([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    monkeypatch.setattr(kafka_io, "range_consumer", lambda _b: broken)
    with pytest.raises(kafka_io.KafkaUnavailable, match="TOPIC_AUTHORIZATION_FAILED"):
        kafka_io.end_offsets("b:9092", "t", [0], timeout=30)
    assert broken.asked == 1
    leaderless = Consumer([KafkaError.NOT_LEADER_FOR_PARTITION] * 1000)
    monkeypatch.setattr(kafka_io, "range_consumer", lambda _b: leaderless)
    with pytest.raises(kafka_io.KafkaUnavailable, match="NOT_LEADER"):
        kafka_io.end_offsets("b:9092", "t", [0], timeout=0.5)


def test_the_newest_version_of_each_uri_is_marked_as_distinct_on_with_the_sinks_order_would_pick():
    from datetime import datetime, timezone

    import pyarrow as pa

    from tootpipe.stream_batch import newest_versions

    t = [datetime(2026, 11, 26, h, tzinfo=timezone.utc) for h in range(4)]
    rows = [  # uri, event, created_at, edited_at, partition, offset, newest?
        ("a", "update", t[0], None, 0, 1, False), ("a", "status.update", t[0], t[2], 2, 9, True),  # the edit
        ("a", "update", t[1], None, 1, 5, False),
        ("b", "update", t[1], None, 1, 3, False), ("b", "update", t[1], None, 0, 2, True),  # tie: lowest partition
        ("c", "update", t[3], None, 0, 4, False), ("c", "update", t[3], None, 0, 8, True),  # then highest offset
        (None, "delete", None, None, 0, 5, False), ("d", "delete", t[3], None, 0, 6, False),  # deletes: never
        ("d", "update", t[0], None, 1, 7, True), ("e", None, t[0], None, 1, 8, False)]  # no event: as SQL's <>
    cols = list(zip(*rows))
    part = pa.table({"uri": cols[0], "event": cols[1],
                     "created_at": pa.array(cols[2], pa.timestamp("us", tz="UTC")),
                     "edited_at": pa.array(cols[3], pa.timestamp("us", tz="UTC")),
                     "kafka_partition": pa.array(cols[4], pa.int32()), "kafka_offset": pa.array(cols[5], pa.int64())})
    assert newest_versions(part).to_pylist() == list(cols[6])
    assert newest_versions(part.slice(0, 0)).to_pylist() == []


def test_a_batch_is_summarised_for_the_ledger_and_split_for_postgresql_in_arrow():
    from datetime import datetime, timezone

    import pyarrow as pa

    from tootpipe.stream_batch import errors_part, latencies_ms, posts_part, summarise
    from tootpipe.transforms import POST_COLUMNS

    t = [datetime(2026, 11, 26, h, tzinfo=timezone.utc) for h in range(6)]
    cols = {c: [None] * 6 for c in POST_COLUMNS}
    cols.update(kafka_partition=[0, 0, 1, 1, 1, 2], kafka_offset=[7, 9, 3, 4, 5, 0], created_at=t,
                uri=["a", "b", None, "c", "d", "e"], kafka_timestamp=[t[5]] * 5 + [None],
                hashtags=pa.array([["x", None, "y"], [], None, None, None, [None]], pa.list_(pa.string())),
                mentions=pa.array([["m"], [], None, None, None, None], pa.list_(pa.string())))
    extra = {"event": ["update", "update", None, "delete", "update", "update"],
             "error": [None, None, "not a toot record", None, None, None],
             "raw": [None, None, "{oops", None, None, None], "topic": ["toots"] * 6,
             "kept": [True, False, None, True, None, True]}  # None: the filters could not say
    rows = pa.table({**extra, **cols})
    s = summarise(rows)
    assert (s.starts, s.ends) == ({"0": 7, "1": 3, "2": 0}, {"0": 10, "1": 6, "2": 1})
    assert (s.rows, s.errors, s.filtered) == (6, 1, 1)
    assert s.max_event_time == t[5]  # the newest kept toot; the delete (t[3]) and the dropped (t[1], t[4]) aside
    posts = posts_part(rows)
    assert posts.column_names == ["event", "newest", *POST_COLUMNS] and posts["uri"].to_pylist() == ["a", "c", "e"]
    assert posts["newest"].to_pylist() == [True, False, True]  # the delete ("c") is no version of a toot
    # the arrays go to text[] without their null items (what the stream always stored)
    assert posts["hashtags"].to_pylist() == [["x", "y"], None, []] and posts["mentions"].to_pylist() == [["m"], None, None]
    assert errors_part(rows).to_pylist() == [{"topic": "toots", "kafka_partition": 1, "kafka_offset": 3,
                                              "raw": "{oops", "error": "not a toot record"}]
    now = t[5].timestamp() + 1.5
    assert latencies_ms(rows, now).tolist() == [1500.0] * 5  # the row without a timestamp has none
    empty = summarise(rows.slice(0, 0))
    assert (empty.starts, empty.rows, empty.errors, empty.max_event_time) == ({}, 0, 0, None)
    every = rows.filter(pa.array([True, False, False, True, False, True]))  # all usable and kept: passed as they are
    assert posts_part(every)["uri"].to_pylist() == ["a", "c", "e"] and posts_part(every)["kafka_offset"].to_pylist() == [7, 4, 0]


def test_text_reaches_postgresql_without_nul_characters_or_invalid_utf8():
    import pyarrow as pa

    from tootpipe.db import pg_safe

    def safe(col):
        return pg_safe(pa.table({"c": col}))["c"]

    clean = pa.chunked_array([pa.array(["a", None, "ü ✓"])])
    assert safe(clean).chunk(0).buffers()[2].address == clean.chunk(0).buffers()[2].address  # passed, not copied
    outside = pa.chunked_array([pa.array(["x\x00y", "ok", "fine"]).slice(1)])  # the NUL lies outside the slice
    assert safe(outside).to_pylist() == ["ok", "fine"]
    inside = pa.chunked_array([pa.array(["ok", "x\x00y", "z"]).slice(1), pa.array(["\x00"])])
    assert safe(inside).to_pylist() == ["xy", "z", ""]
    broken = pa.array([b"ok", b"bad \xff byte"], pa.binary()).cast(pa.string(), safe=False)
    assert safe(pa.chunked_array([broken])).to_pylist() == ["ok", "bad \ufffd byte"]
    lists = pa.chunked_array([pa.array([["a\x00b", None], None, ["c"]], pa.list_(pa.string()))])
    assert safe(lists).to_pylist() == [["ab", None], None, ["c"]]
