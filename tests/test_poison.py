"""Poison-proof: no payload crashes ingest or stalls the stream.

Property-based (hypothesis, seeded and bounded): for any JSON value in any field of a status or an event,
normalisation returns a record or raises BadPayload; every record it returns can be encoded and published. End to
end on the real services: good toots around every poison, through the stream and the backfill."""
import json
import math
from pathlib import Path

import orjson
import pytest
from conftest import produce_raw
from hypothesis import HealthCheck, given, seed, settings, strategies as st

from tootpipe import kafka
from tootpipe.batch import backfill as batch
from tootpipe.core.config import FilterParams
from tootpipe.core.filters import filter_reason
from tootpipe.core.schema import LIMITS
from tootpipe.ingest.normalize import BadPayload, normalize_event, opted_out
from tootpipe.ingest.sample import generate
from tootpipe.ingest.source import IngestStats, publish_event
from tootpipe.postgres import db
from tootpipe.stream.query import run_available_now

STATUS = generate(1, 3, edit_rate=0, delete_rate=0, duplicate_rate=0, malformed_rate=0, federated_copy_rate=0)[0]["data"]
STATUS = {**STATUS, "visibility": "public", "account": {**STATUS["account"], "discoverable": True}}

# any JSON value, with the nasty leaves: NUL, lone surrogates, huge and non-finite numbers, deep nesting
leaves = (st.none() | st.booleans() | st.integers(min_value=-10**30, max_value=10**30)
          | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
          | st.sampled_from(["\x00", "\ud83d", "a\x00b", "1e20", "true", "0001-01-01T00:00:00+05:00", "x" * 3000]))
json_values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)
status_keys = st.sampled_from(sorted(STATUS) + ["account.note", "account.fields", "account.acct", "account.username",
                                                 "account.display_name", "account.followers_count", "account.bot"])


def with_value(key: str, value):
    status = json.loads(json.dumps(STATUS))
    if key.startswith("account."):
        status["account"][key.split(".", 1)[1]] = value
    else:
        status[key] = value
    return status


class _Sink:
    """A publisher that encodes like the real one and keeps what it was given."""

    def __init__(self):
        self.records, self.dead = [], []

    def send_record(self, record):
        self.records.append(orjson.loads(orjson.dumps(record)))

    def send_dead_letter(self, raw, error, source):
        self.dead.append(error)


@seed(20261128)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=status_keys, value=json_values, event=st.sampled_from(["update", "status.update"]))
def test_any_value_in_any_field_gives_a_record_or_a_bad_payload(key, value, event):
    status = with_value(key, value)
    try:
        record = normalize_event(event, status, "mastodon.example")
    except BadPayload:
        return
    orjson.dumps(record)  # every record can be encoded (no lone surrogate survives)
    assert all("\x00" not in v for v in record.values() if isinstance(v, str))
    assert len(record["uri"]) <= LIMITS["uri"] and len(record["id"]) <= LIMITS["id"]
    for f in ("replies_count", "reblogs_count", "favourites_count"):
        assert record[f] is None or -2**63 <= record[f] < 2**63
    filter_reason(record, FilterParams(languages=["en"], keywords=["cat"]))
    opted_out(status["account"] if isinstance(status.get("account"), dict) else {})


@seed(20261129)
@settings(max_examples=300, deadline=None)
@given(event=json_values | st.fixed_dictionaries({"event": json_values, "instance": json_values, "data": json_values}))
def test_ingest_never_raises_on_an_event_it_reads(event):
    from tootpipe.core.config import load
    sink, stats = _Sink(), IngestStats()
    try:
        publish_event(event, sink, load(None, use_env=False), stats, None)
    except BadPayload:
        pass


