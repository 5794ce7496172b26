"""`generate_dialogues`: single-turn instructions -> multi-turn dialogues by an LLM -> dialogues/NAME,
which the build reads with build.source.kind=generated."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from omniforge.config import PipelineConfig
from omniforge.flows.artifact_keys import artifact_key
from omniforge.flows.run_ids import recording_run_id
from omniforge.storage import store_from_config
from omniforge.tasks.generate import steps


@task(name="plan-generation", cache_policy=NONE)
def plan(config: PipelineConfig) -> steps.GenerationPlan:
    return steps.plan_generation(config)


@task(name="generate", cache_policy=NONE)
def generate(planned: steps.GenerationPlan, config: PipelineConfig) -> steps.GenerationRun:
    store = store_from_config(config.store)
    return steps.generate_missing(planned, steps.open_cache(store, config), config)


@task(name="publish-generated", cache_policy=NONE)
def publish(planned: steps.GenerationPlan, run: steps.GenerationRun, config: PipelineConfig):
    store = store_from_config(config.store)
    return steps.publish_generated(store, planned, steps.open_cache(store, config), config, run, recording_run_id())


@flow(name="generate-dialogues", log_prints=True)
def generate_dialogues(config: PipelineConfig) -> dict:
    """Generate (or extend) dialogues/`generate.name`; returns its stats and version."""
    planned = plan(config)
    get_run_logger().info("%d instructions (%d rejected)", len(planned.jobs), len(planned.rejects))
    manifest, published = publish(planned, generate(planned, config), config)
    markdown = steps.summary_markdown(manifest, published)
    create_markdown_artifact(markdown, key=artifact_key("generate", config.generate.name),
                             description="Dialogues generated from instructions")
    get_run_logger().info("\n%s", markdown)
    return {**manifest.stats, "dialogues_version": str(manifest.ref()), "published": published}
