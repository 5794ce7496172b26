"""The architecture, pinned: adapter, vocabulary, gate fusion, read-write schedule, losses,
cached streaming == uncached recomputation, save/load, released checkpoint names."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from omniforge.model.gate_fusion import GateFusion
from omniforge.model.mel import slaney_mel_filters
from omniforge.model.modeling_omni import IGNORE_INDEX, OmniModel
from omniforge.model.padded_speech import PaddedSpeech
from omniforge.model.read_write import ReadWrite, interleave
from omniforge.model.reference_generation import generate_reference
from omniforge.model.released_checkpoint import export_released_state, load_released, ours_to_released, released_to_ours
from omniforge.model.slot_cache import SlotCacheSettings
from omniforge.model.speech_adapter import SpeechAdapter
from omniforge.model.streaming import GenerationSettings, StreamingBatch, stream_generate
from tests.tiny_model import EOS, SPEECH_TOKEN, TEXT_VOCAB, UNITS, three_prompts, tiny_config, tiny_model


def test_adapter_concatenates_every_k_frames_and_drops_the_rest():
    adapter = SpeechAdapter(encoder_hidden=3, llm_hidden=4, k=5, hidden=6)
    frames = torch.randn(2, 23, 3)
    out = adapter(frames)
    assert out.shape == (2, 23 // 5, 4)
    by_hand = torch.stack([torch.cat([frames[:, 5 * j + i] for i in range(5)], dim=-1) for j in range(4)], dim=1)
    expected = adapter.linear2(torch.relu(adapter.linear1(by_hand)))
    assert torch.allclose(out, expected)
    assert adapter.output_lengths(torch.tensor([23, 9, 4])).tolist() == [4, 1, 0]


def test_padded_batches_keep_per_item_lengths_and_values():
    model = tiny_model()
    features = torch.randn(3, 16, 81)
    lengths = torch.tensor([81, 50, 20])
    batch = model.speech_embeddings(features, lengths)
    assert [len(x) for x in batch] == [((n + 1) // 2) // 5 for n in (81, 50, 20)] == [8, 5, 2]
    for i, n in enumerate(lengths.tolist()):
        alone = model.speech_embeddings(features[i : i + 1, :, :n], lengths[i : i + 1])[0]
        assert torch.allclose(batch[i], alone, atol=1e-5)


def test_speech_padded_to_the_encoders_longest_input_encodes_as_alone():
    """The fixed shape a GPU replays one graph for: every turn padded to the longest input, masked."""
    model = tiny_model()
    padded = PaddedSpeech(model)
    assert padded.frames == 2 * model.config.encoder_config.max_source_positions  # its positions, before stride 2
    features = torch.randn(2, 16, 81)
    for n in (81, 37):
        alone = model.speech_embeddings(features[:1, :, :n], torch.tensor([n]))[0]
        assert torch.allclose(padded(features[:1, :, :n], torch.tensor([n])), alone, atol=1e-5)


def test_tts_vocabulary_is_text_plus_units_plus_sep():
    config = tiny_config()
    assert config.tts_vocab_size == TEXT_VOCAB + UNITS + 1
    assert config.unit_offset == TEXT_VOCAB and config.sep_token_id == TEXT_VOCAB + UNITS
    production = tiny_config(unit_vocab_size=6561)
    assert production.tts_vocab_size == TEXT_VOCAB + 6561 + 1


def test_gate_fusion_equation_on_known_tensors():
    fusion = GateFusion(llm_hidden=2, tts_hidden=2)
    with torch.no_grad():
        fusion.input_proj[0].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0]]))
        fusion.input_proj[0].bias.zero_()
        fusion.input_proj[2].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0]]))
        fusion.input_proj[2].bias.zero_()
        fusion.gate[0].weight.zero_()
        fusion.gate[0].bias.copy_(torch.tensor([0.0, 100.0]))
    h = torch.tensor([[2.0, -3.0]])
    e = torch.tensor([[10.0, 20.0]])
    r = torch.tensor([[2.0, 0.0]])  # relu([2, -3, -1, 0]) -> [2, 0, 0, 0] -> [2, 0]
    g = torch.sigmoid(torch.tensor([[0.0, 100.0]]))
    assert torch.allclose(fusion(h, e), g * r + (1 - g) * e)
    assert torch.allclose(fusion(h, e), torch.tensor([[6.0, 0.0]]), atol=1e-4)
    # a gate started closed passes the token embedding through, whatever the LLM state
    closed = GateFusion(llm_hidden=2, tts_hidden=2, gate_init_bias=-20.0)
    assert torch.allclose(closed(torch.randn(5, 2) * 100, e.expand(5, 2)), e.expand(5, 2), atol=1e-4)
    assert closed(h, e).requires_grad  # and it still learns to open


def letters(slots):
    return " ".join(f"{slot.value[0]}{index}" if index >= 0 else slot.value for slot, index in slots)


@pytest.mark.parametrize(
    ("n_text", "expected"),
    [
        (0, "sep s0 s1 s2 s3 s4 s5 eos"),
        (1, "t0 sep s0 s1 s2 s3 s4 s5 eos"),
        (3, "t0 t1 t2 s0 s1 sep s2 s3 s4 s5 eos"),
        (4, "t0 t1 t2 s0 s1 t3 sep s2 s3 s4 s5 eos"),
        (10, "t0 t1 t2 s0 s1 t3 t4 t5 s2 s3 t6 t7 t8 s4 s5 t9 sep eos"),
    ],
)
def test_read_write_interleaving(n_text, expected):
    assert letters(interleave(n_text, 6, ReadWrite(read=3, write=2))) == expected


def test_tts_targets_follow_the_interleaving():
    model = tiny_model()
    generator = model.speech_generator
    text = generator.embed(torch.tensor([7, 8, 9, 10]))
    units = torch.tensor([1, 2, 3, 4, 5, 6])
    inputs, targets = generator.sequence(text, units, ReadWrite(3, 4))
    slots = interleave(4, 6, ReadWrite(3, 4))  # t0 t1 t2 s0 s1 s2 s3 t3 sep s4 s5 eos
    assert len(inputs) == len(slots) - 1
    off = TEXT_VOCAB
    expected = [IGNORE_INDEX, IGNORE_INDEX, off + 1, off + 2, off + 3, off + 4, IGNORE_INDEX, IGNORE_INDEX, off + 5, off + 6, EOS]
    assert targets.tolist() == expected
    assert torch.equal(inputs[3], generator.embed(torch.tensor(off + 1))) and torch.equal(inputs[0], text[0])
    assert torch.equal(inputs[8], generator.embed(torch.tensor(model.config.sep_token_id)))
    # noised units are read at the speech positions; the targets are still the true units
    read = torch.tensor([1, 9, 3, 4, 5, 2])
    noised_inputs, noised_targets = generator.sequence(text, units, ReadWrite(3, 4), read_units=read)
    assert torch.equal(noised_targets, targets)
    differs = [i for i in range(len(inputs)) if not torch.equal(inputs[i], noised_inputs[i])]
    assert differs == [4, 10]  # s1 and s5 are read as 9 and 2
    assert torch.equal(noised_inputs[4], generator.embed(torch.tensor(off + 9)))


def test_loss_supervises_only_labelled_assistant_tokens():
    model = tiny_model()
    features, lengths = torch.randn(1, 16, 40), torch.tensor([40])
    ids = torch.tensor([1, SPEECH_TOKEN, 7, 8, 9, 10])
    labels = torch.tensor([IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 8, 9, 10])
    loss = model.s2t_loss([ids], features, lengths, [labels])
    speech = model.speech_embeddings(features, lengths)[0]
    embeds = torch.cat([model.llm.get_input_embeddings()(ids[:1]), speech, model.llm.get_input_embeddings()(ids[2:])])
    logits = model.llm(inputs_embeds=embeds[None]).logits[0]
    start = 1 + len(speech) + 1  # token 8 sits here; the logits one position earlier predict it
    manual = torch.nn.functional.cross_entropy(logits[start - 1 : start + 2], torch.tensor([8, 9, 10]))
    assert torch.allclose(loss, manual, atol=1e-5)
    # labels on the prompt, if any, would change the loss: the masks are what select the tokens
    other = model.s2t_loss([ids], features, lengths, [torch.tensor([IGNORE_INDEX, IGNORE_INDEX, 7, 8, 9, 10])])
    assert not torch.allclose(loss, other)


def answers(model, prompts, speech, settings):
    events = list(stream_generate(model, prompts, speech, settings))
    out = []
    for item in range(len(prompts)):
        text = [e.tokens[0] for e in events if e.kind == "text" and e.item == item]
        units = [u for e in events if e.kind == "speech" and e.item == item for u in e.tokens]
        out.append((text, units))
    return events, out


def test_cached_streaming_equals_uncached_recomputation():
    model = tiny_model(seed=3).double()
    features, lengths = torch.randn(2, 16, 60, dtype=torch.float64), torch.tensor([60, 35])
    speech = model.speech_embeddings(features, lengths)
    prompts = [torch.tensor([1, SPEECH_TOKEN, 7, 8]), torch.tensor([1, 9, SPEECH_TOKEN, 3, 11])]
    settings = GenerationSettings(max_text_tokens=14, max_speech_tokens=30)
    # choose an end-of-text token the first answer produces early and the second does not: the two
    # items then end at different steps, which exercises the batch's bookkeeping
    _, free_run = answers(model, prompts, speech, settings)
    first, second = free_run[0][0], free_run[1][0]
    stop = next(t for t in first[2:] if t not in second[:10] and t != first[0])
    model.config.eos_token_id = stop
    events, streamed = answers(model, prompts, speech, settings)
    for item in range(2):
        reference = generate_reference(model, prompts[item], [speech[item]], settings)
        assert streamed[item] == reference
        released_way = generate_reference(model, prompts[item], [speech[item]], settings, llm_cache=True, tts_reprefill=True)
        assert released_way == reference
    assert len(streamed[0][0]) < len(streamed[1][0])
    assert [e.kind for e in events].count("end") == 2
    assert all(len(e.tokens) <= model.config.stream_write for e in events if e.kind == "speech")


@pytest.mark.parametrize("speech_per_step,slot_cache", [
    (None, None), (2, None), (None, SlotCacheSettings(slots=4, llm_length=128, tts_length=64)),
    (2, SlotCacheSettings(slots=3, llm_length=128, tts_length=64, prefill_chunk=8))])
def test_answers_joining_and_leaving_a_running_batch_are_answered_as_alone(speech_per_step, slot_cache):
    """A conversation joins the batch at a step boundary and another leaves mid-answer: each
    remaining answer is token for token what it would be on its own, also when each step writes at
    most 2 speech tokens per answer after its first chunk (the text read meanwhile waits its turn),
    and also decoding from fixed-size slot caches (the GPU's graph-replayed path, eager here) instead
    of growing ones; the reference is eager generation of one answer alone."""
    model = tiny_model(seed=3).double()
    prompts, speech = three_prompts(model)
    settings = GenerationSettings(max_text_tokens=10, max_speech_tokens=24, speech_per_step=speech_per_step,
                                  slot_cache=slot_cache)
    batch = StreamingBatch(model, settings)
    batch.add(["a"], prompts[:1], speech[:1])
    events, steps = [], []
    for _ in range(3):
        steps.append(batch.step())
        events += steps[-1]
    batch.add(["b", "c"], prompts[1:], speech[1:])  # they join while "a" is mid-answer
    steps.append(batch.step())
    events += steps[-1]
    batch.remove("c")  # its listener left
    removed_at = len(events)
    assert len(batch) == 2
    while len(batch):
        steps.append(batch.step())
        events += steps[-1]
    if speech_per_step is not None:
        for key in ("a", "b"):
            per_step = [sum(len(e.tokens) for e in step if e.kind == "speech" and e.item == key) for step in steps]
            spoken = [n for n in per_step if n]
            assert spoken[0] == model.config.stream_write and max(spoken[1:]) == speech_per_step
    for key, item in (("a", 0), ("b", 1)):
        text = [e.tokens[0] for e in events if e.kind == "text" and e.item == key]
        units = [u for e in events if e.kind == "speech" and e.item == key for u in e.tokens]
        assert (text, units) == generate_reference(model, prompts[item], [speech[item]],
                                                   replace(settings, slot_cache=None))
    assert sorted(e.item for e in events if e.kind == "end") == ["a", "b"]
    assert any(e.item == "c" for e in events[:removed_at]) and not any(e.item == "c" for e in events[removed_at:])


def test_speech_starts_before_the_text_ends():
    model = tiny_model(seed=1)
    speech = model.speech_embeddings(torch.randn(1, 16, 40), torch.tensor([40]))
    events = list(stream_generate(model, [torch.tensor([1, SPEECH_TOKEN])], speech,
                                  GenerationSettings(max_text_tokens=12, max_speech_tokens=60)))
    kinds = [e.kind for e in events]
    assert kinds.index("speech") < len(kinds) - 1 - kinds[::-1].index("text")
    assert kinds.index("speech") == model.config.stream_read  # after R text tokens, the first chunk


def test_save_and_load_round_trip_bit_exactly(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = OmniModel.from_pretrained(tmp_path / "ckpt")
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert loaded.config.to_dict()["tts_config"] == model.config.to_dict()["tts_config"]
    assert loaded.config.sep_token_id == model.config.sep_token_id


def test_released_checkpoint_names_load(tmp_path):
    model = tiny_model(seed=5)
    released = export_released_state(model)
    assert "model.speech_encoder.blocks.1.attn.query.weight" in released
    assert "model.speech_projector.linear1.weight" in released and "model.layers.0.mlp.up_proj.weight" in released
    assert "speech_generator.gate.0.weight" in released and "speech_generator.input_proj.2.bias" in released
    assert "lm_head.weight" in released
    folder = tmp_path / "released"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in released.items() if k != "speech_generator.model.lm_head.weight"},
              folder / "model.safetensors")
    config = model.config
    (folder / "config.json").write_text(json.dumps({
        **config.llm_config.to_dict(), "speech_encoder_ds_rate": 5, "speech_encoder_hidden_size": 32,
        "stream_params": "(3,4)", "speech_generator": config.tts_config.to_dict(), "unit_vocab_size": UNITS,
        "eos_token_id": EOS}))
    loaded = load_released(folder, config.encoder_config, speech_token_id=SPEECH_TOKEN,
                           adapter_hidden_size=config.adapter_hidden_size)
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert (loaded.config.stream_read, loaded.config.stream_write) == (3, 4)
    for name in ours:
        assert released_to_ours(ours_to_released(name)) == name


def test_first_build_loads_each_part_from_its_own_checkpoint(tmp_path):
    """Production path, offline: a Whisper checkpoint, an LLM and a TTS LM saved separately (as
    whisper-large-v3, Qwen2.5-7B and Qwen2.5-0.5B would be), combined and extended."""
    from transformers import AutoModelForCausalLM, WhisperConfig, WhisperModel

    config = tiny_config()
    whisper = WhisperModel(WhisperConfig(**config.encoder_config.to_dict()))
    whisper.save_pretrained(tmp_path / "whisper")
    llm = AutoModelForCausalLM.from_config(config.llm_config)
    llm.save_pretrained(tmp_path / "llm")
    tts_source = AutoModelForCausalLM.from_config(config.llm_config.__class__(**{**config.llm_config.to_dict(),
                                                                               "hidden_size": 24, "num_attention_heads": 2,
                                                                               "num_key_value_heads": 1}))
    tts_source.save_pretrained(tmp_path / "tts")
    model = OmniModel.from_parts(str(tmp_path / "whisper"), str(tmp_path / "llm"), str(tmp_path / "tts"),
                                 unit_vocab_size=UNITS, speech_token_id=SPEECH_TOKEN, eos_token_id=EOS)
    assert torch.equal(model.speech_encoder.conv1.weight, whisper.encoder.conv1.weight)
    assert torch.equal(model.llm.lm_head.weight, llm.lm_head.weight)
    tts_embed = model.speech_generator.model.get_input_embeddings().weight
    assert tts_embed.shape[0] == model.config.tts_vocab_size == TEXT_VOCAB + UNITS + 1
    assert torch.equal(tts_embed[:TEXT_VOCAB], tts_source.get_input_embeddings().weight)
    assert not any(p.requires_grad for p in model.speech_encoder.parameters())
    model.save_pretrained(tmp_path / "omni")
    reloaded = OmniModel.from_pretrained(tmp_path / "omni")
    assert torch.equal(reloaded.speech_generator.model.get_input_embeddings().weight, tts_embed)


@pytest.mark.parametrize("n_fft, n_mels, fmax, rate", [(400, 80, 8000.0, 16000), (400, 128, 8000.0, 16000),
                                                       (1024, 80, 8000.0, 22050)])
def test_own_mel_filters_equal_the_slaney_filters_whisper_uses(n_fft, n_mels, fmax, rate):
    from transformers.audio_utils import mel_filter_bank

    ours = slaney_mel_filters(1 + n_fft // 2, n_mels, 0.0, fmax, rate)
    theirs = mel_filter_bank(1 + n_fft // 2, n_mels, 0.0, fmax, rate, norm="slaney", mel_scale="slaney")
    assert ours.shape == theirs.shape
    assert abs(ours - theirs).max() < 1e-12


def _never_ends(model: OmniModel) -> OmniModel:
    """The TTS LM's end-of-speech logit forced to -inf: a model that would talk until a cap stops it."""
    def no_eos(module, inputs, output):
        output.logits[..., EOS] = -float("inf")
        return output

    model.speech_generator.model.register_forward_hook(no_eos)
    return model


def test_length_guard_stops_a_tts_lm_that_never_says_end_of_speech():
    model = _never_ends(tiny_model(seed=2))
    text = [7, 8, 9, 10, 11, 12]  # said as forced text, as `omniforge speak` says a sentence

    def units(settings: GenerationSettings) -> tuple[int, list[str]]:
        events = list(stream_generate(model, [torch.tensor([1])], [], settings, forced=[text], llm_states=False))
        return sum(len(e.tokens) for e in events if e.kind == "speech"), [e.kind for e in events]

    unguarded, _ = units(GenerationSettings(max_text_tokens=20, max_speech_tokens=400))
    assert unguarded == 400  # only the hard cap ended it
    guarded, kinds = units(GenerationSettings(max_text_tokens=20, max_speech_tokens=400, max_units_per_text_token=5))
    assert guarded == 5 * len(text) and kinds[-1] == "end"
    # the guard holds while the text streams in too: the speech never runs ahead of 5 units per token read
    written, read = 0, 0
    for event in stream_generate(model, [torch.tensor([1])], [], GenerationSettings(
            max_text_tokens=20, max_speech_tokens=400, max_units_per_text_token=2), forced=[text], llm_states=False):
        read += event.kind == "text"
        written += len(event.tokens) if event.kind == "speech" else 0
        assert written <= 2 * max(read, 1)


def test_forced_text_is_read_as_the_llm_would_have_written_it():
    """Saying a given text (teacher-forced) with LLM states is answering, with the LLM's choices
    replaced: if the forced text is the LLM's own greedy answer, the speech is the same."""
    model = tiny_model(seed=3).double()
    speech = model.speech_embeddings(torch.randn(1, 16, 40, dtype=torch.float64), torch.tensor([40]))
    prompt = [torch.tensor([1, SPEECH_TOKEN, 7])]
    settings = GenerationSettings(max_text_tokens=8, max_speech_tokens=30)
    _, [(text, units)] = answers(model, prompt, speech, settings)
    forced = list(stream_generate(model, prompt, speech, settings, forced=[text]))
    assert [e.tokens[0] for e in forced if e.kind == "text"] == text
    assert [u for e in forced if e.kind == "speech" for u in e.tokens] == units
    plain = list(stream_generate(model, prompt, speech, settings, forced=[text], llm_states=False))
    assert [u for e in plain if e.kind == "speech" for u in e.tokens] != units  # no LLM states: other speech


def test_answers_sharing_a_prompt_head_prefill_it_once_and_answer_as_alone():
    model = tiny_model(seed=2)
    speech = model.speech_embeddings(torch.randn(3, 16, 60), torch.tensor([60, 44, 30]))
    head = [1, 9, 4]  # the system turn and user header every conversation's prompt starts with
    prompts = [torch.tensor(head + [SPEECH_TOKEN, 7]), torch.tensor(head + [SPEECH_TOKEN, 3, 11]),
               torch.tensor(head + [SPEECH_TOKEN, 6, SPEECH_TOKEN, 2])]
    settings = GenerationSettings(max_text_tokens=8, max_speech_tokens=20)
    batch = StreamingBatch(model, settings)
    batch.add(["a"], prompts[:1], [speech[0]])
    first = batch.head
    events = batch.step()
    batch.add(["b", "c"], prompts[1:], [speech[1], speech[2], speech[0]])
    assert batch.head is first and first.ids.tolist() == head  # computed once, for the first answer
    while len(batch):
        events += batch.step()
    for key, item, spoken in (("a", 0, [speech[0]]), ("b", 1, [speech[1]]), ("c", 2, [speech[2], speech[0]])):
        text = [e.tokens[0] for e in events if e.kind == "text" and e.item == key]
        units = [u for e in events if e.kind == "speech" and e.item == key for u in e.tokens]
        assert (text, units) == generate_reference(model, prompts[item], spoken, settings)
    typed = StreamingBatch(model, settings)
    typed.add(["t"], [torch.tensor(head + [7, 8])], [])  # no speech turn: no head to share
    assert typed.head is None
