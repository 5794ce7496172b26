"""The steps of the `evaluate` flow: open the checkpoint with its units decoder, answer the eval set
while streaming, score, publish the report."""

from __future__ import annotations

import torch

from model.streaming import GenerationSettings
from omniforge.config import PipelineConfig
from omniforge.hashing import stable_hash
from storage import ArtifactStore, Kind, Manifest
from storage.names import ArtifactRef
from tasks.checkpoints import load_checkpoint
from tasks.eval_report import publish_eval
from tasks.eval_sets import load_eval_set
from tasks.evaluation import Scorer, evaluate_items, summarize
from tasks.streaming_engine import StreamingEngine
from tasks.text_tokenizer import ChatFormat
from tasks.units_roundtrip import decoder_version, open_decoder


def checkpoint_units(store: ArtifactStore, checkpoint: Manifest) -> Manifest:
    """The units version the checkpoint learned to speak (its decoder is trained on the same units)."""
    parents = checkpoint.parents_of(Kind.units)
    if not parents:
        raise ValueError(f"{checkpoint.ref()} has no units version among its parents: it cannot speak")
    return store.manifest(parents[0])


def eval_key(config: PipelineConfig, checkpoint: Manifest, decoder: Manifest) -> str:
    return stable_hash({"evaluate": config.evaluate.model_dump(mode="json", exclude={"name"}),
                        "checkpoint": str(checkpoint.ref()), "decoder": str(decoder.ref())})


def evaluate(store: ArtifactStore, config: PipelineConfig, flow_run_id: str | None, progress=None) -> Manifest:
    settings = config.evaluate
    checkpoint = store.manifest(store.resolve(ArtifactRef.parse(settings.checkpoint)))
    decoder = decoder_version(store, checkpoint_units(store, checkpoint), config.units, flow_run_id)
    torch.set_num_threads(settings.torch_threads)  # after training the decoder: streaming wants fewer
    key = eval_key(config, checkpoint, decoder)
    found = store.find_version(Kind.eval, settings.name, key)
    if found is not None:
        return found
    items, eval_speech = load_eval_set(settings.eval_set, store, settings.max_items)
    model, tokenizer = load_checkpoint(store, checkpoint)
    engine = StreamingEngine(model, ChatFormat(tokenizer, config.train.model.tokenizer.system_prompt),
                             open_decoder(store, decoder),
                             GenerationSettings(max_text_tokens=settings.max_text_tokens,
                                                max_speech_tokens=settings.max_speech_tokens))
    scorer = Scorer(settings.asr_model, settings.mos, settings.mos_answers)
    kept = []

    def on_answer(result, trace) -> None:
        if len(kept) < settings.keep_wavs:
            kept.append((f"{result.item_id.replace('/', '_')}-{result.turn}", trace))
        if progress is not None:
            progress(result)

    results = evaluate_items(engine, items, scorer, on_answer)
    summary = summarize(results, scorer.skipped)
    parents = [checkpoint, decoder] + ([eval_speech] if eval_speech is not None else [])
    return publish_eval(store, settings.name, summary, results, kept, parents, settings.model_dump(mode="json"),
                        key, flow_run_id)
