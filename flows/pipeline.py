"""`pipeline`: build dialogues -> tokenize units -> train stages -> evaluate, one Prefect flow with a
subflow per stage. Each stage is handed the exact versions the previous one made, and every
artifact records this pipeline run."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.build_dialogues import build_dialogues
from flows.evaluate import evaluate
from flows.tokenize_units import tokenize_units
from flows.train import train
from omniforge.config import PipelineConfig
from storage import Kind, store_from_config
from tasks.eval_report import compare


def _with(config: PipelineConfig, section: str, **fields) -> PipelineConfig:
    """A copy of `config` with fields of one section replaced."""
    part = getattr(config, section).model_copy(update=fields)
    return config.model_copy(update={section: part})


@flow(name="pipeline", log_prints=True)
def pipeline(config: PipelineConfig) -> dict:
    """The whole job on one config; returns what each stage made and the evaluation summary."""
    logger = get_run_logger()
    built = build_dialogues(config)
    config = _with(config, "units", speech=built["speech_version"])
    units = tokenize_units(config)
    if config.evaluate.build is not None:
        held_out = build_dialogues(config.model_copy(update={"build": config.evaluate.build}))
        config = _with(config, "evaluate", eval_set=held_out["speech_version"])
    config = _with(config, "train", speech=built["speech_version"], units=units["units_version"])
    trained = train(config)
    config = _with(config, "evaluate", checkpoint=trained["checkpoint"])
    evaluated = evaluate(config)
    summary = {"speech": built["speech_version"], "units": units["units_version"],
               "checkpoint": trained["checkpoint"], "eval": evaluated["eval_version"],
               "report": evaluated["report"], "metrics": evaluated["metrics"]}
    comparison = compare_with_previous(config, evaluated["eval_version"])
    if comparison:
        summary["comparison"] = comparison
        create_markdown_artifact(comparison, key="pipeline-comparison", description="New vs previous model")
        logger.info("compared with the previous model:\n%s", comparison)
    return summary


def compare_with_previous(config: PipelineConfig, eval_ref: str) -> str | None:
    """When the model was retrained from an earlier one, its eval beside the earlier model's eval
    (on the same eval set and settings), if that was evaluated."""
    store = store_from_config(config.store)
    new = store.manifest(eval_ref)
    checkpoint = store.manifest(new.parents_of(Kind.checkpoint)[0])
    earlier = _first_model_ancestor(store, checkpoint)
    if earlier is None:
        return None
    for version in reversed(store.versions(Kind.eval, config.evaluate.name)):
        candidate = store.manifest(f"eval/{config.evaluate.name}@{version}")
        parents = [str(p.ref()) for p in candidate.parents]
        if parents[0] == earlier and parents[2:] == [str(p.ref()) for p in new.parents][2:]:
            return compare(store, candidate, new)
    return None


def _first_model_ancestor(store, checkpoint) -> str | None:
    """Walk back the stage chain to the checkpoint it started from: a finished model (retraining),
    or the fresh init (None)."""
    current = checkpoint
    while current.stats.get("stage") != "init":
        starts = current.parents_of(Kind.checkpoint)
        if not starts:
            return None
        current = store.manifest(starts[-1])
        if current.stats.get("stage") == "s2s" and current.stats.get("complete"):
            return str(current.ref())
    return None
