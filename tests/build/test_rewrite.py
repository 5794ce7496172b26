"""The LLM rewrite through a real OpenAI-compatible HTTP server (a scripted one in the test process):
transient errors are retried, a turn that keeps failing leaves its dialogue out as a reject, the key
goes to the configured host only, and plain http is refused off this machine."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from omniforge.config.base import ConfigError
from omniforge.config.build import RewriteConfig
from omniforge.config.endpoint import ChatEndpointConfig
from omniforge.tasks.build.rewrite import rewrite_assistant_turns
from omniforge.tasks.common.records import Dialogue, SourceBatch, Turn


class ScriptedServer:
    """A chat-completions server answering from a script of (status, reply text or Location); records
    each request's path and Authorization header."""

    def __init__(self, script: list[tuple[int, str]]) -> None:
        self.script, self.seen = list(script), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server hook's name
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                server.seen.append((self.path, self.headers.get("Authorization"), body))
                status, text = server.script.pop(0) if server.script else (200, "fine")
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", text)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


def batch_of(*answers: str) -> SourceBatch:
    batch = SourceBatch()
    for index, answer in enumerate(answers):
        batch.add(Dialogue(f"d{index}", [Turn("user", "Tell me."), Turn("assistant", answer)]))
    return batch


def config(url: str, **extra) -> RewriteConfig:
    return RewriteConfig(enabled=True, endpoint=url, model="m", retries=2, retry_backoff_s=0.01, **extra)


def test_transient_errors_are_retried_and_the_key_goes_to_the_endpoint(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    server = ScriptedServer([(503, "busy"), (429, "slow down"), (200, "Paris is in France.")])
    try:
        batch = batch_of("**Paris** — France")
        assert rewrite_assistant_turns(batch, config(server.url)) == 1
    finally:
        server.close()
    assert batch.dialogues[0].turns[1].text == "Paris is in France." and batch.rejects == []
    assert [(path, key) for path, key, _ in server.seen] == [("/v1/chat/completions", "Bearer sk-test")] * 3
    assert server.seen[0][2]["messages"][-1]["content"] == "**Paris** — France"


def test_a_turn_that_keeps_failing_is_a_reject_and_the_build_goes_on():
    server = ScriptedServer([(500, "boom")] * 3 + [(200, "Two is fine.")])
    try:
        batch = batch_of("One.", "Two.")
        rewrite_assistant_turns(batch, config(server.url))
    finally:
        server.close()
    assert [d.id for d in batch.dialogues] == ["d1"]
    [reject] = batch.rejects
    assert (reject.record, reject.field, reject.reason) == ("d0", "turns[1].text", "rewrite_failed")
    assert "HTTP 500" in reject.detail and "after 3 tries" in reject.detail


def test_a_redirect_is_not_followed_so_the_key_never_leaves(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    elsewhere = ScriptedServer([])
    server = ScriptedServer([(307, f"{elsewhere.url}/chat/completions")])
    try:
        batch = batch_of("One.")
        rewrite_assistant_turns(batch, config(server.url))
    finally:
        server.close()
        elsewhere.close()
    assert elsewhere.seen == []
    assert batch.rejects[0].reason == "rewrite_failed" and "HTTP 307" in batch.rejects[0].detail


def test_plain_http_off_this_machine_needs_an_explicit_opt_in():
    with pytest.raises(ValueError, match="allow_http"):
        ChatEndpointConfig(endpoint="http://llm.example.com/v1")
    assert ChatEndpointConfig(endpoint="http://llm.example.com/v1", allow_http=True).allow_http
    for fine in ("https://llm.example.com/v1", "http://127.0.0.1:8000/v1", "http://localhost:8000/v1", "http://[::1]:8000/v1"):
        ChatEndpointConfig(endpoint=fine)
    with pytest.raises(ValueError, match="http"):
        ChatEndpointConfig(endpoint="ftp://llm.example.com/v1")


def test_the_pipeline_config_names_the_field(tmp_path):
    from omniforge.config import load_pipeline_config

    with pytest.raises(ConfigError, match="build.text.rewrite"):
        load_pipeline_config("configs/demo.yaml", ["build.text.rewrite.endpoint=http://10.0.0.5:8000/v1"])
