"""`train`: speech + units versions -> the fresh (or given) model -> stages on Ray Train ->
checkpoint versions, one Prefect artifact per stage. Finished stages are skipped, unfinished
ones resume from their last checkpoint."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from omniforge.config import PipelineConfig
from omniforge.flows.artifact_keys import artifact_key
from omniforge.flows.events import announce
from omniforge.flows.run_ids import recording_run_id
from omniforge.storage import store_from_config
from omniforge.tasks.train import steps as train_steps


@task(name="initial-checkpoint", cache_policy=NONE)
def initial_checkpoint(config: PipelineConfig):
    store = store_from_config(config.store)
    speech, units = train_steps.resolve_inputs(store, config)
    return speech, units, train_steps.initial_checkpoint(store, config, speech, units, recording_run_id())


@task(name="train-stages", cache_policy=NONE)
def train_stages(config: PipelineConfig, start, speech, units) -> None:
    train_steps.run_stages(config, start, speech, units, recording_run_id())


@flow(name="train", log_prints=True)
def train(config: PipelineConfig) -> dict:
    """Train the configured stages; returns the final checkpoint ref and each stage's metrics."""
    logger = get_run_logger()
    store = store_from_config(config.store)
    speech, units, start = initial_checkpoint(config)
    logger.info("training on %s + %s from %s", speech.ref(), units.ref(), start.ref())
    chain = train_steps.stage_chain(store, config, start, speech, units)
    if any(manifest is None for manifest in chain.values()):
        train_stages(config, start, speech, units)
        chain = train_steps.stage_chain(store, config, start, speech, units)
        if chain:
            announce(list(chain.values())[-1], config.store.url)
    else:
        logger.info("every stage already trained: nothing to do")
    for stage, manifest in chain.items():
        create_markdown_artifact(train_steps.stage_markdown(stage, manifest), key=artifact_key("train", config.train.name, stage),
                                 description=f"{config.train.name}: stage {stage}")
    final = list(chain.values())[-1] if chain else start
    return {"checkpoint": str(final.ref()), "stages": {s: dict(m.stats.get("metrics", {})) | {"checkpoint": str(m.ref())}
                                                        for s, m in chain.items()}}
