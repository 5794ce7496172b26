"""Settings of `omniforge deploy`: scheduled builds and event-triggered training and evaluation."""

from __future__ import annotations

from pydantic import Field

from omniforge.config.base import Section


class DeployConfig(Section):
    """Deployments registered on a Prefect server and run by a worker of `work_pool`."""

    work_pool: str = Field("omniforge", description="Prefect work pool (process type) the worker serves.")
    build_cron: str | None = Field("0 3 * * *", description="Cron schedule of the dataset build (None: no schedule).")
    timezone: str = Field("UTC", description="Time zone of the cron schedule.")
    train_on_new_units: bool = Field(True, description="Train when a new units version of units.name is published.")
    evaluate_on_new_checkpoint: bool = Field(True, description="Evaluate when a training run publishes its final "
                                             "checkpoint of train.name.")
    source_dir: str = Field(".", description="The omniforge checkout the worker runs flows from.")
