"""Shared fixtures: a real S3 endpoint (moto server) on loopback, small stores, env for Prefect/Ray."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest

from omniforge.offline_env import apply_offline_defaults  # noqa: E402  (before Prefect or Ray loads)

apply_offline_defaults()
# each test session gets its own Prefect database (the temporary server keeps its state there); so does
# each pytest-xdist worker, which inherits the controller's environment
if "PREFECT_HOME" not in os.environ or "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="omniforge-prefect-")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto's server mode) on loopback, with one bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="omniforge-test")
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (own database) for the session's flow runs, stopped cleanly. Its
    port is free when Prefect picks it, but another test worker's Ray may take it before the server
    is up (its health check then meets another protocol): a few tries, each on a new port."""
    import httpx
    from prefect.testing.utilities import prefect_test_harness

    for attempt in range(3):
        harness = prefect_test_harness(server_startup_timeout=120)
        try:
            harness.__enter__()
        except (httpx.HTTPError, RuntimeError):
            if attempt == 2:
                raise
            continue
        try:
            yield
        finally:
            harness.__exit__(None, None, None)
        return


@pytest.fixture(scope="session")
def data_store(tmp_path_factory, prefect_server):
    """A small real dataset (6 demo dialogues, Piper speech, k-means units) shared by the training
    and evaluation tests: the URL of its store. Tests write under their own artifact names."""
    from tests.training_data import build_small_dataset

    url = str(tmp_path_factory.mktemp("data") / "store")
    build_small_dataset(url)
    return url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (a stable sort). With `--maxschedchunk 1` (pyproject) each xdist worker takes
    the next test only when it is free, so the minutes-long tests start early and the workers end
    together; collected last, they left one worker running the heavy tail alone for a quarter hour."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
