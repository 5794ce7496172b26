"""The text tokenizer the LLM and the TTS LM share, and the chat layout of a spoken dialogue.

Production: the pretrained LLM's tokenizer (Qwen2.5's ChatML). Offline: a byte-level BPE trained on
the dataset's text, with the same ChatML special tokens, so both paths format dialogues the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from omniforge.config.train import ModelConfig
from omniforge.model.modeling_omni import IGNORE_INDEX
from omniforge.model.read_write import token_start

IM_START, IM_END, SPEECH = "<|im_start|>", "<|im_end|>", "<speech>"
PAD = "<|endoftext|>"


def train_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, IM_START, IM_END, SPEECH],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=PAD, eos_token=IM_END)


def load_tokenizer(config: ModelConfig, texts: Iterable[str]) -> PreTrainedTokenizerBase:
    """The configured pretrained tokenizer (with `<speech>` added), or a BPE trained on `texts`."""
    source = config.tokenizer.pretrained or config.llm.pretrained
    if source is None:
        return train_bpe(texts, config.tokenizer.vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.add_special_tokens({"additional_special_tokens": [SPEECH]})
    return tokenizer


@dataclass
class EncodedDialogue:
    input_ids: torch.Tensor
    labels: torch.Tensor        # assistant tokens (their text and <|im_end|>); IGNORE_INDEX elsewhere
    turn_marks: torch.Tensor    # k at the text tokens of the k-th assistant turn; IGNORE_INDEX elsewhere


class ChatFormat:
    """ChatML, as Qwen2.5 writes it: a user turn's content is the `<speech>` placeholder, or its text
    where the user typed it (`typed`)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, system_prompt: str) -> None:
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.speech_token_id = tokenizer.convert_tokens_to_ids(SPEECH)
        self.eos_token_id = tokenizer.convert_tokens_to_ids(IM_END)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _typed_ids(self, text: str) -> list[int]:
        """What a user typed, special-token look-alikes (`<|im_end|>`, `<speech>`) as plain text."""
        return self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)

    def text_ids(self, text: str) -> list[int]:
        """An assistant turn's text tokens (what the TTS LM reads)."""
        return self._ids(text)

    def token_starts(self, text: str) -> list[int]:
        """Where each of `text_ids(text)`'s tokens starts in `text`: its first character that is not a space."""
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return [token_start(text, start, end) for start, end in offsets]

    def encode(self, turns: list[tuple[str, str]], generation_prompt: bool = False,
               typed: Collection[int] = ()) -> EncodedDialogue:
        """turns: (role, text) pairs in order. A user turn's text is not used (its speech is) unless its
        index is in `typed`: then the text is the turn."""
        ids = self._ids(f"{IM_START}system\n{self.system_prompt}{IM_END}\n")
        labels = [IGNORE_INDEX] * len(ids)
        marks = [IGNORE_INDEX] * len(ids)
        assistant_turns = 0
        for index, (role, text) in enumerate(turns):
            if role == "user":
                head = (self._ids(f"{IM_START}user\n") + self._typed_ids(text) + self._ids(f"{IM_END}\n")
                        if index in typed else self._ids(f"{IM_START}user\n{SPEECH}{IM_END}\n"))
                ids += head
                labels += [IGNORE_INDEX] * len(head)
                marks += [IGNORE_INDEX] * len(head)
                continue
            head, body, end = self._ids(f"{IM_START}assistant\n"), self._ids(text), [self.eos_token_id]
            newline = self._ids("\n")
            ids += head + body + end + newline
            labels += [IGNORE_INDEX] * len(head) + body + end + [IGNORE_INDEX] * len(newline)
            marks += [IGNORE_INDEX] * len(head) + [assistant_turns] * len(body) + [IGNORE_INDEX] * (1 + len(newline))
            assistant_turns += 1
        if generation_prompt:
            head = self._ids(f"{IM_START}assistant\n")
            ids += head
            labels += [IGNORE_INDEX] * len(head)
            marks += [IGNORE_INDEX] * len(head)
        return EncodedDialogue(torch.tensor(ids), torch.tensor(labels), torch.tensor(marks))
