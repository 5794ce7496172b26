"""Importing CosyVoice 2 tokens in VocalNet's released layout: real wavs (Piper) and .npy token
files in every saved form, bad items rejected by name and field, lineage, idempotence, and the
imported versions train."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from omniforge.config import load_pipeline_config
from omniforge.config.build import TTSConfig
from omniforge.flows.import_units import import_units
from omniforge.storage import Kind, store_from_config
from omniforge.storage.audio import decode_audio
from omniforge.tasks.build.tts import EngineSet
from omniforge.tasks.common.cosyvoice import CosyVoiceUnavailable
from omniforge.tasks.train import steps as train_steps
from omniforge.tasks.units.decoder import decoder_version
from tests.training_data import tiny_training

pytestmark = pytest.mark.usefixtures("prefect_server")

QUESTIONS = {"a": "What is the capital of France?", "b": "Which language do people speak in Peru?",
             "c": "What is the capital of Japan?", "d": "Where is Lima?", "e": "What is the capital of Chile?",
             "f": "Name a country in Europe."}


def vocalnet_set(root) -> dict[str, np.ndarray]:
    """root/va/{audios,cosyvoice2_tokens} and root/va/va.json as VocalNet ships them; returns
    the tokens written per item."""
    (root / "va" / "audios").mkdir(parents=True)
    (root / "va" / "cosyvoice2_tokens").mkdir()
    engine, voice = EngineSet(TTSConfig()).get("piper"), TTSConfig().assistant
    rng = np.random.default_rng(0)
    tokens, items = {}, []
    for item_id, question in QUESTIONS.items():
        wave, rate = engine.synthesize(question, voice)
        sf.write(root / "va" / "audios" / f"{item_id}.wav", wave, rate)
        tokens[item_id] = rng.integers(0, 6561, size=int(rng.integers(40, 80)))
        items.append({"id": item_id, "speech": f"va/audios/{item_id}.wav", "units": f"va/cosyvoice2_tokens/{item_id}.npy",
                      "conversations": [{"from": "human", "value": "<speech>"},
                                        {"from": "gpt", "value": f"Here is the answer to {item_id}."}]})
    saved = {"a": tokens["a"], "b": tokens["b"][None, :], "e": tokens["e"] + 7000, "f": tokens["f"]}
    for item_id, array in saved.items():
        np.save(root / "va" / "cosyvoice2_tokens" / f"{item_id}.npy", array)
    with open(root / "va" / "cosyvoice2_tokens" / "c.npy", "wb") as handle:  # VocalNet's extraction: a pickled dict
        np.save(handle, np.array({"speech_token": tokens["c"][None, :], "speech_token_len": len(tokens["c"])}),
                allow_pickle=True)
    # d: its token file is missing; f: an unknown role
    items[5]["conversations"][1]["from"] = "narrator"
    (root / "va" / "va.json").write_text(json.dumps(items))
    return tokens


def config(store_url: str, root, *extra: str):
    return load_pipeline_config("configs/demo.yaml", [f"store.url={store_url}", f"units.vocalnet.index={root}/va/va.json",
                                                      f"units.vocalnet.root={root}", *extra])


def test_import_makes_speech_tokenizer_and_units_with_lineage(tmp_path):
    root, url = tmp_path / "playground", str(tmp_path / "store")
    tokens = vocalnet_set(root)
    summary = import_units(config(url, root))
    store = store_from_config(config(url, root).store)
    units = store.manifest(summary["units_version"])
    speech = store.manifest(summary["speech_version"])

    rows = {r["dialogue_id"]: r["units"] for r in store.read_table(units).to_pylist()}
    assert rows == {"a": tokens["a"].tolist(), "b": tokens["b"].tolist()}
    assert [str(p.ref()) for p in units.parents] == ["speech/vocalnet@1", "tokenizer/vocalnet@1"]
    tokenizer = store.manifest("tokenizer/vocalnet@1")
    assert tokenizer.stats["vocab_size"] == 6561 and tokenizer.config["backend"] == "s3"
    assert units.stats["vocab_size"] == 6561 and units.stats["utterances"] == 2

    rejects = {r["record"]: r for r in store.read_table(speech, "rejects").to_pylist()}
    assert {k: (r["field"], r["reason"]) for k, r in rejects.items()} == {
        "c": ("units", "pickled_tokens"), "d": ("units", "missing_file"), "e": ("units", "units_out_of_range"),
        "f": ("conversations[1].from", "unknown_role")}

    table = store.read_table(speech).to_pylist()
    assert [(r["dialogue_id"], r["role"]) for r in table] == [("a", "user"), ("a", "assistant"), ("b", "user"), ("b", "assistant")]
    user = table[0]
    wave, rate = decode_audio(user["audio"]["bytes"])
    original, original_rate = sf.read(root / "va" / "audios" / "a.wav")
    assert rate == 16000 and abs(len(wave) / rate - len(original) / original_rate) < 0.01
    assert user["text"] == "" and table[1]["text"] == "Here is the answer to a." and table[1]["audio"] is None
    assert table[1]["duration"] == pytest.approx(len(tokens["a"]) / 25)

    again = import_units(config(url, root))
    assert not again["published"] and again["units_version"] == summary["units_version"]

    cosyvoice = config(url, root, "units.name=vocalnet", "units.decoder.backend=cosyvoice2")
    with pytest.raises(CosyVoiceUnavailable, match="units.decoder.cosyvoice2.model_dir"):
        decoder_version(store, units, cosyvoice.units)


def test_trusted_pickles_import_and_the_result_trains(tmp_path):
    root, url = tmp_path / "playground", str(tmp_path / "store")
    tokens = vocalnet_set(root)
    summary = import_units(config(url, root, "units.vocalnet.allow_pickle=true", "units.vocalnet.shard_dialogues=2"))
    store = store_from_config(config(url, root).store)
    rows = {r["dialogue_id"]: r["units"] for r in store.read_table(store.manifest(summary["units_version"])).to_pylist()}
    assert rows["c"] == tokens["c"].tolist() and len(rows) == 3
    assert len(store.manifest(summary["speech_version"]).tables["data"].shards) == 2  # 2 + 1 dialogues

    training = tiny_training(url, str(tmp_path / "tb"), extra=("train.units=units/vocalnet", "train.speech=speech/vocalnet"))
    speech, units = train_steps.resolve_inputs(store, training)
    start = train_steps.initial_checkpoint(store, training, speech, units, None)
    finals = train_steps.run_stages_here(training, start, speech, units)
    final = store.manifest(finals[-1])
    assert final.kind == Kind.checkpoint and final.stats["stage"] == "s2s"


def test_a_missing_index_or_wrong_root_fails_clearly(tmp_path):
    root, url = tmp_path / "playground", str(tmp_path / "store")
    vocalnet_set(root)
    with pytest.raises(ValueError, match="units.vocalnet.index"):
        import_units(load_pipeline_config("configs/demo.yaml", [f"store.url={url}"]))
    with pytest.raises(ValueError, match="all 6 items were rejected.*missing_file.*units.vocalnet.root"):
        import_units(config(url, root, f"units.vocalnet.root={root}/elsewhere"))
