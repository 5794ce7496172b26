"""One mel spectrogram module for every mel this project computes (they differ only in settings)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

# The model's input rate: every Whisper encoder (tiny to large-v3) takes 16 kHz features (its feature
# extractor's `sampling_rate`). The speech datasets' `audio` column, the ASR and DNSMOS use it too.
INPUT_SAMPLE_RATE = 16000
SLANEY_LINEAR_HZ = 1000.0  # below this the Slaney mel scale is linear
SLANEY_MELS_PER_HZ = 3.0 / 200.0
SLANEY_BREAK_MEL = SLANEY_LINEAR_HZ * SLANEY_MELS_PER_HZ
SLANEY_LOG_STEP = math.log(6.4) / 27.0  # log-Hz per mel above the linear part


def hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    above = SLANEY_BREAK_MEL + np.log(np.maximum(hz, SLANEY_LINEAR_HZ) / SLANEY_LINEAR_HZ) / SLANEY_LOG_STEP
    return np.where(hz >= SLANEY_LINEAR_HZ, above, hz * SLANEY_MELS_PER_HZ)


def slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    above = SLANEY_LINEAR_HZ * np.exp(SLANEY_LOG_STEP * (mel - SLANEY_BREAK_MEL))
    return np.where(mel >= SLANEY_BREAK_MEL, above, mel / SLANEY_MELS_PER_HZ)


def slaney_mel_filters(n_freqs: int, n_mels: int, fmin: float, fmax: float, sample_rate: int) -> np.ndarray:
    """(n_freqs, n_mels) triangular filters, equally spaced on the Slaney mel scale and area-normalized,
    the filters librosa and Whisper use. Written here because importing transformers for them costs
    every worker process a second at start-up."""
    edges = slaney_mel_to_hz(np.linspace(hz_to_slaney_mel(np.array(fmin)), hz_to_slaney_mel(np.array(fmax)),
                                         n_mels + 2))
    bins = np.linspace(0, sample_rate // 2, n_freqs)
    offsets = edges[None, :] - bins[:, None]
    widths = np.diff(edges)
    rising = -offsets[:, :-2] / widths[:-1]
    falling = offsets[:, 2:] / widths[1:]
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return triangles * (2.0 / (edges[2:] - edges[:-2]))[None, :]


class MelSpectrogram(nn.Module):
    """Slaney mel filters over an STFT; returns (n_mels, frames), frames = samples // hop + 1."""

    def __init__(self, sample_rate: int, n_fft: int, hop: int, n_mels: int, fmax: float, power: float,
                 pad_mode: str) -> None:
        super().__init__()
        self.n_fft, self.hop, self.power, self.pad_mode = n_fft, hop, power, pad_mode
        filters = slaney_mel_filters(1 + n_fft // 2, n_mels, 0.0, fmax, sample_rate)
        self.register_buffer("filters", torch.tensor(filters, dtype=torch.float32), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(wave, self.n_fft, self.hop, window=self.window, center=True, pad_mode=self.pad_mode,
                              return_complex=True).abs() ** self.power
        return self.filters.T @ spectrum


class WhisperLogMel(nn.Module):
    """Whisper's input features (16 kHz, 25 ms window, 10 ms hop, log10 clamped 8 decades below the
    peak, scaled) for any length: no padding to 30 s, so the frames are T = samples // 160."""

    sample_rate, n_fft, hop = INPUT_SAMPLE_RATE, 400, 160

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
