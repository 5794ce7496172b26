"""`build_dialogues`: text dialogues -> speech-ready text -> TTS on Ray -> versioned dataset."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from omniforge.config import PipelineConfig
from omniforge.flows.artifact_keys import artifact_key
from omniforge.flows.events import announce
from omniforge.flows.run_ids import recording_run_id
from omniforge.storage import store_from_config
from omniforge.tasks.build import steps as build_steps


@task(name="load-and-plan", cache_policy=NONE)
def load_and_plan(config: PipelineConfig):
    return build_steps.load_and_plan(config)


@task(name="synthesize", cache_policy=NONE)
def synthesize(plan, config: PipelineConfig) -> build_steps.SynthesisRun:
    store = store_from_config(config.store)
    return build_steps.synthesize_missing(plan, build_steps.open_cache(store, config), config)


@task(name="validate-and-publish", cache_policy=NONE)
def publish(plan, run: build_steps.SynthesisRun, config: PipelineConfig):
    store = store_from_config(config.store)
    return build_steps.publish(store, plan, build_steps.open_cache(store, config), config.build.name,
                               build_steps.build_recipe(config), run, recording_run_id(),
                               config.build.gate.on_reject)


@flow(name="build-dialogues", log_prints=True)
def build_dialogues(config: PipelineConfig) -> dict:
    """Build (or extend) the spoken-dialogue dataset `config.build.name`; returns the summary."""
    logger = get_run_logger()
    plan = load_and_plan(config)
    logger.info("planned %d utterances from %d dialogues (%d rejected so far)",
                plan.utterance_count, plan.dialogue_count, len(plan.rejects))
    result = publish(plan, synthesize(plan, config), config)
    return announce_build(result, config, artifact_key("build", config.build.name), "Spoken-dialogue build")


def announce_build(result, config: PipelineConfig, key: str, description: str) -> dict:
    """Announce a new speech version, summarize the build as a Prefect artifact; returns the summary."""
    if result.published:
        announce(result.speech, config.store.url)
    markdown = build_steps.summary_markdown(result)
    create_markdown_artifact(markdown, key=key, description=description)
    get_run_logger().info("\n%s", markdown)
    return {**result.summary, "dialogues_version": str(result.dialogues.ref()),
            "speech_version": str(result.speech.ref()), "published": result.published}
