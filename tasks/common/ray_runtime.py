"""One way to get a Ray runtime: join the configured cluster, or start a local one."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import chain, islice

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


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter), read lazily."""
    stream = iter(items)
    while batch := list(islice(stream, size)):
        yield batch


def map_on_actors(worker_class: type, init_args: tuple, items: Iterable, batch_size: int, workers: int,
                  on_result: Callable[[list], None], num_cpus: float = 1, num_gpus: float = 0,
                  queued: int = 2, retries: int = 0) -> None:
    """Run `worker_class(*init_args).run(batch)` over `items` in batches on long-lived actors
    (each loads its models once), calling `on_result` as batches finish. Each actor keeps `queued`
    batches waiting, so it never idles while the driver takes a result and sends the next batch
    (that round trip costs as much as a small batch's work). `items` is read lazily, as batches are
    sent, so a stream of any length passes in bounded memory. An actor whose process dies is
    restarted and its batches retried, `retries` times at most. Needs a Ray session."""
    import ray

    actor = ray.remote(worker_class).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=retries,
                                             max_task_retries=retries)
    batches = batched(items, batch_size)
    first = list(islice(batches, workers))  # no more actors than there are batches
    pool = [actor.remote(*init_args) for _ in range(max(1, len(first)))]
    batches = chain(first, batches)
    running: dict = {}  # result ref -> the actor computing it

    def submit(worker) -> None:
        batch = next(batches, None)
        if batch is not None:
            running[worker.run.remote(batch)] = worker

    try:
        for worker in pool:
            for _ in range(queued):
                submit(worker)
        while running:
            [done], _ = ray.wait(list(running), num_returns=1)
            submit(running.pop(done))
            on_result(ray.get(done))
    finally:
        for worker in pool:
            ray.kill(worker)
