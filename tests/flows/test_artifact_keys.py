"""Every Prefect artifact key the flows make is valid for Prefect and names its dataset or model."""

from __future__ import annotations

import itertools

import pytest
from prefect import flow
from prefect.artifacts import Artifact, create_markdown_artifact
from prefect.types.names import raise_on_name_alphanumeric_dashes_only

from omniforge.config import PipelineConfig
from omniforge.flows.artifact_keys import artifact_key

NAMES = ["demo", "demo_v2", "demo.v2", "Demo-V2", "a.b_c", "EN_US.voice"]


def every_key(name: str) -> list[str]:
    """The keys the flows create when every configured name is `name` (build, units, import, train
    per stage, eval, pipeline comparison)."""
    stages = PipelineConfig().train.stages
    return [artifact_key("build", name), artifact_key("units", name), artifact_key("import", name),
            *(artifact_key("train", name, stage) for stage in stages), artifact_key("eval", name),
            artifact_key("pipeline", name, "comparison")]


@pytest.mark.parametrize("name", NAMES)
def test_keys_are_valid_for_prefect(name):
    for key in every_key(name):
        assert raise_on_name_alphanumeric_dashes_only(key) == key


def test_different_names_never_share_a_key():
    for first, second in itertools.combinations(NAMES, 2):
        assert not set(every_key(first)) & set(every_key(second)), (first, second)


def test_plain_names_stay_readable():
    assert artifact_key("train", "demo", "s2t") == "train-demo-s2t"
    assert artifact_key("eval", "demo_v2").startswith("eval-demo-v2-")


def test_prefect_stores_an_artifact_under_each_key(prefect_server):
    keys = [key for name in NAMES for key in every_key(name)]

    @flow
    def publish_all() -> None:
        for key in keys:
            create_markdown_artifact(f"# {key}", key=key)

    publish_all()
    for key in keys:
        assert Artifact.get(key) is not None
