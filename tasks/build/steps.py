"""The steps of the dialogue build and of the TTS corpus build (one-turn records the assistant says,
through the same planning, TTS cache, synthesis and publishing), as plain functions the flows wrap
in Prefect tasks."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial

from tqdm import tqdm

from omniforge.config import PipelineConfig
from omniforge.hashing import stable_hash
from omniforge.storage import ArtifactStore, store_from_config
from omniforge.config.build import RewriteConfig
from omniforge.tasks.common.records import Dialogue, Reject, SourceBatch
from omniforge.tasks.build.plan import Plan, Utterance, plan_build
from omniforge.tasks.build.publish import BuildResult, publish_build
from omniforge.tasks.common.ray_runtime import batched, ray_session
from omniforge.tasks.common.result_cache import ResultCache
from omniforge.storage.schemas import UTTERANCE_CACHE_SCHEMA
from omniforge.tasks.build.rewrite import rewrite_assistant_turns
from omniforge.tasks.build.sources import SourceStream, add_spoken_text, load_corpus_source, open_source
from omniforge.tasks.build.synthesis import remembered, synthesize_on_ray
from omniforge.tasks.build.tts import espeak_available

log = logging.getLogger(__name__)


# How a build reads its input and asks for text (guards, caps, retries) is not what it makes: any change
# they cause shows in the content hash, and a guard added later keeps the versions already built.
TEXT_NOT_IN_RECIPE = {"normalizer_cache": True, "max_raw_chars": True,
                      "rewrite": {"allow_http", "retries", "retry_backoff_s", "timeout_s"}}


def build_recipe(config: PipelineConfig) -> dict:
    """The settings that decide the dialogue dataset's content (parallelism and input guards do not)."""
    return config.build.model_dump(mode="json", exclude={"synthesis": True, "planning": True, "source": {"media"},
                                                         "text": TEXT_NOT_IN_RECIPE})


def corpus_recipe(config: PipelineConfig) -> dict:
    """The settings that decide the corpus's content: its text, the voice and text settings, and what
    rejects its audio."""
    build = config.build
    return {"corpus": config.corpus.model_dump(mode="json", include={"source", "dialogues"}),
            "voice": build.tts.assistant.model_dump(mode="json"),
            "text": build.text.model_dump(mode="json", exclude=TEXT_NOT_IN_RECIPE),
            "validation": build.validation.model_dump(mode="json"), "gate": build.gate.model_dump(mode="json")}


def load_and_plan(config: PipelineConfig) -> Plan:
    """The build's plan, its source read as a stream (rewritten a batch at a time when asked)."""
    source = open_source(config.build.source, store_from_config(config.store))
    dialogues: Iterable[Dialogue] = source
    if config.build.text.rewrite.enabled:
        dialogues = rewritten(source, config.build.text.rewrite, config.build.planning.batch_size)
    return plan_source(dialogues, source.rejects, source.description, config, espeak_available())


def rewritten(source: SourceStream, config: RewriteConfig, batch_size: int) -> Iterator[Dialogue]:
    """The source's dialogues with their assistant turns rewritten in spoken style; a failed rewrite
    joins the source's rejects."""
    changed = 0
    for dialogues in batched(source, batch_size):
        batch = SourceBatch(dialogues)
        changed += rewrite_assistant_turns(batch, config)
        source.rejects.extend(batch.rejects)
        yield from batch.dialogues
    log.info("rewrote %d assistant turns in spoken style", changed)


def plan_source(dialogues: Iterable[Dialogue], rejects: list[Reject], description: dict, config: PipelineConfig,
                with_espeak: bool) -> Plan:
    """`plan_build`, on Ray actors when the source is large enough."""
    return plan_build(dialogues, rejects, description, config.build, with_espeak, partial(ray_session, config.ray))


def load_corpus_and_plan(store: ArtifactStore, config: PipelineConfig) -> Plan:
    """The corpus's utterances: its text source's sentences, then the assistant turns of
    `corpus.dialogues` (already in the TTS cache), each said once by the assistant voice."""
    batch = load_corpus_source(config.corpus.source)
    if config.corpus.dialogues:
        speech = store.manifest(config.corpus.dialogues)
        table = store.read_table(speech, columns=["utterance_id", "role", "text"])
        for utterance, role, text in zip(*table.to_pydict().values()):
            if role == "assistant":
                add_spoken_text(batch, text, f"{speech.ref()} {utterance}")
        batch.description["dialogues"] = str(speech.ref())
    return plan_source(batch.dialogues, batch.rejects, batch.description, config, with_espeak=False)


