"""Plain, batch-size-1 generation that follows the same read-write schedule as `stream_generate`.

Two uses: with no caches at all it is the test oracle (cached streaming must produce the same
greedy tokens); with `tts_reprefill=True` it is the released LLaMA-Omni 2 code's way (the TTS LM
re-reads its whole input at the start of every chunk) and the baseline of benchmarks/generation.py.
"""

from __future__ import annotations

import torch

from omniforge.model.modeling_omni import OmniModel
from omniforge.model.growing_cache import CachedLM
from omniforge.model.streaming import GenerationSettings, pick


@torch.no_grad()
def generate_reference(model: OmniModel, input_ids: torch.Tensor, speech: list[torch.Tensor],
                       settings: GenerationSettings = GenerationSettings(), llm_cache: bool = False,
                       tts_reprefill: bool = False) -> tuple[list[int], list[int]]:
    """Returns (text tokens, speech units). `llm_cache` keeps a KV cache on the LLM;
    `tts_reprefill` prefills the TTS LM once per chunk and caches within the chunk only;
    without it the TTS LM recomputes its whole input for every token. A TTS LM that reads
    pronunciations is not covered (its text is read a word at a time)."""
    config, tts, schedule = model.config, model.speech_generator, model.schedule
    if tts.pronunciation is not None:
        raise ValueError("generate_reference reads no pronunciations; use stream_generate with `pronounce`")
    device = input_ids.device
    prompt, _, _ = model.splice([input_ids], speech)
    llm_inputs = prompt[0]
    cached_llm = CachedLM(model.llm, 1, device) if llm_cache else None
    tts_inputs: list[torch.Tensor] = []
    text: list[int] = []
    units: list[int] = []
    state = {"done": False}
    unit_range = slice(config.unit_offset, config.unit_offset + config.unit_vocab_size)

    def llm_step(new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if cached_llm is None:
            out = model.llm(inputs_embeds=llm_inputs[None], output_hidden_states=True)
        else:
            out = cached_llm.feed(new[None], torch.ones(1, len(new), dtype=torch.long, device=device), hidden=True)
        return out.logits[0, -1], out.hidden_states[-1][0, -1]

    def write(count: float, final: bool) -> None:
        past = None
        fed = 0
        while count > 0 and not state["done"]:
            if tts_reprefill and past is not None:
                out = tts.model(inputs_embeds=torch.stack(tts_inputs[fed:])[None], cache=past, use_cache=True)
            else:
                out = tts.model(inputs_embeds=torch.stack(tts_inputs)[None], use_cache=tts_reprefill)
            past, fed = out.cache, len(tts_inputs)
            allowed = torch.full_like(out.logits[0, -1], float("-inf"))
            allowed[unit_range] = 0
            if final:
                allowed[config.eos_token_id] = 0
            elif config.read_token_id is not None:
                allowed[config.read_token_id] = 0
            token = int(pick((out.logits[0, -1] + allowed)[None], settings.speech)[0])
            if token == config.eos_token_id or len(units) >= settings.max_speech_tokens:
                state["done"] = True
                return
            if token == config.read_token_id:  # aligned: this text token is spoken, read the next
                return
            units.append(token - config.unit_offset)
            tts_inputs.append(tts.embed(torch.tensor([token], device=device))[0])
            count -= 1

    logits, hidden = llm_step(llm_inputs)
    while True:
        token = int(pick(logits[None], settings.text)[0])
        if token == config.eos_token_id or len(text) >= settings.max_text_tokens:
            break
        text.append(token)
        token_tensor = torch.tensor([token], device=device)
        tts_inputs.append(tts.text_inputs(token_tensor, hidden[None])[0])
        write(schedule.write_budget(len(text)), final=False)
        new = model.llm.get_input_embeddings()(token_tensor)
        llm_inputs = torch.cat([llm_inputs, new])
        logits, hidden = llm_step(new)
    tts_inputs.append(tts.embed(torch.tensor([config.sep_token_id], device=device))[0])
    write(float("inf"), final=True)
    return text, units
