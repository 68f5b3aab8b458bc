"""Open a report in headless Chromium and record what a reader would get.

Talks the DevTools protocol over a pipe (`--remote-debugging-pipe`: commands on fd 3, replies on
fd 4, JSON messages ending in NUL), so no client library and no open port are needed. For one
page it returns the visible text, the sections, how many highlighted spans are visible, console
errors and uncaught exceptions, every request made (a self-contained report makes none but its
own file), and optionally a full-page PNG screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ItauditError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# What a reader sees: section ids with their headings, and the highlighted spans that are visible.
_PROBE = """(() => {
  const visible = e => { const r = e.getBoundingClientRect(), s = getComputedStyle(e);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
  const marks = {};
  for (const m of document.querySelectorAll('mark')) {
    if (!visible(m)) continue;
    const k = m.className || 'plain';
    marks[k] = (marks[k] || 0) + 1;
  }
  const bg = {};
  for (const m of document.querySelectorAll('mark[class]')) bg[m.className] = getComputedStyle(m).backgroundColor;
  return JSON.stringify({
    sections: Array.from(document.querySelectorAll('section[id]')).map(s => [s.id, (s.querySelector('h2') || {}).innerText || '']),
    marks: marks, mark_colors: bg,
    text: document.body.innerText,
    closed_details: Array.from(document.querySelectorAll('details')).filter(d => !d.open).length,
    height: Math.ceil(document.documentElement.scrollHeight),
  });
})()"""


@dataclass
class PageView:
    url: str
    sections: list[tuple[str, str]]
    marks: dict[str, int]
    mark_colors: dict[str, str]
    text: str
    closed_details: int
    height: int
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    screenshot: bytes | None = None

    @property
    def external_requests(self) -> list[str]:
        """Requests to anything but the page itself and inline data."""
        return [u for u in self.requests if u != self.url and not u.startswith(("data:", "about:"))]


def find_chromium() -> str | None:
    env = os.environ.get("ITAUDIT_CHROMIUM")
    if env:
        return env if Path(env).exists() else shutil.which(env)
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class _Pipe:
    def __init__(self, exe: str, profile: str, width: int):
        self._to_r, self._to_w = os.pipe()      # we write commands, chromium reads fd 3
        self._from_r, self._from_w = os.pipe()  # chromium writes fd 4, we read
        to_r, from_w = self._to_r, self._from_w

        def fds() -> None:   # in the child: the protocol pipe on fds 3 and 4
            a, b = os.dup(to_r), os.dup(from_w)   # above 4 first: to_r / from_w may be 3 or 4
            a, b = os.dup2(a, 100), os.dup2(b, 101)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [exe, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
                f"--user-data-dir={profile}", f"--window-size={width},900", "about:blank"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=fds, close_fds=False)
        os.close(to_r)
        os.close(from_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        want = self._id
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline)
            if m.get("id") == want:
                if "error" in m:
                    raise ItauditError(f"chromium: {method} failed: {m['error'].get('message')}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 60) -> dict[str, Any]:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)

    def _next(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ItauditError("chromium did not answer in time")
            ready, _, _ = select.select([self._from_r], [], [], left)
            if ready:
                chunk = os.read(self._from_r, 1 << 20)
                if not chunk:
                    raise ItauditError(f"chromium exited (code {self.proc.poll()})")
                self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def close(self) -> None:
        try:
            os.write(self._to_w, json.dumps({"id": 10**9, "method": "Browser.close", "params": {}}).encode() + b"\0")
        except OSError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_w, self._from_r):
            os.close(fd)


def open_page(path: str | os.PathLike, *, screenshot: bool = False, width: int = 1280, max_height: int = 16000,
              selector: str | None = None, exe: str | None = None, timeout: float = 90) -> PageView:
    """Load `path` in headless Chromium; return what it shows (and a PNG with `screenshot`: the
    full page, or only the element matching the CSS `selector`, e.g. "#traced")."""
    exe = exe or find_chromium()
    if exe is None:
        raise ItauditError("no chromium found (Debian: apt-get install -y chromium; or set ITAUDIT_CHROMIUM)")
    url = Path(path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="itaudit-chromium-") as profile:
        p = _Pipe(exe, profile, width)
        try:
            targets = p.send("Target.getTargets", timeout=timeout)["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            sid = p.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                p.send(f"{domain}.enable", session=sid)
            p.send("Emulation.setDeviceMetricsOverride",
                   {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=sid)
            p.send("Page.navigate", {"url": url}, session=sid)
            p.wait_event("Page.loadEventFired", timeout=timeout)
            res = p.send("Runtime.evaluate", {"expression": _PROBE, "returnByValue": True}, session=sid)
            probe = json.loads(res["result"]["value"])
            shot = None
            if screenshot:
                h = min(int(probe["height"]), max_height)
                p.send("Emulation.setDeviceMetricsOverride",
                       {"width": width, "height": h, "deviceScaleFactor": 1, "mobile": False}, session=sid)
                args: dict[str, Any] = {"format": "png"}
                if selector:
                    expr = (f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
                            " const r = e.getBoundingClientRect(); return JSON.stringify([r.left + scrollX, "
                            "r.top + scrollY, r.width, r.height]); })()")
                    box = p.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=sid)
                    if box["result"].get("value") is None:
                        raise ItauditError(f"{path}: nothing matches {selector!r}")
                    x, y, w, hh = json.loads(box["result"]["value"])
                    args.update(clip={"x": x, "y": y, "width": w, "height": min(hh, max_height), "scale": 1},
                                captureBeyondViewport=True)
                shot = base64.b64decode(p.send("Page.captureScreenshot", args, session=sid, timeout=timeout)["data"])
            errors, requests = _collect(p.events)
        finally:
            p.close()
    return PageView(url, [tuple(s) for s in probe["sections"]], probe["marks"], probe["mark_colors"], probe["text"],
                    probe["closed_details"], probe["height"], errors, requests, shot)


def _collect(events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    errors, requests = [], []
    for e in events:
        m, prm = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and prm.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in prm.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            errors.append(prm.get("exceptionDetails", {}).get("text", "exception"))
        elif m == "Log.entryAdded" and prm.get("entry", {}).get("level") == "error":
            errors.append(prm["entry"].get("text", ""))
        elif m == "Network.requestWillBeSent":
            requests.append(prm.get("request", {}).get("url", ""))
        elif m == "Network.loadingFailed":
            errors.append(f"request failed: {prm.get('errorText')}")
    return errors, requests


def screenshot(path: str | os.PathLike, out: str | os.PathLike, **kw: Any) -> PageView:
    """Write a full-page PNG of the report at `path` to `out`; returns the page view."""
    view = open_page(path, screenshot=True, **kw)
    o = Path(out)
    o.parent.mkdir(parents=True, exist_ok=True)
    o.write_bytes(view.screenshot or b"")
    return view
