"""One way to get a Ray runtime: join the configured cluster, or start a local one."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from omniforge.config import RayConfig


@contextmanager
def ray_session(config: RayConfig, log_to_driver: bool = False) -> Iterator[None]:
    """Use the running Ray if there is one; else connect/start it and shut it down afterwards.
    `log_to_driver` shows the workers' prints here (training progress)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 wants a token file otherwise
    import ray

    if ray.is_initialized():
        yield
        return
    if config.address:
        ray.init(address=config.address, log_to_driver=log_to_driver)
    else:
        ray.init(num_cpus=config.num_cpus, include_dashboard=False, log_to_driver=log_to_driver)
    try:
        yield
    finally:
        ray.shutdown()


def map_on_actors(worker_class: type, init_args: tuple, items: list, batch_size: int, workers: int,
                  on_result: Callable[[list], None], num_cpus: float = 1, num_gpus: float = 0) -> None:
    """Run `worker_class(*init_args).run(batch)` over `items` in batches on long-lived actors
    (each loads its models once), calling `on_result` as batches finish. Needs a Ray session."""
    import ray
    from ray.util import ActorPool

    actor = ray.remote(worker_class).options(num_cpus=num_cpus, num_gpus=num_gpus)
    pool = [actor.remote(*init_args) for _ in range(min(workers, max(1, len(items))))]
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    try:
        for rows in ActorPool(pool).map_unordered(lambda worker, batch: worker.run.remote(batch), batches):
            on_result(rows)
    finally:
        for worker in pool:
            ray.kill(worker)
