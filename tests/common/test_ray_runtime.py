"""Actors that die mid-run: their batches go to the live actors or to a replacement, and every item's
result arrives exactly once (a lost node on a real two-node cluster: tests/end_to_end/test_deployments.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from omniforge.config import RayConfig
from omniforge.tasks.common.ray_runtime import map_on_actors, ray_session


class DiesOnce:
    """Doubles numbers; the process running it exits (as if SIGKILLed) the first time it meets `fatal`."""

    def __init__(self, marker: str, fatal: int) -> None:
        self.marker, self.fatal = Path(marker), fatal

    def run(self, batch: list[int]) -> list[tuple[int, int]]:
        if self.fatal in batch and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        return [(item, item * 2) for item in batch]


@pytest.fixture(scope="module")
def local_ray():
    with ray_session(RayConfig(num_cpus=2)):
        yield


@pytest.mark.parametrize(("workers", "retries"), [(2, 0), (1, 1)], ids=["to-the-live-actor", "to-a-replacement"])
def test_a_dead_actors_batches_are_run_again_and_nothing_twice(local_ray, tmp_path, workers, retries):
    results: list[tuple[int, int]] = []
    map_on_actors(DiesOnce, (str(tmp_path / "died"), 7), range(20), batch_size=2, workers=workers,
                  on_result=results.extend, num_cpus=1, retries=retries)
    assert (tmp_path / "died").exists()  # an actor did die
    assert sorted(results) == [(item, item * 2) for item in range(20)]


def test_when_every_actor_is_dead_the_run_fails(local_ray, tmp_path):
    with pytest.raises(RuntimeError, match="every DiesOnce actor died"):
        map_on_actors(DiesOnce, (str(tmp_path / "died"), 3), range(10), batch_size=2, workers=1,
                      on_result=lambda rows: None, num_cpus=1, retries=0)