def test_each_poison_becomes_a_dead_letter_with_its_reason():
    poisons = {"created_at": [1e20, -1e13, math.inf, True, "0001-01-01T00:00:00+05:00"], "tags": [5],
               "mentions": [True], "media_attachments": [3], "language": [5], "uri": ["u" * (LIMITS["uri"] + 1)]}
    for key, values in poisons.items():
        for v in values:
            with pytest.raises(BadPayload):
                normalize_event("update", with_value(key, v), "i")
    # the limit itself is allowed, one more character is not
    assert normalize_event("update", with_value("uri", "u" * LIMITS["uri"]), "i")["uri"] == "u" * LIMITS["uri"]
    cleaned = normalize_event("update", {**with_value("content", "<p>a\x00b \ud83d</p>"), "replies_count": 10**30},
                              "i")
    assert cleaned["text"] == "ab ?" and cleaned["replies_count"] is None
    assert not opted_out({"fields": ["x"], "note": 5})


@pytest.mark.integration
def test_dead_letters_of_any_size_and_text_reach_the_dlq(fresh):
    params, endpoints = fresh
    kafka.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic, params.kafka.dlq_topic], 1)
    pub = kafka.Publisher(endpoints.bootstrap_servers, params.kafka.topic, params.kafka.dlq_topic)
    huge = {**STATUS, "uri": "https://a.example/s/huge", "content": "<p>" + "x" * 9_000_000 + "</p>"}
    with pytest.raises(BadPayload):
        pub.send_record(normalize_event("update", {**huge, "content": "<p>ok</p>"}, "i") | {"text": "y" * 9_000_000})
    pub.send_dead_letter("\ud83d lone surrogate", "bad", "test")
    pub.send_dead_letter(json.dumps(huge), "too big", "test")
    pub.flush()
    dead = list(kafka.export(endpoints.bootstrap_servers, params.kafka.dlq_topic, None, True))
    assert len(dead) == 2 and dead[0]["value"]["raw"].startswith("? lone")
    assert dead[1]["value"]["truncated"] is True and dead[1]["value"]["raw_chars"] > 9_000_000


NUL_TOOT = {"v": 1, "event": "update", "uri": "https://a.example/s/nul", "id": "9", "instance": "a.example",
            "created_at": "2026-11-26T10:00:00Z", "account": {"acct": "nul\u0000name", "username": "nul"},
            "visibility": "public", "text": "has a \u0000 NUL", "language": "en", "hashtags": ["a\u0000b"]}


def _good(n):
    return json.dumps({"v": 1, "event": "update", "uri": f"https://a.example/s/{n}", "id": str(n),
                       "instance": "a.example", "created_at": "2026-11-26T10:00:00Z",
                       "account": {"acct": "alice", "username": "alice"}, "visibility": "public",
                       "text": f"good {n}", "language": "en"}).encode()


