"""One way to get a Ray runtime: join the configured cluster, or start a local one."""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import chain, islice

from omniforge.config import RayConfig


# Ray Train re-logs every print of a worker, which then shows each progress line twice
_LOCAL_WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


def quiet_ray_train() -> None:
    """Every worker process of a local session runs this first (`worker_process_setup_hook`): Ray Train's own
    bookkeeping, which would otherwise drown the progress lines. Its placement-group cleaner asks the dashboard's
    State API every second whether the controller lives and warns when it cannot; a local session starts no
    dashboard (and ends whole with the driver, so there is nothing for it to clean up). Its context logs every
    report ("Reporting training result N"), which our own progress line says; it names its logger by its file."""
    import ray

    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)
    context = os.path.join(os.path.dirname(ray.__file__), "train", "v2", "_internal", "execution", "context.py")
    logging.getLogger(context).setLevel(logging.WARNING)


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
    else:  # "local": a new local Ray, even where `ray start` runs one on this machine (Ray would join that)
        quiet = {"env_vars": _LOCAL_WORKER_ENV, "worker_process_setup_hook": f"{__name__}.quiet_ray_train"}
        ray.init(address="local", num_cpus=config.num_cpus, include_dashboard=False, log_to_driver=log_to_driver,
                 runtime_env=quiet)
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
    sent, so a stream of any length passes in bounded memory. Needs a Ray session.

    An actor that dies (its process killed, its node lost) gives the batches it held back to the
    live actors, and a replacement is started (`retries` times per actor, all told) that takes work
    once it is up. On a cluster that lost a node the replacement may never be placed; the run ends
    all the same. Only batches whose results never came back run again: a batch that finished on a
    lost node, its result still in that node's object store, counts as never finished."""
    import ray
    from ray.exceptions import ObjectLostError, RayActorError

    actor = ray.remote(worker_class).options(num_cpus=num_cpus, num_gpus=num_gpus)
    batches = batched(items, batch_size)
    first = list(islice(batches, workers))  # no more actors than there are batches
    batches = chain(first, batches)
    returned: deque[list] = deque()  # batches a dead actor held: sent again before new ones
    running: dict = {}  # result ref -> (actor, batch)
    starting: dict = {}  # ready ref -> an actor not up yet
    ready: list = []
    spare = retries * max(1, len(first))
    exhausted = False

    def start() -> None:
        worker = actor.remote(*init_args)
        starting[worker.__ray_ready__.remote()] = worker

    def fill(worker) -> None:
        """Top `worker`'s queue up to `queued` batches."""
        nonlocal exhausted
        while sum(holder is worker for holder, _ in running.values()) < queued:
            batch = returned.popleft() if returned else next(batches, None)
            if batch is None:
                exhausted = True
                return
            running[worker.run.remote(batch)] = (worker, batch)

    def lost(worker) -> None:
        nonlocal spare
        ray.kill(worker)  # unreachable may not mean dead: make sure it does no more work
        if worker in ready:
            ready.remove(worker)
        returned.extend(running.pop(ref)[1] for ref in [r for r, (w, _) in running.items() if w is worker])
        if spare:
            spare -= 1
            start()
        elif not ready and not starting:
            raise RuntimeError(f"every {worker_class.__name__} actor died ({retries} replacements per actor used)")
        for live in ready:
            fill(live)

    try:
        for _ in range(max(1, len(first))):
            start()
        while running or returned or (starting and not exhausted):
            [done], _ = ray.wait(list(running) + list(starting), num_returns=1)
            worker = starting.pop(done) if done in starting else running[done][0]
            try:
                result = ray.get(done)
            except (RayActorError, ObjectLostError):  # the actor, or its node with the result on it, is gone
                lost(worker)
                continue
            if done in running:
                running.pop(done)
                on_result(result)
            else:
                ready.append(worker)
            fill(worker)
    finally:
        for worker in ready + list(starting.values()):
            ray.kill(worker)
