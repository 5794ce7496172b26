"""`build_corpus`: the TTS corpus, text the assistant says that is not a dialogue (plus the dialogues'
assistant turns) -> the assistant voice on Ray -> a versioned speech dataset of one-turn records."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from omniforge.config import PipelineConfig
from omniforge.flows.artifact_keys import artifact_key
from omniforge.flows.build_dialogues import announce_build, synthesize
from omniforge.flows.run_ids import recording_run_id
from omniforge.storage import store_from_config
from omniforge.tasks.build import steps as build_steps


@task(name="load-and-plan-corpus", cache_policy=NONE)
def load_and_plan(config: PipelineConfig):
    return build_steps.load_corpus_and_plan(store_from_config(config.store), config)


@task(name="publish-corpus", cache_policy=NONE)
def publish(plan, run: build_steps.SynthesisRun, config: PipelineConfig):
    store = store_from_config(config.store)
    return build_steps.publish(store, plan, build_steps.open_cache(store, config), config.corpus.name,
                               build_steps.corpus_recipe(config), run, recording_run_id(),
                               config.build.gate.on_reject)


@flow(name="build-corpus", log_prints=True)
def build_corpus(config: PipelineConfig) -> dict:
    """Build (or extend) the TTS corpus `config.corpus.name`; returns the summary."""
    logger = get_run_logger()
    plan = load_and_plan(config)
    logger.info("planned %d corpus utterances (%d rejected)", plan.utterance_count, len(plan.rejects))
    result = publish(plan, synthesize(plan, config), config)
    return announce_build(result, config, artifact_key("corpus", config.corpus.name), "TTS corpus")
