"""The offline default speech tokenizer: 25 Hz frames clustered by k-means.

CosyVoice 2's S3 tokenizer (25 Hz, 6561 codes) needs hub weights; this one is fitted on our own
data in minutes on a CPU, at the same frame rate, so everything downstream (read-write schedule,
units -> audio) is the same code for both. The frames are either log-mel spectra (acoustic units)
or the states of a pretrained speech encoder part-way up (phonetic units, as CosyVoice's own
tokenizer takes an ASR encoder's states: they keep what was said and drop most of how).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from omniforge.model.mel import INPUT_SAMPLE_RATE, MelSpectrogram, WhisperLogMel
from omniforge.model.speech_encoder import encode_speech, encoder_lengths

if TYPE_CHECKING:  # transformers takes seconds to import: log-mel units (every units worker) never need it
    from transformers.models.whisper.modeling_whisper import WhisperEncoder


@dataclass(frozen=True)
class FrontendSettings:
    sample_rate: int = INPUT_SAMPLE_RATE
    frame_rate: int = 25      # units per second
    n_mels: int = 80
    n_fft: int = 1024
    fmax: float = 8000.0

    @property
    def hop(self) -> int:
        return self.sample_rate // self.frame_rate

    def frames(self, samples: int) -> int:
        """Units for a wave of `samples`: one per hop, centred (within one frame of 25 Hz)."""
        return samples // self.hop + 1


class LogMelFrontend(nn.Module):
    """Power log-mel per 40 ms hop (zero padding at the edges, so any length works)."""

    def __init__(self, settings: FrontendSettings) -> None:
        super().__init__()
        self.settings = settings
        self.mel = MelSpectrogram(settings.sample_rate, settings.n_fft, settings.hop, settings.n_mels, settings.fmax,
                                  power=2.0, pad_mode="constant")

    def features(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self(wave) for wave in waves]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(samples,) float wave -> (frames, n_mels) log-mel, per-utterance mean removed."""
        mel = torch.log10(self.mel(wave).T.clamp(min=1e-10))
        return mel - mel.mean(dim=0, keepdim=True)


