"""Shared by every benchmark: result rows in one format, printed as a table and written as JSON."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def result_row(case: str, ours: float, baseline: float, unit: str, target: float, higher_is_better: bool = True) -> dict:
    """`ratio` is oriented so that higher is better; `meets` is ratio >= target."""
    ratio = (ours / baseline) if higher_is_better else (baseline / ours)
    return {"case": case, "ours": round(ours, 4), "baseline": round(baseline, 4), "unit": unit,
            "ratio": round(ratio, 4), "target": target, "meets": ratio >= target}


def report(name: str, rows: list[dict], directory: Path = RESULTS) -> Path:
    width = max(len(r["case"]) for r in rows)
    print(f"{'case':<{width}}  {'ours':>10}  {'baseline':>10}  {'ratio':>7}  {'target':>6}  meets  unit")
    for r in rows:
        print(f"{r['case']:<{width}}  {r['ours']:>10.3f}  {r['baseline']:>10.3f}  {r['ratio']:>7.3f}  "
              f"{r['target']:>6}  {str(r['meets']):<5}  {r['unit']}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {path}")
    return path
