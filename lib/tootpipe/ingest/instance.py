"""What talking to a Mastodon instance takes, below the feeds: errors (fatal or worth a retry), backoff, status id
order, the de-duplication window, and where an access token may be sent.

Guarantees: :func:`token_for` hands the token only to the instance that issued it, only over https (plain http
only to a loopback host), and for polling only when asked; :func:`fatal` is true for the errors a retry cannot fix
(401/403/404), so they are never retried forever.
"""
from __future__ import annotations

import ipaddress
import json
import random
import socket
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from tootpipe.core.errors import SourceError

__all__ = ["SourceError", "Backoff", "FeedSettings", "FeedStats", "status_id_key", "advances", "Seen", "fatal",
           "unknown_host", "abort", "plain", "token_for", "streaming_base", "bounded_session"]


class Backoff:
    """Exponential backoff with "equal jitter": the n-th delay lies in [d/2, d], d = min(cap, base * 2**n)."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None):
        self.base_s, self.cap_s, self.n = base_s, cap_s, 0
        self.rng = rng or random.Random()

    def next(self) -> float:
        d = min(self.cap_s, self.base_s * 2 ** self.n)
        self.n += 1
        return d / 2 + self.rng.random() * d / 2

    def reset(self) -> None:
        self.n = 0


@dataclass
class FeedSettings:
    timeline: str = "public"          # public | public:local | tag:NAME
    watchdog_s: float = 60.0
    reconnect_base_s: float = 1.0
    reconnect_max_s: float = 60.0
    poll_interval_s: float = 5.0
    request_timeout_s: float = 30.0
    page_size: int = 40
    max_line_bytes: int = 4 << 20    # one event-stream line
    max_event_bytes: int = 4 << 20   # one event's data (a status is tens of KB)
    max_page_bytes: int = 32 << 20   # one REST body, after decompression (40 statuses)


@dataclass
class FeedStats:
    connects: int = 0
    reconnects: int = 0
    watchdog_fires: int = 0
    gap_filled: int = 0
    duplicates_dropped: int = 0
    errors: int = 0
    last_error: str | None = None
    events: int = 0
    oversized: int = 0               # lines, events or REST bodies over their bound (cut, to the dead letters)
    by_kind: dict = field(default_factory=dict)
    resumed_from: str | None = None  # after a restart: the newest id that was already in the topic
    recovered: int = 0               # statuses filled in over REST since it


def status_id_key(status_id) -> tuple:
    """Sort key of Mastodon status ids (numeric snowflakes, or opaque strings on other servers)."""
    s = str(status_id)
    return (0, int(s)) if s.isdigit() else (1, len(s), s)


def advances(cursor: str | None, status_id) -> bool:
    """Whether a status's `status_id` moves the gap-fill cursor (the newest id seen) past `cursor`: a string or an
    integer (not a boolean, not blank) of the cursor's kind (numeric snowflakes, or opaque strings on servers that
    use them) that sorts after it. An id of another kind or type (`true`, `"zzz"` among snowflakes, from a broken or
    hostile server) never does: it would sort after every snowflake and make each later gap-fill ask for statuses
    newer than it, so that none came back."""
    if isinstance(status_id, bool) or not isinstance(status_id, (str, int)) or not str(status_id).strip():
        return False
    new = status_id_key(status_id)
    return cursor is None or (new[0] == status_id_key(cursor)[0] and new > status_id_key(cursor))


class Seen:
    """The last `size` status ids: enough to drop the overlap between gap-fill and a new connection."""

    def __init__(self, size: int = 20000):
        self.order: deque = deque(maxlen=size)
        self.ids: set = set()

    def add(self, key) -> bool:
        if key in self.ids:
            return False
        if len(self.order) == self.order.maxlen:
            self.ids.discard(self.order[0])
        self.order.append(key)
        self.ids.add(key)
        return True


def fatal(exc: BaseException) -> bool:
    """True for errors a retry cannot fix: a refused token, a forbidden or missing timeline (HTTP 401/403/404)."""
    from mastodon import (MastodonAPIError, MastodonNetworkError, MastodonNotFoundError,  # lazy: mastodon
                          MastodonUnauthorizedError)
    if isinstance(exc, (SourceError, MastodonUnauthorizedError, MastodonNotFoundError)):
        return True
    if isinstance(exc, MastodonAPIError) and len(exc.args) > 1 and exc.args[1] in (401, 403, 404):
        return True
    # a refused streaming connection is reported with the reason phrase only
    return isinstance(exc, MastodonNetworkError) and any(w in str(exc) for w in ("Unauthorized", "Forbidden"))


def unknown_host(exc: BaseException) -> bool:
    """A failed DNS look-up (the host name does not resolve), anywhere in the exception's chain."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, socket.gaierror) or "NameResolutionError" in type(exc).__name__ or \
                "Name or service not known" in str(exc) or "nodename nor servname" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__ or (exc.args[0] if exc.args and isinstance(exc.args[0], BaseException)
                                                    else None)
        seen += 1
    return False


