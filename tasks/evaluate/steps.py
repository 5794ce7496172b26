"""The steps of the `evaluate` flow: open the checkpoint with its units decoder, answer the eval set
while streaming, score, publish the report; and find the evaluation of the model a retrained one
started from, to compare the two."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from omniforge.config import PipelineConfig
from omniforge.config.evaluate import GenerationLimits
from omniforge.config.units import DecoderRuntimeConfig
from omniforge.errors import InputError
from omniforge.hashing import stable_hash
from omniforge.model.slot_cache import SlotCacheSettings
from omniforge.model.streaming import GenerationSettings, SamplingSettings, sampling_generator
from omniforge.storage import ArtifactRef, ArtifactStore, Kind, Manifest
from omniforge.storage.audio import encode_audio
from omniforge.tasks.common.threads import torch_threads
from omniforge.tasks.evaluate.eval_sets import load_eval_set
from omniforge.tasks.evaluate.metrics import Scorer, evaluate_items, summarize
from omniforge.tasks.evaluate.report import compare, file_name_for, publish_eval
from omniforge.tasks.evaluate.speak import Sentence, SpokenSentence, read_sentences, sentence_metrics, speak_sentences
from omniforge.tasks.evaluate.streaming_engine import AnswerTrace, StreamingEngine
from omniforge.tasks.train.checkpoints import checkpoint_chat, load_checkpoint
from omniforge.tasks.units.decoder import open_decoder
from omniforge.tasks.units.steps import decoder_for


def checkpoint_units(store: ArtifactStore, checkpoint: Manifest) -> Manifest:
    """The units version the checkpoint learned to speak (its decoder is trained on the same units)."""
    return store.manifest(checkpoint.parent_of(Kind.units))


def generation_settings(limits: GenerationLimits) -> GenerationSettings:
    """The streaming generator's settings from a config section (evaluate, serve)."""
    temperature = limits.speech_temperature
    slot = limits.slot_cache
    return GenerationSettings(max_text_tokens=limits.max_text_tokens, max_speech_tokens=limits.max_speech_tokens,
                              max_units_per_text_token=limits.max_units_per_text_token,
                              speech_per_step=limits.speech_per_step,
                              speech=SamplingSettings() if temperature is None else
                              SamplingSettings(do_sample=True, temperature=temperature),
                              slot_cache=None if slot is None else SlotCacheSettings(
                                  slots=slot.slots, llm_length=slot.llm_length, tts_length=slot.tts_length,
                                  compile=tuple(slot.compile)))


def eval_key(config: PipelineConfig, checkpoint: Manifest, decoder: Manifest) -> str:
    # how the caches are laid out and where they live change no token (the slot cache answers as the eager
    # one, a GPU as the CPU): not in the key; nor is the dtype at its default, so versions made before it count
    settings = config.evaluate
    unkeyed = {"name", "slot_cache", "device"} | settings.at_defaults(("dtype",))
    return stable_hash({"evaluate": settings.model_dump(mode="json", exclude=unkeyed),
                        "checkpoint": str(checkpoint.ref()), "decoder": str(decoder.ref())})


def speaking_decoder(store: ArtifactStore, config: PipelineConfig, checkpoint: Manifest) -> Manifest:
    """The trained units -> audio decoder of the checkpoint's units (an error names the command that
    trains it when there is none: speaking never trains one)."""
    return decoder_for(store, checkpoint_units(store, checkpoint), config, None, train=False)


def open_engine(store: ArtifactStore, checkpoint: Manifest, decoder: Manifest,
                limits: GenerationLimits, runtime: DecoderRuntimeConfig, seed: int = 0,
                part_way: bool = False) -> StreamingEngine:
    """The checkpoint and its decoder as a streaming engine answering within `limits`, in the chat
    format it was trained with. Evaluate, serve and speak all open it here (`part_way`: see
    `load_checkpoint`)."""
    device = answering_device(limits)
    model, tokenizer = load_checkpoint(store, checkpoint, part_way)
    model = model.to(device=device, dtype=getattr(torch, limits.dtype))
    return StreamingEngine(model, checkpoint_chat(checkpoint, tokenizer),
                           open_decoder(store, decoder, runtime), generation_settings(limits),
                           sampling_generator(model, seed))


def answering_device(limits: GenerationLimits) -> torch.device:
    """Where `limits` has the checkpoint answer; an error where that is a GPU torch cannot see."""
    if limits.device == "cuda" and not torch.cuda.is_available():
        raise InputError("device is cuda (evaluate.device / serve.device), but torch sees no CUDA device here "
                         "(torch.cuda.is_available() is False): set it to cpu, or run where a GPU is")
    return torch.device(limits.device)


