"""The real Mastodon.py client against a local server that speaks Mastodon's wire format (tests/fake_mastodon.py),
serving the real recorded timeline: reconnects, gap-fill, watchdog, HTTP errors, bad payloads, edits, deletes."""
import json
import time

import pytest
from conftest import FIXTURES
from fake_mastodon import FakeMastodon

from tootpipe import kafka, steps
from tootpipe.core import config
from tootpipe.ingest.live import TICK, Backoff, FeedSettings, SourceError, live_events
from tootpipe.ingest.source import ingest

pytestmark = pytest.mark.timeout(300)  # generous: a loaded 2-core machine is slow, conditions are awaited
FAST = dict(reconnect_base_s=0.05, reconnect_max_s=0.5, poll_interval_s=0.1)


def statuses():
    return sorted(json.loads((FIXTURES / "public_timeline_2020-04-16.json").read_text()), key=lambda s: int(s["id"]))


def collect(gen, until, timeout=15.0):
    """Events from `gen` until `until(events)` holds (or timeout); the generator is closed afterwards."""
    events, t0 = [], time.monotonic()
    try:
        for e in gen:
            if e is not TICK:
                events.append(e)
            if until(events) or time.monotonic() - t0 > timeout:
                break
    finally:
        gen.close()
    return events


def ids(events):
    return [str(e["data"]["id"]) for e in events if e["event"] == "update"]


def test_an_id_of_another_kind_or_type_never_moves_the_gap_fill_cursor():
    """Found by the chaos soak: a hostile `{"id": true}` event made "True" the newest id seen (it sorts after every
    snowflake), so every later gap-fill asked for statuses newer than it and 116 toots posted during a stall never
    came. Now only an id of the cursor's kind that sorts after it moves it; the odd event still goes downstream
    (to be dead-lettered), each time: a second `{"id": true}` is not dropped as a duplicate of the first."""
    import queue
    import threading

    from tootpipe.ingest.instance import advances
    from tootpipe.ingest.live import InstanceFeed
    assert advances(None, "109") and advances("109", "110") and not advances("110", "109")
    assert not any(advances("110", bad) for bad in (True, False, "zzz", "", "  ", None, 1.5, ["111"]))
    assert advances("abc", "abd") and not advances("abc", "12")  # opaque ids (other servers) stay among themselves
    out = queue.Queue()
    feed = InstanceFeed("https://a.example", out, threading.Event(), FeedSettings(**FAST))
    for data in ({"id": "110"}, {"id": True, "created_at": 5}, {"id": "zzz"}, {"id": "111"}, {"id": "99"},
                 {"id": True, "created_at": 5}, {"id": "111"}):
        feed._emit("update", data)
    assert feed.last_id == "111" and out.qsize() == 6 and feed.stats.duplicates_dropped == 1  # the second 111


def test_backoff_grows_exponentially_with_jitter_and_resets():
    import random
    b = Backoff(1.0, 8.0, random.Random(1))
    delays = [b.next() for _ in range(6)]
    for n, d in enumerate(delays):
        cap = min(8.0, 2 ** n)
        assert cap / 2 <= d <= cap
    assert len(set(delays)) == len(delays)  # jittered, not a fixed ladder
    b.reset()
    assert b.next() <= 1.0


def test_disconnect_mid_stream_then_reconnect_fills_the_gap_without_loss_or_duplicate():
    st = statuses()
    every = [str(s["id"]) for s in st]
    # first connection: 8 toots then the server drops it; toots 9..12 are posted while we are away;
    # the second connection carries on from toot 13 (and repeats toot 12, as a real overlap would)
    conns = [[("heartbeat",)] + [("event", "update", s) for s in st[:8]] + [("close",)],
             [("heartbeat",)] + [("event", "update", s) for s in st[11:]] + [("silent",)]]
    with FakeMastodon(st[:12], conns) as fake:
        feeds = []
        gen = live_events([fake.url], "stream", FeedSettings(watchdog_s=5, **FAST), "good-token", feeds_out=feeds)
        got = collect(gen, lambda ev: len(ev) >= 20)
    assert sorted(ids(got), key=int) == every  # nothing lost
    assert len(ids(got)) == len(set(ids(got))) == 20  # nothing twice
    s = feeds[0].stats
    # toots 9..12 over REST, toot 12 also on the stream (whichever came first, the other is the duplicate)
    assert s.reconnects == 1 and s.duplicates_dropped == 1 and s.gap_filled in (3, 4)
    assert any("timelines/public" in p for p, _ in fake.requests)


