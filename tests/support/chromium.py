"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol with websocket-client.

``Browser`` starts Chromium on a fresh profile with ``--remote-debugging-port=0``, reads the port
Chromium chose from the profile's ``DevToolsActivePort`` file, and attaches to its page. ``Page``
sends commands and records every event: console messages, uncaught exceptions, log entries (CSP
violations land there) and network requests, so a test can assert that a page loaded nothing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import websocket

CHROMIUM_NAMES = ("chromium", "chromium-browser")
INSTALL_HINT = "apt-get install -y chromium"


def executable() -> str:
    """The Chromium binary; a missing one fails the test with the command that installs it."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(f"headless Chromium is not installed; install it with: sudo {INSTALL_HINT}")


class Page:
    """One page target: ``call`` a DevTools method, ``wait_for`` an event; events are kept in order."""

    def __init__(self, url: str):
        self._socket = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self._next_id = 0
        self.events: list[dict] = []

    def close(self) -> None:
        self._socket.close()

    def _receive(self) -> dict:
        message = json.loads(self._socket.recv())
        if "method" in message:
            self.events.append(message)
        return message

    def call(self, method: str, **params) -> dict:
        self._next_id += 1
        ident = self._next_id
        self._socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = self._receive()
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        seen = len(self.events)
        for event in self.events[:seen]:
            if event["method"] == method:
                return event
        while time.monotonic() < deadline:
            self._socket.settimeout(max(deadline - time.monotonic(), 0.1))
            message = self._receive()
            if message.get("method") == method:
                return message
        raise AssertionError(f"no {method} within {timeout} s")

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression in the page; an exception fails the test."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) in the middle of the element ``selector``."""
        box = self.evaluate(f"(function () {{ var e = document.querySelector({json.dumps(selector)}); "
                            "e.scrollIntoView({block: 'center'}); var r = e.getBoundingClientRect(); "
                            "return [r.left + r.width / 2, r.top + r.height / 2]; }())")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, path: str) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(base64.b64decode(data))

    def named(self, *methods: str) -> list[dict]:
        return [event for event in self.events if event["method"] in methods]


class Browser:
    """A headless Chromium process on a throw-away profile; a context manager."""

    def __init__(self, width: int = 1280, height: int = 1000):
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        argv = [executable(), "--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--metrics-recording-only", "--disable-dev-shm-usage",
                f"--user-data-dir={self._profile}", "--remote-debugging-port=0", f"--window-size={width},{height}",
                "about:blank"]
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self._process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
        self.port = self._port()

    def _port(self) -> int:
        marker = os.path.join(self._profile, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AssertionError(f"chromium exited: {self._process.stderr.read().decode(errors='replace')[-2000:]}")
            try:
                with open(marker, encoding="ascii") as handle:
                    first = handle.readline().strip()
                if first:
                    return int(first)
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("chromium did not open its DevTools port within 30 s")

    def page(self) -> Page:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
        with opener.open(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        target = next(item for item in targets if item["type"] == "page")
        return Page(target["webSocketDebuggerUrl"])

    def close(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
