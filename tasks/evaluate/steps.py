"""The steps of the `evaluate` flow: open the checkpoint with its units decoder, answer the eval set
while streaming, score, publish the report; and find the evaluation of the model a retrained one
started from, to compare the two."""

from __future__ import annotations

import torch

from omniforge.config import PipelineConfig
from omniforge.hashing import stable_hash
from omniforge.model.streaming import GenerationSettings, SamplingSettings
from omniforge.storage import ArtifactRef, ArtifactStore, Kind, Manifest
from omniforge.tasks.common.threads import torch_threads
from omniforge.tasks.evaluate.eval_sets import load_eval_set
from omniforge.tasks.evaluate.metrics import Scorer, evaluate_items, summarize
from omniforge.tasks.evaluate.report import compare, publish_eval
from omniforge.tasks.evaluate.streaming_engine import StreamingEngine
from omniforge.tasks.train.checkpoints import load_checkpoint
from omniforge.tasks.train.text_tokenizer import ChatFormat
from omniforge.tasks.units.decoder import open_decoder
from omniforge.tasks.units.steps import decoder_for


def checkpoint_units(store: ArtifactStore, checkpoint: Manifest) -> Manifest:
    """The units version the checkpoint learned to speak (its decoder is trained on the same units)."""
    return store.manifest(checkpoint.parent_of(Kind.units))


def speech_sampling(temperature: float | None) -> SamplingSettings:
    return SamplingSettings() if temperature is None else SamplingSettings(do_sample=True, temperature=temperature)


def eval_key(config: PipelineConfig, checkpoint: Manifest, decoder: Manifest) -> str:
    return stable_hash({"evaluate": config.evaluate.model_dump(mode="json", exclude={"name"}),
                        "checkpoint": str(checkpoint.ref()), "decoder": str(decoder.ref())})


def evaluate(store: ArtifactStore, config: PipelineConfig, flow_run_id: str | None, progress=None) -> Manifest:
    settings = config.evaluate
    eval_set = load_eval_set(settings.eval_set, store, settings.max_items, settings.eval_set_root)  # checked first
    checkpoint = store.manifest(store.resolve(ArtifactRef.parse(settings.checkpoint)))
    decoder = decoder_for(store, checkpoint_units(store, checkpoint), config, flow_run_id)
    key = eval_key(config, checkpoint, decoder)
    found = store.find_version(Kind.eval, settings.name, key)
    if found is not None:
        return found
    model, tokenizer = load_checkpoint(store, checkpoint)
    engine = StreamingEngine(model, ChatFormat(tokenizer, config.train.model.tokenizer.system_prompt),
                             open_decoder(store, decoder, settings.decoder),
                             GenerationSettings(max_text_tokens=settings.max_text_tokens,
                                                max_speech_tokens=settings.max_speech_tokens,
                                                speech=speech_sampling(settings.speech_temperature)),
                             torch.Generator().manual_seed(settings.seed))
    scorer = Scorer(settings.asr_model, settings.mos, settings.mos_answers)
    kept = []

    def on_answer(result, trace) -> None:
        if len(kept) < settings.keep_wavs:
            kept.append((result, trace))
        if progress is not None:
            progress(result)

    with torch_threads(settings.torch_threads):  # streaming one answer at a time wants few threads
        results = evaluate_items(engine, eval_set.items, scorer, on_answer)
    summary = summarize(results, scorer.skipped)
    summary["rejected_items"] = [r.as_row() for r in eval_set.rejects]
    parents = [checkpoint, decoder] + ([eval_set.speech] if eval_set.speech is not None else [])
    return publish_eval(store, settings.name, summary, results, kept, parents, settings.model_dump(mode="json"),
                        key, flow_run_id)


def compare_with_previous(store: ArtifactStore, config: PipelineConfig, eval_ref: str) -> str | None:
    """When the evaluated model was retrained from an earlier one, its evaluation beside the earlier
    model's on the same eval set, if that one was evaluated; Markdown."""
    new = store.manifest(eval_ref)
    [checkpoint] = new.parents_of(Kind.checkpoint)
    earlier = _first_model_ancestor(store, store.manifest(checkpoint))
    if earlier is None:
        return None
    for version in reversed(store.versions(Kind.eval, config.evaluate.name)):
        candidate = store.manifest(ArtifactRef(Kind.eval, config.evaluate.name, version))
        if candidate.parents_of(Kind.checkpoint) == [earlier] and \
                candidate.parents_of(Kind.speech) == new.parents_of(Kind.speech):
            return compare(store, candidate, new)
    return None


def _first_model_ancestor(store: ArtifactStore, checkpoint: Manifest) -> ArtifactRef | None:
    """Walk back the stage chain to the checkpoint it started from: a finished model (retraining),
    or the fresh init (None)."""
    current = checkpoint
    while current.stats.get("stage") != "init":
        starts = current.parents_of(Kind.checkpoint)
        if not starts:
            return None
        current = store.manifest(starts[-1])
        if current.stats.get("stage") == "s2s" and current.stats.get("complete"):
            return current.ref()
    return None
