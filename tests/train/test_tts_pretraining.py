"""TTS LM pretraining on the corpus is one reusable checkpoint: trainings start from it, none retrains it."""

from __future__ import annotations

import pytest
import torch

from omniforge.config import ConfigError
from omniforge.flows.build_corpus import build_corpus
from omniforge.flows.pretrain_tts import corpus_units as corpus_units_config
from omniforge.flows.pretrain_tts import pretrain_tts
from omniforge.flows.tokenize_units import tokenize_units
from omniforge.storage import Kind, store_from_config
from omniforge.tasks.train import steps as train_steps
from omniforge.tasks.train.checkpoints import load_checkpoint
from omniforge.tasks.train.data import BatchMaker, DialogueIndex
from omniforge.tasks.train.text_tokenizer import ChatFormat
from tests.training_data import corpus_config, tiny_training

pytestmark = pytest.mark.usefixtures("prefect_server")
PRETRAIN = ("corpus.pretrain.steps=2", "corpus.pretrain.batch_size=2", "corpus.pretrain.warmup_steps=1")


def corpus_units(data_store: str, name: str, tokenizer: str) -> tuple[str, str]:
    config = corpus_config(data_store, sentences=2, extra=(f"corpus.name={name}",))
    speech = build_corpus(config)["speech_version"]
    units = tokenize_units(corpus_units_config(config.model_copy(update={"units": config.units.model_copy(
        update={"tokenizer": tokenizer})}), speech))["units_version"]
    return speech, units


@pytest.mark.slow
def test_trainings_start_from_one_pretrained_tts_lm(data_store, tmp_path):
    store = store_from_config(corpus_config(data_store, 1).store)
    speech, units = corpus_units(data_store, "corpus-pre", "demo")  # the dialogues' tokenizer
    config = tiny_training(data_store, str(tmp_path / "tb"), extra=("corpus.name=corpus-pre", *PRETRAIN))
    pretrained = pretrain_tts(config, speech, units)["checkpoint"]
    manifest = store.manifest(pretrained)
    assert manifest.stats["stage"] == "tts" and manifest.stats["complete"]
    assert manifest.parents_of(Kind.units) == [store.manifest(units).ref()]
    versions = store.versions(Kind.checkpoint, "corpus-pre")
    assert pretrain_tts(config, speech, units)["checkpoint"] == pretrained  # done: reused, not retrained
    assert store.versions(Kind.checkpoint, "corpus-pre") == versions
    tts_weights = load_checkpoint(store, manifest)[0].speech_generator.model.state_dict()

    for name in ("llm-a", "llm-b"):  # two LLM trainings, one pretrained TTS LM
        llm = tiny_training(data_store, str(tmp_path / "tb"), name=name,
                            extra=(f"train.tts_from={pretrained}", "train.stages=[s2t]"))
        dialogue_speech, dialogue_units = train_steps.resolve_inputs(store, llm)
        start = train_steps.initial_checkpoint(store, llm, dialogue_speech, dialogue_units, None)
        assert start.ref() == manifest.ref()
        [trained] = train_steps.run_stages_here(llm, start, dialogue_speech, dialogue_units)
        assert store.manifest(trained).parents_of(Kind.checkpoint) == [manifest.ref()]  # lineage names it
        model = load_checkpoint(store, store.manifest(trained))[0]
        assert all(torch.equal(value, tts_weights[key]) for key, value in
                   model.speech_generator.model.state_dict().items())  # s2t leaves the TTS LM as pretrained
    assert store.versions(Kind.checkpoint, "corpus-pre") == versions


@pytest.mark.slow
def test_a_pretrained_tts_of_other_units_is_refused(data_store, tmp_path):
    speech, units = corpus_units(data_store, "corpus-other", "other-tokenizer")
    config = tiny_training(data_store, str(tmp_path / "tb"), extra=("corpus.name=corpus-other", *PRETRAIN))
    pretrained = pretrain_tts(config, speech, units)["checkpoint"]
    llm = tiny_training(data_store, str(tmp_path / "tb"), name="mismatch", extra=(f"train.tts_from={pretrained}",))
    store = store_from_config(llm.store)
    dialogue_speech, dialogue_units = train_steps.resolve_inputs(store, llm)
    with pytest.raises(ValueError, match="tokenizer/other-tokenizer.*units.tokenizer"):
        train_steps.initial_checkpoint(store, llm, dialogue_speech, dialogue_units, None)