def test_a_slow_gap_fill_runs_beside_the_new_stream_which_is_read_at_once():
    """Gap-fill is paced by the instance (Mastodon.py spreads REST calls over the rate limit: about one page of 40
    a second). It used to run before the new stream was read: with more traffic than it could page through, the
    watchdog fired every few seconds, the stream was never read again and its edits, deletes and hostile events
    were never seen (found by the chaos soak). Now the stream is read while the gap fills, and nothing is lost."""
    st = statuses()
    beat = [("heartbeat",), ("sleep", 0.25)]
    conns = [[("heartbeat",)] + [("event", "update", s) for s in st[:2]] + [("close",)],
             [("heartbeat",), ("event", "update", st[18])] + beat * 6 + [("event", "update", st[19])] + beat * 40]
    with FakeMastodon(st[:18], conns) as fake:  # toots 3..18 posted while away; 19 and 20 after the reconnect
        fake.rest_delay_s = 0.5  # the gap takes 4 pages of 4 and the newest-status call: 2.5 s
        feeds = []
        gen = live_events([fake.url], "stream", FeedSettings(watchdog_s=1.2, page_size=4, **FAST), "good-token",
                          feeds_out=feeds)
        got = collect(gen, lambda ev: len(ev) >= 20, timeout=30)
    assert sorted(ids(got), key=int) == sorted((str(s["id"]) for s in st), key=int)  # nothing lost
    assert len(ids(got)) == 20  # nothing twice
    assert feeds[0].stats.watchdog_fires == 0 and fake.stream_connects == 2
    order = ids(got)
    assert order.index(str(st[18]["id"])) < order.index(str(st[17]["id"])), "the stream waited for the gap-fill"


def test_what_a_stalled_stream_dropped_before_it_went_on_is_filled_in():
    """A server that stalls (silent, not even heartbeats) for less than the watchdog's time, drops what was posted
    meanwhile and then goes on: no reconnect happens, so the silence itself must trigger a gap-fill (found by the
    chaos soak: the last seconds of a stall after a reconnect were lost)."""
    st = statuses()
    conns = [[("heartbeat",)] + [("event", "update", s) for s in st[:3]] + [("sleep", 1.0), ("heartbeat",)]
             + [("event", "update", s) for s in st[10:]] + [("heartbeat",), ("sleep", 0.25)] * 40]
    with FakeMastodon(st[:10], conns) as fake:  # toots 4..10 were posted during the stall
        feeds = []
        gen = live_events([fake.url], "stream", FeedSettings(watchdog_s=1.6, **FAST), "good-token", feeds_out=feeds)
        got = collect(gen, lambda ev: len(ev) >= 20, timeout=30)
    assert sorted(ids(got), key=int) == sorted((str(s["id"]) for s in st), key=int)  # nothing lost
    assert len(ids(got)) == 20  # nothing twice
    assert fake.stream_connects == 1 and feeds[0].stats.watchdog_fires == 0 and feeds[0].stats.gap_filled == 7


