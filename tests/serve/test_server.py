"""`omniforge serve` over a plain WebSocket client: a two-turn conversation with its history, events
in order, decodable audio; and faults: malformed frames, an oversized turn, a client leaving
mid-answer, more clients than slots. The server keeps serving the others."""

from __future__ import annotations

import base64
import json
import threading
from collections import defaultdict

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from omniforge.tasks.serve.engine import AnswerEvent, AnswerRequest, BatchedAnswerer, UserTurn
from tests.training_data import TINY_DECODER

pytestmark = pytest.mark.usefixtures("prefect_server")

DELTAS = {"response.output_audio_transcript.delta", "response.output_audio.delta"}


def pcm16(wave: np.ndarray) -> str:
    return base64.b64encode((np.clip(wave, -1, 0.99997) * 32768).astype("<i2").tobytes()).decode()


def at_24_khz(served, question: np.ndarray) -> tuple[np.ndarray, object]:
    """A question as 24 kHz 16-bit PCM (every OpenAI client's default), and the engine's answer to what
    the server's model hears of it (that PCM resampled to 16 kHz)."""
    from omniforge.tasks.common.audio_ops import resample

    pcm = (np.clip(resample(question, 16000, 24000), -1, 0.99997) * 32768).astype("<i2")
    return pcm, served.engine.answer([("user", "")], [resample(pcm.astype(np.float32) / 32768, 24000, 16000)])


class Client:
    """Our own client: it hears the model's rates (16 kHz in, the decoder's out), so answers compare
    sample for sample with the engine answering in this process."""

    def __init__(self, url: str, native_rates: bool = True, headers: dict | None = None) -> None:
        self.ws = connect(url, max_size=None, open_timeout=30, additional_headers=headers)
        self.session = self.receive()
        if native_rates:
            rates = self.session["session"]["omniforge"]
            self.send(type="session.update", session={"audio": {
                "input": {"format": {"type": "audio/pcm", "rate": rates["model_input_rate"]}},
                "output": {"format": {"type": "audio/pcm", "rate": rates["model_output_rate"]}}}})
            self.session = self.receive()
            assert self.session["type"] == "session.updated"

    def send(self, **event) -> None:
        self.ws.send(json.dumps(event))

    def receive(self, timeout: float = 120) -> dict:
        return json.loads(self.ws.recv(timeout=timeout))

    def say(self, wave: np.ndarray, chunk: int = 3200, commit: bool = True) -> None:
        for start in range(0, len(wave), chunk):
            self.send(type="input_audio_buffer.append", audio=pcm16(wave[start:start + chunk]))
        if commit:
            self.respond()

    def respond(self) -> None:
        self.send(type="input_audio_buffer.commit")
        self.send(type="response.create")

    def answer(self) -> dict:
        events = []
        while not events or events[-1]["type"] != "response.done":
            events.append(self.receive())
        audio = [np.frombuffer(base64.b64decode(e["delta"]), "<i2") for e in events
                 if e["type"] == "response.output_audio.delta"]
        return {"events": events, "text": "".join(e["delta"] for e in events
                                                  if e["type"] == "response.output_audio_transcript.delta"),
                "audio": np.concatenate(audio).astype(np.float32) / 32768 if audio else np.zeros(0, np.float32),
                "done": events[-1]["response"]}

    def close(self) -> None:
        self.ws.close()


