"""Settings of the streaming evaluation (checkpoint + eval set -> eval version)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from omniforge.config.base import Section
from omniforge.config.build import BuildConfig
from omniforge.config.media import MediaConfig
from omniforge.config.units import DecoderRuntimeConfig


class SlotCacheConfig(Section):
    """Decoding from fixed-size KV caches whose steps replay as CUDA graphs: the way to answer on a
    GPU, where eager decoding is bound by kernel launches (on CPU it only costs the free slots' work)."""

    slots: int = Field(8, ge=1, description="Answers decoded at once; each step computes every slot, free ones too "
                       "(at least serve.max_conversations).")
    llm_length: int = Field(1024, ge=2, description="Positions of an answer's row in the LLM's cache: its prompt "
                            "(with the speech) and its text.")
    tts_length: int = Field(4096, ge=2, description="Positions of an answer's row in the TTS LM's cache: the text "
                            "it reads and the speech it writes.")
    compile: list[Literal["llm", "tts"]] = Field(default_factory=list, description="LMs whose replayed steps are "
                                                 "compiled first (torch.compile; about a minute per step shape when "
                                                 "the first answer comes; on an H200 the TTS LM's step went from 3.8 "
                                                 "to 3.1 ms).")


class GenerationLimits(Section):
    """How a checkpoint answers when it speaks (evaluate, serve, speak): lengths and sampling."""

    max_text_tokens: int = Field(128, ge=1, description="Longest text answer.")
    max_speech_tokens: int = Field(1500, ge=1, description="Longest speech answer (units).")
    max_units_per_text_token: float | None = Field(12.0, gt=0, description="The length guard: at most this many "
                                                   "speech units per text token read, so a TTS LM that never says "
                                                   "end-of-speech stops near its text's length instead of talking to "
                                                   "max_speech_tokens (the demo corpus: 3.8 per token on average, "
                                                   "5.6 at the 99th percentile, 8.3 at most); None: off.")
    speech_per_step: int | None = Field(4, ge=1, description="After its first chunk, an answer writes at most "
                                        "this many speech units per step of the batch (read-write order kept; greedy "
                                        "output unchanged), so one answer's long write, its speech after the text "
                                        "ended, does not stall the others and a joining answer's first audio. At least "
                                        "W/R (10/3) keeps the speech up with the text; None: no cap.")
    speech_temperature: float | None = Field(None, gt=0, description="Sample the TTS LM's units at this "
                                             "temperature (the paper: 1.0, as greedy repeats itself); None: "
                                             "greedy, which the demo's small TTS LM speaks better with.")
    slot_cache: SlotCacheConfig | None = Field(None, description="Decode from fixed-size caches replayed as CUDA "
                                               "graphs (GPU); None: eager caches that grow (CPU). Both answer with "
                                               "the same tokens.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where the checkpoint answers: cuda (the first GPU: "
                                           "the user's speech encodes as one replayed graph a turn, and with "
                                           "slot_cache the LMs' steps replay too) or cpu.")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="The weights' dtype while answering "
                                                  "(bfloat16 on a GPU: half the bytes read per step; its tokens "
                                                  "may differ from float32's).")


class EvaluateConfig(GenerationLimits):
    """The `evaluate` flow."""

    name: str = Field("demo", description="Name of the eval artifact (eval/NAME).")
    checkpoint: str = Field("checkpoint/demo", description="Checkpoint to evaluate: checkpoint/NAME[@version].")
    eval_set: str = Field("speech/demo-eval", description="A speech version (speech/NAME[@version]) or a "
                          "questions.json / .jsonl file in LLaMA-Omni 2's layout.")
    eval_set_root: str | None = Field(None, description="Folder a questions file's relative wav paths are also "
                                      "looked up in, after the file's own folder (default: the working directory, "
                                      "as LLaMA-Omni 2's scripts run from their repository's root).")
    eval_set_media: MediaConfig = Field(default_factory=MediaConfig, description="Which wav files a questions "
                                        "file may name (only under its folder and eval_set_root).")
    sentences: str | None = Field(None, description="Also say the plain sentences of this file (one per line, or "
                                  "JSONL with text and key-word answers) through the TTS LM and score them by ASR "
                                  "(sentence_asr_wer, sentence_key_word_heard): what it says of text it never "
                                  "trained on (e.g. benchmarks/data/unseen_sentences.jsonl).")
    sentences_llm_states: bool = Field(True, description="The sentences are read by the LLM and spoken from the "
                                       "gate-fused states, as answers are; False: from the text embeddings alone.")
    max_items: int | None = Field(None, ge=1, description="Evaluate at most this many items (in order).")
    asr_model: str | None = Field("tiny.en", description="faster-whisper model for S2S accuracy and ASR-WER: a "
                                  "CTranslate2 directory, or 'tiny.en' (shipped offline); None skips them.")
    mos: bool = Field(True, description="Estimate MOS with DNSMOS (speechmos).")
    mos_answers: int | None = Field(None, ge=1, description="DNSMOS on the first N speech answers only "
                                    "(about 3 s each on a CPU core); None: all.")
    seed: int = Field(0, description="Seed of the sampling (a re-run hears the same answers).")
    torch_threads: int = Field(1, ge=1, description="Torch threads (tiny models stream fastest on one).")
    decoder: DecoderRuntimeConfig = Field(default_factory=DecoderRuntimeConfig,
                                          description="How the units -> audio decoder runs.")
    keep_wavs: int = Field(20, ge=0, description="Speech answers saved as wavs in the eval version.")
    build: BuildConfig | None = Field(None, description="The pipeline builds this spoken eval set first (e.g. the "
                                      "demo's questions in held-out voices) and evaluates on it.")
