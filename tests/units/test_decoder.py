"""Units back to audio: exact lengths, chunked streaming == one-shot, a decoder that learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniforge.config.build import TTSConfig
from omniforge.config.units import FrameVocoderConfig
from omniforge.model.frame_vocoder import FrameVocoder
from omniforge.model.unit_vocoder import HifiMel, MelGrid, UnitToMel, UnitToMelSettings
from omniforge.tasks.build.tts import EngineSet
from omniforge.tasks.common.audio_ops import resample
from omniforge.tasks.units.decoders.learned import (
    OnnxVocoder,
    UnitAudioDecoder,
    hifigan_onnx,
    load_decoder,
    load_hifigan,
    save_decoder,
    train_unit_to_mel,
)
from omniforge.tasks.units.frame_vocoder import VocoderExample, new_frame_vocoder, train_frame_vocoder

SMALL_FRAME_VOCODER = FrameVocoderConfig(dim=32, hidden=64, layers=2, batch_size=4, crop_frames=32, lr=1e-2)


@pytest.fixture(scope="module")
def decoder() -> UnitAudioDecoder:
    torch.manual_seed(0)
    return UnitAudioDecoder(UnitToMel(UnitToMelSettings(vocab_size=16, channels=32, embed_dim=16), MelGrid()),
                            load_hifigan())


@pytest.fixture(scope="module")
def frame_decoder(decoder) -> UnitAudioDecoder:
    """The same units -> mel network with an (untrained) frame vocoder and its whole receptive field."""
    torch.manual_seed(0)
    vocoder = new_frame_vocoder(SMALL_FRAME_VOCODER, MelGrid()).eval().requires_grad_(False)
    return UnitAudioDecoder(decoder.unit_to_mel, vocoder, vocoder.settings.receptive_field)


@pytest.fixture(scope="module")
def dilated_decoder(decoder) -> UnitAudioDecoder:
    """A units -> mel network whose layers are dilated 1, 2, 4, 1: its look-ahead must count the dilations."""
    torch.manual_seed(0)
    settings = UnitToMelSettings(vocab_size=16, channels=32, embed_dim=16, dilation_cycle=3)
    return UnitAudioDecoder(UnitToMel(settings, MelGrid()), decoder.vocoder)


@pytest.fixture(params=["decoder", "frame_decoder", "dilated_decoder"])
def any_decoder(request) -> UnitAudioDecoder:
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("n_units", [1, 7, 40])
def test_decode_gives_exactly_the_units_duration(any_decoder, n_units):
    wave = any_decoder.decode(list(range(n_units % 16)) + [0] * (n_units - n_units % 16))
    assert len(wave) == n_units * 22050 // 25 and np.all(np.isfinite(wave))


@pytest.mark.parametrize("chunk", [1, 4, 10, 33])
def test_streamed_chunks_concatenate_to_the_one_shot_decode(any_decoder, chunk):
    units = torch.randint(0, 16, (53,), generator=torch.Generator().manual_seed(chunk)).tolist()
    whole = any_decoder.decode(units)
    parts = list(any_decoder.stream(units[i:i + chunk] for i in range(0, len(units), chunk)))
    assert len(parts) > 1 or chunk >= 53
    # float rounding of differently sized convolutions
    assert np.allclose(np.concatenate(parts), whole, atol=1e-4 * max(1.0, np.abs(whole).max()))


def test_vocoder_threads_change_nothing_but_speed(decoder):
    units = torch.randint(0, 16, (30,), generator=torch.Generator().manual_seed(1)).tolist()
    two = UnitAudioDecoder(decoder.unit_to_mel, decoder.vocoder, threads=2)
    before = torch.get_num_threads()
    assert np.allclose(two.decode(units), decoder.decode(units), atol=1e-4)
    assert torch.get_num_threads() == before  # scoped to the decode


def random_units(n: int, seed: int) -> list[int]:
    return torch.randint(0, 16, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference ** 2) / max(np.sum((other - reference) ** 2), 1e-20)))


def test_onnx_runtime_vocoder_gives_the_torch_samples(decoder):
    units = random_units(40, 2)
    onnx = UnitAudioDecoder(decoder.unit_to_mel, OnnxVocoder(hifigan_onnx(), threads=2))
    assert snr_db(decoder.decode(units), onnx.decode(units)) > 60


def test_streamed_chunks_grow_up_to_the_cap_and_still_add_up(decoder):
    units = random_units(120, 3)
    cap = 0.5
    growing = UnitAudioDecoder(decoder.unit_to_mel, decoder.vocoder, max_chunk_seconds=cap)
    parts = list(growing.stream(units[i:i + 5] for i in range(0, len(units), 5)))
    sizes = [len(p) for p in parts[:-1]]  # the last one is whatever is left
    wanted = [min(2 * a, cap * 22050) for a in sizes]
    assert len(sizes) >= 3 and all(b >= w for b, w in zip(sizes[1:], wanted))
    assert len(parts) < len(list(decoder.stream(units[i:i + 5] for i in range(0, len(units), 5))))
    assert np.allclose(np.concatenate(parts), decoder.decode(units), atol=1e-4)


def test_a_trimmed_vocoder_context_stays_close_to_the_exact_decode(decoder):
    units = random_units(80, 4)
    whole = decoder.decode(units)

    def streamed_snr(context: int) -> float:
        trimmed = UnitAudioDecoder(decoder.unit_to_mel, decoder.vocoder, vocoder_context=context)
        return snr_db(whole, np.concatenate(list(trimmed.stream(units[i:i + 10] for i in range(0, 80, 10)))))

    assert streamed_snr(8) > 30 > streamed_snr(1)


def test_audio_arrives_before_the_last_units(decoder):
    units = [3] * 60
    first_audio_after = None
    seen = 0
    for i, part in enumerate(decoder.stream(units[j:j + 10] for j in range(0, 60, 10))):
        first_audio_after = first_audio_after or (i + 1)
        seen += len(part)
    assert first_audio_after == 1 and seen == 60 * 882
    assert decoder.lookahead_units() <= 10


@pytest.mark.parametrize("decay", [False, True])
def test_unit_to_mel_learns_real_speech_and_round_trips_its_files(decay):
    grid = MelGrid()
    wave, rate = EngineSet(TTSConfig()).get("piper").synthesize("Paris is the capital of France.", TTSConfig().assistant)
    mel = HifiMel(grid)(torch.from_numpy(resample(wave, rate, grid.sample_rate)))
    n_units = len(wave) * 25 // rate
    units = torch.arange(n_units) % 8  # stand-in units, one per 40 ms
    settings = UnitToMelSettings(vocab_size=8, channels=32, embed_dim=16, layers=2)
    model, losses = train_unit_to_mel([(units, mel[:, : grid.frames_for_samples(grid.samples(n_units))])], settings,
                                      grid, steps=60, batch_size=4, crop_frames=64, lr=3e-3, seed=0, decay=decay,
                                      log_every=0)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    loaded = load_decoder(save_decoder(model))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.unit_to_mel.state_dict().values()))


def test_frame_vocoder_learns_real_speech_and_round_trips_its_files(decoder):
    grid = MelGrid()
    wave, rate = EngineSet(TTSConfig()).get("piper").synthesize("Paris is the capital of France.", TTSConfig().assistant)
    wave = torch.from_numpy(resample(wave, rate, grid.sample_rate)).float()
    mel = HifiMel(grid)(wave)[:, : len(wave) // grid.hop]
    example = VocoderExample(mel, wave[: mel.shape[1] * grid.hop])

    def distance(vocoder: FrameVocoder) -> float:
        """Log-spectral distance of the vocoder's wave from the real one."""
        with torch.no_grad():
            made = vocoder(mel[None])[0, 0]
        return float((HifiMel(grid)(made) - HifiMel(grid)(example.wave)).abs().mean())

    untrained = new_frame_vocoder(SMALL_FRAME_VOCODER, grid)
    vocoder, losses = train_frame_vocoder([example], SMALL_FRAME_VOCODER.model_copy(update={"steps": 80}), grid,
                                          log_every=0)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])
    assert distance(vocoder) < 0.7 * distance(untrained)
    loaded = load_decoder(save_decoder(decoder.unit_to_mel, vocoder)).vocoder
    assert isinstance(loaded, FrameVocoder) and loaded.settings == vocoder.settings
    assert all(torch.equal(a, b) for a, b in zip(vocoder.state_dict().values(), loaded.state_dict().values()))


