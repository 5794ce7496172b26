"""`import_units`: CosyVoice 2 tokens in VocalNet's released layout -> speech, tokenizer and units versions."""

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
from tasks.units_import import import_vocalnet


@task(name="import-vocalnet", cache_policy=NONE)
def import_set(config: PipelineConfig):
    return import_vocalnet(store_from_config(config.store), config.units, config.build.sample_rate, recording_run_id())


@flow(name="import-units", log_prints=True)
def import_units(config: PipelineConfig) -> dict:
    """Import units/NAME (and its speech/NAME) from `config.units.vocalnet`; returns the units' stats."""
    result = import_set(config)
    if result.published:
        announce(result.speech, config.store.url)
        announce(result.units, config.store.url)
    markdown = units_steps.summary_markdown(result.units, result.published)
    rejects = result.speech.stats.get("rejects_by_reason", {})
    markdown += "\n" + "\n".join(f"| rejects: {reason} | {count} |" for reason, count in sorted(rejects.items()))
    create_markdown_artifact(markdown, key=re.sub(r"[^a-z0-9-]", "-", f"import-{config.units.vocalnet.name}"),
                             description="Imported speech units")
    get_run_logger().info("\n%s", markdown)
    return {**result.units.stats, "units_version": str(result.units.ref()), "speech_version": str(result.speech.ref()),
            "published": result.published, "rejects": result.speech.stats.get("rejects", 0)}
