"""The web page in headless Chromium: a real file upload and a real drag and drop.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages separated by NUL bytes on file descriptors 3 and 4), which needs nothing beyond
the standard library. Marked slow and skipped without Chromium (Debian's ``chromium``
package), which CI does not install. The screenshots land in pytest's tmp_path; run with
``--basetemp DIR`` to keep and look at them.
"""

from __future__ import annotations

import base64
import fcntl
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from effnet.runtime.predictor import Predictor, top_k

from .live import serve

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")]


class Chromium:
    """Just enough of a DevTools client: commands, events, one page session."""

    def __init__(self, profile: Path, width: int = 1100, height: int = 900) -> None:
        to_browser_read, to_browser_write = os.pipe()
        from_browser_read, from_browser_write = os.pipe()
        # park the child's ends above 10 so placing them on 3 and 4 cannot clobber each other
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_read, from_browser_write)]
        for fd in (to_browser_read, from_browser_write):
            os.close(fd)

        def place_pipes() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", f"--window-size={width},{height}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(3, 4), preexec_fn=place_pipes,
        )
        for fd in high:
            os.close(fd)
        self.writer = os.fdopen(to_browser_write, "wb", buffering=0)
        self.reader = os.fdopen(from_browser_read, "rb", buffering=0)
        self.buffer = b""
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None
        page = next(t for t in self.send("Target.getTargets", browser=True)["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", browser=True, targetId=page["targetId"],
                                 flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Network", "DOM"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            chunk = self.reader.read(1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, browser: bool = False, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if self.session and not browser:
            message["sessionId"] = self.session
        self.writer.write(json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 120) -> Any:
        """Poll until truthy; a page still loading (elements missing) counts as not yet."""
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (error) {{ return false; }} }})()"
        deadline = time.monotonic() + seconds
        while not (value := self.evaluate(guarded)):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            time.sleep(0.1)
        return value

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && document.querySelector('#model-line').textContent"
                      ".includes('efficientnet')")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        try:
            self.send("Browser.close", browser=True)
            self.process.wait(10)
        except Exception:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def browser(tmp_path: Path):
    chromium = Chromium(tmp_path / "profile")
    yield chromium
    chromium.close()


SHOWN = """JSON.stringify({
  state: document.body.dataset.state,
  status: document.querySelector('#status').textContent,
  cards: [...document.querySelectorAll('.result')].map(card => ({
    file: card.querySelector('.filename').textContent,
    imageLoaded: card.querySelector('img').complete && card.querySelector('img').naturalWidth > 0,
    bars: [...card.querySelectorAll('.bars li')].map(li => ({
      label: li.querySelector('.name').textContent,
      width: parseFloat(li.querySelector('.bar-fill').style.width),
      text: li.querySelector('.value').textContent,
    })),
  })),
})"""


def check_page_shows(shown: dict[str, Any], lite0: Predictor, files: list[Path]) -> None:
    assert shown["state"] == "done", shown["status"]
    assert [card["file"] for card in shown["cards"]] == [f.name for f in files]
    for card, path in zip(shown["cards"], files):
        (want,) = top_k(lite0.logits([path.read_bytes()]), lite0.engine.labels, 5)
        assert card["imageLoaded"]
        assert [bar["label"] for bar in card["bars"]] == [p.label for p in want]
        for bar, prediction in zip(card["bars"], want):
            assert bar["width"] == pytest.approx(100 * prediction.probability, abs=1e-3)


