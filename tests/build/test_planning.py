"""Planning on Ray actors gives the driver's plan: the same utterances in the same order, the same
rejects, whatever batch finishes first, however the plan is cut into parts on disk."""

from __future__ import annotations

import json

from omniforge.config import load_pipeline_config
from omniforge.tasks.build.steps import load_and_plan


def test_planning_on_ray_workers_is_the_drivers_plan(tmp_path):
    source = tmp_path / "dialogues.jsonl"
    records = []
    for i in range(14):
        answer = f"It costs ${i * 7 + 3}, due on Jan. {i + 1}, 2024." if i % 3 else "Fine, thanks."
        if i == 5:
            answer = "```python\nprint(1)\n```"
        records.append({"id": f"d{i}", "messages": [{"role": "user", "content": f"Question number {i}?"},
                                                     {"role": "assistant", "content": answer}]})
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    common = [f"store.url={tmp_path / 'store'}", "build.source.kind=jsonl", f"build.source.path={source}",
              "ray.num_cpus=2"]
    driver = load_and_plan(load_pipeline_config("configs/demo.yaml", common))
    on_ray = load_and_plan(load_pipeline_config("configs/demo.yaml", [
        *common, "build.planning.workers=2", "build.planning.batch_size=3", "build.planning.spill_dialogues=4"]))
    assert [(u.utterance_id, u.text, u.key) for u in on_ray.utterances()] == \
           [(u.utterance_id, u.text, u.key) for u in driver.utterances()]
    assert on_ray.rejects == driver.rejects and [r.record for r in driver.rejects] == ["d5"]
    assert (len(on_ray.spill.parts), len(driver.spill.parts)) == (4, 1)  # 13 planned dialogues, 4 a part
    assert list(driver.utterances())[3].text.startswith("It costs ten dollars, due on january second")  # d1: $10