@pytest.mark.integration
def test_poison_between_good_toots_never_stalls_the_stream_or_the_backfill(fresh, spark):
    """A topic written by another producer: good toots around a NUL (kept, cleaned), a 3 KB uri and username,
    invalid UTF-8, and wrong types. The stream and the backfill commit every good row and one error row per
    poison, and a second run goes on from there."""
    params, endpoints = fresh
    kafka.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic], 1)
    long_uri = json.loads(_good(100)) | {"uri": "https://a.example/" + "u" * 3000}
    long_user = json.loads(_good(101)) | {"account": {"acct": "u" * 3000 + "@a.example", "username": "u"}}
    poisons = [json.dumps(long_uri).encode(), json.dumps(long_user).encode(),
               b'{"v": 1, "event": "update", "uri": "https://a.example/s/\xff\xfe", "text": "\xc3\x28"}',
               json.dumps(json.loads(_good(102)) | {"created_at": True, "hashtags": 5}).encode(),
               json.dumps({k: v for k, v in json.loads(_good(103)).items() if k != "id"}).encode(),
               json.dumps(json.loads(_good(104)) | {"instance": " "}).encode(),
               # deletes naming no toot: an empty id, a blank instance (the producer refuses both too)
               json.dumps({"v": 1, "event": "delete", "uri": None, "id": "", "instance": "a.example"}).encode(),
               json.dumps({"v": 1, "event": "delete", "uri": None, "id": "7", "instance": "  "}).encode()]
    values = [_good(1), json.dumps(NUL_TOOT).encode(), _good(2)]
    for p in poisons:
        values += [p, _good(len(values) + 10)]
    produce_raw(endpoints.bootstrap_servers, params.kafka.topic, values)
    good_uris = {json.loads(v)["uri"] for v in values if v.startswith(b'{"v": 1, "event": "update", "uri": "https://a.example/s/')
                 and b"\\u0000" not in v and v not in poisons}
    summary = run_available_now(spark, params, endpoints)
    assert summary["input_rows"] == len(values)
    stored = set(db.query_df(endpoints.database_url, "SELECT uri FROM mastodon_posts").uri)
    assert stored == good_uris | {NUL_TOOT["uri"]}
    errors = db.query_df(endpoints.database_url, "SELECT kafka_offset, error FROM stream_errors ORDER BY kafka_offset")
    assert len(errors) == len(poisons), errors.error.tolist()
    assert any("uri longer than" in e for e in errors.error) and any("username longer than" in e for e in errors.error)
    assert sum(e == "delete without id or instance" for e in errors.error) == 2
    assert db.query_df(endpoints.database_url, "SELECT count(*) AS n FROM toot_deletes").n[0] == 0
    nul = db.query_df(endpoints.database_url, "SELECT username, content, hashtags FROM mastodon_posts WHERE uri = %s",
                      (NUL_TOOT["uri"],)).iloc[0]
    assert "\x00" not in nul.username + nul.content and nul.content == "has a  NUL"
    # the query is not stuck: more toots after the poison are read by the next run
    produce_raw(endpoints.bootstrap_servers, params.kafka.topic, [_good(500), _good(501)])
    assert run_available_now(spark, params, endpoints)["input_rows"] == 2
    # the backfill: every message loaded, the poisons rejected with their reason, the good ones clean
    loaded = batch.backfill(spark, params, endpoints)
    assert loaded["rows"] == len(values) + 2
    cleaned, rejects = batch.clean(batch.load_raw(spark, endpoints.database_url), params.filters)
    assert {r.uri for r in cleaned.select("uri").collect()} == good_uris | {NUL_TOOT["uri"]} | {
        "https://a.example/s/500", "https://a.example/s/501"}
    assert rejects.count() == len(poisons)


NASTY = [None, True, False, 0, -1, 10**30, -10**30, 1e20, float("inf"), float("nan"), "", " ", "\x00", "\ud83d",
         "a\x00b", "1e20", "true", "0001-01-01T00:00:00+05:00", "x" * 3000, [], [1, "a"], {}, {"name": "\x00"},
         [{"name": "t\x00g", "acct": "\ud83d"}], {"acct": 5}, "2026-11-26T10:00:00Z", "<p>\x00</p>", 5.5]


@pytest.mark.integration
def test_every_record_normalisation_returns_is_stored_or_an_error_row_and_the_query_keeps_running(fresh, spark):
    """300 statuses, each with one field (seeded random) set to a nasty JSON value: whatever normalisation lets
    through is published; one streaming run then accounts for every message (a post or an error row, none lost)
    and the query can go on. (Any value in any field is covered by the property test above; this is its
    end-to-end counterpart on the real services.)"""
    import random
    rng = random.Random(20261130)
    keys = sorted(STATUS) + ["account.note", "account.fields", "account.acct", "account.username",
                             "account.display_name", "account.followers_count", "account.bot"]
    mutations = [(rng.choice(keys), rng.choice(NASTY)) for _ in range(300)]
    params, endpoints = fresh
    params.filters = FilterParams(exclude_reblogs=False, public_only=False, respect_opt_out=False)
    kafka.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic, params.kafka.dlq_topic], 2)
    pub = kafka.Publisher(endpoints.bootstrap_servers, params.kafka.topic, params.kafka.dlq_topic)
    uris = set()
    for n, (key, value) in enumerate(mutations):
        status = with_value(key, value)
        if key != "id":
            status["id"] = str(10_000 + n)
        if key != "uri":
            status["uri"] = f"https://mastodon.example/s/{n}"
        try:
            record = normalize_event("update", status, "mastodon.example")
        except BadPayload:
            continue
        pub.send_record(record)
        uris.add(record["uri"])
    pub.flush()
    published = sum(kafka.end_offsets(endpoints.bootstrap_servers, params.kafka.topic).values())
    assert published > 150  # most mutations leave a usable status
    summary = run_available_now(spark, params, endpoints)
    assert summary["input_rows"] == published
    stored = set(db.query_df(endpoints.database_url, "SELECT uri FROM mastodon_posts").uri)
    errors = db.scalar(endpoints.database_url, "SELECT count(*) FROM stream_errors")
    assert stored <= uris and len(stored) + errors >= len(uris)  # every record: a post or an error row
    produce_raw(endpoints.bootstrap_servers, params.kafka.topic, [_good(900)])
    assert run_available_now(spark, params, endpoints)["input_rows"] == 1  # and the query goes on


