"""OmniModel: LLaMA-Omni 2's modular speech chatbot, config-driven (a tiny CPU model and a 7B
one are the same code).

    speech -> Whisper encoder (frozen) -> adapter (k=5) -> spliced into the LLM's chat prompt
    LLM hidden states + the TTS LM's own token embeddings -> gate fusion -> TTS LM -> speech units
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from omniforge.model.configuration_omni import OmniConfig
from omniforge.model.gate_fusion import GateFusion
from omniforge.model.pronunciation import PhonemeEmbedding
from omniforge.model.read_write import ReadWrite, Slot, interleave
from omniforge.model.speech_adapter import SpeechAdapter
from omniforge.model.speech_encoder import encode_speech, encoder_lengths
from omniforge.model.token_loss import IGNORE_INDEX, causal_lm_loss


class SpeechGenerator(GateFusion):
    """The TTS LM (`model`, a causal LM over text ids + units + <sep>) with its gate fusion and, where
    configured, its tokens' pronunciations (`pronunciation`)."""

    def __init__(self, config: OmniConfig, lm: nn.Module | None = None) -> None:
        super().__init__(config.llm_config.hidden_size, config.tts_config.hidden_size, config.gate_init_bias)
        self.config = config
        self.model = lm if lm is not None else AutoModelForCausalLM.from_config(config.tts_config)
        self.pronunciation = (PhonemeEmbedding(config.phoneme_vocab_size, config.phonemes_per_token,
                                               config.tts_config.hidden_size) if config.phoneme_vocab_size else None)
        # the parent PreTrainedModel gathers tied weights from its children: pass the TTS LM's up
        self.all_tied_weights_keys = {f"model.{k}": f"model.{v}" for k, v in self.model.all_tied_weights_keys.items()}

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def text_inputs(self, text_ids: torch.Tensor, llm_hidden: torch.Tensor | None,
                    phonemes: torch.Tensor | None = None) -> torch.Tensor:
        """c_t for each text token (gate fusion), or the plain embedding e_t when there are no LLM
        states (stage-1 TTS pretraining learns text -> speech from text alone). A TTS LM that reads
        pronunciations adds each token's `phonemes` ((tokens, width) ids) to e_t."""
        embeds = self.embed(text_ids)
        if self.pronunciation is not None:
            if phonemes is None:
                raise ValueError("this TTS LM reads its text's pronunciations: each token's phonemes are needed")
            embeds = embeds + self.pronunciation(phonemes).to(embeds.dtype)
        return embeds if llm_hidden is None else super().forward(llm_hidden, embeds)

    def unit_ids(self, units: torch.Tensor) -> torch.Tensor:
        return units + self.config.unit_offset

    def sequence(self, text_inputs: torch.Tensor, units: torch.Tensor, schedule: ReadWrite,
                 read_units: torch.Tensor | None = None,
                 counts: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One item's interleaved input embeddings and, aligned with them, the target each position
        predicts (a speech token, <read> or EOS; IGNORE_INDEX where the next slot is text or <sep> the
        schedule reads by itself). The speech positions read `read_units` (a noised copy of `units`)
        when given, and always predict `units`. `counts`: each text token's speech (aligned only)."""
        slots = interleave(len(text_inputs), len(units), schedule, counts)
        speech_embeds = self.embed(self.unit_ids(units if read_units is None else read_units))
        sep = self.embed(torch.tensor([self.config.sep_token_id], device=units.device))[0]
        said = {Slot.EOS: self.config.eos_token_id, Slot.READ: self.config.read_token_id}
        inputs, targets = [], []
        for position, (slot, index) in enumerate(slots[:-1]):
            if slot is Slot.READ:  # a target only
                continue
            inputs.append(text_inputs[index] if slot is Slot.TEXT else sep if slot is Slot.SEP else speech_embeds[index])
            following, next_index = slots[position + 1]
            if following is Slot.SPEECH:
                targets.append(int(units[next_index]) + self.config.unit_offset)
            else:
                targets.append(said.get(following, IGNORE_INDEX))
        return torch.stack(inputs), torch.tensor(targets, device=units.device)


class OmniModel(PreTrainedModel):
    config_class = OmniConfig
    base_model_prefix = "omni"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    optional_parts = ("speech_generator.pronunciation",)  # stages name them by default; a model may lack them

    def __init__(self, config: OmniConfig, speech_encoder: nn.Module | None = None, llm: nn.Module | None = None,
                 tts_lm: nn.Module | None = None) -> None:
        super().__init__(config)
        self.speech_encoder = speech_encoder if speech_encoder is not None else WhisperEncoder(config.encoder_config)
        self.speech_projector = SpeechAdapter(config.speech_encoder_hidden_size, config.llm_config.hidden_size,
                                              config.speech_encoder_ds_rate, config.adapter_hidden_size)
        self.llm = llm if llm is not None else AutoModelForCausalLM.from_config(config.llm_config)
        self.speech_generator = SpeechGenerator(config, tts_lm)
        self.speech_encoder.requires_grad_(False)  # frozen in every stage of the paper
        self.post_init()

    @classmethod
    def from_parts(cls, encoder: str, llm: str, tts: str, unit_vocab_size: int, speech_token_id: int,
                   eos_token_id: int, **config_kwargs) -> "OmniModel":
        """First build: each part from its own pretrained source (a local directory, or a hub id
        where the user has access): a Whisper checkpoint's encoder, a causal LM for the LLM, and
        one for the TTS."""
        from transformers import WhisperModel

        return cls.from_modules(WhisperModel.from_pretrained(encoder).get_encoder(),
                                AutoModelForCausalLM.from_pretrained(llm), AutoModelForCausalLM.from_pretrained(tts),
                                unit_vocab_size, speech_token_id, eos_token_id, **config_kwargs)

    @classmethod
    def from_modules(cls, speech_encoder: nn.Module, llm: nn.Module, tts_lm: nn.Module, unit_vocab_size: int,
                     speech_token_id: int, eos_token_id: int, **config_kwargs) -> "OmniModel":
        """Assemble the model from its parts, extending the TTS LM's vocabulary to the LLM's text
        vocabulary + the units + <sep>. Adapter and gate fusion start fresh."""
        config = OmniConfig(encoder_config=speech_encoder.config, llm_config=llm.config, tts_config=tts_lm.config,
                            unit_vocab_size=unit_vocab_size, text_vocab_size=llm.get_input_embeddings().num_embeddings,
                            speech_token_id=speech_token_id, eos_token_id=eos_token_id, **config_kwargs)
        tts_lm.resize_token_embeddings(config.tts_vocab_size)  # its config is config.tts_config: updated too
        return cls(config, speech_encoder=speech_encoder, llm=llm, tts_lm=tts_lm)

    def _init_weights(self, module: nn.Module) -> None:
        """The parts initialise themselves (HF sub-models in their own post_init, torch layers in
        their constructors); a pretrained part handed in must not be re-initialised here."""

    @property
    def schedule(self) -> ReadWrite:
        config = self.config
        return ReadWrite(config.stream_read, config.stream_write, config.stream_aligned, config.stream_lookahead)

    # ------------------------------------------------------------------ speech -> LLM inputs
    def speech_embeddings(self, features: torch.Tensor, mel_lengths: torch.Tensor) -> list[torch.Tensor]:
        """(B, n_mels, T) log-mels -> per utterance, its adapter outputs (n_i, H_llm)."""
        frames = encode_speech(self.speech_encoder, features, mel_lengths)
        projected = self.speech_projector(frames)
        lengths = self.speech_projector.output_lengths(encoder_lengths(mel_lengths))
        return [projected[i, : int(n)] for i, n in enumerate(lengths)]

    def splice(self, input_ids: list[torch.Tensor], speech: list[torch.Tensor], labels: list[torch.Tensor] | None = None,
               left_pad: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Replace each speech placeholder token, in order, by the next utterance's embeddings and
        pad the batch. Returns inputs_embeds, attention_mask and (expanded) labels."""
        embed = self.llm.get_input_embeddings()
        queue = iter(speech)
        rows, row_labels = [], []
        for i, ids in enumerate(input_ids):
            parts, label_parts = [], []
            cuts = (ids == self.config.speech_token_id).nonzero().flatten().tolist()
            start = 0
            for cut in cuts + [len(ids)]:
                parts.append(embed(ids[start:cut]))
                if labels is not None:
                    label_parts.append(labels[i][start:cut])
                if cut < len(ids):
                    utterance = next(queue)
                    parts.append(utterance.to(parts[-1].dtype))
                    if labels is not None:
                        label_parts.append(torch.full((len(utterance),), IGNORE_INDEX, device=ids.device))
                start = cut + 1
            rows.append(torch.cat(parts))
            row_labels.append(torch.cat(label_parts) if labels is not None else None)
        if next(queue, None) is not None:
            raise ValueError("more utterances than speech placeholders in the batch")
        embeds, mask = pad_sequences(rows, left=left_pad)
        padded_labels = pad_sequences(row_labels, left=left_pad, value=IGNORE_INDEX)[0] if labels is not None else None
        return embeds, mask, padded_labels

    # ------------------------------------------------------------------ training losses
    def s2t_loss(self, input_ids: list[torch.Tensor], features: torch.Tensor | None, mel_lengths: torch.Tensor | None,
                 labels: list[torch.Tensor], chunk_tokens: int = 0) -> torch.Tensor:
        """Speech-to-text: the LLM over chat prompts with spliced speech; loss on the labels
        (assistant tokens only: the data path sets everything else to IGNORE_INDEX), each predicted by
        the position before it. `chunk_tokens`: see `labelled_cross_entropy`."""
        speech = self.speech_embeddings(features, mel_lengths) if features is not None else []
        embeds, mask, padded = self.splice(input_ids, speech, labels)
        targets = torch.cat([padded[:, 1:], padded.new_full((len(padded), 1), IGNORE_INDEX)], dim=1)
        return causal_lm_loss(self.llm, embeds, mask, targets, chunk_tokens)

    def tts_loss(self, text_ids: list[torch.Tensor], units: list[torch.Tensor],
                 llm_hidden: list[torch.Tensor] | None = None, read_units: list[torch.Tensor] | None = None,
                 unit_counts: list[torch.Tensor] | None = None,
                 phonemes: list[torch.Tensor] | None = None, chunk_tokens: int = 0) -> torch.Tensor:
        """Text(-states) -> speech units on read-write interleaved sequences. Without `llm_hidden`
        this is stage-1 TTS pretraining; with it, stage-2 speech-to-speech (gate fusion).
        `read_units`: what the speech positions read instead of `units` (noised for robustness);
        `unit_counts`: each text token's speech tokens (aligned read-write); `phonemes`: each text
        token's pronunciation (a TTS LM that reads them); `chunk_tokens`: see `labelled_cross_entropy`."""
        generator = self.speech_generator
        rows, targets = [], []
        for i, ids in enumerate(text_ids):
            hidden = None if llm_hidden is None else llm_hidden[i]
            pronounced = None if phonemes is None else phonemes[i]
            inputs, target = generator.sequence(generator.text_inputs(ids, hidden, pronounced), units[i], self.schedule,
                                                None if read_units is None else read_units[i],
                                                None if unit_counts is None else unit_counts[i].tolist())
            rows.append(inputs)
            targets.append(target)
        embeds, mask = pad_sequences(rows)
        target = pad_sequences(targets, value=IGNORE_INDEX)[0]
        return causal_lm_loss(generator.model, embeds, mask, target, chunk_tokens)


def pad_sequences(rows: list[torch.Tensor], left: bool = False, value: float = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length rows (L_i, ...) into (B, L_max, ...) plus a (B, L_max) attention mask."""
    longest = max(len(r) for r in rows)
    out = rows[0].new_full((len(rows), longest, *rows[0].shape[1:]), value)
    mask = torch.zeros(len(rows), longest, dtype=torch.long, device=rows[0].device)
    for i, row in enumerate(rows):
        span = slice(longest - len(row), longest) if left else slice(0, len(row))
        out[i, span] = row
        mask[i, span] = 1
    return out, mask
