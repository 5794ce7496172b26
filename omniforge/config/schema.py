"""The foundation sections and the root config that every `omniforge` command loads."""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import Field, SecretStr, SerializationInfo, field_serializer, model_validator

from omniforge.config.base import ConfigError, PathOrURL, Section
from omniforge.config.build import BuildConfig
from omniforge.config.corpus import CorpusConfig
from omniforge.config.deploy import DeployConfig
from omniforge.config.evaluate import EvaluateConfig
from omniforge.config.generate import GenerateConfig
from omniforge.config.serve import ServeConfig
from omniforge.config.train import TrainConfig
from omniforge.config.units import UnitsConfig

SECRET_WORDS = ("key", "secret", "token", "password", "credential")  # in an fsspec option's name: a secret
MASK = "**********"


class StoreConfig(Section):
    """Where versioned artifacts live, and the credentials to reach them. Credentials are best left
    to the environment or the cloud's own chain (AWS_*, GOOGLE_APPLICATION_CREDENTIALS); otherwise
    name an environment variable or a Prefect Secret block here. A credential written in the config
    is typed as a secret: never printed, never stored in a manifest, never deployed."""

    url: PathOrURL = Field(
        "omniforge-data/store",
        description="fsspec URL of the artifact store: a local path (relative to the working "
        "folder, made absolute on loading), file://, memory://, s3://bucket/prefix or gs://bucket/prefix.",
        validate_default=True,
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options, e.g. {endpoint_url: http://127.0.0.1:9000} for S3. An option whose "
        "name says it is a credential (key, secret, token, password) moves to `secrets`.",
    )
    secrets: dict[str, SecretStr] = Field(default_factory=dict, description="fsspec options that are credentials: "
                                          "kept in memory, shown and dumped as ********** and left out of deployments.")
    secrets_from_env: dict[str, str] = Field(default_factory=dict, description="fsspec option -> environment "
                                             "variable it is read from, wherever the job runs (a deployment's worker).")
    secret_block: str | None = Field(None, description="A Prefect Secret block holding a JSON object of fsspec "
                                     "options (credentials), loaded wherever the job runs.")
    rows_per_shard: int = Field(500, ge=1, description="Rows per Parquet shard.")
    rows_per_row_group: int = Field(
        32, ge=1, description="Rows per Parquet row group (small groups give cheap random access)."
    )

    @model_validator(mode="before")
    @classmethod
    def _credentials_are_secrets(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("options"), dict):
            return data
        options, secrets = dict(data["options"]), dict(data.get("secrets") or {})
        for name in [n for n in options if any(word in n.lower() for word in SECRET_WORDS)]:
            if not isinstance(options[name], str):
                raise ValueError(f"store.options.{name} looks like a credential but is not a string; give it "
                                 "in store.secrets, store.secrets_from_env or store.secret_block")
            secrets[name] = options.pop(name)
        return {**data, "options": options, "secrets": secrets}

    @field_serializer("secrets")
    def _masked(self, secrets: dict[str, SecretStr], info: SerializationInfo) -> dict[str, str]:
        """Masked, unless the dump is for a process of this same job (context reveal_secrets)."""
        reveal = bool(info.context and info.context.get("reveal_secrets"))
        return {name: value.get_secret_value() if reveal else MASK for name, value in secrets.items()}

    def storage_options(self) -> dict[str, Any]:
        """The options to open the store with: plain ones, then the secret block's, the environment's
        and the literal secrets."""
        resolved = dict(self.options)
        if self.secret_block:
            from prefect.blocks.system import Secret

            value = Secret.load(self.secret_block).get()
            resolved.update(json.loads(value) if isinstance(value, str) else dict(value))
        for name, variable in self.secrets_from_env.items():
            if variable not in os.environ:
                raise ConfigError(f"store.secrets_from_env.{name} reads ${variable}, which is not set here")
            resolved[name] = os.environ[variable]
        resolved.update({name: value.get_secret_value() for name, value in self.secrets.items()})
        return resolved


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
    generate: GenerateConfig = Field(default_factory=GenerateConfig, description="Dialogues from instructions.")
    build: BuildConfig = Field(default_factory=BuildConfig, description="Spoken-dialogue build.")
    corpus: CorpusConfig = Field(default_factory=CorpusConfig, description="TTS corpus and TTS LM pretraining.")
    units: UnitsConfig = Field(default_factory=UnitsConfig, description="Speech units.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Staged training.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Streaming evaluation.")
    deploy: DeployConfig = Field(default_factory=DeployConfig, description="Prefect deployments.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="`omniforge serve`: talk to a checkpoint.")

    @model_validator(mode="after")
    def _aligned_training_has_aligned_units(self) -> "PipelineConfig":
        if self.train.model.stream_aligned and not self.units.align:
            raise ValueError("train.model.stream_aligned needs units.align: true (its training reads when each "
                             "word is said)")
        return self

    def with_fields(self, section: str, **fields) -> "PipelineConfig":
        """A copy with fields of one section replaced (a flow hands the next one the versions it made)."""
        return self.model_copy(update={section: getattr(self, section).model_copy(update=fields)})
