"""benchmarks/gpu.py runs at tiny shapes on CPU, so the script a GPU machine runs cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_benchmark_runs_at_tiny_shapes(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu-tiny.json").read_text())
    cases = [row["case"] for row in rows]
    assert any(case.startswith("first-audio latency p50") for case in cases)
    assert any(case.startswith("cached streaming vs re-prefilling") for case in cases)  # tokens asserted equal inside
    assert sum(case.startswith("8 conversations") or "conversations batched" in case for case in cases) == 2
    assert sum("model FLOPs utilisation" in case for case in cases) == 2
    for row in rows:
        assert row["device"] == "cpu" or row["device"].startswith("cpu ")
        assert row["ours"] > 0 and row["baseline"] > 0 and row["meets"] == (row["ratio"] >= row["target"])
