"""The producer's filter (Python) and the jobs' filter (Spark) are built from one rule table and agree on every
FilterParams field, on real Mastodon payloads and on records made to sit on each rule's edge."""
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tootpipe.core.config import FilterParams
from tootpipe.core.filters import NOT_RECORD_RULES, RULES, filter_reason
from tootpipe.ingest.normalize import normalize_event
from tootpipe.spark.transforms import parse_kafka, to_post_rows

pytestmark = pytest.mark.integration
FIXTURE = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "mastodon" / "public_timeline_2020-04-16.json"

SETTINGS = {  # each FilterParams field -> values that switch its rule on (and off)
    "public_only": [True, False],
    "exclude_reblogs": [True, False],
    "exclude_replies": [True, False],
    "languages": [["en"], ["EN", "de"], ["ja"], []],
    "keywords": [["the"], ["Covid", "lockdown"], ["café"], ["a.b"], []],
}


def _records() -> list[dict]:
    real = [normalize_event("update", s, "mastodon.social") for s in json.loads(FIXTURE.read_text())]
    base = real[0]
    edges = [  # one field at a time moved to a rule's edge
        {"visibility": "unlisted"}, {"visibility": None}, {"visibility": "direct"},
        {"is_reblog": True}, {"is_reblog": None}, {"is_reply": True}, {"is_reply": None},
        {"language": None}, {"language": "DE"}, {"language": ""},
        {"text": "THE end"}, {"text": "theory"}, {"text": "x", "hashtags": ["Lockdown"]}, {"text": "café au lait"},
        {"text": "cafés"}, {"text": "a.b c"}, {"text": "axb"}, {"text": None, "hashtags": None},
    ]
    made = [{**base, **e, "uri": f"{base['uri']}#edge{i}"} for i, e in enumerate(edges)]
    return real + made


def test_filter_parity_every_field_python_and_spark_agree(spark):
    assert set(SETTINGS) | set(NOT_RECORD_RULES) == set(FilterParams.model_fields)  # no field left untested
    assert {r.param for r in RULES} == set(SETTINGS)
    records = _records()
    now = datetime.now(timezone.utc)
    raw = spark.createDataFrame([("toots", 0, i, now, json.dumps(r).encode()) for i, r in enumerate(records)],
                                "topic string, partition int, offset long, timestamp timestamp, value binary")
    parsed = parse_kafka(raw).cache()
    cases = [FilterParams(**{k: v}) for k, values in SETTINGS.items() for v in values]
    cases.append(FilterParams(languages=["en"], keywords=["the"], exclude_replies=True))
    for filters in cases:
        python = {r["uri"] for r in records if filter_reason(r, filters) is None}
        rows = to_post_rows(parsed, filters).where("error IS NULL").select("uri", "kept").collect()
        assert len(rows) == len(records)
        assert {r["uri"] for r in rows if r["kept"]} == python, filters
    active = [FilterParams(**{k: v[0]}) for k, v in SETTINGS.items()]
    assert all(any(filter_reason(r, f) for r in records) for f in active)  # every rule drops something here
