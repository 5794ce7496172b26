"""A flow that meets a person's mistake (here: an eval set without a usable item) fails with the
clear sentence as its state message, and Prefect's run log shows it without a traceback."""

from __future__ import annotations

import json
import logging

import pytest

from omniforge.config import load_pipeline_config

pytestmark = pytest.mark.usefixtures("prefect_server")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_failed_state_carries_the_sentence_and_the_log_no_traceback(tmp_path):
    from omniforge.flows.evaluate import evaluate

    (tmp_path / "questions.json").write_text(json.dumps([{"id": "q1", "conversation": [
        {"from": "human", "speech": "wav/missing.wav"}]}]))
    config = load_pipeline_config("configs/demo.yaml", [f"store.url={tmp_path / 'store'}",
                                                        f"evaluate.eval_set={tmp_path / 'questions.json'}"])
    seen = Records()
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    for logger in loggers:
        logger.addHandler(seen)
    try:
        state = evaluate(config, return_state=True)
    finally:
        for logger in loggers:
            logger.removeHandler(seen)
    assert state.is_failed()
    assert "no usable item" in state.message and "wav/missing.wav not found" in state.message
    failures = [r for r in seen.records if r.levelno >= logging.ERROR]
    assert failures and all(r.exc_info is None for r in failures)  # Prefect logs them with exc_info=True
    assert any("no usable item" in r.getMessage() for r in failures)
