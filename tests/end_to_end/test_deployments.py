"""Deployments on a real Prefect server with a real worker: a published units version triggers
training. And Ray work spread over a real two-node cluster on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from omniforge.storage import store_from_config
from tests.conftest import free_port
from tests.training_data import TINY_LM, data_config

pytestmark = pytest.mark.slow
OMNIFORGE = [sys.executable, "-m", "omniforge.cli"]


def _wait_for(check, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def prefect_api(tmp_path):
    """`prefect server start` on loopback with its own database; yields the API URL."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": ""}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait_for(healthy, 120, "the Prefect server")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _flow_runs(api: str, deployment_name: str) -> list[dict]:
    deployments = httpx.post(f"{api}/deployments/filter", json={}).json()
    ids = [d["id"] for d in deployments if d["name"] == deployment_name]
    if not ids:
        return []
    return httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": ids}}}).json()


def test_new_units_version_triggers_the_training_deployment(prefect_api, tmp_path):
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / "client")}
    store_url = str(tmp_path / "store")
    overrides = [f"store.url={store_url}", "build.source.demo.dialogues=6", "build.synthesis.workers=1",
                 "build.tts.users.size=4", "ray.num_cpus=2", "units.kmeans.k=32", "units.batch_size=4",
                 "units.decoder.steps=5",
                 "train.model.adapter_hidden_size=32", "train.model.tokenizer.vocab_size=300",
                 f"train.model.llm={TINY_LM}", f"train.model.tts={TINY_LM}", f"train.log_dir={tmp_path / 'tb'}",
                 "train.s2t.steps=2", "train.tts.steps=2", "train.s2s.steps=2", "deploy.evaluate_on_new_checkpoint=false",
                 f"deploy.source_dir={os.getcwd()}"]
    sets = [arg for o in overrides for arg in ("--set", o)]
    deployed = subprocess.run(OMNIFORGE + ["deploy", "--config", "configs/demo.yaml"] + sets, env=env,
                              capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "deployed build-demo" in deployed.stdout and "deployed train-demo" in deployed.stdout
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "omniforge"],
                              env=env, cwd=os.getcwd(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _flow_runs(prefect_api, "train-demo") == []
        for command in ("build-dialogues", "tokenize-units"):  # publishes speech, then units (the event)
            done = subprocess.run(OMNIFORGE + [command, "--config", "configs/demo.yaml"] + sets, env=env,
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs = _wait_for(lambda: _flow_runs(prefect_api, "train-demo"), 120, "the triggered training run")
        assert len(runs) == 1

        def finished():
            [run] = _flow_runs(prefect_api, "train-demo")
            return run if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        run = _wait_for(finished, 900, "the training run to finish")
        assert run["state_type"] == "COMPLETED", run["state"]
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a worker busy shutting its flow-run processes down: stop it
            worker.kill()
            worker.wait(timeout=30)
    store = store_from_config(data_config(store_url).store)
    final = store.latest_manifest("checkpoint", "demo")
    assert final.stats["stage"] == "s2s" and final.stats["complete"]
    assert [str(p.ref()) for p in final.parents][:2] == ["speech/demo@1", "units/demo@1"]
    assert final.flow_run_id == run["id"]


def test_synthesis_runs_on_both_nodes_of_a_two_node_cluster(tmp_path):
    from omniforge.flows.build_dialogues import build_dialogues

    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable))
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    address = f"127.0.0.1:{port}"
    start = [ray_bin, "start", "--num-cpus=1", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]
    try:
        subprocess.run(start + ["--head", f"--port={port}", "--include-dashboard=false"], env=env, check=True,
                       capture_output=True, timeout=120)
        subprocess.run(start + [f"--address={address}"], env=env, check=True, capture_output=True, timeout=120)
        config = data_config(str(tmp_path / "store"), dialogues=8).model_copy(deep=True)
        config.ray.address = address
        config.build.synthesis.workers = 2
        config.build.synthesis.batch_size = 2
        summary = build_dialogues(config)
        assert summary["synthesized_this_run"] > 4
        import ray
        from ray._private.state import actors  # the GCS actor table (the state API needs the dashboard)

        ray.init(address=address, log_to_driver=False)
        try:
            assert len([n for n in ray.nodes() if n["Alive"]]) == 2
            workers = [a for a in actors().values() if a["ActorClassName"] == "SynthesisWorker"]
            assert len({a["Address"]["NodeID"] for a in workers}) == 2
        finally:
            ray.shutdown()
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_credentials_reach_neither_a_deployment_nor_a_manifest(prefect_api, s3_endpoint, tmp_path):
    """Storage credentials given in the config are typed as secrets: the build uses them, `config show`
    masks them, and neither the deployments' parameters nor any stored file holds them."""
    import boto3

    key, secret = "AKIDPROBE7F3Q", "probe-s3cr3t-91c2d7"
    prefix = f"secrets-{os.getpid()}"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / "client")}
    overrides = [f"store.url=s3://omniforge-test/{prefix}", f"store.options.endpoint_url={s3_endpoint}",
                 f"store.options.key={key}", f"store.options.secret={secret}", "build.source.demo.dialogues=2",
                 "build.tts.users.size=2", "build.synthesis.workers=1", "ray.num_cpus=2",
                 f"deploy.source_dir={os.getcwd()}"]
    sets = [arg for o in overrides for arg in ("--set", o)]
    for command in (["build-dialogues", "--config"], ["deploy", "--config"], ["config", "show"]):
        done = subprocess.run(OMNIFORGE + command + ["configs/demo.yaml"] + sets, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert secret not in done.stdout + done.stderr
    assert "secret: '**********'" in done.stdout  # config show names it, masked
    deployments = httpx.post(f"{prefect_api}/deployments/filter", json={}).json()
    assert {d["name"] for d in deployments} >= {"build-demo", "train-demo"}
    for deployment in deployments:
        parameters = json.dumps(deployment["parameters"])
        assert secret not in parameters and key not in parameters and "endpoint_url" in parameters
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    objects = s3.list_objects_v2(Bucket="omniforge-test", Prefix=prefix)["Contents"]
    assert any(o["Key"].endswith("manifest.json") for o in objects)
    for obj in objects:
        body = s3.get_object(Bucket="omniforge-test", Key=obj["Key"])["Body"].read()
        assert secret.encode() not in body and key.encode() not in body, obj["Key"]
