"""One way to get a Ray runtime: join the configured cluster, or start a local one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from omniforge.config import RayConfig


@contextmanager
def ray_session(config: RayConfig) -> Iterator[None]:
    """Use the running Ray if there is one; else connect/start it and shut it down afterwards."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 wants a token file otherwise
    import ray

    if ray.is_initialized():
        yield
        return
    if config.address:
        ray.init(address=config.address, log_to_driver=False)
    else:
        ray.init(num_cpus=config.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
