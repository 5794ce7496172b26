"""Speech shards are plain Parquet in the HF Audio layout: other tools read them without a converter."""

from __future__ import annotations

import datasets
import duckdb
import numpy as np
import pandas as pd
import pytest

from omniforge.storage.audio import decode_audio
from tests.storage.test_store import make_store, publish_speech


@pytest.fixture
def published(tmp_path):
    store = make_store(str(tmp_path / "store"))
    manifest = publish_speech(store, 10)
    return store, manifest, [store.path(s.path) for s in manifest.tables["data"].shards]


def test_hf_datasets_sees_an_audio_feature(published):
    _, _, paths = published
    ds = datasets.load_dataset("parquet", data_files=paths, split="train")
    assert ds.num_rows == 10
    assert isinstance(ds.features["audio"], datasets.Audio)
    decoded = ds[4]["audio"]  # through torchcodec (and the system's FFmpeg), as HF users read audio
    samples = decoded.get_all_samples()
    wave, rate = decode_audio(ds.cast_column("audio", datasets.Audio(decode=False))[4]["audio"]["bytes"])
    assert samples.sample_rate == rate == 16000 and samples.data.shape == (1, 1600) and ds[4]["text"] == "row 4"
    assert np.allclose(samples.data[0].numpy(), wave, atol=1e-4)  # the same samples soundfile reads


def test_duckdb_and_pandas_read_the_shards(published):
    _, _, paths = published
    rows = duckdb.sql(f"SELECT role, count(*) AS n FROM read_parquet({paths!r}) GROUP BY role ORDER BY role").fetchall()
    assert rows == [("assistant", 5), ("user", 5)]
    frame = pd.concat(pd.read_parquet(p) for p in paths)
    assert list(frame["key"]) == [f"k{i}" for i in range(10)]


def test_ray_data_reads_the_shards(published):
    import ray

    _, _, paths = published
    ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        ds = ray.data.read_parquet(paths)
        assert ds.count() == 10
        assert sorted(r["turn_index"] for r in ds.take_all()) == [0] * 5 + [1] * 5
    finally:
        ray.shutdown()


def test_row_groups_are_small_for_random_access(published):
    import pyarrow.parquet as pq

    _, _, paths = published
    meta = pq.ParquetFile(paths[0]).metadata
    assert meta.num_row_groups == 2 and meta.row_group(0).num_rows == 2