def nearest_centroids(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(n, dim) points -> (n,) index of each one's nearest centroid (Euclidean): a frame's unit."""
    return torch.cdist(points, centroids).argmin(-1)


def fit_kmeans(points: torch.Tensor, k: int, seed: int, iterations: int = 30) -> torch.Tensor:
    """k-means++ initialisation then Lloyd iterations; the same seed gives the same centroids."""
    if len(points) < k:
        raise ValueError(f"k-means needs at least k={k} frames to fit, got {len(points)}")
    generator = torch.Generator().manual_seed(seed)
    centroids = points[torch.randint(len(points), (1,), generator=generator)]
    nearest = torch.cdist(points, centroids).squeeze(1) ** 2
    for _ in range(1, k):
        pick = torch.multinomial(nearest / nearest.sum(), 1, generator=generator)
        centroids = torch.cat([centroids, points[pick]])
        nearest = torch.minimum(nearest, ((points - points[pick]) ** 2).sum(-1))
    for _ in range(iterations):
        assignment = nearest_centroids(points, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=k).unsqueeze(-1)
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)  # empty cluster: keep
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids


def unexplained_variance(points: torch.Tensor, centroids: torch.Tensor) -> float:
    """Share of the points' variance that their nearest centroid leaves out: what units lose of the frames they
    stand for. In many dimensions more clusters buy little (the recipe's 384-d states of 80 unseen sentences:
    0.52 left with 512, 0.45 with 2048; README, "Speech units")."""
    nearest = centroids[nearest_centroids(points, centroids)]
    spread = ((points - points.mean(0)) ** 2).sum()
    return float(((points - nearest) ** 2).sum() / spread) if spread > 0 else 0.0


class EncoderFrontend(nn.Module):
    """A Whisper encoder's states after `depth` layers (50 Hz), less the mean state at each place in
    Whisper's window where one was fitted (`fit_positions`), averaged in pairs of frames to the unit rate
    and standardized per dimension: a few dimensions of Whisper's states are orders of magnitude larger
    than the rest and would otherwise decide the clusters alone. Then, where one was learnt
    (`CtcRecognizer`), a linear projection that keeps what is said. A padded batch encodes each wave as
    alone (`encode_speech`).

    Why the places: an early layer's state still carries the positional encoding Whisper added to its
    input, so the same sound said 1 s later in the window lands in another cluster for a quarter of its
    frames; a unit then means a sound *at a place*, which the decoder and the TTS LM must both untangle."""

    def __init__(self, settings: FrontendSettings, encoder: WhisperEncoder, depth: int,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None,
                 projection: nn.Linear | None = None, position_mean: torch.Tensor | None = None) -> None:
        super().__init__()
        if not 1 <= depth <= len(encoder.layers):
            raise ValueError(f"depth must be 1..{len(encoder.layers)} (the encoder's layers), got {depth}")
        self.settings, self.encoder, self.depth = settings, encoder.eval(), depth
        self.mel = WhisperLogMel(encoder.config.num_mel_bins)
        states_rate = WhisperLogMel.sample_rate / WhisperLogMel.hop / encoder.conv2.stride[0]
        if states_rate % settings.frame_rate:
            raise ValueError(f"unit rate {settings.frame_rate} Hz must divide the encoder's {states_rate:g} Hz")
        self.pool = int(states_rate // settings.frame_rate)
        dim = encoder.config.d_model
        self.register_buffer("mean", torch.zeros(dim) if mean is None else mean.float())
        self.register_buffer("std", torch.ones(dim) if std is None else std.float())
        self.register_buffer("position_mean", None if position_mean is None else position_mean.float())
        self.projection = projection

    def project(self, standardized: torch.Tensor) -> torch.Tensor:
        """Standardized states -> what k-means clusters: the learnt projection's output, or the states."""
        return standardized if self.projection is None else self.projection(standardized)

    def fit_scale(self, states: torch.Tensor) -> torch.Tensor:
        """Standardize from now on by these states' (frames, d_model) statistics; returns them standardized."""
        self.mean.copy_(states.mean(0))
        self.std.copy_(states.std(0).clamp(min=1e-5))
        return self.standardize(states)

    def standardize(self, states: torch.Tensor) -> torch.Tensor:
        """Pooled states -> standardized by the fitted mean and std."""
        return (states - self.mean) / self.std

    @torch.no_grad()
    def states(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each wave -> its (valid frames, d_model) states at the encoder's rate, as Whisper leaves them."""
        features, lengths = self.mel.batch(waves)
        states = encode_speech(self.encoder, features, lengths, self.depth)
        return [item[:valid] for item, valid in zip(states, encoder_lengths(lengths).tolist())]

    @torch.no_grad()
    def fit_positions(self, batches: Iterable[list[torch.Tensor]], min_waves: int) -> int:
        """Fit the mean state at each place in the window over the waves of `batches`, where at least
        `min_waves` of them reach it; later places take the last such place's. Returns how many places
        that is (an error if none)."""
        places = self.encoder.embed_positions.num_embeddings
        sums, counts = torch.zeros(places, self.encoder.config.d_model), torch.zeros(places, 1)
        for waves in batches:
            for item in self.states(waves):
                sums[:len(item)] += item
                counts[:len(item)] += 1
        covered = int((counts[:, 0] >= min_waves).sum())
        if covered == 0:
            raise ValueError(f"no place in the window is reached by {min_waves} waves: too little speech to "
                             "fit the mean state at each place (units.kmeans.encoder.position_min_waves)")
        mean = sums[:covered] / counts[:covered]
        self.position_mean = torch.cat([mean, mean[-1:].expand(places - covered, -1)])
        return covered

    @torch.no_grad()
    def features(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each wave -> (settings.frames(samples), d_model) standardized states."""
        out = []
        for wave, item in zip(waves, self.states(waves)):
            if self.position_mean is not None:
                item = item - self.position_mean[:len(item)]
            item = torch.cat([item, item[-1:].expand(-len(item) % self.pool, -1)])  # a whole last group
            pooled = item.view(-1, self.pool, item.shape[-1]).mean(1)
            frames = self.settings.frames(len(wave))
            pooled = torch.cat([pooled, pooled[-1:].expand(max(0, frames - len(pooled)), -1)])[:frames]
            out.append(self.project(self.standardize(pooled)))
        return out


class CtcRecognizer(nn.Module):
    """Learns the projection of `EncoderFrontend` by recognizing the speech's text through it: each
    frame projected alone (what k-means will cluster), then convolutions over neighbouring frames, then
    per-frame symbol logits for CTC (symbol 0 is the blank). The projection sees one frame, so it must
    keep in every frame what a recognizer needs there."""

    def __init__(self, in_dim: int, dim: int, channels: int, layers: int, kernel: int, symbols: int) -> None:
        super().__init__()
        self.projection = nn.Linear(in_dim, dim)
        convs: list[nn.Module] = []
        for layer in range(layers):
            convs += [nn.Conv1d(dim if layer == 0 else channels, channels, kernel, padding=kernel // 2), nn.GELU()]
        self.context = nn.Sequential(*convs)
        self.head = nn.Linear(channels, symbols + 1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(batch, frames, in_dim) standardized states -> (batch, frames, symbols + 1) log-probabilities."""
        hidden = self.context(self.projection(frames).transpose(1, 2)).transpose(1, 2)
        return self.head(hidden).log_softmax(-1)


class KMeansUnitTokenizer(nn.Module):
    """Wave -> unit ids (nearest centroid of each 40 ms frame of the frontend's features)."""

    def __init__(self, frontend: LogMelFrontend | EncoderFrontend, centroids: torch.Tensor) -> None:
        super().__init__()
        self.settings = frontend.settings
        self.frontend = frontend
        self.register_buffer("centroids", centroids.float())

    @property
    def vocab_size(self) -> int:
        return len(self.centroids)

    @property
    def frame_rate(self) -> int:
        return self.settings.frame_rate

    @torch.no_grad()
    def encode(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        return [nearest_centroids(f, self.centroids) for f in self.frontend.features(waves)]

    def describe(self) -> dict:
        return {"backend": "kmeans", "vocab_size": self.vocab_size, **asdict(self.settings)}
