"""`omniforge deploy`: register the chain of jobs on a Prefect server, run by a process worker:

- the dataset build on a cron schedule,
- tokenization (and the units' decoder) when a new speech version lands (our publish steps emit
  `omniforge.version.published`),
- training when a new units version lands,
- evaluation when a training run publishes its final checkpoint.

So one run of the build deployment ends in an evaluated model, with nothing run by hand. Each
deployment carries the whole config as its parameter, so the worker needs only the checkout, except
credentials: `store.secrets` are never deployed; the worker reads them from its environment
(`store.secrets_from_env`, the cloud's credential chain) or a Prefect Secret block (`store.secret_block`).
Paths inside the deploying checkout travel relative: the worker resolves them in its own checkout.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.events import DeploymentEventTrigger
from prefect.exceptions import ObjectAlreadyExists

from omniforge.config import PipelineConfig
from omniforge.flows.events import PUBLISHED
from omniforge.storage import ArtifactRef, Kind

log = logging.getLogger(__name__)

FLOWS = {"build": "flows/build_dialogues.py:build_dialogues", "units": "flows/tokenize_units.py:tokenize_units",
         "train": "flows/train.py:train", "evaluate": "flows/evaluate.py:evaluate"}


def ensure_work_pool(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


def on_published(kind: Kind, name: str) -> DeploymentEventTrigger:
    return DeploymentEventTrigger(expect={PUBLISHED}, match={"omniforge.kind": kind.value, "omniforge.name": name})


def deploy(config: PipelineConfig) -> dict[str, tuple[str, str]]:
    """Register the deployments; returns job (build, units, train, evaluate) -> (its full name,
    FLOW/DEPLOYMENT as `prefect deployment run` takes it, and its id)."""
    settings = config.deploy
    ensure_work_pool(settings.work_pool)
    source = str(Path(settings.source_dir).resolve())
    if config.store.secrets:
        log.warning("store.secrets (%s) are not deployed: give the worker them with store.secrets_from_env or "
                    "store.secret_block", ", ".join(sorted(config.store.secrets)))
    parameters = {"config": relative_to(config.model_dump(mode="json", exclude={"store": {"secrets"}}), Path.cwd())}
    plans = {"build": (config.build.name, {"cron": settings.build_cron} if settings.build_cron else {})}
    if settings.units_on_new_speech:
        speech = ArtifactRef.parse(config.units.speech)
        plans["units"] = (config.units.name, {"triggers": [on_published(Kind.speech, speech.name)]})
    if settings.train_on_new_units:
        plans["train"] = (config.train.name, {"triggers": [on_published(Kind.units, config.units.name)]})
    if settings.evaluate_on_new_checkpoint:
        plans["evaluate"] = (config.train.name, {"triggers": [on_published(Kind.checkpoint, config.train.name)]})
    ids = {}
    for job, (name, options) in plans.items():
        flow = Flow.from_source(source=source, entrypoint=FLOWS[job])
        deployment_id = flow.deploy(name=f"{job}-{name}", work_pool_name=settings.work_pool, parameters=parameters,
                                    build=False, push=False, print_next_steps=False, **options)
        ids[job] = (f"{flow.name}/{job}-{name}", str(deployment_id))
    return ids


def relative_to(value: Any, folder: Path) -> Any:
    """`value` (a config dump) with every absolute path inside `folder` made relative to it: the config
    resolved local paths against the deploying checkout, and a worker resolves them against its own."""
    if isinstance(value, dict):
        return {key: relative_to(item, folder) for key, item in value.items()}
    if isinstance(value, list):
        return [relative_to(item, folder) for item in value]
    if isinstance(value, str) and os.path.isabs(value):
        inside = Path(value)
        if inside == folder or folder in inside.parents:
            return os.path.relpath(inside, folder)
    return value
