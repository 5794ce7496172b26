"""`pipeline`: build dialogues -> (TTS corpus -> its units -> TTS pretraining) -> tokenize units ->
train stages, and the units -> audio decoder at the same time -> evaluate (on its held-out set),
one Prefect flow with a subflow per stage. Each stage is handed the exact versions the previous one
made, and every artifact records this pipeline run."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from omniforge.config import PipelineConfig
from omniforge.flows.artifact_keys import artifact_key
from omniforge.flows.build_dialogues import build_dialogues
from omniforge.flows.evaluate import evaluate
from omniforge.flows.pretrain_tts import pretrain_tts
from omniforge.flows.tokenize_units import decoder, tokenize_units, trains_decoder
from omniforge.flows.train import train
from omniforge.storage import store_from_config
from omniforge.tasks.evaluate import steps as evaluate_steps


@flow(name="pipeline", log_prints=True)
def pipeline(config: PipelineConfig) -> dict:
    """The whole job on one config; returns what each stage made and the evaluation summary."""
    logger = get_run_logger()
    built = build_dialogues(config)
    summary = {"speech": built["speech_version"]}
    if config.corpus.enabled:  # first, so the units tokenizer and its decoder are fitted on the larger corpus
        pretrained = pretrain_tts(config)
        config = config.with_fields("train", tts_from=pretrained["checkpoint"])
        summary.update(corpus=pretrained["corpus"], corpus_units=pretrained["corpus_units"],
                       pretrained_tts=pretrained["checkpoint"])
    config = config.with_fields("units", speech=built["speech_version"])
    units = tokenize_units(config, with_decoder=False)
    config = config.with_fields("train", speech=built["speech_version"], units=units["units_version"])
    # the decoder trains while the model does: neither needs the other (units.decoder.threads and
    # train.torch_threads share the cores between them), and only the evaluation needs both
    decoding = decoder.submit(units["units_version"], config) if trains_decoder(config) else None
    trained = train(config)
    if decoding is not None:
        summary["decoder"] = decoding.result()
    evaluated = evaluate(config.with_fields("evaluate", checkpoint=trained["checkpoint"]))  # builds its held-out set
    summary.update(units=units["units_version"], checkpoint=trained["checkpoint"], eval=evaluated["eval_version"],
                   report=evaluated["report"], metrics=evaluated["metrics"])
    comparison = evaluate_steps.compare_with_previous(store_from_config(config.store), config, evaluated["eval_version"])
    if comparison:
        summary["comparison"] = comparison
        create_markdown_artifact(comparison, key=artifact_key("pipeline", config.train.name, "comparison"),
                                 description="New vs previous model")
        logger.info("compared with the previous model:\n%s", comparison)
    return summary
