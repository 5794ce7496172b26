"""Typed configs: YAML + overrides, errors that name the field, a stable hash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from omniforge.cli import app
from omniforge.config import ConfigError, dump_yaml, load_pipeline_config

runner = CliRunner()


@pytest.mark.parametrize("path", sorted(str(p) for p in Path("configs").glob("*.yaml")))
def test_every_shipped_config_loads(path):
    load_pipeline_config(path)  # a setting that a later change renamed or made inconsistent fails here


def test_demo_config_loads_and_overrides_apply():
    config = load_pipeline_config("configs/demo.yaml", ["build.synthesis.workers=3", "store.options={a: 1}"])
    assert config.build.name == "demo"
    assert config.build.synthesis.workers == 3
    assert config.store.options == {"a": 1}


def test_hash_is_stable_and_tracks_values():
    a = load_pipeline_config("configs/demo.yaml")
    b = load_pipeline_config("configs/demo.yaml")
    c = load_pipeline_config("configs/demo.yaml", ["build.source.seed=7"])
    assert a.hash() == b.hash() != c.hash()
    assert a.build.tts.hash() == c.build.tts.hash()
    # the same value in another process hashes the same (no per-process salt)
    out = subprocess.run([sys.executable, "-c", "from omniforge.config import load_pipeline_config as l;"
                          "print(l('configs/demo.yaml').hash())"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == a.hash()


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("build.synthesis.workers=0", "build.synthesis.workers"),
        ("build.synthesis.wrkers=2", "build.synthesis.wrkers"),
        ("build.tts.assistant.backend=festival", "build.tts.assistant.backend"),
        ("build.source.kind=jsonl", "source.path is required"),
        ("store.rows_per_shard=many", "store.rows_per_shard"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_pipeline_config("configs/demo.yaml", [override])


def test_bad_files_and_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_pipeline_config(str(bad))
    with pytest.raises(ConfigError, match="section.field=value"):
        load_pipeline_config(None, ["no-equals-sign"])
    with pytest.raises(ConfigError, match="is not a section"):
        load_pipeline_config("configs/demo.yaml", ["build.name.x=1"])


def test_a_config_can_start_from_another_and_change_only_what_differs(tmp_path):
    (tmp_path / "parent.yaml").write_text("build: {name: parent, synthesis: {workers: 2, batch_size: 4}}\n"
                                          "units: {kmeans: {k: 64}}\n")
    (tmp_path / "child").mkdir()
    child = tmp_path / "child" / "child.yaml"
    child.write_text("base: ../parent.yaml\nbuild: {synthesis: {workers: 3}}\nunits: {kmeans: {k: 128}}\n")
    config = load_pipeline_config(str(child), ["build.synthesis.batch_size=6"])
    assert (config.build.name, config.build.synthesis.workers, config.build.synthesis.batch_size) == ("parent", 3, 6)
    assert config.units.kmeans.k == 128
    child.write_text("base: [parent.yaml]\n")
    with pytest.raises(ConfigError, match="base must name a config file"):
        load_pipeline_config(str(child))
    child.write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline_config(str(child))


def test_every_field_is_documented():
    from pydantic import BaseModel

    from omniforge.config import PipelineConfig

    def walk(model: type[BaseModel], prefix: str):
        for name, info in model.model_fields.items():
            yield f"{prefix}{name}", info
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                yield from walk(annotation, f"{prefix}{name}.")

    undocumented = [path for path, info in walk(PipelineConfig, "") if not info.description]
    assert undocumented == []


def test_cli_config_show_prints_the_resolved_config():
    result = runner.invoke(app, ["config", "show", "configs/demo.yaml", "--set", "build.name=other"])
    assert result.exit_code == 0, result.output
    body, _, hash_line = result.output.rpartition("# config hash: ")
    assert yaml.safe_load(body)["build"]["name"] == "other"
    assert hash_line.strip() == load_pipeline_config("configs/demo.yaml", ["build.name=other"]).hash()


def test_cli_reports_a_bad_config_without_a_traceback():
    result = runner.invoke(app, ["config", "show", "configs/demo.yaml", "--set", "build.synthesis.workers=-1"])
    assert result.exit_code == 2
    assert "build.synthesis.workers" in result.output and "Traceback" not in result.output


def test_cli_artifacts_commands(tmp_path):
    from tests.storage.test_store import make_store, publish_speech

    url = str(tmp_path / "store")
    store = make_store(url)
    first = publish_speech(store, 4)
    publish_speech(store, 2, parents=[first])
    listed = runner.invoke(app, ["artifacts", "list", "--store", url])
    assert listed.exit_code == 0 and "speech/demo  versions: 1, 2" in listed.output
    shown = runner.invoke(app, ["artifacts", "show", "speech/demo@1", "--store", url])
    assert '"version": 1' in shown.output
    lineage = runner.invoke(app, ["artifacts", "lineage", "speech/demo", "--store", url])
    assert lineage.output.splitlines()[0].startswith("speech/demo@2")
    assert lineage.output.splitlines()[1].strip().startswith("<- speech/demo@1")
    assert runner.invoke(app, ["artifacts", "verify", "speech/demo@2", "--store", url]).exit_code == 0
    shard = first.tables["data"].shards[0].path
    store.fs.pipe_file(store.path(shard), b"broken")
    verify = runner.invoke(app, ["artifacts", "verify", "speech/demo@1", "--store", url])
    assert verify.exit_code == 1 and f"corrupted: {shard}" in verify.output
    missing = runner.invoke(app, ["artifacts", "show", "speech/nope", "--store", url])
    assert missing.exit_code == 1 and "no versions of speech/nope" in missing.output
    bad = runner.invoke(app, ["artifacts", "show", "speech/../../etc", "--store", url])
    assert bad.exit_code == 1 and "bad artifact name" in bad.output


def test_every_command_has_help():
    for args in (["--help"], ["config", "show", "--help"], ["artifacts", "list", "--help"],
                 ["artifacts", "verify", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Usage" in result.output


def test_local_paths_become_absolute_against_the_working_folder(tmp_path, monkeypatch):
    """Ray Train's workers run in a trial folder: a relative store path would name another store there."""
    demo = str(Path("configs/demo.yaml").resolve())
    monkeypatch.chdir(tmp_path)
    config = load_pipeline_config(demo, ["store.url=data/store", "train.log_dir=logs"])
    assert config.store.url == str(tmp_path / "data" / "store")
    assert config.train.log_dir == str(tmp_path / "logs")
    assert load_pipeline_config(demo, ["store.url=s3://bucket/x"]).store.url == "s3://bucket/x"