def test_a_two_turn_conversation_keeps_its_history_and_streams_in_order(served):
    engine = served.engine

    def after(first_text: str, first_wave, second_wave):
        return engine.answer([("user", ""), ("assistant", first_text), ("user", "")], [first_wave, second_wave])

    # two questions whose second answer changes with the first exchange (so the test can tell)
    first_question, second_question = next(
        (a, b) for a in served.questions[:4] for b in served.questions[:4] if a is not b
        and after(engine.answer([("user", "")], [a]).text, a, b).units != engine.answer([("user", "")], [b]).units)
    encoded_before = served.status()["encoded_turns"]
    client = Client(served.url)
    rate = client.session["session"]["audio"]["output"]["format"]["rate"]
    assert client.session["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
    client.say(first_question)
    first = client.answer()
    client.say(second_question)
    second = client.answer()
    client.close()
    assert served.status()["encoded_turns"] - encoded_before == 2  # the first turn was not encoded again
    for answer in (first, second):
        kinds = [e["type"] for e in answer["events"]]
        assert kinds[:2] == ["input_audio_buffer.committed", "response.created"]
        assert kinds[-3:] == ["response.output_audio_transcript.done", "response.output_audio.done", "response.done"]
        assert set(kinds[2:-3]) <= DELTAS and "response.output_audio.delta" in kinds
        deltas = [e for e in answer["events"] if e["type"] in DELTAS]
        assert all(a["seconds"] <= b["seconds"] for a, b in zip(deltas, deltas[1:]))  # in the order they were made
        assert answer["done"]["status"] == "completed" and answer["done"]["output_text"] == answer["text"].strip()
        samples = sum(e["samples"] for e in deltas if e["type"] == "response.output_audio.delta")
        assert len(answer["audio"]) == samples > 0 and np.abs(answer["audio"]).max() > 0.001
        assert 0 < answer["done"]["first_audio_seconds"] <= deltas[-1]["seconds"]
        assert rate == served.engine.decoder.sample_rate
    # the second answer is the one the model gives with the first exchange as its history
    with_history = after(first["done"]["output_text"], first_question, second_question)
    assert second["done"]["output_text"] == with_history.text
    assert len(second["audio"]) == len(with_history.audio)
    assert np.allclose(second["audio"], with_history.audio, atol=2 / 32768)  # the same speech, 16-bit
    first_alone = engine.answer([("user", "")], [first_question])
    assert first["done"]["output_text"] == first_alone.text and len(first["audio"]) == len(first_alone.audio)


def test_malformed_frames_are_answered_with_errors_and_the_conversation_goes_on(served):
    client = Client(served.url)
    client.ws.send("{not json")
    client.send(type="session.hack")
    client.send(type="input_audio_buffer.append", audio="!!not base64!!")
    client.send(type="input_audio_buffer.append", audio=base64.b64encode(b"\x01\x02\x03").decode())
    client.ws.send(b"\x00\x01")
    client.send(type="input_audio_buffer.commit")
    client.send(type="response.create")
    client.send(type="session.update", session={"audio": {"input": {"format": {"type": "audio/pcmu"}}}})
    client.send(type="session.update", session={"audio": {"input": {"turn_detection": {"type": "push_to_talk"}}}})
    codes = [client.receive()["error"]["code"] for _ in range(9)]  # (server_vad is taken: see the VAD test)
    assert codes == ["invalid_json", "unknown_event", "invalid_audio", "invalid_audio", "binary_frame",
                     "input_audio_buffer_commit_empty", "no_user_turn", "unsupported_audio_format",
                     "unsupported_turn_detection"]
    client.say(served.questions[2])
    assert client.answer()["done"]["status"] == "completed"
    client.close()


def test_an_oversized_turn_is_refused_and_the_next_one_answered(served):
    client = Client(served.url)
    limit = client.session["session"]["omniforge"]["max_turn_seconds"]
    too_long = np.zeros(int((limit + 1) * 16000), dtype=np.float32)
    for start in range(0, len(too_long), 16000):
        client.send(type="input_audio_buffer.append", audio=pcm16(too_long[start:start + 16000]))
    error = client.receive()
    assert error["type"] == "error" and error["error"]["code"] == "turn_too_long"
    client.say(served.questions[0])
    assert client.answer()["done"]["status"] == "completed"
    client.close()


def test_a_client_leaving_mid_answer_frees_its_slot_and_the_others_are_answered(served):
    staying, leaving = Client(served.url), Client(served.url)
    leaving.say(served.questions[0], commit=False)
    staying.say(served.questions[0], commit=False)
    leaving.respond()  # the two turns end together
    staying.respond()
    while leaving.receive()["type"] not in DELTAS:  # its answer is under way
        pass
    leaving.close()
    answer = staying.answer()
    assert answer["done"]["status"] == "completed" and len(answer["audio"])
    staying.close()
    assert served.status()["largest_batch"] >= 2  # the two answers ran as one batch
    _wait(lambda: served.status()["conversations"] == 0 and served.status()["answering"] == 0)


def test_more_clients_than_slots_are_told_busy(served):
    clients = [Client(served.url) for _ in range(3)]
    extra = connect(served.url, open_timeout=30)
    busy = json.loads(extra.recv(timeout=30))
    assert busy["type"] == "error" and busy["error"]["code"] == "server_busy"
    with pytest.raises(ConnectionClosed):
        extra.recv(timeout=30)
    clients[0].say(served.questions[0])  # the others are still served
    assert clients[0].answer()["done"]["status"] == "completed"
    clients.pop().close()
    _wait(lambda: served.status()["conversations"] == 2)
    clients.append(Client(served.url))  # a freed slot takes a new conversation
    assert clients[-1].session["type"] == "session.updated"
    for client in clients:
        client.close()


def test_barge_in_then_a_new_question_is_answered_as_in_a_fresh_conversation(served):
    engine = served.engine
    first, second = next((a, b) for a in served.questions[:4] for b in served.questions[:4] if a is not b
                         and engine.answer([("user", "")], [a]).units != engine.answer([("user", "")], [b]).units)
    for _ in range(3):  # the cancel must land while the first answer is still being made
        client = Client(served.url)
        client.say(first)
        while client.receive()["type"] not in DELTAS:  # its turn is encoded and its answer under way
            pass
        client.send(type="response.cancel")
        while (event := client.receive())["type"] != "response.done":
            pass
        if event["response"]["status"] == "cancelled":
            break
        client.close()
    else:
        pytest.skip("the answer always ended before the cancel arrived")
    client.say(second)
    answer = client.answer()
    client.close()
    fresh = engine.answer([("user", "")], [second])
    assert answer["done"]["status"] == "completed" and answer["done"]["output_text"] == fresh.text
    assert len(answer["audio"]) == len(fresh.audio) and np.allclose(answer["audio"], fresh.audio, atol=2 / 32768)


def test_a_bad_turn_fails_alone_and_a_cancelled_queued_request_never_runs(served):
    """In process: three requests arrive together; one is too long for the speech encoder, one is
    cancelled before the model thread takes it. The good one is answered as alone."""
    events: dict[str, list[AnswerEvent]] = defaultdict(list)
    ended = {key: threading.Event() for key in ("good", "bad", "queued")}

    def listener(key: str):
        def hear(event: AnswerEvent) -> None:
            events[key].append(event)
            if event.kind in ("done", "error"):
                ended[key].set()
        return hear

    def request(key: str, wave: np.ndarray) -> AnswerRequest:
        return AnswerRequest(key, [("user", "")], [UserTurn(wave)], listener(key))

    answerer = BatchedAnswerer(served.engine, served.engine.settings, admit_window_s=0.2)
    try:
        answerer.submit(request("good", served.questions[0]))
        answerer.submit(request("bad", np.zeros(35 * 16000, np.float32)))
        answerer.submit(request("queued", served.questions[1]))
        answerer.cancel("queued")
        assert ended["good"].wait(60) and ended["bad"].wait(60)
        _wait(lambda: not answerer.live)
    finally:
        answerer.close()
    assert [e.kind for e in events["bad"]] == ["error"] and "too long" in events["bad"][0].text
    fresh = served.engine.answer([("user", "")], [served.questions[0]])
    assert events["good"][-1].kind == "done" and events["good"][-1].text == fresh.text
    assert events["queued"] == [] and answerer.steps > 0


def test_the_server_refuses_turn_limits_its_encoder_cannot_take(served, data_store):
    from omniforge.config import load_pipeline_config
    from omniforge.errors import InputError
    from omniforge.storage import store_from_config
    from omniforge.tasks.serve.app import open_answerer
    from tests.serve.conftest import SERVE

    config = load_pipeline_config("configs/demo.yaml", [f"store.url={data_store}", "units.kmeans.k=32",
                                                        *TINY_DECODER, *SERVE, "serve.max_turn_seconds=35"])
    with pytest.raises(InputError, match="serve.max_turn_seconds=35 is longer than .* accepts \\(30 s\\)"):
        open_answerer(store_from_config(config.store), config)


def test_the_openai_sdk_realtime_client_gets_text_and_audio_at_24_khz(served):
    """The official client, as its docs use it: 24 kHz PCM both ways, turn detection off, the turn
    committed and a response asked for. It hears the answer the model gives to what it sent."""
    from openai import OpenAI

    pcm, expected = at_24_khz(served, served.questions[0])
    events = []
    client = OpenAI(api_key="not-needed-on-loopback", base_url=f"{served.http}/v1")
    with client.realtime.connect(model="omniforge") as connection:
        connection.session.update(session={"type": "realtime", "output_modalities": ["audio"], "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None},
            "output": {"format": {"type": "audio/pcm", "rate": 24000}}}})
        for start in range(0, len(pcm), 4800):
            connection.input_audio_buffer.append(audio=base64.b64encode(pcm[start:start + 4800].tobytes()).decode())
        connection.input_audio_buffer.commit()
        connection.response.create()
        for event in connection:
            events.append(event)
            if event.type == "response.done":
                break
    kinds = [e.type for e in events]
    assert "error" not in kinds and kinds[:2] == ["session.created", "session.updated"]
    assert events[1].session.audio.output.format.rate == 24000
    transcript = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
    audio = np.concatenate([np.frombuffer(base64.b64decode(e.delta), "<i2") for e in events
                            if e.type == "response.output_audio.delta"])
    assert events[-1].response.status == "completed" and transcript.strip() == expected.text
    seconds = len(expected.audio) / served.engine.decoder.sample_rate
    assert abs(len(audio) / 24000 - seconds) < 0.01  # the same speech, at 24 kHz