def evaluate(store: ArtifactStore, config: PipelineConfig, flow_run_id: str | None, progress=None) -> Manifest:
    settings = config.evaluate
    eval_set = load_eval_set(settings.eval_set, store, settings.max_items, settings.eval_set_root,
                             settings.eval_set_media)  # checked first
    sentences = read_sentences(settings.sentences) if settings.sentences else []
    checkpoint = store.manifest(store.resolve(ArtifactRef.parse(settings.checkpoint)))
    decoder = speaking_decoder(store, config, checkpoint)
    key = eval_key(config, checkpoint, decoder)
    found = store.find_version(Kind.eval, settings.name, key)
    if found is not None:
        return found
    engine = open_engine(store, checkpoint, decoder, settings, settings.decoder, settings.seed)
    scorer = Scorer(settings.asr_model, settings.mos, settings.mos_answers)
    kept = []

    def on_answer(result, trace) -> None:
        if len(kept) < settings.keep_wavs:
            kept.append((result, trace))
        if progress is not None:
            progress(result)

    with torch_threads(settings.torch_threads):  # streaming one answer at a time wants few threads
        results, unanswerable = evaluate_items(engine, eval_set.items, scorer, on_answer)
        spoken = speak_sentences(engine, sentences, scorer, settings.sentences_llm_states)
    summary = summarize(results, scorer.skipped)
    if sentences:
        summary["metrics"].update(sentence_metrics(spoken))
        summary["sentences"] = [r.row() for r in spoken]
    summary["rejected_items"] = [r.as_row() for r in eval_set.rejects + unanswerable]
    parents = [checkpoint, decoder] + ([eval_set.speech] if eval_set.speech is not None else [])
    return publish_eval(store, settings.name, summary, results, kept, parents, settings.model_dump(mode="json"),
                        key, flow_run_id)


def say_sentences(store: ArtifactStore, config: PipelineConfig, checkpoint: Manifest, sentences: list[Sentence],
                  llm_states: bool = True, asr: bool = True, on_spoken=None,
                  part_way: bool = False) -> list[SpokenSentence]:
    """The checkpoint says each sentence with its own decoder and `evaluate`'s generation limits,
    heard back by `evaluate.asr_model` unless `asr` is off (see `speak_sentences`)."""
    settings = config.evaluate
    engine = open_engine(store, checkpoint, speaking_decoder(store, config, checkpoint), settings,
                         settings.decoder, settings.seed, part_way)
    scorer = Scorer(settings.asr_model if asr else None, mos=False)
    with torch_threads(settings.torch_threads):
        return speak_sentences(engine, sentences, scorer, llm_states, on_spoken)


def speak_to_files(store: ArtifactStore, config: PipelineConfig, sentences: list[Sentence], out_dir: str,
                   llm_states: bool = True, asr: bool = True, on_spoken=None) -> dict:
    """`omniforge speak`: `evaluate.checkpoint` says each sentence; OUT/<id>.wav for each,
    OUT/spoken.jsonl with what was heard. Returns the metrics."""
    checkpoint = store.manifest(store.resolve(ArtifactRef.parse(config.evaluate.checkpoint)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def save(result: SpokenSentence, trace: AnswerTrace) -> None:
        (out / f"{file_name_for(result.id)}.wav").write_bytes(encode_audio(trace.audio, trace.sample_rate, "WAV"))
        if on_spoken is not None:
            on_spoken(result)

    results = say_sentences(store, config, checkpoint, sentences, llm_states, asr, save)
    (out / "spoken.jsonl").write_text("".join(json.dumps(r.row()) + "\n" for r in results), encoding="utf-8")
    return {"checkpoint": str(checkpoint.ref()), "llm_states": llm_states, **sentence_metrics(results)}


def compare_with_previous(store: ArtifactStore, config: PipelineConfig, eval_ref: str) -> str | None:
    """When the evaluated model was retrained from an earlier one, its evaluation beside the earlier
    model's on the same eval set, if that one was evaluated; Markdown."""
    new = store.manifest(eval_ref)
    [checkpoint] = new.parents_of(Kind.checkpoint)
    earlier = _first_model_ancestor(store, store.manifest(checkpoint))
    if earlier is None:
        return None
    for candidate in store.newest_first(Kind.eval, config.evaluate.name):
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
