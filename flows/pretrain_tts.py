"""`pretrain_tts`: the TTS LM's streaming pretraining (the paper's stage I(b)) on the TTS corpus's
units, read-write interleaved as streaming inference writes. Its checkpoint is what later trainings
of the same units tokenizer start from (`train.tts_from`): one pretraining, many LLM trainings.

Given no versions, it first builds (or finds) the corpus and tokenizes it with `units.tokenizer`,
which fits that tokenizer and its units -> audio decoder on the corpus when they do not exist yet:
one command from a fresh store to a TTS LM and a decoder that speak any sentence."""

from __future__ import annotations

from prefect import flow

from omniforge.config import PipelineConfig
from omniforge.flows.build_corpus import build_corpus
from omniforge.flows.tokenize_units import decoder, tokenize_units, trains_decoder
from omniforge.flows.train import train
from omniforge.tasks.train import steps as train_steps


def corpus_units(config: PipelineConfig, speech: str) -> PipelineConfig:
    """The units settings for the corpus's speech: units/CORPUS, from the dialogues' tokenizer (one
    vocabulary and one decoder for corpus and dialogues)."""
    units = config.units.model_copy(update={"speech": speech, "name": config.corpus.name,
                                            "tokenizer": config.units.tokenizer_name})
    return config.model_copy(update={"units": units})


@flow(name="pretrain-tts", log_prints=True)
def pretrain_tts(config: PipelineConfig, speech: str | None = None, units: str | None = None) -> dict:
    """Pretrain on the given speech/units versions of the corpus, or on the corpus built and tokenized
    now; returns the train flow's summary (its `checkpoint` is the pretrained TTS) with the `corpus`
    and `corpus_units` versions it learned from."""
    decoding = None
    if speech is None or units is None:
        speech = build_corpus(config)["speech_version"]
        on_corpus = corpus_units(config, speech)
        units = tokenize_units(on_corpus, with_decoder=False)["units_version"]
        # the decoder (of the corpus's speech) trains while the TTS LM does, as in the pipeline
        decoding = decoder.submit(units, on_corpus) if trains_decoder(config) else None
    pretrained = train(train_steps.tts_pretraining(config, speech, units))
    if decoding is not None:
        pretrained["decoder"] = decoding.result()
    return {**pretrained, "corpus": speech, "corpus_units": units}
