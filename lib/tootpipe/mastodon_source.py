"""Where toots come from (sample, replay, REST poll, streaming) and the ingest loop that publishes them.

Every source yields events ``{"event", "instance", "data"}`` exactly as Mastodon sends them (``data`` is a Status
object, its JSON text, or a bare id for ``delete``). :func:`ingest` normalises, drops opted-out accounts and
filtered toots, and publishes: at-least-once into Kafka; anything malformed goes to the dead-letter topic and
never stops the loop.
"""
from __future__ import annotations

import json
import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlsplit

from .config import Params, secret
from .normalize import BadPayload, filter_reason, normalize_event, opted_out, parse_sse

__all__ = ["IngestStats", "events_from_file", "sample_events", "poll_events", "stream_events", "source_events",
           "ingest", "SourceError"]

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A source that cannot run as configured; the message says what to change."""


@dataclass
class IngestStats:
    read: int = 0
    published: int = 0
    deletes: int = 0
    opted_out: int = 0
    dead_letters: int = 0
    filtered: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def toots_per_s(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {"read": self.read, "published": self.published, "deletes": self.deletes,
                "opted_out": self.opted_out, "dead_letters": self.dead_letters,
                "filtered": dict(self.filtered), "seconds": round(self.seconds, 3),
                "toots_per_s": round(self.toots_per_s, 1)}


def sample_events(params: Params) -> list[dict]:
    from .sample import generate
    return generate(params.source.sample_n, params.source.sample_seed)


def events_from_file(path: str | Path, instance: str = "replay.local") -> Iterator[dict]:
    """Events from a recording: an `.sse` body, a JSON array of statuses (a REST timeline page), JSONL of
    events (`{"event", "instance", "data"}`) or JSONL of bare statuses. Unreadable lines come through as
    events whose data is the raw line, so they reach the dead-letter topic."""
    p = Path(path)
    if p.suffix == ".sse":
        with open(p, "rb") as fh:
            for name, data in parse_sse(fh):
                if name != "heartbeat":
                    yield {"event": name, "instance": instance, "data": data}
        return
    text = p.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        for status in json.loads(text):
            yield {"event": "update", "instance": _instance_of(status) or instance, "data": status}
        return
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            yield {"event": "update", "instance": instance, "data": line}
            continue
        if isinstance(obj, dict) and "event" in obj and "data" in obj:
            yield {"event": obj["event"], "instance": obj.get("instance") or instance, "data": obj["data"]}
        else:
            yield {"event": "update", "instance": _instance_of(obj) or instance, "data": obj}


def _instance_of(status) -> str | None:
    if isinstance(status, dict) and isinstance(status.get("url"), str):
        return urlsplit(status["url"]).hostname
    return None


def _client(base_url: str):
    from mastodon import Mastodon
    return Mastodon(api_base_url=base_url, access_token=secret("MASTODON_ACCESS_TOKEN"),
                    ratelimit_method="pace", request_timeout=30, version_check_mode="none")


def poll_events(params: Params, interval_s: float = 5.0, stop=lambda: False) -> Iterator[dict]:
    """REST polling of `timelines/public` (or `tag/NAME` when source.timeline is `tag:NAME`) with `min_id`
    pagination, oldest first; Mastodon.py paces requests by the rate-limit headers."""
    from mastodon import MastodonError
    clients = {url: _client(url) for url in params.source.instances}
    since: dict[str, str | None] = {url: None for url in clients}
    while not stop():
        for url, api in clients.items():
            host = urlsplit(url).hostname or url
            try:
                if params.source.timeline.startswith("tag:"):
                    page = api.timeline_hashtag(params.source.timeline[4:], min_id=since[url], limit=40)
                else:
                    page = api.timeline_public(min_id=since[url], limit=40,
                                               local=params.source.timeline == "public:local")
            except MastodonError as exc:
                log.warning("poll %s failed: %s", url, exc)
                continue
            for status in sorted(page, key=lambda s: int(s["id"])):
                since[url] = str(status["id"])
                yield {"event": "update", "instance": host, "data": _plain(status)}
        time.sleep(interval_s)


def _plain(obj):
    """Mastodon.py's AttribAccessDict/datetime objects -> plain JSON-able values."""
    return json.loads(json.dumps(obj, default=lambda o: o.isoformat() if hasattr(o, "isoformat") else str(o)))


