"""`tokenize_units`: a speech version -> (fitted or reused) tokenizer -> units on Ray -> units version
-> the units -> audio decoder (trained once per tokenizer, for the learned backend)."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from omniforge.config import PipelineConfig
from omniforge.flows.artifact_keys import artifact_key
from omniforge.flows.events import announce
from omniforge.flows.run_ids import recording_run_id
from omniforge.storage import store_from_config
from omniforge.tasks.units import steps


@task(name="tokenizer", cache_policy=NONE)
def get_tokenizer(config: PipelineConfig):
    store = store_from_config(config.store)
    speech = steps.resolve_speech(store, config)
    return speech, steps.tokenizer_for(store, speech, config, recording_run_id())


@task(name="tokenize", cache_policy=NONE)
def tokenize(speech, tokenizer, config: PipelineConfig):
    """Plan, tokenize and publish as one task: the plan's ids and the new units stay inside it, where
    as another task's inputs Prefect would walk every one of them (half a second at 15K utterances)."""
    store = store_from_config(config.store)
    plan = steps.plan_units(store, speech, tokenizer, config)
    table = steps.tokenize(plan, store, config)
    return steps.publish_units(store, plan, table, config, recording_run_id())


@task(name="decoder", cache_policy=NONE)
def decoder(units_version: str, config: PipelineConfig) -> str:
    """The units -> audio decoder of `units_version`'s tokenizer (trained now if it has none); its ref."""
    store = store_from_config(config.store)
    return str(steps.decoder_for(store, store.manifest(units_version), config, recording_run_id()).ref())


def trains_decoder(config: PipelineConfig) -> bool:
    """Only the learned backend trains a decoder: CosyVoice 2's needs no training, only its weights at evaluation."""
    return config.units.decoder.backend == "learned"


@flow(name="tokenize-units", log_prints=True)
def tokenize_units(config: PipelineConfig, with_decoder: bool = True) -> dict:
    """Make (or extend) units/NAME from the configured speech version; returns its stats. With
    `with_decoder` False the caller trains the decoder itself (the pipeline does, alongside the model)."""
    logger = get_run_logger()
    speech, tokenizer = get_tokenizer(config)
    logger.info("tokenizer %s for %s", tokenizer.ref(), speech.ref())
    units, new = tokenize(speech, tokenizer, config)
    if new:
        announce(units, config.store.url)
    result = {**units.stats, "units_version": str(units.ref()), "tokenizer_version": str(tokenizer.ref()),
              "published": new}
    if with_decoder and trains_decoder(config):
        result["decoder_version"] = decoder(result["units_version"], config)
    markdown = steps.summary_markdown(units, new)
    create_markdown_artifact(markdown, key=artifact_key("units", config.units.name), description="Speech units")
    logger.info("\n%s", markdown)
    return result
