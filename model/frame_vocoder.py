"""Mel -> wave at the mel's frame rate: a ConvNeXt stack predicts each frame's STFT (magnitude and
phase) and an inverse STFT overlap-adds them (the Vocos design, arXiv 2306.00814).

HiFi-GAN upsamples to the sample rate inside the network, so most of its work runs 256 times per
frame; here every layer runs once per frame and the FFT does the upsampling, which makes it tens of
times cheaper on a CPU. It takes the same mel (`HifiMel`, `MelGrid`) and gives the same samples per
frame, so it drops in where HiFi-GAN goes: frame j's window is centred on sample j * hop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from omniforge.model.unit_vocoder import MelGrid


@dataclass(frozen=True)
class FrameVocoderSettings:
    dim: int = 256
    hidden: int = 768
    layers: int = 8
    kernel: int = 7
    layer_scale: float = 0.1   # residual branches start small, so the stack starts near its input
    max_log_magnitude: float = 4.6  # exp(4.6) ~ 100: a bound on any STFT bin, as Vocos clips

    @property
    def receptive_field(self) -> int:
        """Frames each side that influence one output frame (input conv, blocks, and the inverse
        STFT's window overlap)."""
        return (self.layers + 1) * (self.kernel // 2) + 2


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, kernel: int, layer_scale: float) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.up, self.down = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.scale = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim, frames) -> same."""
        y = self.norm(self.depthwise(x).transpose(1, 2))
        return x + (self.scale * self.down(F.gelu(self.up(y)))).transpose(1, 2)


class FrameVocoder(nn.Module):
    def __init__(self, settings: FrameVocoderSettings, grid: MelGrid) -> None:
        super().__init__()
        self.settings, self.grid = settings, grid
        self.inp = nn.Conv1d(grid.n_mels, settings.dim, settings.kernel, padding=settings.kernel // 2)
        self.norm = nn.LayerNorm(settings.dim)
        self.blocks = nn.ModuleList(ConvNeXtBlock(settings.dim, settings.hidden, settings.kernel, settings.layer_scale)
                                    for _ in range(settings.layers))
        self.out_norm = nn.LayerNorm(settings.dim)
        self.head = nn.Linear(settings.dim, grid.n_fft + 2)  # log magnitude and phase of n_fft // 2 + 1 bins
        self.register_buffer("window", torch.hann_window(grid.n_fft), persistent=False)

    def log_polar(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_mels, frames) log mel -> each STFT bin's log magnitude and phase, (B, n_fft // 2 + 1,
        frames) each: what training compares, without complex arithmetic in the backward pass."""
        x = self.norm(self.inp(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        log_magnitude, phase = self.head(self.out_norm(x.transpose(1, 2))).transpose(1, 2).chunk(2, dim=1)
        return log_magnitude.clamp(max=self.settings.max_log_magnitude), phase

    def spectrum(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) log mel -> (B, n_fft // 2 + 1, frames) complex STFT."""
        log_magnitude, phase = self.log_polar(mel)
        return torch.polar(torch.exp(log_magnitude), phase)

    def waveform(self, spectrum: torch.Tensor) -> torch.Tensor:
        """(B, bins, frames) complex -> (B, frames * hop) samples."""
        return torch.istft(spectrum, self.grid.n_fft, self.grid.hop, window=self.window, center=True,
                           length=spectrum.shape[-1] * self.grid.hop)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) -> (B, 1, frames * hop), as HiFi-GAN's generator."""
        return self.waveform(self.spectrum(mel))[:, None]

    def describe(self) -> dict:
        return {"frame_vocoder": asdict(self.settings), "grid": asdict(self.grid)}
