"""One mel spectrogram module for every mel this project computes (they differ only in settings)."""

from __future__ import annotations

import torch
from torch import nn
from transformers.audio_utils import mel_filter_bank


class MelSpectrogram(nn.Module):
    """Slaney mel filters over an STFT; returns (n_mels, frames), frames = samples // hop + 1."""

    def __init__(self, sample_rate: int, n_fft: int, hop: int, n_mels: int, fmax: float, power: float,
                 pad_mode: str) -> None:
        super().__init__()
        self.n_fft, self.hop, self.power, self.pad_mode = n_fft, hop, power, pad_mode
        filters = mel_filter_bank(1 + n_fft // 2, n_mels, 0.0, fmax, sample_rate, norm="slaney", mel_scale="slaney")
        self.register_buffer("filters", torch.tensor(filters, dtype=torch.float32), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(wave, self.n_fft, self.hop, window=self.window, center=True, pad_mode=self.pad_mode,
                              return_complex=True).abs() ** self.power
        return self.filters.T @ spectrum


class WhisperLogMel(nn.Module):
    """Whisper's input features (16 kHz, 25 ms window, 10 ms hop, log10 clamped 8 decades below the
    peak, scaled) for any length: no padding to 30 s, so the frames are T = samples // 160."""

    sample_rate, n_fft, hop = 16000, 400, 160

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.mel = MelSpectrogram(self.sample_rate, self.n_fft, self.hop, n_mels, self.sample_rate / 2, power=2.0,
                                  pad_mode="reflect")

    def batch(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Waves of any lengths -> (B, n_mels, T_max) zero-padded features and their frame counts."""
        mels = [self(wave) for wave in waves]
        lengths = torch.tensor([m.shape[1] for m in mels])
        features = mels[0].new_zeros(len(mels), mels[0].shape[0], int(lengths.max()))
        for i, mel in enumerate(mels):
            features[i, :, : mel.shape[1]] = mel
        return features, lengths

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        log_spec = self.mel(wave)[..., :-1].clamp(min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.amax(dim=(-2, -1), keepdim=True) - 8.0)
        return (log_spec + 4.0) / 4.0
