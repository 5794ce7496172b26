"""CosyVoice 2's speech LM (its `llm.pt`, a `Qwen2LM`) as our TTS LM, and back.

CosyVoice 2 keeps speech apart from text around one Qwen2 body (`llm.model.model.*`, inside its
`Qwen2Encoder`): text is embedded by the body's own `embed_tokens`, units by `speech_embedding`
(6561 units, then 3 control tokens: speech end, task id, fill), units are predicted by `llm_decoder`
(a linear head over the same 6564), and `llm_embedding` holds the sos and task-id embeddings that
open the text and the speech. Ours is one Qwen2ForCausalLM over text ids, then units, then `<sep>`
(`OmniConfig.unit_offset`, `sep_token_id`), with untied input and output embeddings:

    text rows      <- the body's embed_tokens (input) and lm_head (output; Qwen2.5 ties them)
    unit rows      <- speech_embedding (input) and llm_decoder (output)
    <sep> input    <- the task-id embedding (text finished, speech follows)
    EOS output     <- llm_decoder's speech-end row

Not carried: llm_decoder's bias (a Qwen2 head has none) and the sos embedding (our read-write
schedule starts with the text); `released_to_ours` says so in what it returns.
"""

from __future__ import annotations

import torch

BODY = "llm.model.model."          # the Qwen2 body inside CosyVoice 2's Qwen2Encoder
QWEN_HEAD = "llm.model.lm_head.weight"
SPEECH_EMBEDDING = "speech_embedding.weight"
DECODER, DECODER_BIAS = "llm_decoder.weight", "llm_decoder.bias"
CONTROL = "llm_embedding.weight"   # rows: sos, task id
SOS, TASK_ID = 0, 1
SPEECH_END = 0                     # control row, counted after the units: eos = speech_token_size + 0
CONTROL_TOKENS = 3                 # speech end, task id, fill


def released_to_ours(state: dict[str, torch.Tensor], text_vocab: int, unit_vocab: int, eos_token_id: int,
                     rows: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An `llm.pt` state dict -> a state dict for our TTS LM of `rows` ids (`model.*`, `lm_head.weight`),
    and the released parameters (or rows) that have no place in it. Rows CosyVoice 2 has nothing for
    (aligned read-write's `<read>`) start at zero."""
    ours = {name[len("llm.model."):]: value for name, value in state.items()
            if name.startswith(BODY) and name != BODY + "embed_tokens.weight"}
    qwen_embed = state[BODY + "embed_tokens.weight"]
    qwen_head = state.get(QWEN_HEAD, qwen_embed)
    if state[SPEECH_EMBEDDING].shape[0] < unit_vocab:
        raise ValueError(f"{SPEECH_EMBEDDING} has {state[SPEECH_EMBEDDING].shape[0]} rows, fewer than the "
                         f"{unit_vocab} units")
    embed = qwen_embed.new_zeros(rows, qwen_embed.shape[1])
    head = qwen_embed.new_zeros(rows, qwen_embed.shape[1])
    shared = min(text_vocab, len(qwen_embed))
    embed[:shared], head[:shared] = qwen_embed[:shared], qwen_head[:shared]
    embed[text_vocab:text_vocab + unit_vocab] = state[SPEECH_EMBEDDING][:unit_vocab]
    head[text_vocab:text_vocab + unit_vocab] = state[DECODER][:unit_vocab]
    embed[text_vocab + unit_vocab] = state[CONTROL][TASK_ID]
    head[eos_token_id] = state[DECODER][unit_vocab + SPEECH_END]
    ours["model.embed_tokens.weight"], ours["lm_head.weight"] = embed, head
    left_out = [f"{CONTROL}[sos]"] + ([DECODER_BIAS] if DECODER_BIAS in state else [])
    return ours, left_out


def ours_to_released(state: dict[str, torch.Tensor], text_vocab: int, unit_vocab: int, eos_token_id: int
                     ) -> dict[str, torch.Tensor]:
    """Our TTS LM's state dict -> `llm.pt` names (rows CosyVoice 2 has and we lack are zeros)."""
    embed, head = state["model.embed_tokens.weight"], state["lm_head.weight"]
    hidden = embed.shape[1]
    released = {"llm.model." + name: value for name, value in state.items()
                if name.startswith("model.") and name != "model.embed_tokens.weight"}
    released[BODY + "embed_tokens.weight"] = embed[:text_vocab].clone()
    released[QWEN_HEAD] = head[:text_vocab].clone()
    speech = embed.new_zeros(unit_vocab + CONTROL_TOKENS, hidden)
    speech[:unit_vocab] = embed[text_vocab:text_vocab + unit_vocab]
    decoder = embed.new_zeros(unit_vocab + CONTROL_TOKENS, hidden)
    decoder[:unit_vocab] = head[text_vocab:text_vocab + unit_vocab]
    decoder[unit_vocab + SPEECH_END] = head[eos_token_id]
    control = embed.new_zeros(2, hidden)
    control[TASK_ID] = embed[text_vocab + unit_vocab]
    released.update({SPEECH_EMBEDDING: speech, DECODER: decoder, DECODER_BIAS: embed.new_zeros(len(decoder)),
                     CONTROL: control})
    return released