def open_cache(store: ArtifactStore, config: PipelineConfig) -> ResultCache:
    """The finished utterances (synthesized, checked and gated), by content key."""
    return ResultCache.for_store(store, config.build.cache_url, "tts", UTTERANCE_CACHE_SCHEMA,
                                 config.build.synthesis.checkpoint_every)


@dataclass
class SynthesisRun:
    synthesized: int = 0  # jobs sent to the workers this run
    transient: dict[str, dict] = field(default_factory=dict)  # failures reported, not cached (retried next run)


def synthesize_missing(plan: Plan, cache: ResultCache, config: PipelineConfig) -> SynthesisRun:
    """Synthesize every job whose key is not cached yet, reading the plan a part at a time."""
    done = cache.done_keys()
    unique = set(plan.keys())
    todo = len(unique - done)
    log.info("%d unique utterances, %d cached, %d to synthesize", len(unique), len(unique) - todo, todo)
    del unique
    run = SynthesisRun(todo)
    if not todo:
        return run
    jobs = (job for job in plan.jobs() if job["key"] not in done)
    with ray_session(config.ray), tqdm(total=todo, desc="synthesizing", unit="utt") as bar:
        def on_result(rows: list[dict]) -> None:
            cache.add(remembered(rows))
            run.transient.update((r["key"], r) for r in rows if r.get("transient"))
            bar.update(len(rows))

        try:
            synthesize_on_ray(jobs, config.build, on_result)
        finally:
            cache.flush()
    if run.transient:
        log.warning("%d utterances failed after retries and will be tried again next run (e.g. %s)",
                    len(run.transient), next(iter(run.transient.values()))["error"])
    return run


def publish(store: ArtifactStore, plan: Plan, cache: ResultCache, name: str, recipe: dict, run: SynthesisRun,
            flow_run_id: str | None, on_reject: str) -> BuildResult:
    """dialogues/NAME and speech/NAME from the plan's cached audio (`recipe`: what decided it); a
    dialogue with a transient failure is left out of this version, its reason in the rejects; one
    with a rejected turn is cut or left out (`on_reject`)."""
    where = cache.locations()

    def lookup(utterances: list[Utterance]) -> dict[str, dict]:
        keys = {u.key for u in utterances}
        return {**{k: run.transient[k] for k in keys & run.transient.keys()}, **cache.rows_for(keys, where)}

    return publish_build(store, name, plan, lookup, config=recipe, config_hash=stable_hash(recipe),
                         synthesized=run.synthesized, flow_run_id=flow_run_id, on_reject=on_reject)


def summary_markdown(result: BuildResult) -> str:
    s = result.summary
    lines = [
        f"# Speech dataset: {result.speech.ref()}" + ("" if result.published else " (up to date, nothing new)"),
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
    return "\n".join(lines + gate_markdown(s.get("gate")))


BAR_WIDTH = 30


def gate_markdown(gate: dict | None) -> list[str]:
    """The quality gate's part of the build summary: retries, rejects, and a histogram per figure."""
    if not gate:
        return []
    lines = ["", "## Quality gate", "",
             f"{gate['resynthesized']} utterances were said again before they passed ({gate['extra_tries']} extra "
             f"tries); rejected: {', '.join(f'{r} {n}' for r, n in sorted(gate['rejected'].items())) or 'none'}."]
    for name, spread in gate["figures"].items():
        lines += ["", f"### {name}: median {spread['median']:g} (min {spread['min']:g}, max {spread['max']:g}, "
                      f"{spread['n']} utterances)", "", "```"]
        widest = max(spread["counts"]) or 1
        edges = spread["edges"]
        lines += [f"{edges[i]:8.3g} - {edges[i + 1]:<8.3g} {count:6d} {'#' * round(BAR_WIDTH * count / widest)}"
                  for i, count in enumerate(spread["counts"])]
        lines.append("```")
    return lines
