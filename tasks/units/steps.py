"""The steps of the units stage, as plain functions the flows (`tokenize_units`, `import_units`) wrap
in Prefect tasks: the tokenizer, the tokenization plan, tokenizing on Ray, publishing, the units ->
audio decoder, the VocalNet import and the round-trip report."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from tqdm import tqdm

from omniforge.config import PipelineConfig
from omniforge.storage import ArtifactRef, ArtifactStore, Kind, Manifest
from omniforge.tasks.common.incremental import unchanged_rows
from omniforge.tasks.common.ray_runtime import ray_session
from omniforge.tasks.units.decoder import decoder_version, open_decoder
from omniforge.tasks.units.roundtrip import roundtrip
from omniforge.tasks.units.tokenizers import (
    shard_index,
    shard_tasks,
    tokenize_tasks,
    tokenizer_state,
    tokenizer_version,
    unit_stats,
    units_table,
)
from omniforge.tasks.units.vocalnet_import import ImportResult, import_vocalnet


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
    """Rows still to tokenize; the newest units version made with the same tokenizer is reused when
    all its rows are still in the speech version, unchanged (so going back to a tokenizer tried before
    tokenizes nothing again)."""
    index = shard_index(store, speech, config.units.roles)
    wanted = {uid: key for _, rows in index for uid, key in rows}
    reuse, done = None, set()
    for previous in store.newest_first(Kind.units, config.units.name):
        # rows without word alignments cannot serve a units version that needs them
        aligned_enough = previous.config.get("align", False) or not config.units.align
        if tokenizer.ref() in previous.parents_of(Kind.tokenizer) and aligned_enough:
            unchanged = unchanged_rows(store, previous, wanted)
            if unchanged is not None:
                reuse, done = previous, unchanged
                break
    todo = shard_tasks(index, done, config.units.batch_size)
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
    return units_table(parts, config.units.align)


def publish_units(store: ArtifactStore, plan: UnitsPlan, new: pa.Table, config: PipelineConfig,
                  flow_run_id: str | None) -> tuple[Manifest, bool]:
    """Returns the units version and whether it is new."""
    if (plan.reuse is not None and not new.num_rows and plan.reuse.parents_of(Kind.speech)[:1] == [plan.speech.ref()]
            and plan.reuse.parents_of(Kind.tokenizer) == [plan.tokenizer.ref()]):
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


def tokenizer_for(store: ArtifactStore, speech: Manifest, config: PipelineConfig, flow_run_id: str | None) -> Manifest:
    """The tokenizer version for `speech` with these settings: reused, or fitted once."""
    return tokenizer_version(store, speech, config.units, flow_run_id)


def decoder_for(store: ArtifactStore, units: Manifest, config: PipelineConfig, flow_run_id: str | None,
                train: bool = True) -> Manifest:
    """The units -> audio decoder of `units`' tokenizer: reused, or trained now (learned backend);
    `train` False: a missing one is an error naming the command that trains it."""
    return decoder_version(store, units, config.units, flow_run_id, train)


def import_units(store: ArtifactStore, config: PipelineConfig, flow_run_id: str | None) -> ImportResult:
    """units/NAME, speech/NAME and tokenizer/NAME from a VocalNet-layout set (`units.vocalnet`)."""
    return import_vocalnet(store, config.units, flow_run_id)


def roundtrip_report(store: ArtifactStore, config: PipelineConfig, limit: int, speech: str | None = None) -> dict:
    """Speech -> units -> speech on the latest units/NAME: its decoder (trained or reused), then ASR
    WER against the text and DNSMOS of the original and the resynthesis."""
    units = store.manifest(ArtifactRef(Kind.units, config.units.name))
    decoder = decoder_for(store, units, config, None)
    held_out = store.manifest(speech) if speech else None
    report = roundtrip(store, units, open_decoder(store, decoder), limit, speech=held_out)
    return {"units": str(units.ref()), "decoder": str(decoder.ref()), **report}


def summary_markdown(units: Manifest, new: bool) -> str:
    s = units.stats
    lines = [f"# Speech units: {units.ref()}" + ("" if new else " (up to date, nothing new)"), "", "| | |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {s[k]} |" for k in ("utterances", "units", "seconds", "units_per_second",
                                                             "vocab_size", "vocab_used", "tokenized_this_run", "reused_rows")]
    return "\n".join(lines)


def import_markdown(result: ImportResult) -> str:
    """The imported units' summary and the rejected items by reason."""
    rejects = result.speech.stats.get("rejects_by_reason", {})
    return summary_markdown(result.units, result.published) + "\n" + "\n".join(
        f"| rejects: {reason} | {count} |" for reason, count in sorted(rejects.items()))
