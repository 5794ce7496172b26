"""Aligned read-write end to end on the small real dataset: the answers' units tokenized with their
word alignments (units.align), a tts stage trained on aligned sequences read with their pronunciations
(train.model.pronunciation), and the checkpoint saying a sentence through the streaming generator.
Asking for it on units made without alignments is a clear error, before and during training."""

from __future__ import annotations

import pytest

from omniforge.config import load_pipeline_config
from omniforge.storage import store_from_config
from omniforge.tasks.common.pronunciation import pronouncer_for
from omniforge.tasks.evaluate.speak import Sentence
from omniforge.tasks.evaluate.steps import say_sentences
from omniforge.tasks.train import steps as train_steps
from omniforge.tasks.train.checkpoints import load_checkpoint
from omniforge.tasks.train.data import BatchMaker, DialogueIndex
from omniforge.tasks.train.text_tokenizer import ChatFormat
from tests.training_data import tiny_training

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_aligned_training_needs_aligned_units():
    with pytest.raises(ValueError, match="train.model.stream_aligned needs units.align"):
        load_pipeline_config("configs/demo.yaml", ["train.model.stream_aligned=true"])


def test_an_aligned_tts_stage_trains_on_word_aligned_units_and_speaks(data_store, tmp_path):
    from omniforge.flows.tokenize_units import tokenize_units

    config = tiny_training(data_store, str(tmp_path / "tb"), name="aligned", steps=3, extra=(
        "units.name=demo-aligned", "units.tokenizer=demo", "units.align=true", "units.batch_size=4",
        "train.units=units/demo-aligned", "train.stages=[tts]", "train.model.stream_aligned=true",
        "evaluate.max_speech_tokens=80", "evaluate.max_units_per_text_token=6",
        "train.model.pronunciation.voice=en-us"))
    tokenize_units(config, with_decoder=False)
    store = store_from_config(config.store)
    speech, units = train_steps.resolve_inputs(store, config)
    words = store.read_table(units, columns=["word_chars", "word_starts", "n_units"]).to_pydict()
    assert all(chars and chars == sorted(chars) for chars in words["word_chars"])
    assert all(0 <= starts[-1] <= n / 25 for starts, n in zip(words["word_starts"], words["n_units"]))
    with pytest.raises(ValueError, match="units.align=true"):  # the plain units have no word times
        DialogueIndex.build(store, speech, store.latest_manifest("units", "demo"), True, False, need_words=True)

    start = train_steps.initial_checkpoint(store, config, speech, units, None)
    model, tokenizer = load_checkpoint(store, start)
    chat = ChatFormat(tokenizer, config.train.model.tokenizer.system_prompt)
    index = DialogueIndex.build(store, speech, units, True, False, need_words=True)
    maker = BatchMaker(store, index, chat, 80, config.train.augment, 0, with_speech=False,
                       unit_vocab_size=model.config.unit_vocab_size, unit_rate=25,
                       pronounce=pronouncer_for(model.config, tokenizer))
    batch = maker.make(list(range(len(index.dialogues))), 0)
    assert [len(c) for c in batch.unit_counts] == [len(t) for t in batch.text_ids] == [len(p) for p in batch.phonemes]
    assert all(int((p > 0).sum()) >= len(t) // 2 for p, t in zip(batch.phonemes, batch.text_ids))  # words pronounced
    assert [int(c.sum()) for c in batch.unit_counts] == [len(u) for u in batch.units]

    train_steps.run_stages_here(config, start, speech, units)
    trained = store.latest_manifest("checkpoint", "aligned")
    model, _ = load_checkpoint(store, trained)
    assert model.config.stream_aligned and model.config.read_token_id == model.config.sep_token_id + 1
    assert model.config.pronunciation_voice == "en-us" and model.speech_generator.pronunciation is not None
    [said] = say_sentences(store, config, trained, [Sentence("s", "The capital of France is Paris.")],
                           llm_states=False, asr=False)  # through the streaming engine and the decoder
    assert 0 < said.units <= 80 and said.audio_seconds > 0