def test_cosyvoice2_paths_say_what_is_missing(tmp_path):
    from omniforge.config.units import CosyVoice2DecoderConfig
    from omniforge.tasks.build.tts import TTSUnavailable
    from omniforge.tasks.common.cosyvoice import CosyVoiceUnavailable
    from omniforge.tasks.units.decoder import open_cosyvoice2

    with pytest.raises(TTSUnavailable, match="build.tts.cosyvoice_model_dir"):
        EngineSet(TTSConfig(cosyvoice_model_dir=str(tmp_path / "absent"))).get("cosyvoice2")
    with pytest.raises(CosyVoiceUnavailable, match="units.decoder.cosyvoice2.model_dir"):
        open_cosyvoice2(CosyVoice2DecoderConfig())
    with pytest.raises(CosyVoiceUnavailable, match="units.decoder.cosyvoice2.prompt_wav"):
        open_cosyvoice2(CosyVoice2DecoderConfig(model_dir=str(tmp_path)))
    prompt = tmp_path / "prompt.wav"
    prompt.write_bytes(b"RIFF")
    with pytest.raises(CosyVoiceUnavailable, match="CosyVoice 2 code is not importable"):
        open_cosyvoice2(CosyVoice2DecoderConfig(model_dir=str(tmp_path), prompt_wav=str(prompt)))