def test_a_new_connection_held_silent_while_the_timeline_grows_loses_nothing():
    """A server may accept a new connection and hold it silent (a stall) while statuses are posted that it will
    never send on it. The gap is bounded by the first event or heartbeat of the new connection, not by the connect
    (found by the chaos soak: 437 statuses posted in the last 2 s of a stall, on a connection opened during it)."""
    st = statuses()
    conns = [[("heartbeat",)] + [("event", "update", s) for s in st[:3]] + [("close",)],
             [("sleep", 0.3), ("post", st[8:12]), ("sleep", 0.3), ("heartbeat",)]
             + [("event", "update", s) for s in st[12:]] + [("heartbeat",), ("sleep", 0.25)] * 40]
    with FakeMastodon(st[:8], conns) as fake:  # 4..8 posted while away, 9..12 while the new connection is silent
        feeds = []
        gen = live_events([fake.url], "stream", FeedSettings(watchdog_s=2.0, **FAST), "good-token", feeds_out=feeds)
        got = collect(gen, lambda ev: len(ev) >= 20, timeout=30)
    assert sorted(ids(got), key=int) == sorted((str(s["id"]) for s in st), key=int)  # nothing lost
    assert len(ids(got)) == 20 and fake.stream_connects == 2 and feeds[0].stats.watchdog_fires == 0


def test_a_silent_connection_is_noticed_by_the_watchdog_and_replaced():
    st = statuses()
    conns = [[("heartbeat",)] + [("event", "update", s) for s in st[:3]] + [("silent",)],
             [("event", "update", s) for s in st[3:]] + [("silent",)]]
    with FakeMastodon(st[:3], conns) as fake:
        feeds = []
        t0 = time.monotonic()
        gen = live_events([fake.url], "stream", FeedSettings(watchdog_s=0.6, **FAST), "good-token", feeds_out=feeds)
        got = collect(gen, lambda ev: len(ev) >= 20)
        took = time.monotonic() - t0
    assert len(set(ids(got))) == 20 and len(ids(got)) == 20
    assert feeds[0].stats.watchdog_fires >= 1 and fake.stream_connects >= 2
    assert took < 10  # not the 300 s a read timeout would take


def test_heartbeats_keep_a_quiet_connection_alive():
    conns = [[("heartbeat",), ("sleep", 0.3)] * 8 + [("silent",)]]
    with FakeMastodon([], conns) as fake:
        feeds = []
        gen = live_events([fake.url], "stream", FeedSettings(watchdog_s=0.8, **FAST), "good-token", feeds_out=feeds,
                          tick_s=0.1)
        t0 = time.monotonic()
        collect(gen, lambda ev: time.monotonic() - t0 > 2.2)
    assert feeds[0].stats.watchdog_fires == 0 and fake.stream_connects == 1


def test_a_rejected_token_stops_with_a_clear_error_instead_of_retrying_forever():
    with FakeMastodon(statuses()) as fake:
        gen = live_events([fake.url], "stream", FeedSettings(watchdog_s=1, **FAST), "wrong-token")
        with pytest.raises(SourceError, match="MASTODON_ACCESS_TOKEN"):
            collect(gen, lambda ev: False, timeout=60)
        assert fake.stream_connects == 0
    with pytest.raises(SourceError, match="needs a user access token"):
        next(live_events(["http://127.0.0.1:9"], "stream", FeedSettings(), None))
    with FakeMastodon(statuses()) as fake:
        with pytest.raises(SourceError, match="refused"):
            collect(live_events([fake.url], "poll", FeedSettings(**FAST), "wrong-token", poll_with_token=True),
                    lambda ev: False)


def test_the_token_reaches_only_the_instance_that_issued_it_and_polling_sends_none():
    with FakeMastodon(statuses()) as home, FakeMastodon(statuses()) as other:
        gen = live_events([home.url, other.url], "poll", FeedSettings(**FAST), "good-token", token_instance=home.url,
                          poll_with_token=True)
        collect(gen, lambda ev: len(ev) >= 2 * len(statuses()), timeout=20)
        assert home.authorization and set(home.authorization) == {"Bearer good-token"}
        assert other.authorization and set(other.authorization) == {None}
        collect(live_events([home.url], "poll", FeedSettings(**FAST), "good-token", token_instance=home.url),
                lambda ev: len(ev) >= 1, timeout=20)
        assert home.authorization[-1] is None  # public polling: no token unless asked
        with pytest.raises(SourceError, match="needs a user access token for " + other.url):
            next(live_events([home.url, other.url], "stream", FeedSettings(**FAST), "good-token",
                             token_instance=home.url))
    with pytest.raises(SourceError, match="refusing to send the access token over http"):
        next(live_events(["http://mastodon.example"], "stream", FeedSettings(), "t0ken"))
    with pytest.raises(SourceError, match="MASTODON_BASE_URL"):
        next(live_events(["https://a.example", "https://b.example"], "stream", FeedSettings(), "t0ken"))


