"""Staged training on real (small) data: what each stage trains, exact resume after a kill, the
data path's determinism, Ray Train with two workers, checkpoint lineage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from omniforge.config import ConfigError
from omniforge.config.train import StageConfig
from omniforge.model.stage_objectives import set_trainable
from omniforge.storage import store_from_config
from omniforge.tasks.train import steps as train_steps
from omniforge.tasks.train import training_state
from omniforge.tasks.train.checkpoints import UnfinishedCheckpoint, load_checkpoint
from omniforge.tasks.train.data import BatchMaker, DialogueIndex, batch_plan
from omniforge.tasks.train.loop import lr_factor
from omniforge.tasks.train.text_tokenizer import ChatFormat
from tests.tiny_model import tiny_model
from tests.training_data import tiny_training

pytestmark = pytest.mark.usefixtures("prefect_server")


def _inputs(config):
    store = store_from_config(config.store)
    speech, units = train_steps.resolve_inputs(store, config)
    return store, speech, units, train_steps.initial_checkpoint(store, config, speech, units, None)


def _weights(store, ref: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in load_checkpoint(store, store.manifest(ref))[0].state_dict().items()}


@pytest.mark.slow
def test_each_stage_changes_exactly_its_modules(data_store, tmp_path):
    config = tiny_training(data_store, str(tmp_path / "tb"), name="stages")
    store, speech, units, start = _inputs(config)
    finals = train_steps.run_stages_here(config, start, speech, units)
    assert len(finals) == 3
    chain = [str(start.ref())] + finals
    trains = {"s2t": ("speech_projector.", "llm."), "tts": ("speech_generator.model.",),
              "s2s": ("speech_generator.",)}
    for stage, before, after in zip(("s2t", "tts", "s2s"), chain, chain[1:]):
        old, new = _weights(store, before), _weights(store, after)
        changed = {k for k in old if not torch.equal(old[k], new[k])}
        assert changed, stage
        assert all(k.startswith(trains[stage]) for k in changed), (stage, sorted(changed)[:5])
        assert not any(k.startswith("speech_encoder.") for k in changed)
    s2s_changed = {k for k in _weights(store, chain[2]) if not torch.equal(_weights(store, chain[2])[k],
                                                                           _weights(store, chain[3])[k])}
    assert any(k.startswith("speech_generator.gate") or k.startswith("speech_generator.input_proj")
               for k in s2s_changed), "gate fusion must train in s2s"
    # lineage: every stage's checkpoint points at the data and at the checkpoint it started from
    for before, after in zip(chain, chain[1:]):
        parents = [str(p.ref()) for p in store.manifest(after).parents]
        assert parents == [str(speech.ref()), str(units.ref()), before]
    assert store.manifest(finals[-1]).stats["complete"] and store.manifest(finals[-1]).stats["stage"] == "s2s"
    # a second run finds every stage done and publishes nothing
    versions = store.versions("checkpoint", "stages")
    assert train_steps.run_stages_here(config, start, speech, units) == finals
    assert store.versions("checkpoint", "stages") == versions


def test_activation_checkpointing_trains_the_same_weights(data_store, tmp_path):
    """Recomputing each block's activations in the backward pass changes memory, not results."""
    finals = {}
    for name, extra in (("kept", ()), ("recomputed", ("train.activation_checkpointing=true",
                                                       "train.init_from=checkpoint/kept@1"))):
        config = tiny_training(data_store, str(tmp_path / "tb"), name=name, extra=("train.stages=[s2t]", *extra))
        store, speech, units, start = _inputs(config)
        finals[name] = train_steps.run_stages_here(config, start, speech, units)[-1]
    kept, recomputed = _weights(store, finals["kept"]), _weights(store, finals["recomputed"])
    assert any(not torch.equal(kept[k], _weights(store, "checkpoint/kept@1")[k]) for k in kept)
    assert all(torch.allclose(kept[k], recomputed[k], atol=1e-6) for k in kept)


RESUME_SCRIPT = """
import sys
from tests.training_data import tiny_training
from omniforge.tasks.train import steps as train_steps
from omniforge.storage import store_from_config
config = tiny_training(sys.argv[1], sys.argv[2], name=sys.argv[3], steps=6, extra=("train.stages=[s2t]",) + tuple(sys.argv[4:]))
store = store_from_config(config.store)
speech, units = train_steps.resolve_inputs(store, config)
start = train_steps.initial_checkpoint(store, config, speech, units, None)
print(train_steps.run_stages_here(config, start, speech, units))
"""


