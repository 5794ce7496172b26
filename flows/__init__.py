"""Prefect flows: orchestration only; the work lives in `tasks/`.

An expected failure (omniforge.errors) is logged by Prefect's run loggers as its one-line message,
without the traceback, so a deployment's run log and its failed state read as the sentence to act on.
"""

import logging

from omniforge.errors import expected_message


class _ExpectedErrorsWithoutTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and expected_message(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True


for _name in ("prefect.flow_runs", "prefect.task_runs"):
    logging.getLogger(_name).addFilter(_ExpectedErrorsWithoutTraceback())
