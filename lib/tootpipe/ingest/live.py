"""Live Mastodon sources that survive real networks: streaming with a watchdog and REST gap-fill, and REST polling.

One :class:`InstanceFeed` per instance pushes events ``{"event", "instance", "data"}`` into a shared queue.
Guarantees:

* Reconnects with exponential backoff and jitter after any network error, 5xx, rate limit or closed connection.
* A watchdog aborts a connection on which neither a complete event nor a heartbeat comment arrived for
  ``source.watchdog_s`` (Mastodon.py alone does not notice a dead connection; bytes that never make an event
  do not count).
* What an instance sends is bounded (``source.max_line_bytes``, ``max_event_bytes`` on the stream,
  ``max_page_bytes`` for a REST body, counted after decompression): over a bound, the head of it goes to the
  dead letters (streams) or the request fails like a network error (REST), and the feed goes on.
* After every reconnect the gap is filled over REST (``min_id`` = newest id seen, up to the newest the timeline
  held when the new connection brought its first event or heartbeat) by a thread of its own while the new stream
  is read (:mod:`.gaps`), and status ids already seen are dropped, so nothing in between is lost and nothing is
  sent twice. Deletes and edits sent while disconnected cannot be recovered over REST (Mastodon has no endpoint
  for them).
* HTTP 401/403 stop the source with a clear :class:`SourceError`; they are never retried forever.
* Raw stream payloads are passed on unparsed when they are not valid JSON, so they reach the dead-letter topic
  instead of killing the connection (Mastodon.py would abort the stream on bad JSON).
"""
from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from functools import lru_cache
from typing import Iterator
from urllib.parse import urlsplit

from requests.exceptions import RequestException
from urllib3.exceptions import HTTPError

from tootpipe.ingest.gaps import GapFiller
from tootpipe.ingest.instance import (Backoff, FeedSettings, FeedStats, Seen, SourceError, abort, advances,
                                      bounded_session, fatal, plain, status_id_key, streaming_base, token_for,
                                      unknown_host)
from tootpipe.ingest.sse import read_events

__all__ = ["token_for", "status_id_key", "Backoff", "FeedSettings", "InstanceFeed", "live_events", "SourceError", "TICK"]

log = logging.getLogger(__name__)

TICK = {"event": "tick"}  # yielded when nothing arrived for a while, so the caller can check its stop conditions


