"""Reading a Mastodon event stream (server-sent events) with bounds, in chunks.

Guarantees: a line ends with LF or CRLF; no line and no event's data grows past its bound (`source.max_line_bytes`,
`max_event_bytes`): the head of it goes to the dead letters through the listener, the rest is skipped, the stream
goes on; the buffer is never copied per chunk; undecodable bytes raise the caller's malformed-event error.
"""
from __future__ import annotations

__all__ = ["read_events"]


def read_events(listener, response, malformed) -> None:
    """The events of `response` (an open text/event-stream), handed to `listener` (Mastodon.py's StreamListener
    protocol: `_parse_line`, `_dispatch`, plus `_oversized` and `feed.s` for the bounds). Reads whatever has arrived, up to 64 KiB at a time, into one growing buffer (a long line is not copied again for
    every chunk). Only complete events and heartbeats count as activity for the watchdog (a server dripping bytes
    that never make an event is dropped). A line or an event over its bound (`source.max_line_bytes`,
    `max_event_bytes`) is cut, passed on as raw text (a dead letter) and the rest of it skipped."""
    event, pending, skipping = {}, bytearray(), False
    max_line, max_event = listener.feed.s.max_line_bytes, listener.feed.s.max_event_bytes
    for chunk in iter(lambda: response.raw.read1(65536), b""):
        start = len(pending)
        pending += chunk
        if pending.find(b"\n", start) < 0:
            if len(pending) > max_line and not skipping:
                listener._oversized(bytes(pending[:max_line]), f"a line over {max_line:,} bytes")
                skipping, event = True, {"skip": True}
            if skipping:
                del pending[:]
            continue
        *lines, rest = pending.split(b"\n")
        pending = bytearray(rest)
        for raw in lines:
            if skipping:  # the end of a cut line; the event it belonged to is gone
                skipping = False
                continue
            if len(raw) > max_line:  # a long line that ended within the last chunk
                listener._oversized(bytes(raw[:max_line]), f"a line over {max_line:,} bytes")
                event = {"skip": True}
                continue
            try:  # an event-stream line ends with LF, CRLF (servers and proxies send both)
                line = raw.removesuffix(b"\r").decode("utf-8")
            except UnicodeDecodeError as err:
                raise malformed("Malformed UTF-8") from err
            if line == "":
                listener._dispatch(event)
                event = {}
                continue
            if event.get("skip"):  # the rest of an event cut for its size
                continue
            event = listener._parse_line(line, event)
            if len(event.get("data") or "") > max_event:
                listener._oversized(event["data"][:max_event], f"an event over {max_event:,} bytes")
                event = {"skip": True}
