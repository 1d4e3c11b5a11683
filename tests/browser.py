"""Headless Chromium driven over the DevTools protocol (websocket-client): load a page from disk, collect console
errors, uncaught exceptions and failed requests, save a full-page screenshot."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--mute-audio", "--hide-scrollbars",
         "--window-size=1280,900", "--remote-debugging-port=0", "--remote-allow-origins=*"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


@dataclass
class PageReport:
    url: str
    console_errors: list = field(default_factory=list)
    failed_requests: list = field(default_factory=list)
    requests: int = 0
    title: str = ""
    screenshot: Path | None = None


class Browser:
    def __init__(self, binary: str):
        self.profile = tempfile.mkdtemp(prefix="tootpipe-chromium-")
        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and port is None:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line or "")
            if m:
                port = int(m.group(1))
            elif not line and self.proc.poll() is not None:
                break
        if port is None:
            self.close()
            raise RuntimeError("chromium did not start its DevTools endpoint")
        self.port = port
        self._id = 0

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def load(self, path: Path | str, screenshot: Path | None = None, timeout: float = 30,
             steps: tuple = ()) -> PageReport:
        """Load a file (a Path) or a URL (a str); then each of `steps`, an (action, condition) pair of JavaScript
        expressions: the action is run once ("" for none), then the condition polled until it is true (a
        TimeoutError naming it when it stays false past `timeout`)."""
        import websocket
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank",
                                                           method="PUT")) as r:
            target = json.loads(r.read())
        ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=timeout)
        report = PageReport(url=path if isinstance(path, str) else path.resolve().as_uri())
        name = report.url.rsplit("/", 1)[-1]
        pending: dict = {}

        def send(method, **params):
            self._id += 1
            ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
            return self._id

        def wait_for(pred, until):
            while time.monotonic() < until:
                msg = json.loads(ws.recv())
                handle(msg)
                if pred(msg):
                    return msg
            raise TimeoutError(f"{name}: page did not finish loading")

        def handle(msg):
            m, p = msg.get("method"), msg.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                report.console_errors.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif m == "Runtime.exceptionThrown":
                report.console_errors.append(p["exceptionDetails"].get("text", "exception"))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                report.console_errors.append(p["entry"].get("text"))
            elif m == "Network.requestWillBeSent":
                report.requests += 1
                pending[p["requestId"]] = p["request"]["url"]
            elif m == "Network.loadingFailed" and not p.get("canceled"):
                report.failed_requests.append((pending.get(p["requestId"]), p.get("errorText")))
            elif m == "Network.responseReceived" and p["response"].get("status", 200) >= 400:
                report.failed_requests.append((p["response"]["url"], p["response"]["status"]))

        try:
            deadline = time.monotonic() + timeout
            for domain in ("Page", "Runtime", "Log", "Network"):
                i = send(f"{domain}.enable")
                wait_for(lambda msg, i=i: msg.get("id") == i, deadline)
            send("Page.navigate", url=report.url)
            wait_for(lambda msg: msg.get("method") == "Page.loadEventFired", deadline)
            # let late requests (images, fonts) settle
            settle = time.monotonic() + 1.0
            ws.settimeout(0.2)
            while time.monotonic() < settle:
                try:
                    handle(json.loads(ws.recv()))
                except websocket.WebSocketTimeoutException:
                    pass
            ws.settimeout(timeout)

            def evaluate(expression):
                i = send("Runtime.evaluate", expression=expression, returnByValue=True)
                return wait_for(lambda msg: msg.get("id") == i, time.monotonic() + timeout)["result"]["result"] \
                    .get("value")
            for action, condition in steps:
                if action:
                    evaluate(action)
                until = time.monotonic() + timeout
                while not evaluate(condition):
                    if time.monotonic() > until:
                        raise TimeoutError(f"{name}: still false after {timeout} s: {condition}")
                    time.sleep(0.25)
            i = send("Runtime.evaluate", expression="document.title", returnByValue=True)
            report.title = wait_for(lambda msg: msg.get("id") == i, deadline)["result"]["result"].get("value", "")
            if screenshot is not None:
                i = send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                data = wait_for(lambda msg: msg.get("id") == i, time.monotonic() + timeout)["result"]["data"]
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(data))
                report.screenshot = screenshot
        finally:
            ws.close()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/close/{target['id']}").close()
            except OSError:
                pass
        return report