def test_pick_a_file_and_see_the_top5(browser: Chromium, lite0: Predictor, tmp_path: Path) -> None:
    photo = ROOT / "examples/images/espresso.jpg"
    with serve(lite0) as live:
        browser.open(f"{live.url}/")
        browser.screenshot(tmp_path / "page-empty.png")
        document = browser.send("DOM.getDocument")["root"]["nodeId"]
        picker = browser.send("DOM.querySelector", nodeId=document, selector="#file")["nodeId"]
        browser.send("DOM.setFileInputFiles", nodeId=picker, files=[str(photo)])
        browser.wait_for("['done', 'error'].includes(document.body.dataset.state)")
        browser.wait_for("[...document.querySelectorAll('.result img')].every(i => i.complete)")
        shown = json.loads(browser.evaluate(SHOWN))
        browser.screenshot(tmp_path / "page-espresso.png")
        notes = tmp_path / "notes.jpg"
        notes.write_text("a shopping list, not a photo")
        browser.send("DOM.setFileInputFiles", nodeId=picker, files=[str(notes)])
        browser.wait_for("document.body.dataset.state === 'error'")
        refusal = browser.evaluate("document.querySelector('#status').textContent")
        assert browser.evaluate("document.querySelectorAll('.result').length") == 0
        browser.screenshot(tmp_path / "page-error.png")
    assert refusal == "notes.jpg: not an image (unrecognised format)"
    check_page_shows(shown, lite0, [photo])
    assert shown["cards"][0]["bars"][0]["label"] == "espresso" and "espresso" in shown["status"]
    requested = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    assert requested and all(url.startswith((live.url, "blob:", "data:")) for url in requested), requested
    assert not [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"]


def test_drop_two_files(browser: Chromium, lite0: Predictor, tmp_path: Path) -> None:
    photos = [ROOT / "examples/images/cat.jpg", ROOT / "examples/images/espresso.jpg"]
    with serve(lite0) as live:
        browser.open(f"{live.url}/")
        box = browser.evaluate("JSON.stringify(document.querySelector('#drop').getBoundingClientRect())")
        box = json.loads(box)
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        data = {"items": [], "files": [str(p) for p in photos], "dragOperationsMask": 1}
        for kind in ("dragEnter", "dragOver", "drop"):
            browser.send("Input.dispatchDragEvent", type=kind, x=x, y=y, data=data)
        browser.wait_for("['done', 'error'].includes(document.body.dataset.state)")
        browser.wait_for("[...document.querySelectorAll('.result img')].every(i => i.complete)")
        shown = json.loads(browser.evaluate(SHOWN))
        browser.screenshot(tmp_path / "page-dropped.png")
    check_page_shows(shown, lite0, photos)


def test_a_bad_file_among_good_ones_shows_its_own_error(browser: Chromium, lite0: Predictor, tmp_path: Path) -> None:
    photo = ROOT / "examples/images/espresso.jpg"
    notes = tmp_path / "notes.jpg"
    notes.write_text("a shopping list, not a photo")
    with serve(lite0) as live:
        browser.open(f"{live.url}/")
        document = browser.send("DOM.getDocument")["root"]["nodeId"]
        picker = browser.send("DOM.querySelector", nodeId=document, selector="#file")["nodeId"]
        browser.send("DOM.setFileInputFiles", nodeId=picker, files=[str(photo), str(notes)])
        browser.wait_for("document.body.dataset.state === 'done'")
        shown = json.loads(browser.evaluate(SHOWN))
        errors = browser.evaluate("JSON.stringify([...document.querySelectorAll('.result .image-error')]"
                                  ".map(p => p.textContent))")
        browser.screenshot(tmp_path / "page-one-bad.png")
    assert json.loads(errors) == ["", "notes.jpg: not an image (unrecognised format)"]
    assert shown["status"] == "Classified 1 of 2 images; 1 could not be read."
    assert [card["file"] for card in shown["cards"]] == ["espresso.jpg", "notes.jpg"]
    assert shown["cards"][0]["bars"][0]["label"] == "espresso" and shown["cards"][1]["bars"] == []


def test_api_key_prompt(browser: Chromium, lite0: Predictor, tmp_path: Path) -> None:
    with serve(lite0, api_key="letmein") as live:
        browser.send("Page.navigate", url=f"{live.url}/")
        browser.wait_for("!document.querySelector('#auth').hidden")
        browser.screenshot(tmp_path / "page-key.png")
        browser.evaluate("document.querySelector('#api-key').value = 'letmein'; "
                         "document.querySelector('#api-key-save').click(); true")
        line = browser.wait_for("document.querySelector('#auth').hidden && "
                                "document.querySelector('#model-line').textContent")
    assert "efficientnet_lite0" in line
