"""`omniforge deploy`: register the recurring jobs on a Prefect server, run by a process worker:

- the dataset build on a cron schedule,
- training when a new units version lands (our publish steps emit `omniforge.version.published`),
- evaluation when a training run publishes its final checkpoint.

Each deployment carries the whole config as its parameter, so the worker needs only the checkout,
except credentials: `store.secrets` are never deployed; the worker reads them from its environment
(`store.secrets_from_env`, the cloud's credential chain) or a Prefect Secret block (`store.secret_block`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.events import DeploymentEventTrigger
from prefect.exceptions import ObjectAlreadyExists

from omniforge.config import PipelineConfig
from omniforge.flows.events import PUBLISHED
from omniforge.storage import Kind

log = logging.getLogger(__name__)

FLOWS = {"build": "flows/build_dialogues.py:build_dialogues", "train": "flows/train.py:train",
         "evaluate": "flows/evaluate.py:evaluate"}


def ensure_work_pool(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


def on_published(kind: Kind, name: str) -> DeploymentEventTrigger:
    return DeploymentEventTrigger(expect={PUBLISHED}, match={"omniforge.kind": kind.value, "omniforge.name": name})


def deploy(config: PipelineConfig) -> dict[str, str]:
    """Register the deployments; returns name -> deployment id."""
    settings = config.deploy
    ensure_work_pool(settings.work_pool)
    source = str(Path(settings.source_dir).resolve())
    if config.store.secrets:
        log.warning("store.secrets (%s) are not deployed: give the worker them with store.secrets_from_env or "
                    "store.secret_block", ", ".join(sorted(config.store.secrets)))
    parameters = {"config": config.model_dump(mode="json", exclude={"store": {"secrets"}})}
    plans = {"build": {"cron": settings.build_cron} if settings.build_cron else {}}
    if settings.train_on_new_units:
        plans["train"] = {"triggers": [on_published(Kind.units, config.units.name)]}
    if settings.evaluate_on_new_checkpoint:
        plans["evaluate"] = {"triggers": [on_published(Kind.checkpoint, config.train.name)]}
    ids = {}
    for job, options in plans.items():
        flow = Flow.from_source(source=source, entrypoint=FLOWS[job])
        name = f"{job}-{config.build.name if job == 'build' else config.train.name}"
        ids[name] = str(flow.deploy(name=name, work_pool_name=settings.work_pool, parameters=parameters,
                                    build=False, push=False, print_next_steps=False, **options))
    return ids