@pytest.mark.slow
def test_the_tts_stage_rehearses_the_pretraining_corpus(data_store, tmp_path, capsys):
    speech, units = corpus_units(data_store, "corpus-rehearse", "demo")
    config = tiny_training(data_store, str(tmp_path / "tb"), extra=("corpus.name=corpus-rehearse", *PRETRAIN))
    pretrained = pretrain_tts(config, speech, units)["checkpoint"]
    store = store_from_config(config.store)
    corpus_speech, corpus_units_version = store.manifest(speech), store.manifest(units)
    settings = ("train.stages=[tts]", "train.tts.rehearsal=2")
    tts = tiny_training(data_store, str(tmp_path / "tb"), name="rehearsing",
                        extra=(f"train.tts_from={pretrained}", *settings))
    dialogue_speech, dialogue_units = train_steps.resolve_inputs(store, tts)
    start = train_steps.initial_checkpoint(store, tts, dialogue_speech, dialogue_units, None)
    [trained] = train_steps.run_stages_here(tts, start, dialogue_speech, dialogue_units)
    assert f"rehearsing 2 sentences of {corpus_speech.ref()} per batch" in capsys.readouterr().out
    assert store.manifest(trained).stats["complete"]

    # each batch: its dialogues' answers, then 2 corpus sentences drawn by the batch's number
    dialogues = DialogueIndex.build(store, dialogue_speech, dialogue_units, need_units=True, need_dialogue=False)
    corpus = DialogueIndex.build(store, corpus_speech, corpus_units_version, need_units=True, need_dialogue=False)
    joined, rehearsal = dialogues.rehearsing(corpus, 2)
    assert [t.utterance_id for d in joined.dialogues[len(dialogues.dialogues):] for t in d.turns] == \
        [t.utterance_id for d in corpus.dialogues for t in d.turns]
    assert all(joined.shard_paths[t.shard] == corpus.shard_paths[c.shard] for d, e in
               zip(joined.dialogues[len(dialogues.dialogues):], corpus.dialogues) for t, c in zip(d.turns, e.turns))
    tokenizer = load_checkpoint(store, start)[1]
    maker = BatchMaker(store, joined, ChatFormat(tokenizer, tts.train.model.tokenizer.system_prompt), 80,
                       tts.train.augment, 0, with_speech=False, rehearsal=rehearsal)
    answers = [t for t in dialogues.dialogues[0].turns if t.role == "assistant"]
    corpus_units_of = {tuple(t.units) for d in corpus.dialogues for t in d.turns}
    batch = maker.make([0], 7)
    assert [u.tolist() for u in batch.units[:len(answers)]] == [t.units for t in answers]
    drawn = [tuple(u.tolist()) for u in batch.units[len(answers):]]
    assert len(drawn) == 2 and len(set(drawn)) == 2 and set(drawn) <= corpus_units_of
    assert [tuple(u.tolist()) for u in maker.make([0], 7).units[len(answers):]] == drawn  # a resumed run draws the same

    without = tiny_training(data_store, str(tmp_path / "tb"), name="no-pretraining", extra=settings)
    with pytest.raises(ValueError, match="train.tts.rehearsal: there is no TTS pretraining"):
        train_steps.run_stages_here(without, train_steps.initial_checkpoint(store, without, dialogue_speech,
                                                                            dialogue_units, None),
                                    dialogue_speech, dialogue_units)
    with pytest.raises(ConfigError, match="s2s.rehearsal: only the tts stage"):
        tiny_training(data_store, str(tmp_path / "tb"), extra=("train.s2s.rehearsal=2",))
