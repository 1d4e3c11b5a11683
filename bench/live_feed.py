"""A Mastodon instance that keeps posting, for the chaos soak's live source: the fake server of the tests
(tests/fake_mastodon.py) serving statuses published at a fixed rate on its streaming API and its public timeline
(REST, what the client gap-fills from after a reconnect), with edits, deletes, hostile events on the stream only,
and stalls (a stream connection that goes silent while the timeline grows).

What it published is the expectation: every status not deleted, each at its newest content. Mastodon's API lists
statuses, not edits or deletes: an edit or a delete that reached no live connection (sent while the stream was
stalled, or to an ingest killed before it acknowledged) cannot come back by gap-fill, here as on a real instance.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fake_mastodon import FakeMastodon  # noqa: E402

FIRST_ID = 110_000_000_000_000_000
EDIT_EVERY, DELETE_EVERY = 50, 97  # every 50th status edits an earlier one, every 97th deletes one


def stamp() -> str:
    """Now, as Mastodon writes it: to the millisecond (an edit 0.1 s after its status is newer, as the sink asks)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hostile_events(n: int) -> list[tuple]:
    """Stream steps no instance should send; none of them is a status the pipeline may store."""
    nested = '{"id": "h%d", "a": %s}' % (n, "[" * 2000 + "]" * 2000)
    return [("raw", b"event: update\ndata: " + b"z" * (5 << 20) + b"\n\n"),  # a line over max_line_bytes
            ("event", "update", nested),                                      # 2,000 deep
            ("event", "update", {"id": True, "created_at": 5, "uri": ["not", "a", "uri"]}),  # wrong types
            ("event", "update", "\x00" * 32),                                 # NULs, not JSON
            ("event", "update", '{"id": "h%d", "content": "truncated' % n)]   # cut short


class LiveFeed:
    """Statuses at `rate` per second into `fake` (its timeline and every open stream connection)."""

    def __init__(self, rate: float) -> None:
        self.fake = FakeMastodon()
        self.fake.default_connection = [("live", self)]
        self.rate, self.events, self.cond = rate, [], threading.Condition()
        self.next_id, self.stalled_until, self.stopped, self.hostile_sent = FIRST_ID, 0.0, False, 0
        self.latest: dict[str, str] = {}  # uri -> newest content of each status not deleted
        self.deleted: set[str] = set()
        self.edits = 0
        self.opened = 0  # stream connections that have started serving (what is posted from then on, they send)
        self.by_id: dict[int, dict] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return self.fake.url

    def ingest_env(self) -> dict:
        """The environment of a `tootpipe ingest` that streams from this instance: its token, sent only to it."""
        return {**os.environ, "MASTODON_ACCESS_TOKEN": self.fake.good_token, "MASTODON_BASE_URL": self.url}

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Post nothing more (the open connections stay, with heartbeats)."""
        self.stopped = True
        self.thread.join(30)

    def close(self) -> None:
        self.stopped = True
        self.fake.close()

    def stall(self, seconds: float) -> None:
        """Every stream connection goes silent (no event, no heartbeat) for `seconds`; the timeline goes on."""
        self.stalled_until = time.monotonic() + seconds

    def hostile(self) -> int:
        """Send the hostile steps on the stream; how many."""
        steps = hostile_events(self.next_id)
        self._emit(steps)
        self.hostile_sent += len(steps)
        return len(steps)

    # -- the publisher -------------------------------------------------------------------------------------------
    def _status(self, i: int) -> dict:
        user = f"user{i % 50}"
        now = stamp()
        return {"id": str(i), "created_at": now, "in_reply_to_id": None, "in_reply_to_account_id": None,
                "sensitive": False, "spoiler_text": "", "visibility": "public", "language": "en",
                "uri": f"{self.url}/users/{user}/statuses/{i}", "url": f"{self.url}/@{user}/{i}",
                "content": f"<p>chaos toot {i} #chaos</p>", "reblog": None, "edited_at": None,
                "account": {"id": str(i % 50 + 1), "username": user, "acct": user, "display_name": user,
                            "discoverable": True, "indexable": True, "bot": False, "note": "", "fields": [],
                            "created_at": "2026-01-01T00:00:00.000Z"},
                "media_attachments": [], "mentions": [], "tags": [{"name": "chaos"}], "emojis": []}

    def _run(self) -> None:
        start, n = time.monotonic(), 0
        while not self.stopped:
            n += 1
            i = self.next_id
            self.next_id += 1
            status = self._status(i)
            self.by_id[i] = status
            with self.fake.lock:
                self.fake.store.append(status)
            self.latest[status["uri"]] = status["content"]
            steps = [("event", "update", status)]
            if n % EDIT_EVERY == 0:
                steps.append(self._edit(i - 25))
            if n % DELETE_EVERY == 0:
                steps += self._delete(i - 40)
            self._emit(steps)
            time.sleep(max(0.0, start + n / self.rate - time.monotonic()))

    def _edit(self, i: int) -> tuple:
        old = self.by_id.get(i)
        if old is None:
            return ("heartbeat",)
        edited = {**old, "content": old["content"].replace("</p>", " (edited)</p>"),
                  "edited_at": stamp()}
        self.by_id[i] = edited
        self.edits += 1
        with self.fake.lock:
            self.fake.store[self.fake.store.index(old)] = edited  # the timeline shows the newest version
        self.latest[edited["uri"]] = edited["content"]
        return ("event", "status.update", edited)

    def _delete(self, i: int) -> list[tuple]:
        old = self.by_id.pop(i, None)
        if old is None:
            return []
        with self.fake.lock:
            self.fake.store.remove(old)
        self.latest.pop(old["uri"], None)
        self.deleted.add(old["uri"])
        return [("event", "delete", str(i))]

    def _emit(self, steps: list[tuple]) -> None:
        with self.cond:
            self.events += steps
            self.cond.notify_all()

    # -- one stream connection (called by the fake server's handler thread) --------------------------------------
    def serve(self, w, newline: bytes, closing: threading.Event) -> None:
        with self.cond:
            cursor, quiet_since = len(self.events), time.monotonic()
            self.opened += 1
        while not closing.is_set():
            if time.monotonic() < self.stalled_until:  # hold the socket, send nothing
                closing.wait(0.2)
                cursor = len(self.events)  # what was posted meanwhile comes back by gap-fill only
                continue
            with self.cond:
                self.cond.wait_for(lambda: len(self.events) > cursor or closing.is_set(), 1.0)
                batch, cursor = self.events[cursor:], len(self.events)
            if not batch and time.monotonic() - quiet_since >= 1.0:
                w.write(b":thump" + newline)
                w.flush()
                quiet_since = time.monotonic()
            for step in batch:
                self.fake.write_step(w, step)
            if batch:
                w.flush()
                quiet_since = time.monotonic()


if __name__ == "__main__":  # a look at it by hand: python bench/live_feed.py, then curl its streaming URL
    f = LiveFeed(5)
    f.start()
    print(f.url + "/api/v1/streaming/public", json.dumps({"token": f.fake.good_token}))
    time.sleep(3600)
