"""End to end: the evaluate flow publishes a report with lineage."""

from __future__ import annotations

import pytest

from omniforge.storage import store_from_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def test_evaluate_flow_publishes_a_report_with_lineage(data_store, tmp_path):
    from omniforge.flows.evaluate import evaluate
    from omniforge.tasks.train import steps as train_steps
    from tests.training_data import TINY_DECODER, tiny_training

    config = tiny_training(data_store, str(tmp_path / "tb"), extra=(
        "train.name=evaluated", "evaluate.checkpoint=checkpoint/evaluated", "evaluate.eval_set=speech/demo",
        "evaluate.max_items=2", "evaluate.max_text_tokens=12", "evaluate.max_speech_tokens=60",
        *TINY_DECODER, "evaluate.keep_wavs=1", "evaluate.name=evaluated"))
    store = store_from_config(config.store)
    speech, units = train_steps.resolve_inputs(store, config)
    start = train_steps.initial_checkpoint(store, config, speech, units, None)
    checkpoint = train_steps.run_stages_here(config, start, speech, units)[-1]
    summary = evaluate(config)
    manifest = store.manifest(summary["eval_version"])
    assert [p.kind.value for p in manifest.parents] == ["checkpoint", "decoder", "speech"]
    assert str(manifest.parents[0].ref()) == checkpoint
    assert {"metrics.json", "report.md", "report.html"} <= set(manifest.files)
    assert any(name.startswith("wavs/") for name in manifest.files)
    report = store.read_bytes(manifest.files["report.html"].path).decode()
    assert report.count("<audio controls") == sum(name.startswith("wavs/") for name in manifest.files)
    assert any(name.startswith("plots/") for name in manifest.files)
    metrics = summary["metrics"]
    assert metrics["answers"] >= 2 and 0 <= metrics["s2t_accuracy"] <= 1
    assert metrics["latency_p50"] > 0 and metrics["dnsmos"] is not None
    answers = store.read_table(manifest, "answers").to_pylist()
    assert len(answers) == metrics["answers"] and all(a["latency"] > 0 for a in answers)
    again = evaluate(config)
    assert again["eval_version"] == summary["eval_version"]  # same inputs: reused
    from omniforge.tasks.evaluate.report import compare

    table = compare(store, manifest, manifest)
    assert "S2T accuracy" in table and checkpoint in table