class InstanceFeed:
    """Streaming or polling of one instance into `out`; run() returns when `stop` is set or on a fatal error."""

    MAX_DNS_FAILURES = 5  # a host that does not resolve this many times in a row is a mistake, not an outage

    def __init__(self, base_url: str, out: queue.Queue, stop: threading.Event, settings: FeedSettings,
                 access_token: str | None = None, rng: random.Random | None = None, holds=None):
        self.base_url = base_url.rstrip("/")
        self.host = urlsplit(self.base_url).hostname or self.base_url
        self.out, self.stop, self.s = out, stop, settings
        self.token = access_token
        self.stats = FeedStats()
        self.backoff = Backoff(settings.reconnect_base_s, settings.reconnect_max_s, rng)
        self.last_id: str | None = None
        self.seen = Seen()
        self.fatal: BaseException | None = None
        self.response = None
        self.last_activity = time.monotonic()
        self.dns_failures = 0
        self.resume_id: str | None = None
        self.unconfirmed_since: str | None = None
        self._api = self._rest = None
        self.gaps = GapFiller(self, holds)

    # -- shared ---------------------------------------------------------------------------------------------
    def _client(self):
        from mastodon import Mastodon  # lazy: mastodon
        return Mastodon(api_base_url=self.base_url, access_token=self.token, ratelimit_method="pace",
                        request_timeout=self.s.request_timeout_s, version_check_mode="none",
                        session=bounded_session(self.s.max_page_bytes))

    @property
    def rest(self):
        """The client of timeline pages (polling, gap-fill): one thread uses it, beside the stream's."""
        if self._rest is None:
            self._rest = self._client()
        return self._rest

    @property
    def api(self):
        """The client of the stream (and of the requests made on its thread)."""
        if self._api is None:
            api = self._client()
            if self.token:  # Mastodon.py would stream from any host the instance names, token included
                named = (api.instance().get("urls") or {}).get("streaming_api")
                api._Mastodon__streaming_base = streaming_base(self.base_url, named)  # checked, and never asked again
            self._api = api
        return self._api

    def _emit(self, event: str, data, from_rest: bool = False) -> None:
        if event in ("update", "status.update") and isinstance(data, dict) and advances(None, data.get("id")):
            sid = str(data["id"])
            key = (event, sid, data.get("edited_at") if event == "status.update" else None)
            if not self.seen.add(key):
                self.stats.duplicates_dropped += 1
                return
            if advances(self.last_id, data["id"]):
                self.last_id = sid
            if from_rest:
                self.stats.gap_filled += 1
        self.stats.events += 1
        self.stats.by_kind[event] = self.stats.by_kind.get(event, 0) + 1
        item = {"event": event, "instance": self.host, "data": data}
        while not self.stop.is_set():  # a full queue nobody reads any more must not hang the shutdown
            try:
                self.out.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _timeline_page(self, min_id: str | None, limit: int | None = None, api=None):
        tl, api, limit = self.s.timeline, api or self.rest, limit or self.s.page_size
        if tl.startswith("tag:"):
            return api.timeline_hashtag(tl[4:], min_id=min_id, limit=limit)
        return api.timeline_public(min_id=min_id, limit=limit, local=tl == "public:local")

    def _emit_page(self, page, from_rest: bool) -> str | None:
        """A REST page's statuses, oldest first; returns the newest id of the page (None when it has none). An
        item that is not a status with an id is passed on as it is (ingest dead-letters it): never dropped, never
        fatal."""
        page = page if isinstance(page, list) else [page]
        good = [s for s in page if isinstance(s, dict) and isinstance(s.get("id"), (str, int))
                and not isinstance(s.get("id"), bool)]
        for item in page:
            if not any(item is g for g in good):
                self._emit("update", plain(item), from_rest=from_rest)
        newest = None
        for status in sorted(good, key=lambda s: status_id_key(s["id"])):
            self._emit("update", plain(status), from_rest=from_rest)
            newest = str(status["id"])
        return newest

    def fetch_newer(self, min_id: str | None, until: str | None = None, on_page=None) -> int:
        """REST pages newer than `min_id`, oldest first, until a page reaches `until`, the timeline is exhausted or
        a page brings nothing newer (a server that ignores `min_id` cannot keep it looping); `on_page(newest)`
        after each page that moved on; returns statuses read."""
        n = 0
        while not self.stop.is_set():
            page = self._timeline_page(min_id)
            newest = self._emit_page(page, from_rest=True)
            n += len(page) if isinstance(page, list) else 1
            if newest is None or (min_id is not None and status_id_key(newest) <= status_id_key(min_id)):
                break
            min_id = newest
            on_page and on_page(newest)
            if len(page) < self.s.page_size or (until is not None and status_id_key(newest) >= status_id_key(until)):
                break
        return n

    def _failed(self, exc: BaseException, what: str, backoff: Backoff | None = None) -> bool:
        """Record an error; True when fatal (the feed stops), else sleep the next delay of `backoff` (the stream's)."""
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]  # an error may quote a whole hostile body
        if fatal(exc):
            self.fatal = SourceError(f"{self.host}: {what} refused ({exc}); check the instance address, "
                                     f"MASTODON_ACCESS_TOKEN and that the token has the read scope")
            return True
        self.dns_failures = self.dns_failures + 1 if unknown_host(exc) else 0
        if self.dns_failures >= self.MAX_DNS_FAILURES:
            self.fatal = SourceError(f"{self.host}: unknown host ({self.dns_failures} look-ups failed in a row); "
                                     f"check source.instances")
            return True
        # a fresh client: Mastodon.py's "pace" mode refuses every later request once a response without rate-limit
        # headers (a proxy's 502, say) leaves its reset time in the past
        self._api = self._rest = None
        delay = (backoff or self.backoff).next()
        log.warning("%s: %s failed (%s); retrying in %.1f s", self.host, what, self.stats.last_error, delay)
        self.stop.wait(delay)
        return False

    def run(self, kind: str) -> None:
        """`run_stream` or `run_poll`, never dying silently: an unexpected error becomes this feed's fatal error,
        which live_events raises (ingest must not end as if the source had finished)."""
        try:
            self.run_stream() if kind == "stream" else self.run_poll()
        except Exception as exc:  # noqa: BLE001 - reported, not swallowed
            log.exception("%s: the %s feed failed", self.host, kind)
            self.fatal = SourceError(f"{self.host}: the {kind} feed failed: {type(exc).__name__}: {exc}")

    # -- polling --------------------------------------------------------------------------------------------
    def run_poll(self) -> None:
        from mastodon import MastodonError  # lazy: mastodon
        while not self.stop.is_set():
            try:
                if self.last_id is None:  # start at the newest page, like a person opening the timeline
                    self._emit_page(self._timeline_page(None), from_rest=False)
                else:
                    n = self.fetch_newer(self.last_id)
                    self._resumed(n)
                self.backoff.reset()
            except MastodonError as exc:
                if self._failed(exc, "timeline request"):
                    return
                continue
            self.stop.wait(self.s.poll_interval_s)

    # -- streaming ------------------------------------------------------------------------------------------
    def run_stream(self) -> None:
        from mastodon import MastodonError  # lazy: mastodon
        try:
            self.api.account_verify_credentials()
        except MastodonError as exc:
            if fatal(exc):
                self._failed(exc, "access token")
                return
        while not self.stop.is_set():
            listener = _listener_class()(self)
            try:
                self.stats.connects += 1
                self._open(listener)
                error = None
            except (MastodonError, RequestException, OSError, ValueError, AttributeError) as exc:
                error = exc
            self.response = None
            if self.stop.is_set():
                return
            if listener.active:
                self.backoff.reset()
            self.stats.reconnects += 1
            if error is None:
                error = ConnectionError("the server closed the stream")
            if self._failed(error, "stream"):
                return

    def _open(self, listener) -> None:
        tl = self.s.timeline
        read_timeout = self.s.watchdog_s * 2  # the watchdog acts first; this only bounds a wedged socket
        if tl.startswith("tag:"):
            self.api.stream_hashtag(tl[4:], listener, local=False, timeout=read_timeout)
        elif tl == "public:local":
            self.api.stream_local(listener, timeout=read_timeout)
        else:
            self.api.stream_public(listener, timeout=read_timeout)

    def on_connected(self, response) -> None:
        """Called by the listener once the stream is open and before it is read: the gap since the newest status
        seen, up to the newest the timeline holds now, goes to the gap filler (everything later is on the stream)."""
        self.response = response
        self.unconfirmed_since = self.last_id  # the gap since is bounded when the stream shows it is live
        self.last_activity = time.monotonic()

    def touch(self) -> None:
        """An event or a heartbeat arrived. The first on a new connection bounds the gap since the last one (not
        the connect: a server may hold a new connection silent while its timeline grows); so does the first after
        a silence of half the watchdog's time (a stalled server may have dropped what it should have sent)."""
        now = time.monotonic()
        since, self.unconfirmed_since = self.unconfirmed_since, None
        if since is None and now - self.last_activity >= self.s.watchdog_s / 2:
            since = self.last_id
        if since is not None:
            self._open_gap(since)
        self.last_activity = now

    def _open_gap(self, since: str) -> None:
        """The statuses after `since`, up to the newest the timeline holds now, to the gap filler."""
        head = self._timeline_page(None, limit=1, api=self.api)
        top = head[0].get("id") if isinstance(head, list) and head and isinstance(head[0], dict) else None
        same = advances(None, top) and status_id_key(top)[0] == status_id_key(since)[0]
        if not same or advances(since, top):  # else nothing was posted meanwhile
            self.gaps.open(since, str(top) if same else None)

    def _resumed(self, n: int) -> bool:
        """Log, once, how a restart resumed (True when this was that first fill)."""
        if self.resume_id is None:
            return False
        log.info("%s: resumed after a restart: %d statuses recovered over REST since id %s (the newest already in "
                 "the topic)", self.host, n, self.resume_id)
        self.stats.resumed_from, self.stats.recovered = self.resume_id, n
        self.resume_id = None
        return True

    def check_watchdog(self, now: float) -> None:
        response = self.response
        if response is not None and now - self.last_activity > self.s.watchdog_s:
            self.stats.watchdog_fires += 1
            log.warning("%s: no event or heartbeat for %.0f s; reconnecting", self.host, now - self.last_activity)
            self.last_activity = now
            abort(response)