@pytest.mark.integration
def test_the_backfill_s_narrow_parse_gives_the_full_parse_s_columns_and_errors(spark):
    """The backfill parses only the record fields it keeps; every column it keeps, `error` among them, must be what
    the full parse (the stream's) gives, on real toots and on a wrong-typed value in each field in turn."""
    from datetime import datetime, timezone

    from tootpipe.core.schema import FIELDS
    from tootpipe.spark.transforms import parse_kafka
    fixture = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "mastodon" / "public_timeline_2020-04-16.json"
    real = [normalize_event("update", s, "mastodon.social") for s in json.loads(fixture.read_text())]
    good = real[0]
    wrong = [{"a": 1}, [1, "x"], "x", 10**30, True, None]
    values = [json.dumps(r) for r in real]
    values += [json.dumps({**good, key: w}) for key in FIELDS for w in wrong]
    values += [json.dumps({**good, "account": {**good["account"], key: w}}) for key in good["account"] for w in wrong]
    values += [json.dumps({"v": 1, "event": "delete", "id": "9", "instance": "mastodon.social"}), "not json", "[1,2]",
               '{"v":1', "null", "{}", '{"event": "update", "event": "delete"}']
    now = datetime.now(timezone.utc)
    raw = spark.createDataFrame([("t", 0, i, now, v.encode()) for i, v in enumerate(values)],
                                "topic string, partition int, offset long, timestamp timestamp, value binary")
    kept = [c for c in batch._RAW_COLUMNS if c not in ("cluster", "raw")]
    full = {r.kafka_offset: r for r in parse_kafka(raw).select(*kept).collect()}
    narrow = {r.kafka_offset: r for r in parse_kafka(raw, batch._RECORD_FIELDS).select(*kept).collect()}
    assert len(full) == len(values)
    assert narrow == full
    assert sum(r.error is not None for r in full.values()) >= 20  # the wrong-typed values did produce errors


@pytest.mark.integration
def test_identifier_limits_count_characters_not_bytes(spark):
    """An id of 256 two-byte characters (512 bytes) is within its 256-character limit; one more is not."""
    from datetime import datetime, timezone

    from tootpipe.spark.transforms import parse_kafka
    good = {**STATUS, "v": 1, "event": "update", "instance": "mastodon.social", "created_at": "2026-11-26T10:00:00Z",
            "account": {"acct": "ann"}}
    values = [json.dumps({**good, "id": "é" * LIMITS["id"]}), json.dumps({**good, "id": "é" * (LIMITS["id"] + 1)}),
              json.dumps({**good, "uri": "https://a.example/" + "ü" * (LIMITS["uri"] - 18)})]
    raw = spark.createDataFrame([("t", 0, i, datetime.now(timezone.utc), v.encode()) for i, v in enumerate(values)],
                                "topic string, partition int, offset long, timestamp timestamp, value binary")
    errors = [r.error for r in parse_kafka(raw).orderBy("kafka_offset").collect()]
    assert errors == [None, f"id longer than {LIMITS['id']} characters", None]


def test_a_hashtag_that_looks_like_math_text_is_drawn_as_text():
    """`$\\x$` as a label made matplotlib's math parser fail notebook 06 (ValueError: Unknown symbol)."""
    import io

    import pandas as pd

    from tootpipe.report import plots
    plots.style()
    fig = plots.top_hashtags(pd.DataFrame({"hashtag": ["$\\x$", "a$b$c", "ok"], "cnt": [3, 2, 1]}))
    fig.savefig(io.BytesIO(), format="png")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["$\\x$", "a$b$c", "ok"]
