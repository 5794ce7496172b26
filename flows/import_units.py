"""`import_units`: CosyVoice 2 tokens in VocalNet's released layout -> speech, tokenizer and units versions."""

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


@task(name="import-vocalnet", cache_policy=NONE)
def import_set(config: PipelineConfig):
    return steps.import_units(store_from_config(config.store), config, recording_run_id())


@flow(name="import-units", log_prints=True)
def import_units(config: PipelineConfig) -> dict:
    """Import units/NAME (and its speech/NAME) from `config.units.vocalnet`; returns the units' stats."""
    result = import_set(config)
    if result.published:
        announce(result.speech, config.store.url)
        announce(result.units, config.store.url)
    markdown = steps.import_markdown(result)
    create_markdown_artifact(markdown, key=artifact_key("import", config.units.vocalnet.name),
                             description="Imported speech units")
    get_run_logger().info("\n%s", markdown)
    return {**result.units.stats, "units_version": str(result.units.ref()), "speech_version": str(result.speech.ref()),
            "published": result.published, "rejects": result.speech.stats.get("rejects", 0)}