def test_server_errors_on_the_stream_are_retried_with_backoff():
    st = statuses()
    conns = [[("status", 503)], [("status", 502)], [("status", 500)],
             [("event", "update", s) for s in st[:5]] + [("silent",)]]
    with FakeMastodon([], conns) as fake:
        feeds = []
        gen = live_events([fake.url], "stream", FeedSettings(watchdog_s=5, **FAST), "good-token", feeds_out=feeds)
        got = collect(gen, lambda ev: len(ev) >= 5)
    assert ids(got) == [str(s["id"]) for s in st[:5]]
    assert feeds[0].stats.errors == 3 and fake.stream_connects == 4


def test_poll_honours_429_retries_5xx_and_pages_with_min_id():
    st = statuses()
    with FakeMastodon(st[:10], rest_errors=[429, 502]) as fake:
        feeds = []
        t0 = time.monotonic()
        gen = live_events([fake.url], "poll", FeedSettings(**FAST), None, feeds_out=feeds)
        first = []
        for e in gen:
            if e is not TICK:
                first.append(e)
            if len(first) == 10:
                break
        waited = time.monotonic() - t0
        fake.store.extend(st[10:])  # new toots appear on the instance
        rest = collect(gen, lambda ev: len(ev) >= 10)
    assert waited >= 1.0  # the 429's X-RateLimit-Reset was honoured
    assert ids(first) + ids(rest) == [str(s["id"]) for s in st]
    assert [c for _, c in fake.requests if c in (429, 502)] == [429, 502]


def test_bad_payloads_edits_and_deletes_through_ingest():
    st = statuses()
    hostile = dict(st[0], id="999000000000000001", uri="https://x.example/1",
                   content="<p>hi<script>alert(1)</script><b><i>there</i></b></p>" + "<p>" + "z" * 1_000_000 + "</p>")
    edited = dict(st[1], edited_at="2020-04-16T12:00:00.000Z", content="<p>edited text</p>")
    conns = [[("event", "update", "{not json"), ("event", "update", hostile), ("event", "status.update", edited),
              ("event", "delete", "104009345973121628"), ("event", "notification", {"id": "5"}),
              ("event", "update", st[2]), ("silent",)]]

    class Recorder:
        def __init__(self):
            self.records, self.dead = [], []

        def send_record(self, r):
            self.records.append(r)

        def send_dead_letter(self, raw, error, source):
            self.dead.append((raw, error, source))

        def flush(self):
            pass

    params = config.load(None, {"filters.exclude_reblogs": False, "filters.respect_opt_out": False}, use_env=False)
    with FakeMastodon([], conns) as fake:
        feeds = []
        gen = live_events([fake.url], "stream", FeedSettings(watchdog_s=5, **FAST), "good-token", feeds_out=feeds)
        pub = Recorder()
        stats = ingest(gen, pub, params, max_toots=5, source="stream")
    assert fake.stream_connects == 1  # the bad payload did not cost the connection
    assert pub.dead == [("{not json", pub.dead[0][1], "stream:127.0.0.1")] and "malformed JSON" in pub.dead[0][1]
    by_event = {}
    for r in pub.records:
        by_event.setdefault(r["event"], []).append(r)
    text = next(r["text"] for r in by_event["update"] if r["uri"] == "https://x.example/1")
    assert text.startswith("hi") and "alert" not in text and "<" not in text and len(text) > 1_000_000
    assert by_event["status.update"][0]["edited_at"] == "2020-04-16T12:00:00.000Z"
    assert by_event["delete"][0]["id"] == "104009345973121628"
    assert stats.read == 5 and stats.dead_letters == 1 and stats.deletes == 1