def _train_in_subprocess(data_store: str, log_dir: str, name: str, kill_after_versions: int | None,
                         extra: tuple[str, ...] = ()):
    process = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, data_store, log_dir, name, *extra],
                               cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if kill_after_versions is None:
        output = process.communicate(timeout=600)[0].decode()
        assert process.returncode == 0, output
        return
    store_root = os.path.join(data_store, "checkpoint", name)
    deadline = time.time() + 600
    while time.time() < deadline:
        versions = [d for d in os.listdir(store_root) if d.startswith("v")] if os.path.isdir(store_root) else []
        if len(versions) >= kill_after_versions:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        assert process.poll() is None, process.stdout.read().decode()
        time.sleep(0.05)
    raise AssertionError("training never reached the kill point")


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), ("train.s2t.lora={rank: 4, alpha: 8}",)], ids=["full", "lora"])
def test_killed_run_resumes_to_the_same_weights(data_store, tmp_path, extra):
    tag = "lora" if extra else "full"
    _train_in_subprocess(data_store, str(tmp_path / "tb"), f"straight-{tag}", None, extra)
    # init + 3 of 6 s2t steps saved, then SIGKILL mid-run; the re-run resumes from the last save
    _train_in_subprocess(data_store, str(tmp_path / "tb"), f"killed-{tag}", 4, extra)
    store = store_from_config(tiny_training(data_store, str(tmp_path)).store)
    partial = store.latest_manifest("checkpoint", f"killed-{tag}")
    assert not partial.stats["complete"] and 0 < partial.stats["step"] < 6
    _train_in_subprocess(data_store, str(tmp_path / "tb"), f"killed-{tag}", None, extra)
    straight = store.latest_manifest("checkpoint", f"straight-{tag}")
    resumed = store.latest_manifest("checkpoint", f"killed-{tag}")
    assert resumed.stats["complete"] and resumed.stats["step"] == 6
    assert resumed.stats["metrics"]["loss"] == straight.stats["metrics"]["loss"]
    a, b = _weights(store, str(straight.ref())), _weights(store, str(resumed.ref()))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_batches_are_deterministic_bucketed_and_resumable(data_store, tmp_path):
    config = tiny_training(data_store, str(tmp_path / "tb"), name="data")
    store, speech, units, start = _inputs(config)
    index = DialogueIndex.build(store, speech, units, need_units=True)
    plan = batch_plan(index, seed=3, batch_size=2, window=64, rank=0, world=1)
    first = [next(plan) for _ in range(10)]
    assert first == [b for _, b in zip(range(10), batch_plan(index, 3, 2, 64, 0, 1))]
    assert first[4:] == [b for _, b in zip(range(6), batch_plan(index, 3, 2, 64, 0, 1, start=4))]
    assert first != [b for _, b in zip(range(10), batch_plan(index, 4, 2, 64, 0, 1))]
    epoch_zero = [numbers for epoch, numbers in first if epoch == 0]
    assert sorted(n for numbers in epoch_zero for n in numbers) == list(range(len(index.dialogues)))
    # two workers see disjoint halves of each epoch
    rank0 = [b for e, b in zip(range(len(epoch_zero) // 2), batch_plan(index, 3, 2, 64, 0, 2))]
    rank1 = [b for e, b in zip(range(len(epoch_zero) // 2), batch_plan(index, 3, 2, 64, 1, 2))]
    assert not {n for _, b in rank0 for n in b} & {n for _, b in rank1 for n in b}
    # `start` counts the worker's own batches: resumed after 2, it takes its third on
    rank1_on = [b for _, b in zip(range(6), batch_plan(index, 3, 2, 64, 1, 2))]
    assert rank1_on[2:] == [b for _, b in zip(range(4), batch_plan(index, 3, 2, 64, 1, 2, start=2))]
    # sorting each window by duration: batches hold neighbours in duration
    seconds = [index.dialogues[n].speech_seconds for _, numbers in first[:3] for n in numbers]
    spread = np.mean([np.ptp([index.dialogues[n].speech_seconds for n in numbers]) for _, numbers in first])
    assert spread <= np.ptp(seconds)
    model, tokenizer = load_checkpoint(store, start)
    maker = BatchMaker(store, index, ChatFormat(tokenizer, config.train.model.tokenizer.system_prompt), 80,
                       config.train.augment, seed=0)
    batch = maker.make(first[0][1], 0)
    users = sum(t.role == "user" for n in first[0][1] for t in index.dialogues[n].turns)
    assert batch.features.shape[:2] == (users, 80) and len(batch.units) == len(batch.text_ids)
    assert all(len(u) > 0 for u in batch.units)
    assert torch.equal(maker.make(first[0][1], 0).features, batch.features)
    assert batch.read_units is None  # no TTS LM reads these units: nothing is noised
    # the TTS LM reads noised units (the targets stay), the same ones for the same batch number
    noised = BatchMaker(store, index, ChatFormat(tokenizer, config.train.model.tokenizer.system_prompt), 80,
                        config.train.augment.model_copy(update={"unit_noise": 0.3}), seed=0, unit_vocab_size=64)
    again = noised.make(first[0][1], 0)
    assert all(torch.equal(a, b) for a, b in zip(again.units, batch.units))
    units, read = torch.cat(again.units), torch.cat(again.read_units)
    assert units.shape == read.shape and 0.15 < (units != read).float().mean() < 0.45
    assert read.max() < 64 and torch.equal(read, torch.cat(noised.make(first[0][1], 0).read_units))
    assert not torch.equal(read, torch.cat(noised.make(first[0][1], 1).read_units[:len(again.units)]))


def test_trainable_prefixes_are_checked():
    with pytest.raises(ValueError, match=r"\['lm'\] match no parameter"):
        set_trainable(tiny_model(), ["lm"])
    counts = set_trainable(tiny_model(), ["speech_projector"])
    assert counts["trainable"] > 0 and counts["frozen"] > counts["trainable"]
    with pytest.raises(ConfigError, match="train.s2t.schedule"):
        tiny_training("/tmp/none", "/tmp/none", extra=("train.s2t.schedule=exponential",))


def test_learning_rate_warms_up_then_decays():
    cosine = lr_factor(StageConfig(steps=100, warmup_steps=10, schedule="cosine"))
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(55) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0)
    linear = lr_factor(StageConfig(steps=100, warmup_steps=0, schedule="linear"))
    assert linear(50) == pytest.approx(0.5)


def test_lora_trains_adapters_and_saves_a_plain_merged_model(data_store, tmp_path):
    config = tiny_training(data_store, str(tmp_path / "tb"), name="lora", steps=4, extra=(
        "train.stages=[s2t]", "train.checkpoint_every=2", "train.s2t.lora={rank: 4, alpha: 8}"))
    store, speech, units, start = _inputs(config)
    [final] = train_steps.run_stages_here(config, start, speech, units)
    old, new = _weights(store, str(start.ref())), _weights(store, final)
    assert set(old) == set(new)  # a plain OmniModel: no adapter names in the checkpoint
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert any(k.startswith("speech_projector.") for k in changed)
    llm_changed = {k for k in changed if k.startswith("llm.")}
    assert llm_changed and all(k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"))
                               for k in llm_changed)
    assert not any(k.startswith(("speech_encoder.", "speech_generator.")) for k in changed)
    partial = store.manifest(f"checkpoint/lora@{store.manifest(final).version - 1}")
    assert not partial.stats["complete"] and training_state.has_state(partial) and "model/config.json" not in partial.files
    with pytest.raises(UnfinishedCheckpoint, match="unfinished s2t stage"):
        load_checkpoint(store, partial)
    midway = load_checkpoint(store, partial, part_way=True)[0].state_dict()  # asked for: its weights at step 2
    assert set(midway) == set(new)
    assert {k for k in old if not torch.equal(old[k], midway[k])} == changed
    assert all(not torch.equal(midway[k], new[k]) for k in changed)
    with pytest.raises(ConfigError, match="tts.lora: only the s2t stage"):
        tiny_training(data_store, str(tmp_path), extra=("train.tts.lora={rank: 4}",))


class _Planted:
    """A pickle that runs code when unpickled (writes the file it names)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("where", ["metadata", "tensor"])
def test_a_planted_pickle_in_the_training_state_is_not_run(tmp_path, where):
    """DCP pickles its metadata and any non-tensor value; a shared store's training state is read
    without running either: the metadata through an allowlist, a value stored as a pickle refused."""
    import json
    import pickle

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from omniforge.storage import ArtifactStore

    store = ArtifactStore(str(tmp_path / "store"))
    writer = store.writer("checkpoint", "planted")
    target = tmp_path / "ran"
    folder = tmp_path / "dcp"
    model = torch.nn.Linear(2, 1, bias=False)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if where == "metadata":
        folder.mkdir()
        (folder / ".metadata").write_bytes(pickle.dumps(_Planted(str(target))))
    else:  # a real DCP checkpoint of this model whose weight is stored as a pickled object
        _, moments = get_state_dict(model, optimizer)
        dcp.save({"model": {"weight": _Planted(str(target))}, "optimizer": moments["state"]}, checkpoint_id=str(folder))
    assert not target.exists()
    for path in folder.iterdir():
        writer.add_file(f"training/{path.name}", path.read_bytes())
    writer.add_file(training_state.PLAIN, json.dumps({"param_groups": optimizer.state_dict()["param_groups"],
                                                      "scheduler": scheduler.state_dict()}).encode())
    refusal = "io.open is not part of a checkpoint" if where == "metadata" else "model.weight is stored as a pickle"
    with pytest.raises(BaseException, match=refusal):  # DCP raises a CheckpointException (a BaseException)
        training_state.load(store, writer.publish(), model, optimizer, scheduler)
    assert not target.exists()
