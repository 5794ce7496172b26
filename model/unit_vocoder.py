"""Units -> mel: the learned half of the offline units-to-audio path (a pretrained HiFi-GAN
turns the mel into a wave).

Everything is indexed on one time grid so that chunked decoding equals one-shot decoding: unit i
covers samples [i*S, (i+1)*S) at the vocoder's rate (S = rate / unit rate), mel frame j is centred
on sample j*hop and reads unit floor(j*hop / S). The network is convolutional with a known
receptive field, so a span of frames computed with that much context on each side is exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from omniforge.model.mel import MelSpectrogram


@dataclass(frozen=True)
class MelGrid:
    """HiFi-GAN's mel (22.05 kHz, 80 bins, n_fft 1024, hop 256, fmax 8 kHz) and the unit rate."""

    sample_rate: int = 22050
    n_mels: int = 80
    n_fft: int = 1024
    hop: int = 256
    fmax: float = 8000.0
    unit_rate: int = 25

    @property
    def samples_per_unit(self) -> int:
        return self.sample_rate // self.unit_rate

    def samples(self, units: int) -> int:
        return units * self.samples_per_unit

    def frames_for_samples(self, samples: int) -> int:
        """Mel frames whose vocoder output covers `samples` samples."""
        return -(-samples // self.hop)

    def unit_of_frames(self, frames: torch.Tensor, n_units: int) -> torch.Tensor:
        return (frames * self.hop // self.samples_per_unit).clamp(max=n_units - 1)


class HifiMel(nn.Module):
    """log(clamp(mel(|STFT|), 1e-7)), as the HiFi-GAN checkpoints were trained on."""

    def __init__(self, grid: MelGrid) -> None:
        super().__init__()
        self.grid = grid
        self.mel = MelSpectrogram(grid.sample_rate, grid.n_fft, grid.hop, grid.n_mels, grid.fmax, power=1.0,
                                  pad_mode="reflect")

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(samples,) -> (n_mels, samples // hop + 1)."""
        return torch.log(self.mel(wave).clamp(min=1e-7))


@dataclass(frozen=True)
class UnitToMelSettings:
    vocab_size: int
    embed_dim: int = 128
    channels: int = 256
    layers: int = 4
    kernel: int = 5
    dilation_cycle: int = 1  # layer i's dilation is 2 ** (i % dilation_cycle): 1 keeps every layer undilated

    def dilations(self) -> list[int]:
        return [2 ** (i % self.dilation_cycle) for i in range(self.layers)]

    @property
    def receptive_field(self) -> int:
        """Mel frames each side that influence one output frame."""
        return sum(self.dilations()) * (self.kernel // 2)


class UnitToMel(nn.Module):
    """Unit embedding per mel frame, plus where in its unit the frame falls, then a residual
    convolution stack (its layers dilated where `dilation_cycle` asks, to see more units at the same depth)."""

    def __init__(self, settings: UnitToMelSettings, grid: MelGrid) -> None:
        super().__init__()
        self.settings, self.grid = settings, grid
        self.embed = nn.Embedding(settings.vocab_size, settings.embed_dim)
        self.inp = nn.Conv1d(settings.embed_dim + 1, settings.channels, 1)
        self.convs = nn.ModuleList(nn.Conv1d(settings.channels, settings.channels, settings.kernel, dilation=d,
                                             padding=d * (settings.kernel // 2)) for d in settings.dilations())
        self.out = nn.Conv1d(settings.channels, grid.n_mels, 1)

    def frame_inputs(self, units: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Inputs of frames [start, stop) of an utterance whose units are `units` (all known)."""
        frames = torch.arange(start, stop, device=units.device)
        phase = (frames * self.grid.hop % self.grid.samples_per_unit).float() / self.grid.samples_per_unit
        embedded = self.embed(units[self.grid.unit_of_frames(frames, len(units))])
        return torch.cat([embedded, phase[:, None]], dim=-1).T

    def forward(self, frame_inputs: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim + 1, frames) -> (B, n_mels, frames)."""
        hidden = self.inp(frame_inputs)
        for conv in self.convs:
            hidden = hidden + F.gelu(conv(hidden))
        return self.out(hidden)

    def describe(self) -> dict:
        return {"unit_to_mel": asdict(self.settings), "grid": asdict(self.grid)}