def test_credentials_are_secrets_masked_everywhere_but_where_the_store_is_opened(monkeypatch):
    config = load_pipeline_config(None, ["store.options.secret=s3cr3t", "store.options.endpoint_url=http://x",
                                         "store.secrets_from_env.token=OMNIFORGE_TEST_TOKEN"])
    assert config.store.options == {"endpoint_url": "http://x"} and set(config.store.secrets) == {"secret"}
    assert "s3cr3t" not in dump_yaml(config) + repr(config) + config.model_dump_json()
    assert config.model_dump(mode="json", context={"reveal_secrets": True})["store"]["secrets"] == {"secret": "s3cr3t"}
    with pytest.raises(ConfigError, match=r"store.secrets_from_env.token reads \$OMNIFORGE_TEST_TOKEN"):
        config.store.storage_options()
    monkeypatch.setenv("OMNIFORGE_TEST_TOKEN", "t0ken")
    assert config.store.storage_options() == {"endpoint_url": "http://x", "token": "t0ken", "secret": "s3cr3t"}
    with pytest.raises(ConfigError, match="store.options.password looks like a credential"):
        load_pipeline_config(None, ["store.options.password={a: 1}"])


def test_decoder_settings_added_later_keep_the_versions_of_decoders_trained_before_them():
    """A decoder's version is the hash of its identity: the schedule counts only when it is not the constant rate
    every earlier decoder trained with, and the fine-tuning (a version of its own) never does."""
    from omniforge.config.units import DecoderConfig

    plain = DecoderConfig().identity()
    assert "schedule" not in plain and "adapt" not in plain
    assert DecoderConfig(adapt={"steps": 400}).identity() == plain
    assert DecoderConfig(schedule="cosine").identity() == {**plain, "schedule": "cosine"}
