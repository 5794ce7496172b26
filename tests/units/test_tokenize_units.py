"""Speech units: 25 Hz for any length, reproducible k-means, deterministic tokenization, a real
tokenize_units flow on Ray with lineage, incremental units versions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniforge.config import load_pipeline_config
from omniforge.config.build import TTSConfig, VoiceConfig
from omniforge.config.units import DecoderRuntimeConfig, S3TokenizerConfig
from omniforge.flows.build_dialogues import build_dialogues
from omniforge.flows.tokenize_units import tokenize_units
from omniforge.model.frame_vocoder import FrameVocoder
from omniforge.model.unit_tokenizer import (
    EncoderFrontend,
    FrontendSettings,
    KMeansUnitTokenizer,
    LogMelFrontend,
    fit_kmeans,
    unexplained_variance,
)
from omniforge.storage import Kind, store_from_config
from omniforge.storage.audio import decode_audio
from omniforge.tasks.build.english_text import english_sentences
from omniforge.tasks.build.tts import EngineSet
from omniforge.tasks.common.audio_ops import resample
from omniforge.tasks.common.whisper_encoder import load_speech_encoder
from omniforge.tasks.units.decoder import decoder_version, open_decoder
from omniforge.tasks.units.tokenizers import (
    S3UnitTokenizer,
    TokenizerUnavailable,
    build_tokenizer,
    speech_rows,
    tokenizer_state,
)
from tests.training_data import TINY_DECODER

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.mark.parametrize("samples", [1, 639, 640, 641, 16000, 23456, 16000 * 7 + 5])
def test_unit_rate_is_25_hz_within_one_frame(samples):
    frames = LogMelFrontend(FrontendSettings())(torch.randn(samples)).shape[0]
    assert abs(frames - samples / 16000 * 25) <= 1
    assert frames == FrontendSettings().frames(samples)


def test_kmeans_fit_is_reproducible_with_a_seed():
    points = torch.randn(3000, 8)
    first, again, other = fit_kmeans(points, 16, seed=7), fit_kmeans(points, 16, seed=7), fit_kmeans(points, 16, seed=8)
    assert torch.equal(first, again) and not torch.equal(first, other)
    with pytest.raises(ValueError, match="at least k=16"):
        fit_kmeans(points[:10], 16, seed=0)


def test_unexplained_variance_is_what_the_nearest_centroid_leaves_of_the_frames():
    frontend = LogMelFrontend(FrontendSettings())
    frames = frontend(piper_16k("The doctor told him to drink more water before the long walk home."))
    left = [unexplained_variance(frames, fit_kmeans(frames, k, seed=0)) for k in (1, 4, 16)]
    assert np.isclose(left[0], 1.0, atol=1e-4)  # one centroid, the mean: all of the variance is left
    assert 1.0 > left[1] > left[2] > 0.0
    assert unexplained_variance(frames, frames) == 0.0  # every frame its own centroid


def piper_16k(text: str) -> torch.Tensor:
    wave, rate = EngineSet(TTSConfig()).get("piper").synthesize(text, TTSConfig().assistant)
    return torch.from_numpy(resample(wave, rate, 16000))


def test_tokenizing_real_speech_twice_gives_identical_units():
    wave16k = piper_16k("The capital of France is Paris.")
    frontend = LogMelFrontend(FrontendSettings())
    tokenizer = KMeansUnitTokenizer(frontend, fit_kmeans(frontend(wave16k), 8, seed=0))
    first, second = tokenizer.encode([wave16k, wave16k[: len(wave16k) // 2]]), tokenizer.encode([wave16k])
    assert torch.equal(first[0], second[0]) and len(set(first[0].tolist())) > 1
    assert len(first[1]) == FrontendSettings().frames(len(wave16k) // 2)


def test_encoder_units_are_25_hz_standardized_and_the_same_batched_or_alone():
    """tiny.en's states after 2 layers, pooled to the unit rate: one frame per unit of any length,
    standardized by the fitted statistics, and a padded batch tokenizes each wave as alone."""
    wave = piper_16k("The doctor told him to drink more water.")
    frontend = EncoderFrontend(FrontendSettings(), load_speech_encoder("tiny.en"), depth=2)
    lengths = [len(wave), len(wave) // 3, 641, 16000 * 2 + 5]
    waves = [wave[:n] if n <= len(wave) else torch.cat([wave, torch.zeros(n - len(wave))]) for n in lengths]
    raw = frontend.features(waves)
    assert [len(f) for f in raw] == [FrontendSettings().frames(n) for n in lengths]
    scaled = frontend.fit_scale(torch.cat(raw))
    assert torch.allclose(scaled.mean(0), torch.zeros(384), atol=1e-4) and torch.allclose(scaled.std(0), torch.ones(384), atol=1e-3)
    tokenizer = KMeansUnitTokenizer(frontend, fit_kmeans(scaled, 8, seed=0))
    batched, alone = tokenizer.encode(waves), [tokenizer.encode([w])[0] for w in waves]
    assert all(torch.equal(b, a) for b, a in zip(batched, alone))
    assert len(set(batched[0].tolist())) > 3  # speech moves through several units
    with pytest.raises(ValueError, match="depth must be 1..4"):
        EncoderFrontend(FrontendSettings(), frontend.encoder, depth=5)


@pytest.mark.slow
def test_centered_encoder_units_stay_the_same_wherever_the_speech_sits_in_the_window():
    """The same speech tokenized alone and after 1 s of silence (25 units, dropped): units of states less
    each place's mean (fitted on 300 sentences) agree far more often than units of the states as Whisper
    leaves them (0.84 -> 0.90-0.93 here)."""
    voice = VoiceConfig(backend="espeak", voice="en-us")  # a fast voice: the mean at each place needs many waves
    engine = EngineSet(TTSConfig()).get("espeak")
    waves = [torch.from_numpy(resample(*engine.synthesize(text, voice), 16000))
             for text in english_sentences(310, seed=1, min_words=8, max_words=14)]
    fitted, held_out = waves[:300], waves[300:]
    encoder = load_speech_encoder("tiny.en")
    agreement = {}
    for centered in (False, True):
        frontend = EncoderFrontend(FrontendSettings(), encoder, depth=2)
        if centered:
            places = frontend.fit_positions([fitted[i:i + 16] for i in range(0, 300, 16)], min_waves=20)
            assert 100 < places < 500 and frontend.position_mean.shape == (1500, 384)
        points = frontend.fit_scale(torch.cat(frontend.features(fitted)))
        tokenizer = KMeansUnitTokenizer(frontend, fit_kmeans(points, 64, seed=0))
        same = []
        for wave in held_out:
            alone, later = tokenizer.encode([wave, torch.cat([torch.zeros(16000), wave])])
            same.append((alone == later[25:25 + len(alone)]).float().mean())
        agreement[centered] = float(torch.stack(same).mean())
    assert agreement[True] > agreement[False] + 0.05, agreement
    with pytest.raises(ValueError, match="no place in the window is reached by 400 waves"):
        EncoderFrontend(FrontendSettings(), encoder, depth=2).fit_positions([fitted], min_waves=400)


def test_s3_tokenizer_without_weights_says_so():
    with pytest.raises(TokenizerUnavailable, match="units.s3.model_dir"):
        S3UnitTokenizer(S3TokenizerConfig(model_dir=None))


def config_for(tmp_path, dialogues: int, *overrides: str):
    return load_pipeline_config("configs/demo.yaml", [
        f"store.url={tmp_path / 'store'}", f"build.source.demo.dialogues={dialogues}", "build.synthesis.workers=1",
        "build.tts.users.size=4", "ray.num_cpus=2", "units.kmeans.k=32", "units.batch_size=4",
        *TINY_DECODER, *overrides])


@pytest.mark.slow
def test_tokenize_flow_versions_lineage_and_incremental_units(tmp_path):
    build_dialogues(config_for(tmp_path, 6))
    first = tokenize_units(config_for(tmp_path, 6))
    assert first["units_version"] == "units/demo@1" and first["tokenizer_version"] == "tokenizer/demo@1"

    config = config_for(tmp_path, 6)
    store = store_from_config(config.store)
    units = store.manifest("units/demo@1")
    assert [str(p.ref()) for p in units.parents] == ["speech/demo@1", "tokenizer/demo@1"]
    assert [str(p.ref()) for p in store.manifest("tokenizer/demo@1").parents] == ["speech/demo@1"]
    table = store.read_table(units)
    speech = {r["utterance_id"]: r for r in speech_rows(store, store.manifest("speech/demo@1"), ["assistant"],
                                                        ["utterance_id", "role", "duration"])}
    assert sorted(table.column("utterance_id").to_pylist()) == sorted(speech)
    assert set(table.column("role").to_pylist()) == {"assistant"}
    for row in table.to_pylist():
        assert abs(row["n_units"] - speech[row["utterance_id"]]["duration"] * 25) <= 1
        assert len(row["units"]) == row["n_units"] and all(0 <= u < 32 for u in row["units"])

    assert not tokenize_units(config_for(tmp_path, 6))["published"]  # nothing new: no new version

    build_dialogues(config_for(tmp_path, 9))
    grown = tokenize_units(config_for(tmp_path, 9))
    assert grown["units_version"] == "units/demo@2" and grown["tokenizer_version"] == "tokenizer/demo@1"
    assert grown["reused_rows"] == first["utterances"]
    assert grown["tokenized_this_run"] == grown["utterances"] - first["utterances"] > 0
    v2 = store.manifest("units/demo@2")
    assert {s.path for s in units.tables["data"].shards} <= {s.path for s in v2.tables["data"].shards}
    again = {r["utterance_id"]: r["units"] for r in store.read_table(v2).to_pylist()}
    assert all(again[r["utterance_id"]] == r["units"] for r in table.to_pylist())
    assert np.isclose(store.manifest("units/demo@2").stats["units_per_second"], 25, atol=1)

    with pytest.raises(ValueError, match="units.decoder.backend: cosyvoice2 decodes CosyVoice 2's S3 units"):
        decoder_version(store, v2, load_pipeline_config("configs/demo.yaml", ["units.decoder.backend=cosyvoice2"]).units)

    # encoder units: a tokenizer of their own, fitted with its standardization, rebuilt from the store as fitted
    encoder = tokenize_units(config_for(tmp_path, 9, "units.name=phonetic", "units.kmeans.features=encoder",
                                        "units.kmeans.k=16"))
    assert encoder["tokenizer_version"] == "tokenizer/phonetic@1"
    fitted = store.manifest(encoder["tokenizer_version"])
    assert fitted.stats["vocab_size"] == 16 and fitted.parents[0].ref() == v2.parent_of(Kind.speech)
    assert 0.0 < fitted.stats["unexplained_variance"] < 1.0  # what 16 units lose of the states, kept with them
    rebuilt = build_tokenizer(tokenizer_state(store, fitted))
    assert isinstance(rebuilt.frontend, EncoderFrontend) and rebuilt.frontend.depth == 2
    assert rebuilt.frontend.std.min() > 0 and not torch.equal(rebuilt.frontend.std, torch.ones(384))
    rows = store.read_table(store.manifest(encoder["units_version"])).to_pylist()
    audio = {r["utterance_id"]: r["audio"] for r in speech_rows(store, store.manifest("speech/demo@2"), ["assistant"])}
    first = rows[0]
    wave = torch.from_numpy(decode_audio(audio[first["utterance_id"]]["bytes"])[0])
    assert rebuilt.encode([wave])[0].tolist() == first["units"]
    assert all(abs(r["n_units"] - r["duration"] * 25) <= 1 and max(r["units"]) < 16 for r in rows)
    # the log-mel tokenizer keeps its version: encoder settings do not count where log-mel is used
    again = tokenize_units(config_for(tmp_path, 9, "units.kmeans.encoder.depth=3"))
    assert again["tokenizer_version"] == "tokenizer/demo@1" and not again["published"]

    # supervised units: a projection learnt from the answers' text is fitted, stored and rebuilt with the
    # tokenizer; the unsupervised encoder tokenizer keeps its version
    supervised = tokenize_units(config_for(tmp_path, 9, "units.name=phonetic", "units.kmeans.features=encoder",
                                           "units.kmeans.k=16", "units.kmeans.encoder.supervised.dim=8",
                                           "units.kmeans.encoder.supervised.steps=60"))
    assert supervised["tokenizer_version"] == "tokenizer/phonetic@2"
    fitted = store.manifest(supervised["tokenizer_version"])
    assert fitted.config["kmeans"]["encoder"]["supervised"]["dim"] == 8
    assert 0 <= fitted.stats["recognizer_cer"] and fitted.stats["recognizer_symbols"] > 10
    rebuilt = build_tokenizer(tokenizer_state(store, fitted))
    assert rebuilt.frontend.projection.out_features == 8 and rebuilt.centroids.shape == (16, 8)
    rows = store.read_table(store.manifest(supervised["units_version"])).to_pylist()
    wave = torch.from_numpy(decode_audio(audio[rows[0]["utterance_id"]]["bytes"])[0])
    assert rebuilt.encode([wave])[0].tolist() == rows[0]["units"]
    # centered (and supervised) units: the mean state at each place in the window is fitted, stored and rebuilt
    # with the tokenizer
    centered = tokenize_units(config_for(tmp_path, 9, "units.name=phonetic", "units.kmeans.features=encoder",
                                         "units.kmeans.k=16", "units.kmeans.encoder.center_positions=true",
                                         "units.kmeans.encoder.position_min_waves=2",
                                         "units.kmeans.encoder.supervised.dim=8",
                                         "units.kmeans.encoder.supervised.steps=60"))
    assert centered["tokenizer_version"] == "tokenizer/phonetic@3"
    fitted = store.manifest(centered["tokenizer_version"])
    assert fitted.stats["centered_places"] > 25  # every answer lasts more than half a second
    assert fitted.stats["recognizer_symbols"] > 10  # what the projection's fit measured is kept beside it
    rebuilt = build_tokenizer(tokenizer_state(store, fitted))
    assert rebuilt.frontend.position_mean.shape == (1500, 384) and rebuilt.frontend.position_mean.abs().sum() > 0
    assert rebuilt.frontend.projection.out_features == 8
    rows = store.read_table(store.manifest(centered["units_version"])).to_pylist()
    wave = torch.from_numpy(decode_audio(audio[rows[0]["utterance_id"]]["bytes"])[0])
    assert rebuilt.encode([wave])[0].tolist() == rows[0]["units"]
    plain = tokenize_units(config_for(tmp_path, 9, "units.name=phonetic", "units.kmeans.features=encoder",
                                      "units.kmeans.k=16"))
    assert plain["tokenizer_version"] == "tokenizer/phonetic@1"
    # back to a tokenizer tried before: its units version is reused, nothing is tokenized again
    assert plain["units_version"] == encoder["units_version"] and not plain["published"]


@pytest.mark.slow
def test_a_frame_vocoder_decoder_is_its_own_version_and_speaks_its_units(tmp_path):
    build_dialogues(config_for(tmp_path, 4))
    tokenize_units(config_for(tmp_path, 4, "units.decoder.vocoder=universal"))
    store = store_from_config(config_for(tmp_path, 4).store)
    units = store.manifest("units/demo@1")
    hifigan = store.manifest("decoder/demo@1")
    # the frame vocoder's settings do not touch a HiFi-GAN decoder: it is reused as it is
    assert decoder_version(store, units, config_for(tmp_path, 4, "units.decoder.vocoder=universal",
                                                    "units.decoder.frame.steps=9").units).ref() == hifigan.ref()
    frame_units = config_for(tmp_path, 4, "units.decoder.vocoder=frame", "units.decoder.frame.steps=3",
                             "units.decoder.frame.dim=16", "units.decoder.frame.hidden=32",
                             "units.decoder.frame.layers=1", "units.decoder.frame.crop_frames=16",
                             "units.decoder.frame.every_voice=true").units
    frame = decoder_version(store, units, frame_units)
    assert frame.ref() != hifigan.ref() and "frame_vocoder.safetensors" in frame.files
    assert frame.stats["vocoder"] == "frame" and np.isfinite(frame.stats["frame_vocoder_final_loss"])
    # each assistant turn from its real mel and from its units' mel, each user turn from its real mel
    turns = store.manifest("speech/demo@1").stats
    assert frame.stats["frame_vocoder_examples"] == 2 * turns["assistant_turns"] + turns["user_turns"]
    assert decoder_version(store, units, frame_units).ref() == frame.ref()  # trained once
    # how many threads trained it is not what it is
    threads = frame_units.model_copy(update={"decoder": frame_units.decoder.model_copy(update={"threads": 1})})
    assert decoder_version(store, units, threads, train=False).ref() == frame.ref()
    spoken = open_decoder(store, frame)
    assert isinstance(spoken.vocoder, FrameVocoder)
    # a runtime may speak with a pretrained HiFi-GAN instead, over the same units -> mel network
    hifi = open_decoder(store, frame, DecoderRuntimeConfig(vocoder="universal", runtime="torch"))
    assert not isinstance(hifi.vocoder, FrameVocoder)
    assert all(torch.equal(a, b) for a, b in zip(hifi.unit_to_mel.state_dict().values(),
                                                 spoken.unit_to_mel.state_dict().values()))
    row = store.read_table(units).to_pylist()[0]
    assert len(spoken.decode(row["units"])) == len(row["units"]) * 22050 // 25