@pytest.mark.slow
def test_roundtrip_scores_own_and_held_out_answers(data_store):
    from omniforge.storage import Kind, store_from_config
    from omniforge.tasks.units.decoder import decoder_version, open_decoder
    from omniforge.tasks.units.decoder_data import paired_rows
    from omniforge.tasks.units.roundtrip import encoded_rows, roundtrip
    from tests.training_data import data_config

    config = data_config(data_store).units.model_copy(update={"name": "roundtrip"})
    config.decoder.steps = 30
    store = store_from_config(data_config(data_store).store)
    units = store.manifest("units/demo")
    speech = store.manifest(units.parents_of(Kind.speech)[0])
    # the held-out path encodes with the units' own tokenizer: on the same speech it gives the same units
    assert [r["units"] for r in encoded_rows(store, units, speech, 3)] == [r["units"] for r in paired_rows(store, units)[:3]]

    decoder = open_decoder(store, decoder_version(store, units, config))
    report = roundtrip(store, units, decoder, limit=3, speech=speech)
    assert report["utterances"] == 3 and report["speech"] == str(speech.ref())
    assert report["original_wer"] < 0.3 <= report["resynthesis_wer"]  # 30 decoder steps cannot speak yet
    assert 1 <= report["resynthesis_dnsmos"] <= 5 and 1 <= report["original_dnsmos"] <= 5


def test_a_decoder_trains_on_16khz_audio_and_says_so_when_there_is_none(data_store):
    """A speech version without native-rate audio (a replicated set) trains the decoder on its 16 kHz
    audio; one without any audio (a VocalNet import's answers) is a clear error, not a TypeError."""
    import pyarrow as pa

    from omniforge.storage import Kind, store_from_config
    from omniforge.tasks.units.decoder import decoder_version
    from omniforge.tasks.units.decoder_data import DecoderNeedsAudio, paired_rows, training_audio
    from tests.training_data import data_config

    store = store_from_config(data_config(data_store).store)
    units = store.manifest("units/demo")
    speech = store.manifest(units.parent_of(Kind.speech))
    tokenizer = store.manifest(units.parent_of(Kind.tokenizer))
    made = {}
    for name, emptied in (("no-native", ["audio_native"]), ("no-audio", ["audio_native", "audio"])):
        table = store.read_table(speech)
        for column in emptied:
            index = table.schema.get_field_index(column)
            table = table.set_column(index, table.schema.field(index), pa.nulls(table.num_rows, table.schema.field(index).type))
        writer = store.writer(Kind.speech, name, parents=[speech])
        writer.write_table("data", table)
        version = writer.publish()
        writer = store.writer(Kind.units, name, parents=[version, tokenizer])
        writer.write_table("data", store.read_table(units))
        made[name] = writer.publish()

    rows = paired_rows(store, made["no-native"])
    assert rows and all(training_audio(row) == row["audio"]["bytes"] for row in rows)
    config = data_config(data_store).units.model_copy(update={"name": "no-native"})
    config.decoder.steps, config.decoder.seed = 2, 7
    assert decoder_version(store, made["no-native"], config).stats["steps"] == 2
    with pytest.raises(DecoderNeedsAudio, match="holds no audio"):
        paired_rows(store, made["no-audio"])


