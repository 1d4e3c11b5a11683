"""Where toots come from (sample, replay, REST poll, streaming) and the ingest loop that publishes them.

Every source yields events ``{"event", "instance", "data"}`` exactly as Mastodon sends them (``data`` is a Status
object, its JSON text, or a bare id for ``delete``). :func:`ingest` normalises, drops opted-out accounts and
filtered toots, and publishes: at-least-once into Kafka; anything malformed goes to the dead-letter topic and
never stops the loop.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlsplit

import orjson
from tqdm import tqdm

from tootpipe.core.config import Params, secret
from tootpipe.core.filters import filter_reason
from tootpipe.ingest.live import TICK, FeedSettings, SourceError, live_events
from tootpipe.ingest.normalize import BadPayload, normalize_event, opted_out, parse_sse
from tootpipe.ingest.sample import generate

__all__ = ["IngestStats", "events_from_file", "sample_events", "feed_settings", "source_events", "ingest", "paced",
           "publish_event", "SourceError"]

log = logging.getLogger(__name__)


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
    with open(p, "rb") as fh:
        head = fh.read(4096).lstrip()
        fh.seek(0)
        if head.startswith(b"["):
            for status in orjson.loads(fh.read()):
                yield {"event": "update", "instance": _instance_of(status) or instance, "data": status}
            return
        for line in fh:  # streamed: a recording larger than memory replays fine
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield {"event": "update", "instance": instance, "data": line.decode("utf-8", "replace").rstrip("\n")}
                continue
            if isinstance(obj, dict) and "event" in obj and "data" in obj:
                yield {"event": obj["event"], "instance": obj.get("instance") or instance, "data": obj["data"]}
            else:
                yield {"event": "update", "instance": _instance_of(obj) or instance, "data": obj}


def _instance_of(status) -> str | None:
    if isinstance(status, dict) and isinstance(status.get("url"), str):
        return urlsplit(status["url"]).hostname
    return None


def feed_settings(params: Params) -> FeedSettings:
    src = params.source
    return FeedSettings(timeline=src.timeline, watchdog_s=src.watchdog_s, reconnect_base_s=src.reconnect_base_s,
                        reconnect_max_s=src.reconnect_max_s, poll_interval_s=src.poll_interval_s,
                        request_timeout_s=src.request_timeout_s, max_line_bytes=src.max_line_bytes,
                        max_event_bytes=src.max_event_bytes, max_page_bytes=src.max_page_bytes)


def paced(events: Iterable[dict], rate: float | None) -> Iterator[dict]:
    """The events at no more than `rate` per second (a recording replayed at live speed); all at once when None."""
    if not rate:
        yield from events
        return
    t0 = time.monotonic()
    for i, e in enumerate(events):
        wait = t0 + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        yield e


def source_events(params: Params, resume_from: dict[str, str] | None = None, holds=None) -> Iterable[dict]:
    """The events of the configured source; a live source resumes each instance after `resume_from[host]`, its
    open gaps held in `holds` (see :func:`~tootpipe.ingest.live.live_events`)."""
    kind = params.source.kind
    if kind == "sample":
        return paced(sample_events(params), params.source.rate)
    if kind == "replay":
        if not params.source.replay_path:
            raise SourceError("source.kind=replay needs source.replay_path")
        return paced(events_from_file(params.path(params.source.replay_path)), params.source.rate)
    home = params.source.token_instance or os.environ.get("MASTODON_BASE_URL") or None
    return live_events(params.source.instances, kind, feed_settings(params), secret("MASTODON_ACCESS_TOKEN"),
                       token_instance=home.split(",")[0].strip() if home else None,
                       poll_with_token=params.source.poll_with_token, resume_from=resume_from, holds=holds)


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
    bar = _progress_bar(max_toots)
    try:
        for e in events:
            if e is TICK:
                e = None
            if stopping or (max_toots is not None and stats.read >= max_toots) or \
                    (duration_s is not None and time.monotonic() - t0 >= duration_s):
                break
            if e is None:
                continue
            stats.read += 1
            bar.update(1)
            try:
                publish_event(e, publisher, params, stats, pseudonym_key)
            except BadPayload as exc:
                raw = e.get("data") if isinstance(e, dict) else e
                where = e.get("instance") if isinstance(e, dict) else None
                publisher.send_dead_letter(raw, str(exc), f"{source}:{where}")
                stats.dead_letters += 1
            if max_toots is not None and stats.read >= max_toots:
                break  # now, not at the next event: a quiet feed may bring none for a long time
            now = time.monotonic()
            if now - last >= progress_every and bar.disable:  # periodic lines when no bar is drawn
                last = now
                log.info("ingest: %d read, %.0f toots/s, %d published, %d filtered, %d dead letters",
                         stats.read, stats.read / (now - t0), stats.published, sum(stats.filtered.values()),
                         stats.dead_letters)
    finally:
        bar.close()
        publisher.flush()
        stats.seconds = time.monotonic() - t0
        for sig, h in handlers.items():
            signal.signal(sig, h)
    return stats


def _progress_bar(total: int | None):
    """A progress bar on a terminal (disabled, and then a no-op, anywhere else: logs, notebooks, pipes)."""

    return tqdm(total=total, unit=" toots", desc="ingest", disable=not sys.stderr.isatty() or "ipykernel" in
                sys.modules, leave=False, mininterval=0.5)


def publish_event(e, publisher, params: Params, stats: IngestStats, pseudonym_key: bytes | None) -> None:
    """Normalise, check opt-out and filters, publish one event; BadPayload for anything unusable (the caller
    dead-letters it), including a record too large for the broker."""
    if not isinstance(e, dict):
        raise BadPayload(f"event is {type(e).__name__}, not an object")
    if e.get("event") != "delete" and isinstance(e.get("data"), (str, bytes)):
        e = {**e, "data": _decode(e["data"])}
    rec = normalize_event(e.get("event"), e.get("data"), e.get("instance") or "unknown", pseudonym_key=pseudonym_key)
    if rec["event"] == "delete":
        publisher.send_record(rec)
        stats.deletes += 1
        return
    if params.filters.respect_opt_out and opted_out(e["data"].get("account") or {}):
        stats.opted_out += 1
        return
    reason = filter_reason(rec, params.filters)
    if reason:
        stats.filtered[reason] += 1
        return
    publisher.send_record(rec)
    stats.published += 1


def _decode(data):
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:  # the standard parser accepts what orjson refuses but normalisation can clean (lone surrogates)
            return json.loads(data)
        except (ValueError, RecursionError):
            raise BadPayload(f"malformed JSON: {exc}") from None
