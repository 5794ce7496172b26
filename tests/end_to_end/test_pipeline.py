"""The whole job end to end on a small setting, and retraining on 10% new dialogues."""

from __future__ import annotations

import pytest

from omniforge.config import load_pipeline_config
from omniforge.storage import Kind, store_from_config
from tests.training_data import TINY_DECODER, TINY_LM

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def small_pipeline(tmp_path, dialogues: int, *extra: str):
    overrides = [
        f"store.url={tmp_path / 'store'}", f"build.source.demo.dialogues={dialogues}", "build.synthesis.workers=1",
        "build.tts.users.size=4", "ray.num_cpus=2", "units.kmeans.k=32", "units.batch_size=4", *TINY_DECODER,
        "train.model.adapter_hidden_size=32", "train.model.tokenizer.vocab_size=300", f"train.model.llm={TINY_LM}",
        f"train.model.tts={TINY_LM}", "train.checkpoint_every=2", "train.torch_threads=1",
        f"train.log_dir={tmp_path / 'tb'}", "evaluate.build.source.demo.dialogues=2", "evaluate.build.synthesis.workers=1",
        "evaluate.build.tts.users.size=4", "evaluate.max_text_tokens=12", "evaluate.max_speech_tokens=60",
        "evaluate.keep_wavs=1", "evaluate.mos=false", "corpus.enabled=true", "corpus.source.sentences=3",
        "corpus.pretrain.steps=2", "corpus.pretrain.batch_size=2", "corpus.pretrain.warmup_steps=1"]
    for stage in ("s2t", "tts", "s2s"):
        overrides += [f"train.{stage}.steps=2", f"train.{stage}.batch_size=2", f"train.{stage}.warmup_steps=1"]
    return load_pipeline_config("configs/demo.yaml", overrides + list(extra))


def test_pipeline_then_retrain_on_new_dialogues(tmp_path):
    from omniforge.flows.pipeline import pipeline

    first = pipeline(small_pipeline(tmp_path, 10))
    store = store_from_config(small_pipeline(tmp_path, 10).store)
    assert first["speech"] == "speech/demo@1" and first["units"] == "units/demo@1"
    assert first["eval"] == "eval/demo@1" and "comparison" not in first
    assert first["metrics"]["answers"] >= 2 and first["metrics"]["latency_p50"] > 0
    # every artifact of the run records the pipeline run
    run_ids = {store.manifest(ref).flow_run_id for ref in
               (first["speech"], first["units"], first["checkpoint"], first["eval"], "speech/demo-eval@1")}
    assert len(run_ids) == 1 and None not in run_ids
    assert store.lineage(first["eval"])["parents"][0]["ref"] == first["checkpoint"]
    # the TTS corpus fitted the units tokenizer and its decoder; the model started from the pretrained TTS LM
    assert first["corpus_units"] == "units/demo-tts@1" and first["pretrained_tts"].startswith("checkpoint/demo-tts@")
    tokenizer = store.manifest(first["units"]).parents_of(Kind.tokenizer)
    assert tokenizer == store.manifest(first["corpus_units"]).parents_of(Kind.tokenizer)
    assert store.manifest(tokenizer[0]).parents_of(Kind.speech) == [store.manifest(first["corpus"]).ref()]
    starts, node = [], store.lineage(first["checkpoint"])
    while (node := next((p for p in node["parents"] if p["ref"].startswith("checkpoint/")), None)) is not None:
        starts.append(node["ref"])
    assert first["pretrained_tts"] in starts

    retrain = small_pipeline(tmp_path, 11, "train.continue_from_latest=true")
    second = pipeline(retrain)
    new_speech = store.manifest(second["speech"])
    assert second["speech"] == "speech/demo@2"
    new_dialogues = new_speech.stats["dialogues"] - store.manifest(first["speech"]).stats["dialogues"]
    assert new_dialogues == 1
    assert 0 < new_speech.stats["synthesized_this_run"] <= 4  # at most the new dialogue's 2 + 2 turns
    assert store.manifest(second["units"]).stats["reused_rows"] == store.manifest(first["units"]).stats["utterances"]
    # training continued from the first model, on the new data
    starts, node = [], store.lineage(second["checkpoint"])
    while (node := next((p for p in node["parents"] if p["ref"].startswith("checkpoint/")), None)) is not None:
        starts.append(node["ref"])
    assert first["checkpoint"] in starts
    assert "comparison" in second and first["eval"] in second["comparison"] and second["eval"] in second["comparison"]
    # the same retrain again finds everything made: no new versions
    versions = {kind: store.versions(kind, "demo") for kind in ("speech", "units", "checkpoint", "eval")}
    assert pipeline(retrain)["checkpoint"] == second["checkpoint"]
    assert {kind: store.versions(kind, "demo") for kind in versions} == versions