def stream_events(params: Params) -> Iterator[dict]:
    """Mastodon streaming API (needs a user access token since Mastodon 4.2)."""
    if not secret("MASTODON_ACCESS_TOKEN"):
        raise SourceError("source.kind=stream needs a user access token in $MASTODON_ACCESS_TOKEN (Mastodon 4.2+ "
                          "refuses anonymous and app tokens); without one use source.kind=poll")
    import queue
    import threading
    from mastodon import StreamListener
    q: queue.Queue = queue.Queue(maxsize=10000)

    class _Listener(StreamListener):
        def __init__(self, host):
            self.host = host

        def on_update(self, status):
            q.put({"event": "update", "instance": self.host, "data": _plain(status)})

        def on_status_update(self, status):
            q.put({"event": "status.update", "instance": self.host, "data": _plain(status)})

        def on_delete(self, status_id):
            q.put({"event": "delete", "instance": self.host, "data": str(status_id)})

    for url in params.source.instances:
        api = _client(url)
        host = urlsplit(url).hostname or url
        timeline = params.source.timeline
        if timeline.startswith("tag:"):
            target = lambda api=api, host=host: api.stream_hashtag(timeline[4:], _Listener(host), reconnect_async=True)
        else:
            target = lambda api=api, host=host: api.stream_public(_Listener(host), local=timeline == "public:local",
                                                                  reconnect_async=True)
        threading.Thread(target=target, daemon=True, name=f"stream-{host}").start()
    while True:
        yield q.get()


def source_events(params: Params) -> Iterable[dict]:
    kind = params.source.kind
    if kind == "sample":
        return sample_events(params)
    if kind == "replay":
        if not params.source.replay_path:
            raise SourceError("source.kind=replay needs source.replay_path")
        return events_from_file(params.path(params.source.replay_path))
    if kind == "poll":
        return poll_events(params)
    return stream_events(params)


def ingest(events: Iterable[dict], publisher, params: Params, *, max_toots: int | None = None,
           duration_s: float | None = None, pseudonym_key: bytes | None = None, progress_every: float = 10.0,
           source: str = "sample") -> IngestStats:
    """Normalise, filter and publish events until they run out, `max_toots`, `duration_s` or SIGINT/SIGTERM.

    The producer is flushed before returning (also on a signal), so every counted toot was acknowledged.
    """
    stats = IngestStats()
    stopping = []
    handlers = {}

    def _stop(signum, _frame):
        stopping.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            handlers[sig] = signal.signal(sig, _stop)
        except ValueError:  # not the main thread
            pass
    t0 = last = time.monotonic()
    try:
        for e in events:
            if stopping or (max_toots is not None and stats.read >= max_toots) or \
                    (duration_s is not None and time.monotonic() - t0 >= duration_s):
                break
            stats.read += 1
            try:
                if e.get("event") != "delete" and isinstance(e.get("data"), (str, bytes)):
                    e = {**e, "data": _decode(e["data"])}
                rec = normalize_event(e.get("event"), e.get("data"), e.get("instance") or "unknown",
                                      pseudonym_key=pseudonym_key)
            except BadPayload as exc:
                publisher.send_dead_letter(e.get("data"), str(exc), f"{source}:{e.get('instance')}")
                stats.dead_letters += 1
                continue
            if rec["event"] == "delete":
                publisher.send_record(rec)
                stats.deletes += 1
                continue
            if params.filters.respect_opt_out and opted_out(e["data"].get("account") or {}):
                stats.opted_out += 1
                continue
            reason = filter_reason(rec, params.filters)
            if reason:
                stats.filtered[reason] += 1
                continue
            publisher.send_record(rec)
            stats.published += 1
            now = time.monotonic()
            if now - last >= progress_every:
                last = now
                log.info("ingest: %d read, %.0f toots/s, %d published, %d filtered, %d dead letters",
                         stats.read, stats.read / (now - t0), stats.published, sum(stats.filtered.values()),
                         stats.dead_letters)
    finally:
        publisher.flush()
        stats.seconds = time.monotonic() - t0
        for sig, h in handlers.items():
            signal.signal(sig, h)
    return stats


def _decode(data):
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadPayload(f"malformed JSON: {exc}") from None
