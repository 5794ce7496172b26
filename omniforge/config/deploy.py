"""Settings of `omniforge deploy`: a scheduled build, and tokenization, training and evaluation each
triggered by the version the step before it publishes."""

from __future__ import annotations

from pydantic import Field

from omniforge.config.base import Section


class DeployConfig(Section):
    """Deployments registered on a Prefect server and run by a worker of `work_pool`."""

    work_pool: str = Field("omniforge", description="Prefect work pool (process type) the worker serves.")
    build_cron: str | None = Field("0 3 * * *", description="Cron schedule of the dataset build (None: no schedule).")
    timezone: str = Field("UTC", description="Time zone of the cron schedule.")
    units_on_new_speech: bool = Field(True, description="Tokenize (and train the units' decoder) when a new speech "
                                      "version of units.speech's name is published (by the build).")
    train_on_new_units: bool = Field(True, description="Train when a new units version of units.name is published.")
    evaluate_on_new_checkpoint: bool = Field(True, description="Evaluate when a training run publishes its final "
                                             "checkpoint of train.name (building evaluate.build's held-out set "
                                             "first when it is the eval set).")
    source_dir: str = Field(".", description="The omniforge checkout the worker runs flows from.")
