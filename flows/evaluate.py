"""`evaluate`: a checkpoint answers an eval set while streaming; metrics, report and wavs become an
`eval` version, and the summary a Prefect artifact."""

from __future__ import annotations

import json

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from omniforge.config import PipelineConfig
from omniforge.flows.artifact_keys import artifact_key
from omniforge.flows.build_dialogues import build_dialogues
from omniforge.flows.run_ids import recording_run_id
from omniforge.storage import Kind, store_from_config
from omniforge.tasks.evaluate import steps as eval_steps
from omniforge.tasks.evaluate.eval_sets import speech_version_named


@task(name="evaluate", cache_policy=NONE)
def run_evaluation(config: PipelineConfig):
    logger = get_run_logger()
    done = []

    def progress(result) -> None:
        done.append(result)
        logger.info("answer %d: %s/%d %r (S2T %s, latency %s)", len(done), result.item_id, result.turn,
                    result.text[:60], result.s2t_correct,
                    "n/a" if result.latency is None else f"{result.latency * 1000:.0f} ms")

    store = store_from_config(config.store)
    return eval_steps.evaluate(store, config, recording_run_id(), progress)


def with_held_out_set(config: PipelineConfig) -> PipelineConfig:
    """When `evaluate.build` describes the set that `evaluate.eval_set` names (speech/<its name>), build
    it first (incremental: an existing one is planned and reused, nothing is synthesized twice), so an
    evaluation triggered by a new checkpoint finds its eval set wherever it runs."""
    build, named = config.evaluate.build, speech_version_named(config.evaluate.eval_set)
    if build is None or named is None or (named.kind, named.name) != (Kind.speech, build.name):
        return config
    held_out = build_dialogues(config.model_copy(update={"build": build}))
    return config.with_fields("evaluate", eval_set=held_out["speech_version"])


@flow(name="evaluate", log_prints=True)
def evaluate(config: PipelineConfig) -> dict:
    """Evaluate `evaluate.checkpoint` on `evaluate.eval_set` (built first when `evaluate.build` makes
    it); returns the metrics and the report's place."""
    config = with_held_out_set(config)
    store = store_from_config(config.store)
    manifest = run_evaluation(config)
    report = store.read_bytes(manifest.files["report.md"].path).decode()
    create_markdown_artifact(report, key=artifact_key("eval", config.evaluate.name), description="Streaming evaluation")
    get_run_logger().info("\n%s", report)
    summary = json.loads(store.read_bytes(manifest.files["metrics.json"].path))
    return {"eval_version": str(manifest.ref()), "report": store.uri(manifest.files["report.html"].path), **summary}
