"""Deployments on a real Prefect server with a real worker: one build run triggers the whole chain
to an evaluated model. And a real two-node Ray cluster on loopback losing a node mid-synthesis."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from omniforge.storage import Kind, store_from_config
from tests.conftest import free_port
from tests.training_data import TINY_DECODER, TINY_LM, data_config

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


def test_one_run_of_the_build_deployment_ends_in_an_evaluated_model(prefect_api, tmp_path):
    """Deployed as a user would (`omniforge deploy`, a process worker), one run of the build deployment
    and nothing else: its speech version triggers tokenization, the units training, the final checkpoint
    the evaluation (which builds its held-out set). The deployments carry no path of this checkout."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / "client")}
    store_url = str(tmp_path / "store")
    overrides = [f"store.url={store_url}", "build.source.demo.dialogues=6", "build.synthesis.workers=1",
                 "build.tts.users.size=4", "ray.num_cpus=2", "units.kmeans.k=32", "units.batch_size=4",
                 *TINY_DECODER,
                 "train.model.adapter_hidden_size=32", "train.model.tokenizer.vocab_size=300",
                 f"train.model.llm={TINY_LM}", f"train.model.tts={TINY_LM}",
                 "train.s2t.steps=2", "train.tts.steps=2", "train.s2s.steps=2",
                 "evaluate.build.source.demo.dialogues=2", "evaluate.build.synthesis.workers=1",
                 "evaluate.max_items=2", "evaluate.mos=false", "evaluate.max_text_tokens=8",
                 "evaluate.max_speech_tokens=40", f"deploy.source_dir={os.getcwd()}"]
    sets = [arg for o in overrides for arg in ("--set", o)]
    deployed = subprocess.run(OMNIFORGE + ["deploy", "--config", "configs/demo.yaml"] + sets, env=env,
                              capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    for name in ("build-dialogues/build-demo", "tokenize-units/units-demo", "train/train-demo", "evaluate/evaluate-demo"):
        assert f"deployed {name} (" in deployed.stdout
    assert "prefect deployment run 'build-dialogues/build-demo'" in deployed.stdout
    for deployment in httpx.post(f"{prefect_api}/deployments/filter", json={}).json():
        assert os.getcwd() not in json.dumps(deployment["parameters"])  # train.log_dir travels relative
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "omniforge"],
                              env=env, cwd=os.getcwd(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "build-dialogues/build-demo"],
                                 env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr

        def finished(name: str):
            def check():  # the runs that were started (the build's cron has scheduled its next ones too)
                runs = [r for r in _flow_runs(prefect_api, name) if r["state_type"] != "SCHEDULED"]
                return runs if runs and all(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
                                            for r in runs) else None
            return check

        for name, minutes in (("build-demo", 10), ("units-demo", 10), ("train-demo", 15), ("evaluate-demo", 10)):
            runs = _wait_for(finished(name), minutes * 60, f"the {name} run")
            assert [r["state_type"] for r in runs] == ["COMPLETED"], (name, [r["state"] for r in runs])
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
    evaluation = store.latest_manifest("eval", "demo")
    assert [str(p) for p in evaluation.parents_of(Kind.checkpoint)] == [str(final.ref())]
    assert [str(p) for p in evaluation.parents_of(Kind.speech)] == ["speech/demo-eval@1"]
    assert store.latest_manifest("decoder", "demo") is not None  # the units flow trained its decoder


def _kill_node(node_manager_port: int) -> None:
    """SIGKILL one Ray node of this machine: its raylet (found by its port) and every process under it."""
    [raylet] = [p for p in psutil.process_iter(["cmdline"])
                if f"--node_manager_port={node_manager_port}" in " ".join(p.info["cmdline"] or [])
                and "raylet" in " ".join(p.info["cmdline"] or [])]
    for process in raylet.children(recursive=True) + [raylet]:
        process.kill()


