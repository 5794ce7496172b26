"""Typed run configs: one pydantic model per stage, loaded from YAML, overridable from the CLI."""

from omniforge.config.base import ConfigError, Section, dump_yaml, load_config
from omniforge.config.schema import PipelineConfig, RayConfig, StoreConfig


def load_pipeline_config(path: str | None, overrides: list[str] | None = None) -> PipelineConfig:
    return load_config(PipelineConfig, path, overrides)


__all__ = ["ConfigError", "PipelineConfig", "RayConfig", "Section", "StoreConfig", "dump_yaml",
           "load_config", "load_pipeline_config"]
