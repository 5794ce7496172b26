"""Which run made an artifact: the top-level Prefect flow run (the pipeline run when a flow runs
inside the pipeline, the flow's own run otherwise), so every version records the pipeline run."""

from __future__ import annotations

from prefect.runtime import flow_run


def recording_run_id() -> str | None:
    root = flow_run.root_flow_run_id or flow_run.id
    return str(root) if root else None
