"""The steps of the dialogue build, as plain functions the flow wraps in Prefect tasks."""

from __future__ import annotations

import logging

from tqdm import tqdm

from omniforge.config import PipelineConfig
from omniforge.storage import ArtifactStore
from omniforge.tasks.common.records import SourceBatch
from omniforge.tasks.build.plan import Plan, plan_build
from omniforge.tasks.build.publish import BuildResult, publish_build
from omniforge.tasks.common.ray_runtime import ray_session
from omniforge.tasks.build.rewrite import rewrite_assistant_turns
from omniforge.tasks.build.sources import load_source
from omniforge.tasks.build.synthesis import synthesize_on_ray
from omniforge.tasks.build.tts import espeak_available
from omniforge.tasks.build.cache import UtteranceCache

log = logging.getLogger(__name__)


def build_config_hash(config: PipelineConfig) -> str:
    """Hash of the settings that decide the dataset's content (parallelism does not)."""
    from omniforge.hashing import stable_hash

    return stable_hash(config.build.model_dump(mode="json", exclude={"synthesis"}))


def load_and_plan(config: PipelineConfig) -> Plan:
    batch: SourceBatch = load_source(config.build.source)
    if config.build.text.rewrite.enabled:
        changed = rewrite_assistant_turns(batch, config.build.text.rewrite)
        log.info("rewrote %d assistant turns in spoken style", changed)
    return plan_build(batch, config.build, with_espeak=espeak_available())


def open_cache(store: ArtifactStore, config: PipelineConfig) -> UtteranceCache:
    return UtteranceCache.for_store(store, config.build.cache_url, "tts", config.build.synthesis.checkpoint_every)


def synthesize_missing(plan: Plan, cache: UtteranceCache, config: PipelineConfig) -> int:
    """Synthesize every job whose key is not cached yet; returns how many were synthesized."""
    done = cache.done_keys()
    jobs = plan.jobs()
    todo = [job for job in jobs if job["key"] not in done]
    log.info("%d unique utterances, %d cached, %d to synthesize", len(jobs), len(jobs) - len(todo), len(todo))
    if not todo:
        return 0
    with ray_session(config.ray), tqdm(total=len(todo), desc="synthesizing", unit="utt") as bar:
        def on_result(rows: list[dict]) -> None:
            cache.add(rows)
            bar.update(len(rows))

        try:
            synthesize_on_ray(todo, config.build, on_result)
        finally:
            cache.flush()
    return len(todo)


def publish(store: ArtifactStore, plan: Plan, cache: UtteranceCache, config: PipelineConfig, synthesized: int,
            flow_run_id: str | None) -> BuildResult:
    results = cache.rows_for({u.key for u in plan.utterances})
    return publish_build(store, config.build.name, plan, results,
                         config=config.build.model_dump(mode="json"), config_hash=build_config_hash(config),
                         source=plan.source, synthesized=synthesized, flow_run_id=flow_run_id)


def summary_markdown(result: BuildResult) -> str:
    s = result.summary
    lines = [
        f"# Spoken dialogues: {result.speech.ref()}" + ("" if result.published else " (up to date, nothing new)"),
        "",
        "| | |", "|---|---|",
        f"| dialogues | {s['dialogues']} |",
        f"| turns | {s['turns']} (user {s['user_turns']}, assistant {s['assistant_turns']}) |",
        f"| audio | {s['hours'] * 60:.1f} min |",
        f"| speakers | {s['speakers']} |",
        f"| synthesized this run | {s['synthesized_this_run']} |",
        f"| rows reused from the previous version | {s.get('reused_rows', 0)} |",
        f"| rejects | {s['rejects']} |",
    ]
    lines += [f"| rejects: {reason} | {count} |" for reason, count in sorted(s["rejects_by_reason"].items())]
    return "\n".join(lines)
