"""The steps of dialogue generation, as plain functions the flow wraps in Prefect tasks: the
instructions from the source, each dialogue asked of the LLM once (cached by its content key as it
arrives, `concurrency` requests in flight), then one `dialogues/NAME` version holding the dialogues
as JSONL in the layout the build reads, the rejects, and where they came from."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import pyarrow as pa
from tqdm import tqdm

from omniforge.config import PipelineConfig
from omniforge.config.generate import GenerateConfig
from omniforge.hashing import stable_hash
from omniforge.storage import ArtifactStore, Kind, Manifest
from omniforge.storage.schemas import GENERATED_CACHE_SCHEMA, GENERATED_DIALOGUES_FILE, REJECT_SCHEMA
from omniforge.tasks.build.sources import load_source
from omniforge.tasks.common.chat_endpoint import ChatEndpointError, ChatModel
from omniforge.tasks.common.records import Reject
from omniforge.tasks.common.result_cache import ResultCache
from omniforge.tasks.generate.dialogues import (GenerationRejected, generation_key, instruction_of, parse_reply,
                                                request, user_turns)

log = logging.getLogger(__name__)

# how hard to ask and where to keep results does not decide what is generated
NOT_IN_RECIPE = {"concurrency": True, "checkpoint_every": True, "cache_url": True,
                 "chat": {"api_key_env", "allow_http", "retries", "retry_backoff_s", "timeout_s"},
                 "source": {"media"}}


@dataclass(frozen=True)
class GenerationJob:
    key: str
    dialogue_id: str
    instruction: str
    turns: int


@dataclass
class GenerationPlan:
    jobs: list[GenerationJob]
    rejects: list[Reject]
    source: dict


@dataclass
class GenerationRun:
    generated: int = 0  # requests answered this run
    failed: dict[str, str] = field(default_factory=dict)  # key -> why the endpoint gave nothing (asked again next run)


def plan_generation(config: PipelineConfig) -> GenerationPlan:
    """One job per instruction (a record's first user turn), with its drawn number of user turns."""
    settings = config.generate
    batch = load_source(settings.source, answered_only=False)
    jobs = []
    for dialogue in batch.dialogues:
        instruction, turns = instruction_of(dialogue), user_turns(dialogue.id, settings)
        jobs.append(GenerationJob(generation_key(instruction, turns, settings), dialogue.id, instruction, turns))
    return GenerationPlan(jobs, list(batch.rejects), batch.description)


def open_cache(store: ArtifactStore, config: PipelineConfig) -> ResultCache:
    return ResultCache.for_store(store, config.generate.cache_url, "generate", GENERATED_CACHE_SCHEMA,
                                 config.generate.checkpoint_every)


def ask(model: ChatModel, job: GenerationJob, settings: GenerateConfig) -> dict:
    """One job's cache row: the dialogue, or the reply's reject reason; `failed` when the endpoint
    gave no reply (not cached)."""
    row = {"key": job.key, "record": None, "error_reason": None, "error": None}
    try:
        reply = model.complete(request(job.instruction, job.turns, settings), settings.max_tokens, settings.temperature)
    except ChatEndpointError as err:
        return {**row, "failed": str(err)}
    try:
        return {**row, "record": json.dumps(parse_reply(reply, job.instruction, job.turns, settings.max_turn_chars),
                                            ensure_ascii=False)}
    except GenerationRejected as err:
        return {**row, "error_reason": err.reason, "error": err.detail}


def generate_missing(plan: GenerationPlan, cache: ResultCache, config: PipelineConfig) -> GenerationRun:
    """Ask for every dialogue whose key is not cached yet; each result is cached as it arrives."""
    settings = config.generate
    done = cache.done_keys()
    todo = list({job.key: job for job in plan.jobs if job.key not in done}.values())
    log.info("%d instructions, %d generated before, %d to generate", len(plan.jobs), len(plan.jobs) - len(todo),
             len(todo))
    run = GenerationRun(len(todo))
    if not todo:
        return run
    model = ChatModel(settings.chat)
    workers = settings.concurrency if model.endpoint is not None else 1  # a local model answers one at a time
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(todo), desc="generating", unit="dialogue") as bar:
        futures = [pool.submit(ask, model, job, settings) for job in todo]
        try:
            for future in as_completed(futures):
                row = future.result()
                if "failed" in row:
                    run.failed[row["key"]] = row["failed"]
                else:
                    cache.add([row])
                bar.update(1)
        finally:
            cache.flush()
    if run.failed:
        log.warning("%d dialogues got no reply and will be asked again next run (e.g. %s)", len(run.failed),
                    next(iter(run.failed.values())))
    return run


def generation_recipe(config: PipelineConfig) -> dict:
    return config.generate.model_dump(mode="json", exclude=NOT_IN_RECIPE)


def publish_generated(store: ArtifactStore, plan: GenerationPlan, cache: ResultCache, config: PipelineConfig,
                      run: GenerationRun, flow_run_id: str | None) -> tuple[Manifest, bool]:
    """dialogues/NAME from the cached dialogues; a new version only when they or the recipe changed."""
    settings = config.generate
    results = cache.rows_for({job.key for job in plan.jobs})
    lines, rejects, turns = [], list(plan.rejects), Counter()
    for job in plan.jobs:
        row = results.get(job.key)
        if row is None:
            rejects.append(Reject(job.dialogue_id, "reply", "no_reply", run.failed.get(job.key, "not generated")))
        elif row["error_reason"]:
            rejects.append(Reject(job.dialogue_id, "reply", row["error_reason"], row["error"] or ""))
        else:
            lines.append(json.dumps({"id": job.dialogue_id, "messages": json.loads(row["record"])}, ensure_ascii=False))
            turns[job.turns] += 1
    content = "".join(line + "\n" for line in lines).encode()
    recipe = generation_recipe(config)
    recipe_hash = stable_hash(recipe)
    stats = {"dialogues": len(lines), "user_turns": {str(k): turns[k] for k in sorted(turns)},
             "rejects": len(rejects), "rejects_by_reason": dict(Counter(r.reason for r in rejects)),
             "source": plan.source, "generator": {"endpoint": settings.chat.endpoint, "model": settings.chat.model},
             "generated_this_run": run.generated, "content_hash": hashlib.sha256(content).hexdigest()}
    previous = store.latest_manifest(Kind.dialogues, settings.name)
    if previous is not None and previous.made_as(stats["content_hash"], recipe_hash):
        return previous, False
    writer = store.writer(Kind.dialogues, settings.name, config=recipe, config_hash=recipe_hash,
                          flow_run_id=flow_run_id)
    writer.add_file(GENERATED_DIALOGUES_FILE, content)
    writer.write_table("rejects", pa.Table.from_pylist([r.as_row() for r in rejects], schema=REJECT_SCHEMA))
    writer.stats.update(stats)
    return writer.publish(), True


def summary_markdown(manifest: Manifest, published: bool) -> str:
    s = manifest.stats
    lines = [f"# Generated dialogues: {manifest.ref()}" + ("" if published else " (up to date, nothing new)"), "",
             "| | |", "|---|---|", f"| dialogues | {s['dialogues']} |",
             f"| generator | {s['generator']['model']} at {s['generator']['endpoint'] or 'this process'} |",
             f"| generated this run | {s['generated_this_run']} |", f"| rejects | {s['rejects']} |"]
    lines += [f"| dialogues with {n} user turns | {count} |" for n, count in s["user_turns"].items()]
    lines += [f"| rejects: {reason} | {count} |" for reason, count in sorted(s["rejects_by_reason"].items())]
    return "\n".join(lines)
