"""The foundation sections and the root config that every `omniforge` command loads."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from omniforge.config.base import PathOrURL, Section
from omniforge.config.build import BuildConfig
from omniforge.config.corpus import CorpusConfig
from omniforge.config.deploy import DeployConfig
from omniforge.config.evaluate import EvaluateConfig
from omniforge.config.train import TrainConfig
from omniforge.config.units import UnitsConfig


class StoreConfig(Section):
    """Where versioned artifacts live."""

    url: PathOrURL = Field(
        "omniforge-data/store",
        description="fsspec URL of the artifact store: a local path (relative to the working "
        "folder, made absolute on loading), file://, memory://, s3://bucket/prefix or gs://bucket/prefix.",
        validate_default=True,
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options, e.g. {endpoint_url: http://127.0.0.1:9000} for S3.",
    )
    rows_per_shard: int = Field(500, ge=1, description="Rows per Parquet shard.")
    rows_per_row_group: int = Field(
        32, ge=1, description="Rows per Parquet row group (small groups give cheap random access)."
    )


class RayConfig(Section):
    """Where Ray work runs."""

    address: str | None = Field(
        None, description="Ray cluster address ('auto', 'host:6379', 'ray://...'); None starts Ray locally."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray (None: all).")


class PipelineConfig(Section):
    """Root of every run config: one file holds every stage's settings."""

    store: StoreConfig = Field(default_factory=StoreConfig, description="Artifact store.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray cluster.")
    build: BuildConfig = Field(default_factory=BuildConfig, description="Spoken-dialogue build.")
    corpus: CorpusConfig = Field(default_factory=CorpusConfig, description="TTS corpus and TTS LM pretraining.")
    units: UnitsConfig = Field(default_factory=UnitsConfig, description="Speech units.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Staged training.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Streaming evaluation.")
    deploy: DeployConfig = Field(default_factory=DeployConfig, description="Prefect deployments.")