def _stop_cluster(port: int) -> None:
    """SIGKILL every process of the cluster whose GCS listens on `port` (`ray stop` would stop every Ray on the
    machine, another test's too): those naming the port or one of its session folders, and their children."""
    def command(process: psutil.Process) -> str:
        try:
            return " ".join(process.cmdline())
        except psutil.Error:
            return ""

    marks = {f":{port}"} | {match.group(0) for process in psutil.process_iter() if f":{port}" in command(process)
                            for match in [re.search(r"session_[0-9_-]+", command(process))] if match}
    doomed = {process for process in psutil.process_iter() if any(mark in command(process) for mark in marks)}
    for process in list(doomed):
        try:
            doomed.update(process.children(recursive=True))
        except psutil.Error:
            pass
    for process in doomed:
        try:
            process.kill()
        except psutil.Error:
            pass
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # where `ray start` says it runs
    if current.exists() and f":{port}" in current.read_text():
        current.unlink()


def test_a_node_lost_mid_synthesis_leaves_a_finished_and_correct_build(tmp_path):
    """A two-node cluster on loopback, one synthesis actor on each node. The second node is killed
    once the first results are cached: its actor's batches go to the first node's, the build
    finishes, every utterance is synthesized once, and the dataset equals an uninterrupted build's."""
    from omniforge.flows.build_dialogues import build_dialogues

    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable))
    port, second = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    address = f"127.0.0.1:{port}"
    start = [ray_bin, "start", "--num-cpus=1", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]

    def config(store: str):
        config = data_config(str(tmp_path / store), dialogues=8).model_copy(deep=True)
        config.ray.address = address
        config.build.synthesis.workers, config.build.synthesis.batch_size = 2, 2
        config.build.synthesis.checkpoint_every = 2
        return config

    try:
        subprocess.run(start + ["--head", f"--port={port}", "--include-dashboard=false"], env=env, check=True,
                       capture_output=True, timeout=120)
        subprocess.run(start + [f"--address={address}", f"--node-manager-port={second}"], env=env, check=True,
                       capture_output=True, timeout=120)
        cache, cached_at_kill = tmp_path / "killed" / "cache" / "tts", []

        def kill_when_results_arrive() -> None:
            _wait_for(lambda: list(cache.glob("*.parquet")), 300, "the first cached results")
            cached_at_kill.append(len(list(cache.glob("*.parquet"))))
            _kill_node(second)

        killer = threading.Thread(target=kill_when_results_arrive)
        killer.start()
        survived = build_dialogues(config("killed"))
        killer.join()
        import ray
        from ray._private.state import actors  # the GCS actor table (the state API needs the dashboard)

        ray.init(address=address, log_to_driver=False)
        try:
            _wait_for(lambda: len([n for n in ray.nodes() if n["Alive"]]) == 1, 120, "the killed node to be seen dead")
            workers = [a for a in actors().values() if a["ActorClassName"] == "SynthesisWorker"]
            assert len({a["Address"]["NodeID"] for a in workers}) == 2  # both nodes had an actor
        finally:
            ray.shutdown()
        assert len(list(cache.glob("*.parquet"))) > cached_at_kill[0]  # the first node carried on
        uninterrupted = build_dialogues(config("clean"))
        assert survived["synthesized_this_run"] == uninterrupted["synthesized_this_run"]  # none twice
        assert survived["content_hash"] == uninterrupted["content_hash"]
        shards = [[s.sha256 for s in store_from_config(config(name).store).latest_manifest("speech", "demo")
                   .tables["data"].shards] for name in ("killed", "clean")]
        assert shards[0] == shards[1]  # the same Parquet shards, byte for byte
    finally:
        _stop_cluster(port)


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
    assert {d["name"] for d in deployments} >= {"build-demo", "units-demo", "train-demo", "evaluate-demo"}
    for deployment in deployments:
        parameters = json.dumps(deployment["parameters"])
        assert secret not in parameters and key not in parameters and "endpoint_url" in parameters
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    objects = s3.list_objects_v2(Bucket="omniforge-test", Prefix=prefix)["Contents"]
    assert any(o["Key"].endswith("manifest.json") for o in objects)
    for obj in objects:
        body = s3.get_object(Bucket="omniforge-test", Key=obj["Key"])["Body"].read()
        assert secret.encode() not in body and key.encode() not in body, obj["Key"]
