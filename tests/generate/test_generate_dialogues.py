"""`generate-dialogues` for real: the OpenAI-compatible client against a local HTTP server that answers
as an LLM would (scripted replies: good dialogues, a refusal, code, broken JSON, a 503 once), a real
Prefect run killed midway and resumed, and a real build of the result."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from omniforge.config import load_pipeline_config
from omniforge.flows.generate_dialogues import generate_dialogues
from omniforge.storage import store_from_config
from omniforge.storage.schemas import GENERATED_DIALOGUES_FILE
from omniforge.tasks.build.steps import load_and_plan
from omniforge.tasks.generate.dialogues import GenerationRejected, parse_reply, user_turns
from omniforge.tasks.generate.steps import open_cache

TURNS = re.compile(r"Write exactly (\d+) user messages")
INSTRUCTION = re.compile(r"The user's first message: (.*)$", re.S)


class ScriptedLLM(ThreadingHTTPServer):
    """/v1/chat/completions answering each prompt by the instruction it carries. `hold` makes new
    requests wait (a slow model) until released; a held request released by `drop_held` never answers."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answered: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.hold_after: int | None = None
        self.release = threading.Event()
        self.flaky_seen: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def reply(self, prompt: str) -> tuple[int, str]:
        turns = int(TURNS.search(prompt).group(1))
        instruction = INSTRUCTION.search(prompt).group(1).strip()
        if "flaky" in instruction and instruction not in self.flaky_seen:
            self.flaky_seen.add(instruction)
            return 503, ""
        if "refuse" in instruction:
            return 200, "I'm sorry, but I can't help with that."
        if "garbage" in instruction:
            return 200, '{"dialogue": [{"role": "user", "content": '
        messages = []
        for k in range(turns):
            messages.append({"role": "user", "content": instruction if k == 0 else f"And what about part {k + 1}?"})
            answer = "```python\nprint(1)\n```" if "code" in instruction else f"Here is a short answer, number {k + 1}."
            messages.append({"role": "assistant", "content": answer})
        return 200, "```json\n" + json.dumps({"dialogue": messages}) + "\n```"


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedLLM

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        server = self.server
        with server.lock:  # counted before it is sent: the client's next request must see this one answered
            held = server.hold_after is not None and sum(server.answered.values()) >= server.hold_after
            if not held:
                status, content = server.reply(prompt)
                if status == 200:
                    server.answered[INSTRUCTION.search(prompt).group(1).strip()] += 1
        if held:
            server.release.wait()
            return  # the client that asked is gone: nothing is answered
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def llm():
    server = ScriptedLLM()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()


INSTRUCTIONS = [f"Tell me something about topic {i}." for i in range(16)] + [
    "Please be flaky about topic 16.", "Show me code please.", "Please refuse this one.", "Reply with garbage."]


def settings(tmp_path, llm: ScriptedLLM, *extra: str) -> list[str]:
    source = tmp_path / "instructions.jsonl"
    source.write_text("".join(json.dumps({"id": f"i{n:02d}", "messages": [{"role": "user", "content": text}]}) + "\n"
                              for n, text in enumerate(INSTRUCTIONS)))
    return [f"store.url={tmp_path / 'store'}", "generate.source.kind=jsonl", f"generate.source.path={source}",
            f"generate.chat.endpoint={llm.url}", "generate.chat.model=scripted", "generate.chat.retry_backoff_s=0.05",
            "generate.user_turns=[1, 0, 2]", *extra]


@pytest.mark.usefixtures("prefect_server")
def test_killed_generation_resumes_and_the_build_reads_it(tmp_path, llm):
    overrides = settings(tmp_path, llm, "generate.concurrency=1", "generate.checkpoint_every=1")
    args = [a for o in overrides for a in ("--set", o)]
    llm.hold_after = 8
    run = subprocess.Popen([sys.executable, "-m", "omniforge.cli", "generate-dialogues", "--config", "configs/demo.yaml",
                            *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    config = load_pipeline_config("configs/demo.yaml", overrides)
    cache = open_cache(store_from_config(config.store), config)
    deadline = time.time() + 180
    # the 9th request is held by the server: the run is mid-way once the 8 answers are cached
    while len(cache.done_keys()) < 8 and time.time() < deadline and run.poll() is None:
        time.sleep(0.2)
    assert sum(llm.answered.values()) == 8 and len(cache.done_keys()) == 8 and run.poll() is None
    run.send_signal(signal.SIGKILL)
    run.wait()
    llm.release.set()
    llm.hold_after = None

    summary = generate_dialogues(config)
    assert max(llm.answered.values()) == 1 and len(llm.answered) == len(INSTRUCTIONS)  # nothing asked twice
    assert summary["dialogues"] == 17 and summary["generated_this_run"] == len(INSTRUCTIONS) - 8
    assert summary["rejects_by_reason"] == {"unspeakable": 1, "refused": 1, "malformed": 1}

    store = store_from_config(config.store)
    manifest = store.manifest(summary["dialogues_version"])
    records = [json.loads(line) for line in store.read_bytes(manifest.files[GENERATED_DIALOGUES_FILE].path).splitlines()]
    counts = {r["id"]: sum(m["role"] == "user" for m in r["messages"]) for r in records}
    assert all(n == user_turns(i, config.generate) for i, n in counts.items())  # drawn as configured
    assert set(counts.values()) == {1, 3}  # weights [1, 0, 2]: one or three user turns, never two
    assert all(r["messages"][0]["content"] == INSTRUCTIONS[int(r["id"][1:])] for r in records)

    again = generate_dialogues(config)  # nothing new: no request, no version
    assert not again["published"] and again["dialogues_version"] == summary["dialogues_version"]

    build = load_pipeline_config("configs/demo.yaml", [
        f"store.url={tmp_path / 'store'}", "build.source.kind=generated", "build.source.path=dialogues/generated"])
    plan = load_and_plan(build)
    spoken = Counter(u.dialogue_id for u in plan.utterances())
    assert spoken == {i: 2 * n for i, n in counts.items()} and plan.source["path"] == str(manifest.ref())


def test_replies_are_read_or_rejected_with_their_reason():
    good = json.dumps({"dialogue": [{"role": "user", "content": "changed"}, {"role": "assistant", "content": "Yes."}]})
    assert parse_reply(good, "Is it so?", 1, 100) == [{"role": "user", "content": "Is it so?"},
                                                       {"role": "assistant", "content": "Yes."}]
    cases = {"": "empty", "Sorry, I can't help with that, as an AI.": "refused", "[1, 2": "malformed",
             good.replace("Yes.", "x" * 101): "too_long", good.replace("Yes.", "$x^2 = 4$"): "unspeakable",
             json.dumps({"dialogue": [{"role": "user", "content": "q"}]}): "malformed",
             good.replace("Yes.", "I'm sorry, I cannot do that."): "refused"}
    for reply, reason in cases.items():
        with pytest.raises(GenerationRejected) as rejected:
            parse_reply(reply, "Is it so?", 1, 100)
        assert rejected.value.reason == reason, reply
