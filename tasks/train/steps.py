"""The steps of the `train` flow: resolve inputs, make the fresh model once, launch the stages on
Ray Train, and describe what they produced."""

from __future__ import annotations

import tempfile

from omniforge.config import PipelineConfig
from omniforge.hashing import stable_hash
from omniforge.storage import ArtifactStore
from omniforge.storage.manifest import Manifest
from omniforge.storage.names import ArtifactRef, Kind
from omniforge.tasks.common.ray_runtime import ray_session
from omniforge.tasks.train.checkpoints import CheckpointState, latest_for_key, save_checkpoint
from omniforge.tasks.train.loop import Workers, loop_payload, stage_key, train_stages
from omniforge.tasks.train.model_factory import build_model
from omniforge.tasks.train.text_tokenizer import ChatFormat, load_tokenizer


def resolve_inputs(store: ArtifactStore, config: PipelineConfig) -> tuple[Manifest, Manifest]:
    """The units version and its speech version. An unpinned train.speech (no @version) means the
    speech those units were made from, so a run triggered by new units trains on matching data."""
    units = store.manifest(store.resolve(ArtifactRef.parse(config.train.units)))
    wanted = ArtifactRef.parse(config.train.speech)
    made_from = [ref for ref in units.parents_of(Kind.speech) if ref.name == wanted.name]
    speech = store.manifest(made_from[0] if wanted.version is None and made_from else store.resolve(wanted))
    if speech.ref() not in units.parents_of(Kind.speech):
        raise ValueError(f"train.units: {units.ref()} was not made from {speech.ref()} (its speech: "
                         f"{', '.join(str(p) for p in units.parents_of(Kind.speech))}); tokenize that speech version first")
    return speech, units


def initial_checkpoint(store: ArtifactStore, config: PipelineConfig, speech: Manifest, units: Manifest,
                       flow_run_id: str | None) -> Manifest:
    """`train.init_from`; when retraining, the previous model; else the pretrained TTS checkpoint
    (`train.tts_from`) or the fresh model (pretrained parts where configured) with its tokenizer,
    made once per model config and dataset."""
    if config.train.init_from:
        return store.manifest(store.resolve(ArtifactRef.parse(config.train.init_from)))
    if config.train.continue_from_latest:
        previous = previous_model(store, config, speech)
        if previous is not None:
            return previous
    if config.train.tts_from:
        return pretrained_tts(store, config.train.tts_from, units)
    unit_vocab = int(units.stats["vocab_size"])
    key = stable_hash({"init": config.train.model.model_dump(mode="json"), "speech": str(speech.ref()),
                       "unit_vocab": unit_vocab})
    found = latest_for_key(store, config.train.name, key)
    if found is not None:
        return found
    texts = store.read_table(speech, columns=["text"]).column("text").to_pylist()
    tokenizer = load_tokenizer(config.train.model, texts)
    chat = ChatFormat(tokenizer, config.train.model.tokenizer.system_prompt)
    model = build_model(config.train.model, chat, unit_vocab)
    return save_checkpoint(store, config.train.name, model, tokenizer, CheckpointState("init", 0, 0, True, key),
                           [speech, units], config.train.model_dump(mode="json"), flow_run_id=flow_run_id)


def pretrained_tts(store: ArtifactStore, ref: str, units: Manifest) -> Manifest:
    """The TTS pretraining's checkpoint, checked to speak `units`' unit vocabulary."""
    checkpoint = store.manifest(store.resolve(ArtifactRef.parse(ref)))
    if checkpoint.stats.get("stage") != "tts" or not checkpoint.stats.get("complete"):
        raise ValueError(f"train.tts_from: {checkpoint.ref()} is not a finished TTS pretraining (stage "
                         f"{checkpoint.stats.get('stage')}, complete {checkpoint.stats.get('complete')})")
    learned = [t for u in checkpoint.parents_of(Kind.units) for t in store.manifest(u).parents_of(Kind.tokenizer)]
    wanted = units.parents_of(Kind.tokenizer)
    if learned[:1] != wanted:
        raise ValueError(f"train.tts_from: {checkpoint.ref()} learned the units of "
                         f"{', '.join(map(str, learned)) or 'no tokenizer'}, but {units.ref()} comes from "
                         f"{', '.join(map(str, wanted))}; tokenize both with one tokenizer (units.tokenizer)")
    return checkpoint