@lru_cache(maxsize=1)
def _listener_class():
    from mastodon import StreamListener  # lazy: mastodon

    class Listener(StreamListener):
        """Hands raw events to the feed: JSON is decoded here, and a payload that is not JSON passes as text."""

        def __init__(self, feed: InstanceFeed):
            self.feed = feed
            self.active = False

        def handle_stream(self, response):
            """Mastodon.py reads the stream one byte per Python call (a 1 MB toot took ~5 s and tripped the
            watchdog): :func:`tootpipe.ingest.sse.read_events` reads it in chunks, with bounds."""
            from mastodon.errors import MastodonMalformedEventError, MastodonNetworkError  # lazy: mastodon
            self.feed.on_connected(response)
            try:
                read_events(self, response, MastodonMalformedEventError)
            except (HTTPError, OSError) as err:
                raise MastodonNetworkError(f"the stream broke: {type(err).__name__}: {err}") from err

        def _oversized(self, head, why: str) -> None:
            """What an instance sent over a bound: its head, as raw text, to the dead letters."""
            self.feed.stats.oversized += 1
            log.warning("%s: %s on the stream: cut, to the dead letters", self.feed.host, why)
            self.feed._emit("update", head if isinstance(head, str) else head.decode("utf-8", "replace"))

        def handle_heartbeat(self):
            self.active = True
            self.feed.touch()

        def _dispatch(self, event):
            if not event or event.get("skip"):  # nothing, or the rest of an event cut for its size
                return
            self.active = True
            self.feed.touch()
            name, raw = event.get("event"), event.get("data")
            if name == "delete":
                self.feed._emit("delete", (raw or "").strip())
            elif name in ("update", "status.update"):
                try:
                    data = json.loads(raw)
                except (TypeError, ValueError, RecursionError):  # not JSON, or nested too deep: a dead letter
                    data = raw
                self.feed._emit(name, data)
            # other events (notification, conversation, filters_changed, ...) are not toots

    return Listener


