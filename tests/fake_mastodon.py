"""A local HTTP server that speaks Mastodon's wire format, for pointing the real Mastodon.py client at it.

- ``GET /api/v1/instance`` and ``/api/v2/instance``: enough for Mastodon.py to find the streaming base (itself).
- ``GET /api/v1/accounts/verify_credentials``: 200, or 401 when the token is not ``good-token``.
- ``GET /api/v1/timelines/public`` and ``/timelines/tag/NAME``: the statuses of ``store`` with id > ``min_id``
  (the oldest ``limit`` of them, newest first, as Mastodon does), with ``Link`` headers.
- ``GET /api/v1/streaming/public``: one scripted connection per request from ``connections`` (then
  ``default_connection``; ``("live", feed)`` serves what a bench/live_feed.py LiveFeed posts): a list of steps
  ``("event", name, data)``, ``("heartbeat",)``, ``("sleep", s)``, ``("silent",)`` (hold the socket open and
  send nothing), ``("raw", bytes)``, ``("post", statuses)`` (onto the timeline only), ``("drip", bytes, seconds)`` (a byte at a time), ``("close",)``; HTTP errors are scripted as ``("status", code)``.
- ``rest_errors``: status codes returned (in order) by the timeline endpoint before it answers normally; 429
  carries ``X-RateLimit-Reset`` one second ahead.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FakeMastodon:
    def __init__(self, store: list[dict] | None = None, connections: list[list[tuple]] | None = None,
                 rest_errors: list[int] | None = None, good_token: str = "good-token", newline: bytes = b"\n"):
        self.store = sorted(store or [], key=lambda s: int(s["id"]))
        self.lock = threading.Lock()    # held by whoever changes `store` while the server runs (bench/live_feed.py)
        self.connections = list(connections or [])
        self.rest_errors = list(rest_errors or [])
        self.good_token = good_token
        self.requests: list[tuple[str, int]] = []
        self.authorization: list[str | None] = []  # the Authorization header of every request
        self.junk: list = []            # items added once to the next timeline page (no id, not a status, ...)
        self.ignore_min_id = False      # a broken server: every page is the newest statuses, whatever min_id says
        self.rest_delay_s = 0.0         # each timeline page takes this long (an instance pacing its clients)
        self.rate_window_s = 300.0      # the rate limit's window: 300 requests per 5 minutes, as Mastodon's
        self.stream_connects = 0
        self.streaming_api: str | None = None  # what /api/v1/instance names as the streaming server (None: itself)
        self.newline = newline          # b"\r\n": a server (or a proxy) that ends its event-stream lines as HTTP does
        self.default_connection: list[tuple] = [("silent",)]  # the script of a connection beyond `connections`
        self.closing = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                fake._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- helpers ----------------------------------------------------------------------------------------------
    def _authorised(self, h) -> bool:
        return h.headers.get("Authorization", "") in ("", f"Bearer {self.good_token}")

    def _json(self, h, code: int, body, headers: dict | None = None):
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h):
        self.authorization.append(h.headers.get("Authorization"))
        path = urlsplit(h.path).path.rstrip("/")
        q = {k: v[-1] for k, v in parse_qs(urlsplit(h.path).query).items()}
        status = 200
        try:
            if path in ("/api/v1/instance", "/api/v2/instance"):
                streaming = self.streaming_api or self.url
                self._json(h, 200, {"uri": "127.0.0.1", "version": "4.3.0", "api_versions": {"mastodon": 2},
                                    "urls": {"streaming_api": streaming},
                                    "configuration": {"urls": {"streaming": streaming}}})
            elif path == "/api/v1/accounts/verify_credentials":
                status = 200 if h.headers.get("Authorization") == f"Bearer {self.good_token}" else 401
                self._json(h, status, {"id": "1", "username": "tester", "acct": "tester"} if status == 200
                           else {"error": "The access token is invalid"})
            elif path.startswith("/api/v1/timelines/"):
                status = self._timeline(h, q)
            elif path.startswith("/api/v1/streaming/"):
                status = self._stream(h)
            else:
                status = 404
                self._json(h, 404, {"error": "Record not found"})
        except (BrokenPipeError, ConnectionResetError):
            status = -1
        self.requests.append((path, status))

    def _timeline(self, h, q) -> int:
        if not self._authorised(h):
            self._json(h, 401, {"error": "The access token is invalid"})
            return 401
        time.sleep(self.rest_delay_s)
        if self.rest_errors:
            code = self.rest_errors.pop(0)
            headers = {}
            if code == 429:
                reset = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 1.5))
                headers = {"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
            self._json(h, code, {"error": f"HTTP {code}"}, headers)
            return code
        limit = int(q.get("limit", 20))
        with self.lock:
            newer = [s for s in self.store
                     if "min_id" not in q or self.ignore_min_id or int(s["id"]) > int(q["min_id"])]
        page = newer[:limit] if "min_id" in q else newer[-limit:]
        page = list(reversed(page)) + self.junk
        self.junk = []
        headers = {"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "299",
                   "X-RateLimit-Reset": time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                                        time.gmtime(time.time() + self.rate_window_s))}
        if page:
            base = f"{self.url}/api/v1/timelines/public"
            headers["Link"] = (f'<{base}?max_id={page[-1]["id"]}>; rel="next", '
                               f'<{base}?min_id={page[0]["id"]}>; rel="prev"')
        self._json(h, 200, page, headers)
        return 200

    def _stream(self, h) -> int:
        self.stream_connects += 1
        if not self._authorised(h):
            self._json(h, 401, {"error": "The access token is invalid"})
            return 401
        script = self.connections.pop(0) if self.connections else self.default_connection
        if script and script[0][0] == "status":
            self._json(h, script[0][1], {"error": "scripted"})
            return script[0][1]
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-store")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        w = h.wfile
        for step in script:
            kind = step[0]
            if kind in ("event", "raw", "heartbeat"):
                self.write_step(w, step)
                w.flush()
            elif kind == "live":  # what a LiveFeed (bench/live_feed.py) publishes, until the server closes
                step[1].serve(w, self.newline, self.closing)
            elif kind == "drip":  # one byte at a time, every step[2] s, never ending an event
                for b in step[1]:
                    if self.closing.is_set():
                        break
                    w.write(bytes([b]))
                    w.flush()
                    time.sleep(step[2])
            elif kind == "post":  # statuses appear on the timeline (not on this stream)
                with self.lock:
                    self.store = sorted(self.store + step[1], key=lambda s: int(s["id"]))
            elif kind == "sleep":
                time.sleep(step[1])
            elif kind == "silent":
                self.closing.wait(step[1] if len(step) > 1 else 30)
            elif kind == "close":
                break
        return 200

    def write_step(self, w, step: tuple) -> None:
        """An ("event", name, data), ("raw", bytes) or ("heartbeat",) step, unflushed."""
        if step[0] == "event":
            _, name, data = step
            payload = data if isinstance(data, str) else json.dumps(data)
            nl = self.newline
            w.write(f"event: {name}".encode() + nl + b"".join(
                b"data: " + line.encode() + nl for line in payload.split("\n")) + nl)
        elif step[0] == "raw":  # bytes as they are (a hostile or broken server)
            w.write(step[1])
        else:
            w.write(b":thump" + self.newline)
