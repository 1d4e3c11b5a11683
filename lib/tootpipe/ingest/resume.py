"""Where live ingest resumes: per instance, the newest status id below which every record of that instance is in
the topic, as the producer's acknowledgements recorded it (:class:`AckedThrough`, a file in the state folder);
for an instance without such a record, the newest id the topic holds.

Guarantees: with the record, no status is skipped by a restart, whatever died in flight (kill -9, a broker outage
that outlived the process): what was not acknowledged lies above the resume point and is fetched again over REST.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from pathlib import Path

from tootpipe.core.errors import KafkaUnavailable
from tootpipe.core.paths import write_atomic
from tootpipe.ingest.instance import advances, status_id_key
from tootpipe.kafka.admin import end_offsets, start_offsets
from tootpipe.kafka.reader import read_range

__all__ = ["newest_status_ids", "AckedThrough", "load_acked_through", "resume_points"]

log = logging.getLogger(__name__)


def newest_status_ids(bootstrap: str, topic: str, hosts: list[str], tail: int = 2000,
                      max_tail: int = 50_000) -> dict[str, str]:
    """Per instance host, the newest status id already in the topic (the topic is the one source of truth for
    where ingest stopped). Reads the last `tail` messages of each partition, further back (up to `max_tail`) while
    some host is still unseen. Hosts never published are left out."""
    try:
        ends = end_offsets(bootstrap, topic)
    except KafkaUnavailable:
        return {}
    starts = start_offsets(bootstrap, topic, list(ends))
    found: dict[str, str] = {}
    done = {p: e for p, e in ends.items()}  # per partition: where the part already read begins
    while True:
        for p, e in ends.items():
            lo = max(starts[p], e - tail)
            for msg in read_range(bootstrap, topic, p, lo, done[p]):
                try:
                    rec = json.loads(msg.value())
                except (TypeError, ValueError):
                    continue
                if not isinstance(rec, dict) or rec.get("event") not in ("update", "status.update"):
                    continue
                host, sid = rec.get("instance"), rec.get("id")
                if host in hosts and isinstance(sid, str) and advances(found.get(host), sid):
                    found[host] = sid
            done[p] = lo
        if set(hosts) <= set(found) or tail >= max_tail or all(done[p] <= starts[p] for p in ends):
            return found
        tail *= 4


class AckedThrough:
    """Per instance, the newest status id below which every record of that instance sent through a
    :class:`~tootpipe.kafka.producer.Publisher` has been acknowledged by the broker: where a restart resumes
    without a hole. A record still in flight when the process dies (kill -9, a broker outage) lies above it, so the
    restart fetches it again over REST (at-least-once: the stream and the backfill de-duplicate on `uri`). Ids sent
    out of order (gap-fill publishes older statuses after newer ones) are handled: an acknowledged id counts only
    once nothing older of its instance is in flight, and nothing at or above a held id (:meth:`hold`: a gap still
    being filled). :meth:`save` writes the figures to a file atomically. Thread-safe (gap fillers hold from their
    own threads)."""

    def __init__(self, path: Path | None = None, every_s: float = 5.0, start: dict[str, str] | None = None) -> None:
        """`start`: where this run resumed, per instance (it starts there, and says so in the file at once)."""
        self.path, self.every_s = path, every_s
        self._inflight: dict[str, Counter] = {}
        self._acked: dict[str, list[str]] = {}
        self._through: dict[str, str] = dict(start or {})
        self._floor: dict[str, str] = {}  # per instance without a point yet: just below the lowest id sent
        self._saved = float("-inf")  # the first acknowledgement is saved at once
        self._lock = threading.RLock()
        if start:
            self.save()

    def sent(self, host: str, sid: str) -> None:
        """A record of `host` with status id `sid` goes out. Until an instance has a point, one just below the
        lowest id sent is its point (numeric ids), saved at once: a kill -9 before any acknowledgement must not
        leave a restart only the topic's newest id, which skips what was lost in flight in another partition."""
        floor = None
        with self._lock:
            self._inflight.setdefault(host, Counter())[sid] += 1
            if host not in self._through and sid.isdigit() and int(sid) > 0:
                below = str(int(sid) - 1)
                if host not in self._floor or status_id_key(below) < status_id_key(self._floor[host]):
                    self._floor[host] = floor = below
        if floor is not None and self.path is not None:
            self.save()

    def hold(self, host: str, sid: str) -> None:
        """Keep the resume point below `sid` until :meth:`release` (a gap after it is being filled)."""
        self.sent(host, sid)

    def release(self, host: str, sid: str) -> None:
        self._drop(host, sid)

    def failed(self, host: str, sid: str) -> None:
        """A send that never reached the producer's queue: it stays out of the figures, as it was never sent."""
        self._drop(host, sid)

    def acked(self, host: str, sid: str) -> None:
        self._drop(host, sid)
        with self._lock:
            self._acked.setdefault(host, []).append(sid)
        if self.path is not None and time.monotonic() - self._saved >= self.every_s:
            self.save()

    def _drop(self, host: str, sid: str) -> None:
        with self._lock:
            left = self._inflight[host]
            left[sid] -= 1
            if left[sid] <= 0:
                del left[sid]

    def through(self) -> dict[str, str]:
        """instance host -> the newest id below which every sent record of that host is acknowledged."""
        with self._lock:
            for host, acked in self._acked.items():
                flying = self._inflight.get(host)
                low = min(map(status_id_key, flying)) if flying else None
                for a in acked:  # an id of another kind (opaque among snowflakes) never moves it: see `advances`
                    if (low is None or status_id_key(a) < low) and advances(self._through.get(host), a):
                        self._through[host] = a
                self._acked[host] = [a for a in acked if low is not None and status_id_key(a) >= low]
            return {**self._floor, **self._through}

    def save(self) -> None:
        """The figures into :attr:`path` (whole or not at all), merged over what an earlier run recorded."""
        self._saved = time.monotonic()
        if self.path is not None:
            merged = {**load_acked_through(self.path), **self.through()}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(merged, indent=1))


def load_acked_through(path: Path) -> dict[str, str]:
    """What :meth:`AckedThrough.save` recorded ({} when nothing was)."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {h: s for h, s in data.items() if isinstance(h, str) and isinstance(s, str)}


def resume_points(bootstrap: str, topic: str, hosts: list[str], recorded: Path) -> dict[str, str]:
    """Per instance, where live ingest resumes: the id below which every record of it is in the topic, as the
    last run recorded (:class:`AckedThrough`); for an instance it never recorded (another machine, an older
    tootpipe), the newest id the topic holds (:func:`newest_status_ids`: a record lost in flight beside newer ones
    of another partition would stay lost; logged)."""
    safe = {h: s for h, s in load_acked_through(recorded).items() if h in hosts}
    rest = [h for h in hosts if h not in safe]
    scanned = newest_status_ids(bootstrap, topic, rest) if rest else {}
    if scanned:
        log.warning("no record of what was acknowledged for %s: resuming after the newest id in the topic",
                    ", ".join(sorted(scanned)))
    return {**scanned, **safe}