def abort(response) -> None:
    """Wake a reader blocked on this response: shut the socket down (closing alone does not interrupt recv)."""
    try:
        response.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)
        return
    except Exception:  # noqa: BLE001 - already closed or a different transport: close it instead
        pass
    try:
        response.close()
    except Exception:  # noqa: BLE001
        pass


def plain(obj):
    """Mastodon.py's AttribAccessDict/datetime objects -> plain JSON-able values."""
    return json.loads(json.dumps(obj, default=lambda o: o.isoformat() if hasattr(o, "isoformat") else str(o)))


def _origin(url: str) -> tuple[str, str, int | None]:
    u = urlsplit(url.rstrip("/"))
    return (u.scheme.lower(), (u.hostname or "").lower(), u.port)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_for(instance: str, kind: str, token: str | None, token_instance: str | None,
              poll_with_token: bool = False) -> str | None:
    """The access token to send to `instance`, or None. A token goes only to the instance that issued it
    (`token_instance`), only over https (http only to a loopback host, for tests), and for polling only when
    `poll_with_token` (public timelines need none). Raises SourceError for a token bound to an http instance."""
    if not token or (kind == "poll" and not poll_with_token):
        return None
    if not token_instance:
        raise SourceError("a Mastodon access token is set but not the instance that issued it: set "
                          "$MASTODON_BASE_URL (or source.token_instance), so the token is never sent elsewhere")
    scheme, host, _ = _origin(token_instance)
    if scheme != "https" and not (scheme == "http" and _loopback(host)):
        raise SourceError(f"refusing to send the access token over {scheme or 'no scheme'}:// to {host}: "
                          "use the instance's https:// address")
    return token if _origin(instance) == _origin(token_instance) else None


def streaming_base(instance: str, named: str | None) -> str:
    """Where to stream `instance` with its access token: the streaming server its `/api/v1/instance` names
    (`urls.streaming_api`, wss:// read as https://), only when that is the instance itself or a host under its
    domain (mastodon.social streams from streaming.mastodon.social) and over https (http only on loopback, for
    tests); SourceError for any other host, which would receive the token."""
    scheme, host, port = _origin(instance)
    if not named:
        return instance.rstrip("/")
    u = urlsplit(named.strip())
    sch = {"wss": "https", "ws": "http"}.get(u.scheme.lower(), u.scheme.lower())
    other = (u.hostname or "").lower()
    if sch not in ("https", "http") or not other:
        raise SourceError(f"{host} names {named!r} as its streaming server, which is no https:// address: the "
                          "access token is not sent there")
    if other != host and not other.endswith("." + host):
        raise SourceError(f"{host} names {other} as its streaming server: the access token goes only to the "
                          f"instance that issued it ({host}), so it is not streamed from there; poll instead "
                          "(source.kind: poll)")
    if sch != "https" and not _loopback(other):
        raise SourceError(f"refusing to send the access token over {sch}:// to {other}, the streaming server of "
                          f"{host}")
    return f"{sch}://{u.netloc}"


def bounded_session(max_bytes: int):
    """A requests.Session whose responses hold at most `max_bytes` of body, counted as it is read and after
    decompression (a gzip bomb stops at the bound too); a body over it closes the connection and raises
    BodyTooLarge (a requests ConnectionError: the feed backs off and tries again, like any network error).
    Streamed responses (the event stream, read with its own bounds) pass as they are."""
    class BodyTooLarge(requests.exceptions.ConnectionError):
        pass

    class BoundedSession(requests.Session):
        def request(self, method, url, **kwargs):
            if kwargs.get("stream"):
                return super().request(method, url, **kwargs)
            response = super().request(method, url, stream=True, **kwargs)
            body = bytearray()
            for chunk in response.iter_content(65536):  # decoded: gzip is counted as it inflates
                body += chunk
                if len(body) > max_bytes:
                    response.close()
                    raise BodyTooLarge(f"{urlsplit(url).hostname} sent a body over {max_bytes:,} bytes "
                                       "(source.max_page_bytes): cut off")
            response._content, response._content_consumed = bytes(body), True
            return response
    return BoundedSession()