def live_events(instances: list[str], kind: str, settings: FeedSettings, access_token: str | None = None,
                feeds_out: list | None = None, tick_s: float = 0.5, token_instance: str | None = None,
                poll_with_token: bool = False, resume_from: dict[str, str] | None = None,
                holds=None) -> Iterator[dict]:
    """Events from every instance at once (`kind` is "stream" or "poll"), with :data:`TICK` while idle.

    `resume_from` maps an instance host to the newest status id already published: that feed starts by filling
    in, over REST, every status since (as far back as the API serves), instead of starting from "now". The token
    reaches only the instance that issued it (see :func:`token_for`). Closing the generator stops every feed. A
    fatal error of any feed raises :class:`SourceError`. `holds` (an :class:`~tootpipe.ingest.resume.AckedThrough`)
    keeps the resume point below every gap still being filled.
    """
    if token_instance is None and access_token and len(instances) == 1:
        token_instance = instances[0]
    tokens = {url: token_for(url, kind, access_token, token_instance, poll_with_token) for url in instances}
    if kind == "stream" and not all(tokens.values()):
        missing = [u for u, t in tokens.items() if not t]
        raise SourceError(f"source.kind=stream needs a user access token for {', '.join(missing)}: set "
                          "$MASTODON_ACCESS_TOKEN and $MASTODON_BASE_URL to that instance (Mastodon 4.2+ refuses "
                          "anonymous and app tokens; a token is sent only to the instance that issued it); "
                          "without one use source.kind=poll")
    out: queue.Queue = queue.Queue(maxsize=50000)
    stop = threading.Event()
    feeds = [InstanceFeed(url, out, stop, settings, tokens[url], holds=holds) for url in instances]
    for f in feeds:
        if (resume_from or {}).get(f.host):
            f.last_id = f.resume_id = resume_from[f.host]
    if feeds_out is not None:
        feeds_out.extend(feeds)
    threads = [threading.Thread(target=f.run, args=(kind,), daemon=True, name=f"{kind}-{f.host}") for f in feeds]

    def watchdog():
        while not stop.wait(min(1.0, settings.watchdog_s / 4)):
            for f in feeds:
                f.check_watchdog(time.monotonic())

    for t in threads:
        t.start()
    if kind == "stream":
        threading.Thread(target=watchdog, daemon=True, name="stream-watchdog").start()
    try:
        while True:
            try:
                item = out.get(timeout=tick_s)
            except queue.Empty:
                item = None
            failed = [f.fatal for f in feeds if f.fatal is not None]  # also while events flow (a gap filler's)
            if failed:
                raise failed[0]
            if item is None and not any(t.is_alive() for t in threads):
                return
            yield TICK if item is None else item
    finally:
        stop.set()
        for f in feeds:
            if f.response is not None:
                abort(f.response)
        for t in threads:
            t.join(timeout=5)
