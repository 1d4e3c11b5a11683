import json

import pytest
from conftest import FIXTURES

from tootpipe.core.config import FilterParams
from tootpipe.core.filters import filter_reason
from tootpipe.core.schema import FIELDS
from tootpipe.ingest.normalize import (BadPayload, html_to_text, normalize_event, normalize_status, opted_out,
                                       parse_sse, parse_time, pseudonymise)
from tootpipe.ingest.source import events_from_file


def timeline():
    return json.loads((FIXTURES / "public_timeline_2020-04-16.json").read_text())


def test_real_timeline_normalises_to_the_schema():
    recs = [normalize_status(s, "mastodon.social") for s in timeline()]
    assert len(recs) == 20
    for r in recs:
        assert set(r) == set(FIELDS)
        assert r["created_at"].endswith("Z") and "<" not in r["text"]
    first = recs[0]
    assert first["uri"] == "https://friendica.chilemasto.casa/objects/e7f1d4da94e7709966bfc900101aebf181299505"
    assert first["language"] == "es" and first["account"]["bot"] is True
    assert "“Léanlo completo”" in first["text"]
    assert "https://tinyurl.com/y7ku9teg" in first["urls"]


def test_html_to_text_keeps_paragraphs_and_breaks_and_decodes_entities():
    assert html_to_text("<p>a &amp; b<br>c</p><p>d&#39;e</p>") == "a & b\nc\n\nd'e"


def test_hostile_html():
    assert html_to_text("<p>hi<script>alert(1)</script><style>p{}</style></p>") == "hi"
    assert html_to_text("<div><p><b><i>deep</i></b></p></div><p>x") == "deep\n\nx"
    big = "<p>" + "word " * 200_000 + "</p>"
    assert len(html_to_text(big)) == len("word " * 200_000) - 1


def test_sse_recordings_parse_with_heartbeats_and_bare_delete_ids():
    events = []
    for f in sorted((FIXTURES / "sse").glob("*.sse")):
        events += list(parse_sse(f.open("rb")))
    names = {e for e, _ in events}
    assert {"update", "status.update", "delete", "heartbeat"} <= names
    delete = next(d for e, d in events if e == "delete")
    assert delete.isdigit()
    rec = normalize_event("delete", delete, "localhost")
    assert rec["event"] == "delete" and rec["id"] == delete and rec["uri"] is None


def test_edits_carry_edited_at():
    evs = list(events_from_file(FIXTURES / "sse" / "03_test_stream_user_direct_user.sse"))
    edits = [normalize_event(e["event"], e["data"], "localhost") for e in evs if e["event"] == "status.update"]
    assert edits and all(r["edited_at"] for r in edits)


def test_malformed_payloads_raise_with_a_reason():
    with pytest.raises(BadPayload, match="malformed JSON"):
        normalize_event("update", '{"id": 1,', "x")
    with pytest.raises(BadPayload, match="no uri"):
        normalize_event("update", {"id": "1"}, "x")
    with pytest.raises(BadPayload, match="not a status event"):
        normalize_event("notification", "{}", "x")
    with pytest.raises(BadPayload, match="timestamp"):
        normalize_status({**timeline()[0], "created_at": "yesterday-ish"}, "x")


def test_time_formats():
    iso = "2026-11-26T10:00:00+00:00"
    for v in ("2026-11-26T10:00:00.000Z", "2026-11-26T11:00:00+01:00", "2026-11-26 10:00:00", 1795687200,
              "1795687200000"):
        assert parse_time(v).isoformat() == iso, v


def test_opt_out_signals():
    assert opted_out({"discoverable": False})
    assert opted_out({"indexable": False})
    assert opted_out({"note": "<p>no thanks #NoBot</p>"})
    assert opted_out({"fields": [{"name": "bots", "value": "#noindex"}]})
    assert not opted_out({"discoverable": None, "note": "<p>#notabot fan</p>"})


def test_filters():
    rec = normalize_status(timeline()[0], "x")
    assert filter_reason(rec, FilterParams()) is None
    assert filter_reason(rec, FilterParams(languages=["en"])) == "language"
    assert filter_reason({**rec, "visibility": "unlisted"}, FilterParams()) == "not public"
    assert filter_reason({**rec, "is_reblog": True}, FilterParams()) == "reblog"
    assert filter_reason(rec, FilterParams(keywords=["completo"])) is None
    assert filter_reason(rec, FilterParams(keywords=["complet"])) == "keyword"  # word boundary


def test_pseudonyms_are_keyed_and_stable():
    a = normalize_status(timeline()[0], "x", pseudonym_key=b"k1")
    b = normalize_status(timeline()[0], "x", pseudonym_key=b"k1")
    c = normalize_status(timeline()[0], "x", pseudonym_key=b"k2")
    assert a["account"]["acct"] == b["account"]["acct"] != c["account"]["acct"]
    assert "elmostrador" not in json.dumps(a["account"])
    assert pseudonymise("a", b"k") != pseudonymise("b", b"k")


def test_hostile_nesting_depth_and_blocks_around_loose_text():
    deep = "<b>" * 50_000 + "x" + "</b>" * 50_000
    assert html_to_text(deep) == "x"
    assert html_to_text("a<p>b</p>c") == "a\n\nb\n\nc"
    assert html_to_text("<p>x&nbsp;y <!-- hidden --> z</p>") == "x y z"