def test_a_decoder_fine_tunes_on_another_units_version_as_a_version_of_its_own(data_store):
    """units.decoder.adapt: the tokenizer's decoder, trained on one units version (a corpus), is fine-tuned on
    another's speech (the dialogues' answers), starting from it, with its own speech rehearsed: a new version whose
    parents are both, found again, never trained by a command that only speaks; the base stays the decoder of
    the units it was trained on, and the frame vocoder is kept as it was."""
    from omniforge.storage import Kind, store_from_config
    from omniforge.tasks.units.decoder import MissingDecoder, decoder_version
    from omniforge.tasks.units.decoder_data import paired_rows, training_speech
    from omniforge.tasks.units.decoders.learned import load_networks
    from tests.training_data import data_config

    store = store_from_config(data_config(data_store).store)
    units = store.manifest("units/demo")
    rows = store.read_table(units)
    halves = {}
    for name, part in (("adapt-corpus", rows.slice(0, rows.num_rows // 2)),
                       ("adapt-answers", rows.slice(rows.num_rows // 2))):
        writer = store.writer(Kind.units, name, parents=[units.parent_of(Kind.speech), units.parent_of(Kind.tokenizer)])
        writer.write_table("data", part)
        halves[name] = writer.publish()
    corpus, answers = halves["adapt-corpus"], halves["adapt-answers"]
    config = data_config(data_store).units
    config.decoder.vocoder, config.decoder.steps, config.decoder.seed = "frame", 2, 23  # a base of its own
    base = decoder_version(store, corpus, config)
    assert base.parent_of(Kind.units) == corpus.ref() and decoder_version(store, answers, config).ref() == base.ref()

    config.decoder.adapt.steps, config.decoder.adapt.lr, config.decoder.adapt.rehearsed = 30, 3e-3, 2
    before = store.versions(Kind.decoder, base.name)
    with pytest.raises(MissingDecoder, match=f"fine-tuned on {answers.ref()}.*omniforge tokenize-units"):
        decoder_version(store, answers, config, train=False)
    assert store.versions(Kind.decoder, base.name) == before
    adapted = decoder_version(store, answers, config)
    assert adapted.ref() != base.ref() and adapted.parents_of(Kind.decoder) == [base.ref()]
    assert adapted.parent_of(Kind.units) == answers.ref()
    assert adapted.stats["adapted_from"] == str(base.ref()) and adapted.stats["steps"] == 30
    assert adapted.stats["rehearsed"] == 2 and adapted.stats["utterances"] == len(paired_rows(store, answers))
    assert decoder_version(store, answers, config).ref() == adapted.ref()  # found again, not trained twice
    assert decoder_version(store, corpus, config).ref() == base.ref()  # the units it learned from: the base

    files = {m.ref(): {n: store.read_bytes(e.path) for n, e in m.files.items()} for m in (base, adapted)}
    assert files[adapted.ref()]["frame_vocoder.safetensors"] == files[base.ref()]["frame_vocoder.safetensors"]
    base_network = load_networks(files[base.ref()])[0]
    speech = training_speech(paired_rows(store, answers), base_network.grid)

    def error(ref) -> float:
        network = load_networks(files[ref])[0].eval()
        with torch.no_grad():
            return float(np.mean([(network(network.frame_inputs(s.units, 0, s.mel.shape[1])[None])[0] - s.mel)
                                  .abs().mean() for s in speech]))

    assert error(adapted.ref()) < error(base.ref())  # it learned the new speech
    torch.manual_seed(1)
    fresh = UnitToMel(base_network.settings, base_network.grid).state_dict()
    start, end = base_network.state_dict(), load_networks(files[adapted.ref()])[0].state_dict()
    moved, apart = (sum(float((other[k] - start[k]).norm()) for k in start) for other in (end, fresh))
    assert moved < apart / 2  # from the base (a new network would start as far as `fresh`)
