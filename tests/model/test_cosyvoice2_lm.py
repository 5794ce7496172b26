"""CosyVoice 2's speech LM names <-> our TTS LM, on a small state dict laid out like its llm.pt."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from omniforge.model.cosyvoice2_lm import CONTROL_TOKENS, ours_to_released, released_to_ours
from omniforge.tasks.train.model_factory import load_cosyvoice2_llm
from tests.tiny_model import EOS, TEXT_VOCAB, tiny_model

UNITS = 6561


def released_state(text_vocab: int = 80, hidden: int = 24) -> dict[str, torch.Tensor]:
    """A Qwen2LM state dict as CosyVoice 2 saves it: Qwen2 body and head under llm.model., the speech
    embedding and decoder over units + 3 control tokens, and the sos/task-id embeddings."""
    torch.manual_seed(0)
    body = AutoModelForCausalLM.from_config(Qwen2Config(vocab_size=text_vocab, hidden_size=hidden, intermediate_size=48,
                                                        num_hidden_layers=2, num_attention_heads=2,
                                                        num_key_value_heads=1, tie_word_embeddings=True))
    state = {f"llm.model.{name}": value.clone() for name, value in body.state_dict().items()}
    state.update({"speech_embedding.weight": torch.randn(UNITS + CONTROL_TOKENS, hidden),
                  "llm_decoder.weight": torch.randn(UNITS + CONTROL_TOKENS, hidden),
                  "llm_decoder.bias": torch.randn(UNITS + CONTROL_TOKENS),
                  "llm_embedding.weight": torch.randn(2, hidden)})
    return state


def test_released_rows_land_where_our_vocabulary_puts_them():
    released = released_state()
    text_vocab, eos = 64, 2  # our tokenizer may be smaller than the released text vocabulary
    ours, left_out = released_to_ours(released, text_vocab, UNITS, eos, text_vocab + UNITS + 1)
    embed, head = ours["model.embed_tokens.weight"], ours["lm_head.weight"]
    assert embed.shape == (text_vocab + UNITS + 1, 24)
    assert torch.equal(embed[:text_vocab], released["llm.model.model.embed_tokens.weight"][:text_vocab])
    assert torch.equal(embed[text_vocab + 5], released["speech_embedding.weight"][5])
    assert torch.equal(head[text_vocab + UNITS - 1], released["llm_decoder.weight"][UNITS - 1])
    assert torch.equal(embed[text_vocab + UNITS], released["llm_embedding.weight"][1])  # <sep> <- task id
    assert torch.equal(head[eos], released["llm_decoder.weight"][UNITS])  # EOS <- speech end
    assert torch.equal(ours["model.layers.1.mlp.up_proj.weight"], released["llm.model.model.layers.1.mlp.up_proj.weight"])
    assert left_out == ["llm_embedding.weight[sos]", "llm_decoder.bias"]


def test_ours_to_released_and_back_is_exact():
    model = tiny_model(unit_vocab_size=UNITS, tts_config=dict(
        model_type="qwen2", vocab_size=TEXT_VOCAB + UNITS + 1, hidden_size=24, intermediate_size=48,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False))
    state = model.speech_generator.model.state_dict()
    back, _ = released_to_ours(ours_to_released(state, TEXT_VOCAB, UNITS, EOS), TEXT_VOCAB, UNITS, EOS,
                               TEXT_VOCAB + UNITS + 1)
    sep = TEXT_VOCAB + UNITS
    assert set(back) == set(state)
    for name, value in state.items():
        if name == "lm_head.weight":  # the <sep> row is never predicted and CosyVoice 2 has no place for it
            value, back[name] = torch.cat([value[:sep], value[sep + 1:]]), torch.cat([back[name][:sep], back[name][sep + 1:]])
        assert torch.equal(back[name], value), name


def test_the_tts_lm_loads_a_released_llm_pt(tmp_path):
    model = tiny_model(unit_vocab_size=UNITS, tts_config=dict(
        model_type="qwen2", vocab_size=TEXT_VOCAB + UNITS + 1, hidden_size=24, intermediate_size=48,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False))
    released = released_state()
    torch.save(released, tmp_path / "llm.pt")
    assert load_cosyvoice2_llm(model, str(tmp_path / "llm.pt")) == ["llm_embedding.weight[sos]", "llm_decoder.bias"]
    lm = model.speech_generator.model
    assert torch.equal(lm.get_input_embeddings().weight[TEXT_VOCAB + 7], released["speech_embedding.weight"][7])
    assert torch.equal(lm.get_output_embeddings().weight[EOS], released["llm_decoder.weight"][UNITS])
