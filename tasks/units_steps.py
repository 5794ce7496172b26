"""The steps of the units stage, as plain functions the flow wraps in Prefect tasks."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from tqdm import tqdm

from omniforge.config import PipelineConfig
from storage import ArtifactRef, ArtifactStore, Kind, Manifest
from tasks.ray_runtime import ray_session
from tasks.incremental import unchanged_rows
from tasks.speech_units import (shard_index, shard_tasks, tokenize_tasks, tokenizer_state,
                                unit_stats, units_table)


@dataclass
class UnitsPlan:
    speech: Manifest
    tokenizer: Manifest
    todo: list[dict]  # (shard, utterance ids) tasks
    reuse: Manifest | None

    @property
    def utterances(self) -> int:
        return sum(len(task["ids"]) for task in self.todo)


def plan_units(store: ArtifactStore, speech: Manifest, tokenizer: Manifest, config: PipelineConfig) -> UnitsPlan:
    """Rows still to tokenize; the previous units version is reused when it was made with the same
    tokenizer and all its rows are still in the speech version, unchanged."""
    index = shard_index(store, speech, config.units.roles)
    wanted = {uid: key for _, rows in index for uid, key in rows}
    previous = store.latest_manifest(Kind.units, config.units.name)
    same_tokenizer = previous is not None and tokenizer.ref() in [p.ref() for p in previous.parents]
    done = unchanged_rows(store, previous, wanted) if same_tokenizer else None
    reuse = previous if done is not None else None
    todo = shard_tasks(index, done or set(), config.units.batch_size)
    return UnitsPlan(speech, tokenizer, todo, reuse)


def tokenize(plan: UnitsPlan, store: ArtifactStore, config: PipelineConfig) -> pa.Table:
    """The units of every utterance still to tokenize, as one table."""
    parts: list[pa.Table] = []
    if plan.todo:
        state = tokenizer_state(store, plan.tokenizer)
        with ray_session(config.ray), tqdm(total=plan.utterances, desc="tokenizing", unit="utt") as bar:
            def on_result(part: pa.Table) -> None:
                parts.append(part)
                bar.update(part.num_rows)

            tokenize_tasks(plan.todo, state, store, config.units, on_result)
    return units_table(parts)


def publish_units(store: ArtifactStore, plan: UnitsPlan, new: pa.Table, config: PipelineConfig,
                  flow_run_id: str | None) -> tuple[Manifest, bool]:
    """Returns the units version and whether it is new."""
    parents = [plan.speech.ref(), plan.tokenizer.ref()]
    if plan.reuse is not None and not new.num_rows and [p.ref() for p in plan.reuse.parents][:2] == parents:
        return plan.reuse, False
    writer = store.writer(Kind.units, config.units.name, parents=[plan.speech, plan.tokenizer]
                          + ([plan.reuse] if plan.reuse is not None else []),
                          config=config.units.model_dump(mode="json"), config_hash=config.units.hash(),
                          flow_run_id=flow_run_id)
    if plan.reuse is not None:
        writer.reuse_shards("data", plan.reuse)
    if new.num_rows or plan.reuse is None:
        writer.write_table("data", new)
    columns = ["units", "n_units", "duration"]
    parts = [store.read_table(plan.reuse, columns=columns)] if plan.reuse is not None else []
    whole = pa.concat_tables(parts + [new.select(columns)])
    writer.stats.update(unit_stats(whole, plan.tokenizer.stats["vocab_size"]), tokenized_this_run=new.num_rows,
                        reused_rows=whole.num_rows - new.num_rows)
    return writer.publish(), True


def resolve_speech(store: ArtifactStore, config: PipelineConfig) -> Manifest:
    return store.manifest(store.resolve(ArtifactRef.parse(config.units.speech)))


def summary_markdown(units: Manifest, new: bool) -> str:
    s = units.stats
    lines = [f"# Speech units: {units.ref()}" + ("" if new else " (up to date, nothing new)"), "", "| | |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {s[k]} |" for k in ("utterances", "units", "seconds", "units_per_second",
                                                             "vocab_size", "vocab_used", "tokenized_this_run", "reused_rows")]
    return "\n".join(lines)
