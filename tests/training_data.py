"""A small real dataset (Piper speech + k-means units) and tiny training settings, shared by the
training and evaluation tests."""

from __future__ import annotations

from omniforge.config import PipelineConfig, load_pipeline_config

# the demo's decoder, at a size and step count that trains in seconds (its units -> mel network and frame vocoder)
TINY_DECODER = ("units.decoder.steps=5", "units.decoder.frame.steps=5", "units.decoder.frame.dim=16",
                "units.decoder.frame.hidden=32", "units.decoder.frame.layers=1")
TINY_LM = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
           "intermediate_size": 64}


def data_config(store_url: str, dialogues: int = 6) -> PipelineConfig:
    # the gate's ASR is off: tiny.en mishears one of these questions and the gate would cut its dialogue,
    # which the tests that train on this set are not about (the gate's own tests: tests/build/test_gate.py)
    return load_pipeline_config("configs/demo.yaml", [
        f"store.url={store_url}", f"build.source.demo.dialogues={dialogues}", "build.synthesis.workers=1",
        "build.tts.users.size=4", "ray.num_cpus=2", "units.kmeans.k=32", "units.batch_size=4",
        *TINY_DECODER, "build.gate.max_wer=null"])


def tiny_training(store_url: str, log_dir: str, name: str = "tiny", steps: int = 2,
                  extra: tuple[str, ...] = ()) -> PipelineConfig:
    overrides = [f"train.name={name}", "train.model.adapter_hidden_size=32", "train.model.tokenizer.vocab_size=300",
                 f"train.model.llm={TINY_LM}", f"train.model.tts={TINY_LM}", "train.checkpoint_every=1",
                 "train.log_every=1", f"train.log_dir={log_dir}"]
    for stage in ("s2t", "tts", "s2s"):
        overrides += [f"train.{stage}.steps={steps}", f"train.{stage}.batch_size=2", f"train.{stage}.warmup_steps=1"]
    return load_pipeline_config("configs/demo.yaml", [f"store.url={store_url}", "units.kmeans.k=32",
                                                      *TINY_DECODER, "ray.num_cpus=2"]
                                + overrides + list(extra))


def corpus_config(store_url: str, sentences: int, extra: tuple[str, ...] = ()) -> PipelineConfig:
    """A small TTS corpus over the small dataset's answers, tokenized with the dataset's tokenizer."""
    return load_pipeline_config("configs/demo.yaml", [
        f"store.url={store_url}", "build.synthesis.workers=1", "ray.num_cpus=2", "units.kmeans.k=32",
        "units.batch_size=4", *TINY_DECODER, "corpus.name=corpus-test", f"corpus.source.sentences={sentences}",
        "corpus.dialogues=speech/demo", *extra])


def build_small_dataset(store_url: str) -> None:
    from omniforge.flows.build_dialogues import build_dialogues
    from omniforge.flows.tokenize_units import tokenize_units

    build_dialogues(data_config(store_url))
    tokenize_units(data_config(store_url))