@pytest.mark.integration
def test_stream_source_into_the_real_broker_loses_nothing_and_sends_nothing_twice(fresh):
    from tootpipe import kafka
    from tootpipe.kafka import Publisher
    params, endpoints = fresh
    params.filters.exclude_reblogs = False
    params.filters.respect_opt_out = False
    st = statuses()
    conns = [[("event", "update", s) for s in st[:7]] + [("close",)],
             [("heartbeat",)] + [("event", "update", s) for s in st[9:]] + [("silent",)]]
    kafka.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic, params.kafka.dlq_topic], 3)
    with FakeMastodon(st[:10], conns) as fake:
        gen = live_events([fake.url], "stream", FeedSettings(watchdog_s=5, **FAST), "good-token")
        pub = Publisher(endpoints.bootstrap_servers, params.kafka.topic, params.kafka.dlq_topic)
        try:
            stats = ingest(gen, pub, params, max_toots=20, duration_s=20, source="stream")
        finally:
            pub.close()
    msgs = list(kafka.export(endpoints.bootstrap_servers, params.kafka.topic, max_messages=1000))
    uris = [m["value"]["uri"] for m in msgs]
    assert stats.published == 20 and len(uris) == 20 and set(uris) == {s["uri"] for s in st}


def test_a_malformed_page_goes_to_the_dlq_and_the_feed_goes_on_and_a_server_ignoring_min_id_cannot_loop_it():
    st = statuses()
    with FakeMastodon(st[:10]) as fake:
        fake.junk = [{"content": "no id"}, "not a status", {"id": True}]
        feeds = []
        gen = live_events([fake.url], "poll", FeedSettings(**FAST), None, feeds_out=feeds)
        first = collect(gen, lambda ev: len(ev) >= 13, timeout=20)
        statuses_seen = [e for e in first if isinstance(e["data"], dict) and e["data"].get("uri")]
        assert ids(statuses_seen) == [str(s["id"]) for s in st[:10]] and len(first) == 13  # junk passed on
        assert feeds[0].fatal is None
    with FakeMastodon(st[:10]) as fake:
        fake.ignore_min_id = True
        feed_list = []
        gen = live_events([fake.url], "poll", FeedSettings(**FAST), None, feeds_out=feed_list)
        got = collect(gen, lambda ev: False, timeout=3)
        timeline_calls = sum(1 for p, _ in fake.requests if p.startswith("/api/v1/timelines/"))
        assert ids(got) == [str(s["id"]) for s in st[:10]]  # each status once, no endless gap-fill
        assert timeline_calls <= 2 * 3 / FAST["poll_interval_s"] + 5  # one per poll interval, not a tight loop


def test_a_missing_timeline_and_an_unknown_host_stop_with_a_clear_error():
    with FakeMastodon(statuses()) as fake:
        settings = FeedSettings(**{**FAST, "timeline": "tag:nothing"})
        fake.rest_errors = [404]
        with pytest.raises(SourceError, match="refused"):
            collect(live_events([fake.url], "poll", settings, None), lambda ev: False, timeout=60)
    with pytest.raises(SourceError, match="unknown host"):
        collect(live_events(["https://does-not-exist.invalid"], "poll", FeedSettings(**FAST), None),
                lambda ev: False, timeout=60)