def tts_pretraining(config: PipelineConfig, speech: str, units: str) -> PipelineConfig:
    """The config of the TTS LM's pretraining (stage I(b)) on the corpus: only the tts stage, with
    the corpus's settings, under the corpus's name; the result is what `train.tts_from` names."""
    train = config.train.model_copy(update={
        "name": config.corpus.name, "speech": speech, "units": units, "stages": ["tts"],
        "tts": config.corpus.pretrain, "init_from": None, "tts_from": None, "continue_from_latest": False})
    return config.model_copy(update={"train": train})


def previous_model(store: ArtifactStore, config: PipelineConfig, speech: Manifest) -> Manifest | None:
    """The newest finished model of train.name (last stage complete) trained on another speech
    version: where retraining on new data starts. Always the same one for the same data, so a
    repeated retrain finds its stages done."""
    last_stage = [s for s in config.train.stages if config.train.stage(s).enabled][-1:]
    for manifest in store.newest_first(Kind.checkpoint, config.train.name):
        trained_on = [str(ref) for ref in manifest.parents_of(Kind.speech)]
        if (manifest.stats.get("complete") and [manifest.stats.get("stage")] == last_stage
                and str(speech.ref()) not in trained_on):
            return manifest
    return None


def stage_chain(store: ArtifactStore, config: PipelineConfig, start: Manifest, speech: Manifest,
                units: Manifest) -> dict[str, Manifest | None]:
    """Each enabled stage's complete checkpoint, or None from the first stage still to train."""
    chain: dict[str, Manifest | None] = {}
    current: Manifest | None = start
    for stage in config.train.stages:
        if not config.train.stage(stage).enabled:
            continue
        found = None if current is None else latest_for_key(store, config.train.name,
                                                             stage_key(config.train, stage, current, speech, units))
        current = found if found is not None and found.stats.get("complete") else None
        chain[stage] = current
    return chain


def run_stages(config: PipelineConfig, start: Manifest, speech: Manifest, units: Manifest,
               flow_run_id: str | None) -> None:
    """Train on Ray Train: `train.workers` processes (DDP or FSDP across them), CPU or one GPU each. A
    worker that dies takes the group down; Ray Train starts it again (`train.max_failures` times) and
    the loop resumes every stage from its last checkpoint in the store."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    payload = loop_payload(config, start, speech, units, flow_run_id)
    train = config.train
    resources = {"CPU": train.cpus_per_worker, **({"GPU": 1} if train.use_gpu else {})}
    with ray_session(config.ray, log_to_driver=True), tempfile.TemporaryDirectory() as ray_storage:
        trainer = TorchTrainer(
            train_stages, train_loop_config=payload,
            scaling_config=ScalingConfig(num_workers=train.workers, use_gpu=train.use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(name=f"train-{train.name}", storage_path=ray_storage,
                                 failure_config=FailureConfig(max_failures=train.max_failures)))
        result = trainer.fit()
        if result.error is not None:
            raise RuntimeError(f"training failed: {result.error}") from result.error


def run_stages_here(config: PipelineConfig, start: Manifest, speech: Manifest, units: Manifest,
                    flow_run_id: str | None = None) -> list[str]:
    """The same loop in this process (one worker, no Ray): for tests and debugging."""
    return train_stages(loop_payload(config, start, speech, units, flow_run_id), Workers())


def stage_markdown(stage: str, manifest: Manifest) -> str:
    metrics = manifest.stats.get("metrics", {})
    rows = "\n".join(f"| {name} | {value:.4g} |" for name, value in metrics.items())
    return (f"# {stage}: {manifest.ref()}\n\nstep {manifest.stats.get('step')} of {manifest.stats.get('steps')}\n\n"
            f"| metric (last step) | value |\n|---|---|\n{rows}\n")
