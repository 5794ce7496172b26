"""Environment defaults every entry point sets before Prefect or Ray is imported (CLI,
benchmarks, tests): this machine is offline and small."""

from __future__ import annotations

import os

OFFLINE_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no telemetry calls from an offline machine
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # a cold start takes ~15-20 s on 2 cores
    "RAY_AUTH_MODE": "disabled",  # Ray 2.60 otherwise wants a token file for a local cluster
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # a bar per checkpoint load/save drowns the training log
}


def apply_offline_defaults() -> None:
    """Set each default unless the environment already chose a value."""
    for name, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(name, value)