@pytest.mark.integration
def test_ingest_resumes_after_a_restart_from_the_newest_id_in_the_topic(fresh, caplog):
    """Ingest stops; the instance publishes ten more toots meanwhile; ingest starts again and recovers exactly
    those over REST: every toot arrives once, none is lost to the downtime."""
    import logging
    params, endpoints = fresh
    st = statuses()
    params.filters.exclude_reblogs = params.filters.respect_opt_out = params.filters.public_only = False
    with FakeMastodon(st[:10]) as fake:
        params.source.kind, params.source.instances = "poll", [fake.url]
        params.source.poll_interval_s = 0.1
        first = steps.ingest_step(params, endpoints, max_toots=10)
        assert first["published"] == 10
        fake.store.extend(st[10:])  # published on the instance while ingest was down
        with caplog.at_level(logging.INFO, logger="tootpipe.ingest.live"):
            second = steps.ingest_step(params, endpoints, max_toots=10)
    assert second["published"] == 10
    msgs = list(kafka.export(endpoints.bootstrap_servers, params.kafka.topic, None, True))
    got = sorted(str(m["value"]["id"]) for m in msgs)
    assert got == sorted(str(s["id"]) for s in st)  # all twenty, each once
    assert f"resumed after a restart: 10 statuses recovered over REST since id {st[9]['id']}" in caplog.text


def test_the_stream_reader_takes_chunked_and_plain_bodies_and_a_megabyte_event_quickly():
    """Mastodon serves the stream chunked; the reader reads what has arrived (not a byte per call), so a 1 MB toot
    is one quick event and every byte counts as activity for the watchdog."""
    import socket
    import threading
    import time as _time

    import requests

    from tootpipe.ingest.live import _listener_class
    big = json.dumps({"id": "1", "content": "<p>" + "x" * 1_000_000 + "</p>"})
    body = (f"event: update\ndata: {big}\n\n:thump\n\nevent: delete\ndata: 42\n\n").encode()

    def serve(sock, chunked):
        conn, _ = sock.accept()
        conn.recv(65536)
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        if chunked:
            conn.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
            for i in range(0, len(body), 7000):
                part = body[i:i + 7000]
                conn.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            conn.sendall(b"0\r\n\r\n")
        else:
            conn.sendall((head + "Connection: close\r\n\r\n").encode() + body)
        conn.close()

    class Feed:
        last_activity = 0.0
        s = FeedSettings()  # the default bounds (4 MiB a line or an event: the megabyte toot passes)

        def __init__(self):
            self.events = []

        def on_connected(self, response):
            pass

        def touch(self):
            self.last_activity = _time.monotonic()

        def _emit(self, name, data):
            self.events.append((name, data))

    for chunked in (True, False):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        threading.Thread(target=serve, args=(sock, chunked), daemon=True).start()
        feed = Feed()
        t0 = _time.monotonic()
        with requests.get(f"http://127.0.0.1:{sock.getsockname()[1]}/", stream=True, timeout=30) as r:
            reads = []
            read1 = r.raw.read1
            r.raw.read1 = lambda n: reads.append(n) or read1(n)
            _listener_class()(feed).handle_stream(r)
        sock.close()
        assert [n for n, _ in feed.events] == ["update", "delete"] and feed.events[1][1] == "42", chunked
        assert len(feed.events[0][1]["content"]) == 1_000_007 and feed.last_activity > t0
        assert len(reads) < 2000  # Mastodon.py's own reader makes one call per byte: over a million here


def test_crlf_lines_and_json_nested_too_deep_neither_break_the_stream():
    """An event stream whose lines end in CRLF is read like one in LF; an event nested 5,000 deep (RecursionError
    in json.loads) passes on as raw text (the ingest makes it a dead letter) and the events after it still come."""
    st = statuses()
    deep = "[" * 5000 + "]" * 5000
    conns = [[("heartbeat",), ("event", "update", st[0]), ("event", "update", deep), ("event", "update", st[1]),
              ("silent",)]]
    with FakeMastodon([], conns, newline=b"\r\n") as fake:
        gen = live_events([fake.url], "stream", FeedSettings(watchdog_s=5, **FAST), "good-token")
        got = collect(gen, lambda ev: len(ev) >= 3)
    assert [e["event"] for e in got] == ["update"] * 3
    assert isinstance(got[0]["data"], dict) and got[1]["data"] == deep and isinstance(got[2]["data"], dict)
    assert [str(got[0]["data"]["id"]), str(got[2]["data"]["id"])] == [str(st[0]["id"]), str(st[1]["id"])]