def test_a_typed_user_message_is_answered_as_the_model_answers_that_text(served):
    """`conversation.item.create` with `input_text`, then a spoken turn: the first answer is the
    model's to the typed text in the chat prompt, the second has the typed turn in its history."""
    typed = "What is the capital of France?"
    first_expected = served.engine.answer([("user", typed)], [], typed=[0])
    client = Client(served.url)
    client.send(type="conversation.item.create", item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": typed}]})
    assert client.receive()["type"] == "conversation.item.created"
    client.send(type="response.create")
    first = client.answer()
    assert first["done"]["status"] == "completed" and first["done"]["output_text"] == first_expected.text
    assert len(first["audio"]) == len(first_expected.audio)
    client.say(served.questions[0])
    second = client.answer()
    history = [("user", typed), ("assistant", first_expected.text), ("user", "")]
    assert second["done"]["output_text"] == served.engine.answer(history, [served.questions[0]], typed=[0]).text
    client.send(type="conversation.item.create", item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": " "}]})
    assert client.receive()["error"]["code"] == "empty_text"
    client.send(type="conversation.item.create", item={"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": 5, "audio": "AAAA"}]})  # a text part's content is its `text`
    assert client.receive()["error"]["code"] == "unsupported_content"
    client.send(type="conversation.item.create", item={"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "why " * 1000}]})  # past serve.max_typed_chars (2000)
    assert client.receive()["error"]["code"] == "text_too_long"
    client.close()


def test_server_vad_commits_spoken_turns_and_speech_interrupts_the_answer_in_flight(served):
    """Hands-free: the client only streams audio. Each turn ends after half a second of silence and
    is answered; speaking again while an answer is under way cancels it (barge-in)."""
    client = Client(served.url)
    client.send(type="session.update", session={"audio": {"input": {"turn_detection": {
        "type": "server_vad", "silence_duration_ms": 500}}}})
    assert client.receive()["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    pause = np.zeros(16000, np.float32)
    client.say(np.concatenate([pause[:8000], served.questions[0], pause]), commit=False)
    first = client.answer()
    kinds = [e["type"] for e in first["events"]]
    assert kinds[:4] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                         "input_audio_buffer.committed", "response.created"]
    assert first["done"]["status"] == "completed" and len(first["audio"])
    # the second question, a pause that ends it, and a third question at once: the third's speech cancels
    # the second's answer, and the third is answered
    client.say(np.concatenate([served.questions[1], pause[:11200], served.questions[2], pause]), commit=False)
    interrupted, third = client.answer(), client.answer()
    assert interrupted["done"]["status"] == "cancelled"
    assert [e["type"] for e in third["events"]][:3] == ["input_audio_buffer.speech_stopped",
                                                        "input_audio_buffer.committed", "response.created"]
    assert third["done"]["status"] == "completed" and len(third["audio"])
    # semantic_vad (some clients' default) is heard as server_vad, and the session says so
    client.send(type="session.update", session={"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}})
    assert client.receive()["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    client.send(type="session.update", session={"audio": {"input": {"turn_detection": {"type": "push_to_talk"}}}})
    assert client.receive()["error"]["code"] == "unsupported_turn_detection"
    client.close()


def test_a_beta_dialect_client_gets_the_beta_event_names(served):
    """A client of OpenAI Realtime's beta API (`OpenAI-Beta: realtime=v1`, `pcm16` formats, as
    LiveKit's and Pipecat's beta services send) reads `response.audio.delta` and
    `response.audio_transcript.delta`; it hears the same answer at 24 kHz."""
    pcm, expected = at_24_khz(served, served.questions[1])
    client = Client(served.url, native_rates=False, headers={"OpenAI-Beta": "realtime=v1"})
    assert client.session["type"] == "session.created"
    client.send(type="session.update", session={
        "modalities": ["text", "audio"], "input_audio_format": "pcm16", "output_audio_format": "pcm16",
        "turn_detection": None, "voice": "alloy", "input_audio_transcription": {"model": "whisper-1"}})
    assert client.receive()["session"]["audio"]["output"]["format"]["rate"] == 24000
    client.send(type="input_audio_buffer.append", audio=base64.b64encode(pcm.tobytes()).decode())
    client.respond()
    events = [client.receive()]
    while events[-1]["type"] != "response.done":
        events.append(client.receive())
    client.close()
    kinds = {e["type"] for e in events}
    assert {"response.audio.delta", "response.audio_transcript.delta", "response.audio.done",
            "response.audio_transcript.done"} <= kinds and not any(".output_" in kind for kind in kinds)
    transcript = "".join(e["delta"] for e in events if e["type"] == "response.audio_transcript.delta")
    audio = sum(e["samples"] for e in events if e["type"] == "response.audio.delta")
    assert events[-1]["response"]["status"] == "completed" and transcript.strip() == expected.text
    assert abs(audio / 24000 - len(expected.audio) / served.engine.decoder.sample_rate) < 0.01


def test_cross_site_pages_tokenless_clients_and_idle_sockets_are_kept_out(served):
    """A server with a token, one slot and a 1 s idle timeout, in this process."""
    import uvicorn
    from websockets.exceptions import InvalidStatus

    from omniforge.config.serve import ServeConfig
    from omniforge.tasks.serve.app import create_app
    from tests.conftest import free_port

    settings = ServeConfig(checkpoint="checkpoint/served", max_conversations=1, idle_timeout_s=1.0, token="sekrit",
                           allowed_origins=["https://good.example"])
    answerer = BatchedAnswerer(served.engine, served.engine.settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(answerer, settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    _wait(lambda: server.started)
    url, bearer = f"ws://127.0.0.1:{port}/v1/realtime", {"Authorization": "Bearer sekrit"}
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {**bearer, "Origin": "https://evil.example"}):
            with pytest.raises(InvalidStatus) as refused:
                connect(url, additional_headers=headers, open_timeout=10)
            assert refused.value.response.status_code == 403
        # an allowed page, its key as OpenAI's browser subprotocol; then it idles and is closed
        page = connect(url, additional_headers={"Origin": "https://good.example"}, open_timeout=10,
                       subprotocols=["realtime", "openai-insecure-api-key.sekrit"])
        assert json.loads(page.recv(timeout=10))["type"] == "session.created" and page.subprotocol == "realtime"
        closing = json.loads(page.recv(timeout=10))
        assert closing["type"] == "error" and closing["error"]["code"] == "idle_timeout"
        with pytest.raises(ConnectionClosed):
            page.recv(timeout=10)
        # its slot is free: the server's own page (same origin) with the token gets in, and may not append nothing
        own = connect(url, additional_headers={**bearer, "Origin": f"http://127.0.0.1:{port}"}, open_timeout=10)
        assert json.loads(own.recv(timeout=10))["type"] == "session.created"
        own.send(json.dumps({"type": "input_audio_buffer.append", "audio": ""}))
        assert json.loads(own.recv(timeout=10))["error"]["code"] == "empty_audio"
        own.close()
    finally:
        server.should_exit = True
        answerer.close()


def test_the_served_engine_answers_in_the_chat_format_its_checkpoint_was_trained_with(served, data_store):
    from omniforge.config import load_pipeline_config
    from omniforge.storage import store_from_config
    from omniforge.tasks.serve.app import open_served_engine
    from tests.serve.conftest import SERVE

    config = load_pipeline_config("configs/demo.yaml", [f"store.url={data_store}", "units.kmeans.k=32",
                                                        *TINY_DECODER, *SERVE,
                                                        "train.model.tokenizer.system_prompt=Talk like a pirate."])
    engine = open_served_engine(store_from_config(config.store), config)
    assert engine.chat.system_prompt == served.engine.chat.system_prompt != "Talk like a pirate."


def test_the_served_engine_answers_in_the_dtype_and_on_the_device_its_settings_say(served, data_store):
    import torch

    from omniforge.config import load_pipeline_config
    from omniforge.errors import InputError
    from omniforge.storage import store_from_config
    from omniforge.tasks.serve.app import open_served_engine
    from tests.serve.conftest import SERVE

    def opened(*settings: str):
        config = load_pipeline_config("configs/demo.yaml", [f"store.url={data_store}", "units.kmeans.k=32",
                                                            *TINY_DECODER, *SERVE, *settings])
        return open_served_engine(store_from_config(config.store), config)

    engine = opened("serve.dtype=bfloat16")
    assert {p.dtype for p in engine.model.parameters()} == {torch.bfloat16}
    trace = engine.answer([("user", "")], [served.questions[0]])
    assert trace.units and len(trace.audio) > 0  # it answers, in speech, from bf16 weights
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="device is cuda .* but torch sees no CUDA device"):
            opened("serve.device=cuda")


def test_a_server_open_to_the_network_needs_a_token():
    from pydantic import ValidationError

    from omniforge.config.serve import ServeConfig

    with pytest.raises(ValidationError, match="serve.host=0.0.0.0 opens the server to the network"):
        ServeConfig(host="0.0.0.0")
    assert ServeConfig(host="0.0.0.0", token="t").token.get_secret_value() == "t"
    assert "sekrit" not in repr(ServeConfig(host="::1", token="sekrit"))


def _wait(condition, timeout: float = 30) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.1)):
        if condition():
            return
        done.wait(0.1)
    raise AssertionError("timed out")
