"""Settings of the spoken-dialogue build (source -> speech-ready text -> TTS -> validated shards)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from omniforge.config.base import Section
from omniforge.config.endpoint import ChatEndpointConfig
from omniforge.config.media import MediaConfig

Range = tuple[float, float]


class DemoSourceConfig(Section):
    """The built-in generator of closed-domain question-answer dialogues (offline demo data)."""

    dialogues: int = Field(60, ge=1, description="Number of dialogues to generate.")
    max_user_turns: int = Field(2, ge=1, le=5, description="User turns per dialogue, drawn 1..max.")


class SourceConfig(Section):
    """Where the text dialogues come from."""

    kind: Literal["demo", "jsonl", "hf", "generated"] = Field("demo", description="demo generator, JSONL file, HF "
                                                              "dataset, or dialogues made by `generate-dialogues`.")
    path: str | None = Field(None, description="JSONL path/URL (jsonl), dataset directory / hub name (hf), or "
                             "dialogues/NAME[@version] in the store (generated).")
    root: str | None = Field(None, description="Folder that relative wav paths in the records are also looked "
                             "up in, after the JSONL file's own folder (default: the working directory).")
    hf_split: str = Field("train", description="Split of the HF dataset.")
    hf_config: str | None = Field(None, description="Config (subset) name of the HF dataset.")
    limit: int | None = Field(None, ge=1, description="Keep at most this many dialogues (sampled with seed).")
    seed: int = Field(0, description="Seed of the sampling of dialogues.")
    demo: DemoSourceConfig = Field(default_factory=DemoSourceConfig, description="Demo generator settings.")
    media: MediaConfig = Field(default_factory=MediaConfig, description="Which media files records may name.")

    @model_validator(mode="after")
    def _path_needed(self) -> "SourceConfig":
        if self.kind in ("jsonl", "hf", "generated") and not self.path:
            raise ValueError(f"source.path is required when source.kind is {self.kind!r}")
        return self


class RewriteConfig(ChatEndpointConfig):
    """Optional LLM rewrite of responses into spoken style (off by default): an endpoint, or a local
    transformers model when no endpoint is set."""

    enabled: bool = Field(False, description="Rewrite assistant turns with an LLM before TTS.")
    max_new_tokens: int = Field(256, ge=1, description="Longest rewrite.")
    prompt: str = Field(
        "Rewrite the answer so it sounds natural when spoken aloud: short sentences, no lists, no "
        "markdown, numbers written as words. Keep the meaning. Answer with the rewrite only.",
        description="Instruction given to the rewriting model.",
    )

    @model_validator(mode="after")
    def _model_needed(self) -> "RewriteConfig":
        if self.enabled and not self.model:
            raise ValueError("text.rewrite.model is required when text.rewrite.enabled is true")
        return self


class TextConfig(Section):
    """Speech-friendly text normalization."""

    max_segment_chars: int = Field(300, ge=20, description="Long turns are split at sentence ends into "
                                   "segments of at most this many characters, synthesized one by one.")
    max_turn_chars: int = Field(1500, ge=20, description="Turns longer than this are cut at a sentence end.")
    max_raw_chars: int = Field(20_000, ge=20, description="A turn's raw text is cut to this many characters "
                               "before its markup is read (a turn keeps at most max_turn_chars once spoken; "
                               "this bounds the work one huge record can cost).")
    segment_pause_s: float = Field(0.2, ge=0, description="Silence between the segments of one turn.")
    normalizer_cache: str = Field("~/.cache/omniforge/text-normalization", description="Where the English "
                                  "text normalization grammars are compiled once (~40 s) and loaded from after.")
    rewrite: RewriteConfig = Field(default_factory=RewriteConfig, description="Optional LLM rewrite.")

    @model_validator(mode="after")
    def _raw_holds_a_turn(self) -> "TextConfig":
        if self.max_raw_chars < self.max_turn_chars:
            raise ValueError(f"text.max_raw_chars ({self.max_raw_chars}) must be at least text.max_turn_chars "
                             f"({self.max_turn_chars})")
        return self


class VoiceConfig(Section):
    """One concrete voice: a backend, its voice, and how to vary it."""

    backend: Literal["piper", "espeak", "cosyvoice2"] = Field("piper", description="TTS backend.")
    voice: str = Field("joe", description="piper: 'joe' (shipped) or a .onnx path; espeak: a voice name "
                       "(en-us, en-gb+f3...); cosyvoice2: a prompt wav path.")
    prompt_text: str = Field("", description="cosyvoice2: transcript of the prompt wav.")
    length_scale: float = Field(1.0, gt=0.2, lt=5, description="Piper phoneme length (>1 slower).")
    noise_scale: float = Field(0.0, ge=0, le=2, description="Piper generator noise. Non-zero makes "
                               "synthesis random, so a rebuild is no longer bit-identical.")
    noise_w_scale: float = Field(0.0, ge=0, le=2, description="Piper duration noise (same caveat).")
    pitch_semitones: float = Field(0.0, ge=-12, le=12, description="Pitch shift.")
    tempo: float = Field(1.0, gt=0.3, lt=3, description="Speaking-rate factor (>1 faster).")


class UserVoicePoolConfig(Section):
    """The pool of user voices; each dialogue draws one (seeded) for all its user turns."""

    size: int = Field(24, ge=1, description="Number of distinct user voices.")
    piper_voices: list[str] = Field(default_factory=lambda: ["joe"], description="Piper voices to vary.")
    espeak_voices: list[str] = Field(
        default_factory=lambda: ["en-us", "en-gb", "en-us+f3", "en-gb+m3", "en-us+f2", "en-029"],
        description="espeak-ng voices mixed in when espeak-ng is installed.",
    )
    espeak_share: float = Field(0.25, ge=0, le=1, description="Share of pool voices from espeak-ng (when present).")
    pitch_semitones: Range = Field((-3.0, 3.0), description="Range of pitch shifts.")
    tempo: Range = Field((0.85, 1.2), description="Range of tempo factors.")
    length_scale: Range = Field((0.9, 1.1), description="Range of Piper length scales.")
    seed: int = Field(0, description="Seed of the pool and of the per-dialogue draw.")


class TTSConfig(Section):
    assistant: VoiceConfig = Field(default_factory=VoiceConfig, description="The assistant's one fixed voice.")
    users: UserVoicePoolConfig = Field(default_factory=UserVoicePoolConfig, description="User voice pool.")
    cosyvoice_model_dir: str | None = Field(None, description="Local CosyVoice 2 model directory.")


class PlanningConfig(Section):
    """How making the text speakable is spread over Ray (it decides nothing about the result)."""

    workers: int = Field(1, ge=1, description="Ray actors that normalize the text (NeMo's grammars: 13-60 ms a turn "
                         "with a number); 1 plans in the driver, as small sources should.")
    batch_size: int = Field(256, ge=1, description="Dialogues per call to a worker; a source of at most this many "
                            "is planned in the driver.")
    spill_dialogues: int = Field(500, ge=1, description="Planned dialogues per part of the plan on local disk: "
                                 "what the driver holds at once while it plans, synthesizes and publishes.")


class SynthesisConfig(Section):
    """How synthesis is spread over Ray."""

    workers: int = Field(1, ge=1, description="Long-lived TTS workers (one model each).")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per worker (CosyVoice 2 needs one).")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker.")
    batch_size: int = Field(8, ge=1, description="Utterances per call to a worker.")
    checkpoint_every: int = Field(64, ge=1, description="Finished utterances per cache shard written "
                                  "(what a killed run can lose at most, per worker).")
    retries: int = Field(2, ge=0, description="Tries after the first when synthesis fails for a reason other "
                         "than its audio being rejected (a timeout, out of memory, a dead worker); then the "
                         "utterance is reported but not remembered, so the next run tries it again.")
    retry_backoff_s: float = Field(0.5, ge=0, description="Wait before the first retry, doubled each time.")


class ValidationConfig(Section):
    """Level checks every synthesized utterance passes before it enters the dataset."""

    min_duration_s: float = Field(0.3, ge=0, description="Shortest utterance.")
    max_duration_s: float = Field(40.0, gt=0, description="Longest utterance.")
    max_silence_ratio: float = Field(0.8, gt=0, le=1, description="Largest share of silent frames.")
    max_clipped_ratio: float = Field(0.01, ge=0, le=1, description="Largest share of clipped samples.")


class QualityGateConfig(Section):
    """Does the speech say its text, well, in the chosen voice? Every synthesized utterance is heard
    back on the synthesis workers; one that fails is said again (another tempo) up to `resynthesis`
    times, then rejected with its reason and figures. A measure set to None is not taken."""

    enabled: bool = Field(True, description="Run the gate (off: only the level checks).")
    asr_model: str = Field("tiny.en", description="faster-whisper model that hears each utterance: a directory, "
                           "or 'tiny.en' (shipped offline).")
    max_wer: float | None = Field(0.5, ge=0, description="Largest word error rate of what the ASR hears against the "
                                  "turn's text (skipped, looped or babbled words).")
    min_mos: float | None = Field(None, ge=1, le=5, description="Lowest DNSMOS overall quality (~0.2-0.4 s per "
                                  "utterance on one core, so off by default; TTS output scores ~2.5-3.3).")
    speaking_rate: tuple[float, float] | None = Field((6.0, 30.0), description="Range of letters per second of "
                                                      "voiced audio (a loop or a stall is slow, skipped text fast).")
    min_speaker_similarity: float | None = Field(0.7, ge=-1, le=1, description="Lowest cosine similarity of the "
                                                 "utterance's speaker embedding (Resemblyzer) to the chosen voice's, "
                                                 "taken from `reference_text` said in that voice (wrong voice).")
    reference_text: str = Field("The quick brown fox jumps over the lazy dog, and then it runs back home again.",
                                description="What each voice says once for its reference speaker embedding.")
    resynthesis: int = Field(2, ge=0, description="Tries after the first for an utterance that fails the gate or "
                             "a level check; each one says it at another tempo.")
    tempo_step: float = Field(0.08, gt=0, lt=0.5, description="Retry k says the turn at tempo 1 - step, 1 + step, "
                              "1 - 2 step, ... times the voice's own.")
    on_reject: Literal["cut", "drop"] = Field("cut", description="A dialogue with a rejected turn keeps the turns "
                                              "before it (cut, when they end with an answer) or is left out (drop).")

    @property
    def asr(self) -> bool:
        return self.enabled and self.max_wer is not None


class BuildConfig(Section):
    """The `build_dialogues` flow."""

    name: str = Field("demo", description="Dataset name in the store (dialogues/NAME, speech/NAME).")
    source: SourceConfig = Field(default_factory=SourceConfig, description="Text dialogue source.")
    text: TextConfig = Field(default_factory=TextConfig, description="Text normalization.")
    tts: TTSConfig = Field(default_factory=TTSConfig, description="Voices.")
    planning: PlanningConfig = Field(default_factory=PlanningConfig, description="Ray parallelism of the text.")
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig, description="Ray parallelism.")
    validation: ValidationConfig = Field(default_factory=ValidationConfig, description="Audio level checks.")
    gate: QualityGateConfig = Field(default_factory=QualityGateConfig, description="The quality gate: ASR round "
                                    "trip, DNSMOS, speaking rate, speaker similarity; re-synthesis of failures.")
    cache_url: str | None = Field(None, description="Where finished utterances are cached (default: "
                                  "STORE/cache/tts). Makes re-runs and resumes incremental.")