def test_the_token_is_never_streamed_to_a_host_the_instance_names_outside_its_own_domain():
    from tootpipe.ingest.instance import streaming_base
    assert streaming_base("https://mastodon.social", "wss://streaming.mastodon.social") == \
        "https://streaming.mastodon.social"
    assert streaming_base("https://mastodon.social/", None) == "https://mastodon.social"
    assert streaming_base("http://127.0.0.1:8080", "ws://127.0.0.1:8080") == "http://127.0.0.1:8080"
    for named, why in (("wss://mastodon.social.evil.example", "goes only to the instance"),
                       ("wss://evil.example", "goes only to the instance"),
                       ("ws://streaming.mastodon.social", "refusing to send the access token over http"),
                       ("ftp://mastodon.social", "no https:// address")):
        with pytest.raises(SourceError, match=why):
            streaming_base("https://mastodon.social", named)
    st = statuses()
    with FakeMastodon(st[:3], [[("event", "update", s) for s in st[:3]] + [("silent",)]]) as fake:
        fake.streaming_api = "wss://collector.evil.example"  # a hostile instance names another host
        gen = live_events([fake.url], "stream", FeedSettings(watchdog_s=5, **FAST), "good-token",
                          token_instance=fake.url)
        with pytest.raises(SourceError, match="names collector.evil.example as its streaming server"):
            collect(gen, lambda ev: False, timeout=60)
        assert fake.stream_connects == 0


def statuses_in(events):
    return [str(e["data"]["id"]) for e in events if isinstance(e["data"], dict)]


def test_what_a_hostile_instance_sends_is_bounded_and_the_feed_goes_on():
    """A line without end and an event of endless data lines are cut to their bound and dead-lettered, the events
    after them still come; a server that drips bytes never making an event is dropped by the watchdog; a REST body
    over its bound fails like a network error (counted, retried, its error text short) instead of being read."""
    st = statuses()
    bounds = dict(max_line_bytes=32768, max_event_bytes=32768)  # a real status is a few KB
    long_line = b"data: " + b"x" * 100_000 + b"\n\n"
    many = b"event: update\n" + b"data: y\n" * 20_000 + b"\n"
    conns = [[("heartbeat",), ("raw", long_line), ("event", "update", st[0]), ("raw", many),
              ("event", "update", st[1]), ("silent",)],
             [("drip", b"event: update\ndata: " + b"z" * 400, 0.01)],
             [("event", "update", st[2]), ("silent",)]]
    with FakeMastodon([], conns) as fake:
        feeds = []
        gen = live_events([fake.url], "stream", FeedSettings(watchdog_s=1.0, **FAST, **bounds), "good-token",
                          feeds_out=feeds)
        got = collect(gen, lambda ev: len(statuses_in(ev)) >= 3, timeout=60)
    assert statuses_in(got) == [str(s["id"]) for s in st[:3]]
    cut = [e["data"] for e in got if isinstance(e["data"], str)]
    assert len(cut) == 2 and all(len(c) <= 32768 for c in cut) and cut[0].startswith("data: xxx")
    # the watchdog fired on the silent first connection and on the dripping one (bytes are not events)
    assert feeds[0].stats.oversized == 2 and feeds[0].stats.watchdog_fires >= 2
    big = [{**s, "content": "<p>" + "w" * 20_000 + "</p>"} for s in st[:8]]
    with FakeMastodon(big) as fake:
        feeds = []
        gen = live_events([fake.url], "poll", FeedSettings(max_page_bytes=65536, **FAST), feeds_out=feeds)
        got = collect(gen, lambda ev: feeds and feeds[0].stats.errors >= 2, timeout=60)
    assert got == [] and "over 65,536 bytes" in feeds[0].stats.last_error and len(feeds[0].stats.last_error) <= 500
