"""The talk page in a real headless Chromium whose microphone is a wav file: it sends the question,
shows the answer's text and plays its audio; the test reads both from the page (DevTools protocol)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
from websockets.sync.client import connect

from tests.conftest import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.usefixtures("prefect_server"),
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup.sh)")]


class DevTools:
    """Just enough of the Chrome DevTools protocol: navigate, evaluate."""

    def __init__(self, port: int) -> None:
        deadline = time.time() + 30
        while True:
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                page = next(t for t in targets if t["type"] == "page")
                break
            except (httpx.HTTPError, StopIteration):
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                return message.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


@contextlib.contextmanager
def browser_hearing(microphone: np.ndarray, tmp_path):
    """Headless Chromium whose microphone plays `microphone` (16 kHz; Chromium loops it), and its DevTools."""
    wav = tmp_path / "microphone.wav"
    sf.write(wav, microphone, 16000, subtype="PCM_16")
    port = free_port()
    profile = tempfile.mkdtemp(dir=tmp_path)
    browser = subprocess.Popen([
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
        f"--remote-debugging-port={port}", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield DevTools(port)
    finally:
        browser.terminate()
        browser.wait(timeout=30)


def test_hands_free_two_questions_with_a_pause_and_an_interruption(served, tmp_path):
    """The page in hands-free mode hears three questions from the microphone: the first after a long
    pause is answered and heard whole; the third starts while the second's answer is on its way and
    cuts it off; the third is answered."""
    pause = lambda seconds: np.zeros(int(seconds * 16000), np.float32)  # noqa: E731
    microphone = np.concatenate([pause(0.5), served.questions[0], pause(4.0), served.questions[1], pause(1.0),
                                 served.questions[2], pause(6.0)])
    with browser_hearing(microphone, tmp_path) as tools:
        tools.call("Page.navigate", url=f"{served.http}/?handsfree=1")
        deadline = time.time() + 120
        while int(tools.evaluate("document.body && document.body.dataset.heard || 0")) < 3:
            assert time.time() < deadline, tools.evaluate("document.getElementById('status').textContent")
            time.sleep(0.2)
        heard = sorted(json.loads(tools.evaluate("JSON.stringify(heard)")), key=lambda answer: answer["order"])[:3]
    first, cut, third = heard
    assert first["status"] == "completed" and not first["interrupted"] and first["played"] == first["samples"] > 0
    assert cut["interrupted"]
    assert third["status"] == "completed" and not third["interrupted"] and third["samples"] > 0


def test_the_page_asks_with_the_microphone_shows_the_text_and_plays_the_answer(served, tmp_path):
    question = served.questions[0]
    with browser_hearing(np.concatenate([question, np.zeros(8000, np.float32)]), tmp_path) as tools:
        seconds = round(len(question) / 16000 + 0.3, 2)
        tools.call("Page.navigate", url=f"{served.http}/?auto={seconds}")
        deadline = time.time() + 120
        while tools.evaluate("document.body && document.body.dataset.state") != "played":
            assert time.time() < deadline, tools.evaluate("document.getElementById('status').textContent")
            time.sleep(0.2)
        result = json.loads(tools.evaluate("document.getElementById('result').textContent"))
        shown = tools.evaluate("document.querySelector('.answer .text').textContent")
        meta = tools.evaluate("document.querySelector('.answer .meta').textContent")
    assert result["status"] == "completed"
    assert result["samples"] > 0 and result["played"] == result["samples"]  # every sample went out of the worklet
    assert shown == result["text"] and result["first_audio_ms"] > 0 and "first audio after" in meta
    # the microphone's turn, at the session's default rate (OpenAI Realtime's 24 kHz; the server resamples)
    assert abs(result["sent_samples"] / 24000 - seconds) < 0.25 * seconds
