"""The offline default speech tokenizer: log-mel frames at 25 Hz clustered by k-means.

CosyVoice 2's S3 tokenizer (25 Hz, 6561 codes) needs hub weights; this one is fitted on our own
data in minutes on a CPU, at the same frame rate, so everything downstream (read-write schedule,
units -> audio) is the same code for both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from omniforge.model.mel import INPUT_SAMPLE_RATE, MelSpectrogram


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

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(samples,) float wave -> (frames, n_mels) log-mel, per-utterance mean removed."""
        mel = torch.log10(self.mel(wave).T.clamp(min=1e-10))
        return mel - mel.mean(dim=0, keepdim=True)


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
        assignment = torch.cdist(points, centroids).argmin(-1)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=k).unsqueeze(-1)
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)  # empty cluster: keep
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids


class KMeansUnitTokenizer(nn.Module):
    """Wave -> unit ids (nearest centroid of each 40 ms log-mel frame)."""

    def __init__(self, settings: FrontendSettings, centroids: torch.Tensor) -> None:
        super().__init__()
        self.settings = settings
        self.frontend = LogMelFrontend(settings)
        self.register_buffer("centroids", centroids.float())

    @property
    def vocab_size(self) -> int:
        return len(self.centroids)

    @property
    def frame_rate(self) -> int:
        return self.settings.frame_rate

    @torch.no_grad()
    def encode(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.cdist(self.frontend(w), self.centroids).argmin(-1) for w in waves]

    def describe(self) -> dict:
        return {"backend": "kmeans", "vocab_size": self.vocab_size, **asdict(self.settings)}
