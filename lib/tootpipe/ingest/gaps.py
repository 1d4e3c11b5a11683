"""Gap-fill over REST beside the live stream: what an instance posted while a feed was not connected.

Guarantees: a gap is (since, until]: from the newest status id seen before the connection was lost (or a silence
began) to the newest id the timeline held when the new connection showed it was live (its first event or
heartbeat); everything posted after that comes on the new stream, which is read meanwhile. A fill slower than
the instance's traffic (Mastodon.py paces REST calls to the rate limit, about one page of 40 a second) therefore
never holds up the stream nor trips its watchdog. Gaps are filled oldest first, each to its end whatever happens
to the connection meanwhile, from where the last page left off; a failed request is retried with backoff, and only
a fatal error (401/403) or stop ends the filler. While a gap is open its start is held in the resume tracker
(`holds`, :class:`tootpipe.ingest.resume.AckedThrough`), so that a restart resumes at or before it.
"""
from __future__ import annotations

import logging
import threading

from requests.exceptions import RequestException
from urllib3.exceptions import HTTPError

from tootpipe.ingest.instance import Backoff, SourceError

__all__ = ["GapFiller"]

log = logging.getLogger(__name__)


class GapFiller:
    """The open gaps of one :class:`~tootpipe.ingest.live.InstanceFeed`, filled by a thread of its own."""

    def __init__(self, feed, holds=None) -> None:
        self.feed, self.holds = feed, holds
        self.pending: list[list] = []  # [held id, since, until], oldest first; `since` follows the pages read
        self.cond = threading.Condition()
        self.backoff = Backoff(feed.s.reconnect_base_s, feed.s.reconnect_max_s)
        self.thread: threading.Thread | None = None

    def open(self, since: str, until: str | None) -> None:
        """A gap after `since` up to `until` (None: to the end of the timeline)."""
        if self.holds is not None:
            self.holds.hold(self.feed.host, since)
        with self.cond:
            self.pending.append([since, since, until])
            self.cond.notify()
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, daemon=True, name=f"gap-fill-{self.feed.host}")
                self.thread.start()

    def _run(self) -> None:
        """:meth:`_fill`, never dying silently: an unexpected error is the feed's fatal error (ingest stops, and a
        restart resumes below every gap still open)."""
        try:
            self._fill()
        except Exception as exc:  # noqa: BLE001 - reported, not swallowed
            log.exception("%s: the gap-fill failed", self.feed.host)
            self.feed.fatal = SourceError(f"{self.feed.host}: the gap-fill failed: {type(exc).__name__}: {exc}")

    def _fill(self) -> None:
        from mastodon import MastodonError  # lazy: mastodon
        while not self.feed.stop.is_set():
            with self.cond:
                if not self.cond.wait_for(lambda: self.pending or self.feed.stop.is_set(), 1.0) or not self.pending:
                    continue
                gap = self.pending[0]
            try:
                n = self.feed.fetch_newer(gap[1], gap[2], on_page=lambda newest: gap.__setitem__(1, newest))
            except (MastodonError, RequestException, HTTPError, OSError, ValueError) as exc:
                if self.feed._failed(exc, "gap-fill", self.backoff):
                    return
                continue
            self.backoff.reset()
            with self.cond:
                self.pending.pop(0)
            if self.holds is not None:
                self.holds.release(self.feed.host, gap[0])
            if not self.feed._resumed(n):  # a restart's first fill is logged as such
                log.info("%s: %d statuses filled in over REST since id %s", self.feed.host, n, gap[0])
