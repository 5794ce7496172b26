"""`tokenize_units`: a speech version -> (fitted or reused) tokenizer -> units on Ray -> units version."""

from __future__ import annotations

import re

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from flows.events import announce
from flows.run_ids import recording_run_id
from omniforge.config import PipelineConfig
from storage import store_from_config
from tasks import units_steps
from tasks.speech_units import tokenizer_version


@task(name="tokenizer", cache_policy=NONE)
def get_tokenizer(config: PipelineConfig):
    store = store_from_config(config.store)
    speech = units_steps.resolve_speech(store, config)
    return speech, tokenizer_version(store, speech, config.units, recording_run_id())


@task(name="tokenize", cache_policy=NONE)
def tokenize(speech, tokenizer, config: PipelineConfig):
    """Plan, tokenize and publish as one task: the plan's ids and the new units stay inside it, where
    as another task's inputs Prefect would walk every one of them (half a second at 15K utterances)."""
    store = store_from_config(config.store)
    plan = units_steps.plan_units(store, speech, tokenizer, config)
    table = units_steps.tokenize(plan, store, config)
    return units_steps.publish_units(store, plan, table, config, recording_run_id())


@flow(name="tokenize-units", log_prints=True)
def tokenize_units(config: PipelineConfig) -> dict:
    """Make (or extend) units/NAME from the configured speech version; returns its stats."""
    logger = get_run_logger()
    speech, tokenizer = get_tokenizer(config)
    logger.info("tokenizer %s for %s", tokenizer.ref(), speech.ref())
    units, new = tokenize(speech, tokenizer, config)
    if new:
        announce(units, config.store.url)
    markdown = units_steps.summary_markdown(units, new)
    create_markdown_artifact(markdown, key=re.sub(r"[^a-z0-9-]", "-", f"units-{config.units.name}"),
                             description="Speech units")
    logger.info("\n%s", markdown)
    return {**units.stats, "units_version": str(units.ref()), "tokenizer_version": str(tokenizer.ref()),
            "published": new}
