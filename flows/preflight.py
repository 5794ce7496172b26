"""What a command checks before it starts a flow: the store opens, the input files are there and an
eval set has usable items. A person's mistake then ends in one line, before any work or any run."""

from __future__ import annotations

import fsspec

from omniforge.config import PipelineConfig
from omniforge.config.build import SourceConfig
from omniforge.config.corpus import CorpusSourceConfig
from omniforge.storage import ArtifactRef, ArtifactStore, store_from_config
from omniforge.tasks.evaluate.eval_sets import load_eval_set, speech_version_named


def check_store(config: PipelineConfig) -> ArtifactStore:
    store = store_from_config(config.store)
    store.probe()
    return store


def check_source(setting: str, source: SourceConfig | CorpusSourceConfig, store: ArtifactStore) -> None:
    """A JSONL source must exist (an HF dataset may be a hub name, so only its loader can tell), and
    generated dialogues must be in the store; `setting` names the section in the message."""
    if source.kind == "generated":
        store.resolve(ArtifactRef.parse(source.path))
    if source.kind == "jsonl":
        fs, path = fsspec.core.url_to_fs(source.path)
        if not fs.exists(path):
            raise FileNotFoundError(2, f"the source file ({setting}.path) does not exist", source.path)


def check_eval_set(config: PipelineConfig, store: ArtifactStore) -> None:
    """A questions file must have an item with every wav readable (a speech version is checked by
    the store when it is opened)."""
    settings = config.evaluate
    if speech_version_named(settings.eval_set) is None:
        load_eval_set(settings.eval_set, store, settings.max_items, settings.eval_set_root, settings.eval_set_media)
