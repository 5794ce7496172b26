"""The units -> audio step of benchmarks/gpu.py: CosyVoice 2's flow matching + HiFT at their real
widths and depths, as a stand-in (their code and weights are not on the GPU machine). Time depends
on shapes, not weights: a 6-block, 512-wide transformer token encoder with 2x upsampling to 50 Hz mel
frames; a flow-matching estimator of 14 stages (one down, 12 mid, one up, as CosyVoice 2's U-Net),
each a 1-D conv residual block and 4 transformer blocks 256 wide, run for 10 Euler steps with
classifier-free guidance (a batch of 2); a HiFT-shaped vocoder (512 base channels, upsampling
8 x 5 x 3, resblocks of kernels 3/7/11, a 16-point iSTFT head, 24 kHz)."""

from __future__ import annotations

import torch
from torch import nn


class _EstimatorStage(nn.Module):
    def __init__(self, width: int, blocks: int, heads: int) -> None:
        super().__init__()
        self.res = nn.Sequential(nn.Conv1d(width, width, 3, padding=1), nn.GroupNorm(8, width), nn.Mish(),
                                 nn.Conv1d(width, width, 3, padding=1), nn.GroupNorm(8, width), nn.Mish())
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(width, heads, 4 * width, batch_first=True,
                                                               norm_first=True, activation="gelu")
                                    for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.res(x)
        h = x.transpose(1, 2)
        for block in self.blocks:
            h = block(h)
        return h.transpose(1, 2)


class _ResBlock(nn.Module):
    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Sequential(nn.LeakyReLU(0.1), nn.Conv1d(channels, channels, kernel, dilation=d,
                                                                               padding=d * (kernel - 1) // 2),
                                                 nn.LeakyReLU(0.1), nn.Conv1d(channels, channels, kernel,
                                                                               padding=(kernel - 1) // 2))
                                   for d in (1, 3, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(x)
        return x


class DecoderStandIn(nn.Module):
    """Units -> 24 kHz audio at CosyVoice 2's flow matching + HiFT shapes (module docstring)."""

    MEL, TOKEN_MEL_RATIO, CFG, N_FFT, HOP = 80, 2, 0.7, 16, 4

    def __init__(self, units: int, width: int, heads: int, encoder_blocks: int, estimator_width: int,
                 estimator_stages: int, estimator_blocks: int, euler_steps: int, vocoder_width: int,
                 first_chunk: int) -> None:
        super().__init__()
        self.first_chunk, self.euler_steps = first_chunk, euler_steps
        self.embed = nn.Embedding(units, width)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(width, heads, 4 * width, batch_first=True,
                                                                        norm_first=True), encoder_blocks)
        self.to_mel = nn.Linear(width, self.MEL)
        self.estimator_in = nn.Conv1d(4 * self.MEL, estimator_width, 1)  # x, mu, speaker, prompt mel
        self.estimator = nn.ModuleList(_EstimatorStage(estimator_width, estimator_blocks, heads)
                                       for _ in range(estimator_stages))
        self.estimator_out = nn.Conv1d(estimator_width, self.MEL, 1)
        channels = [vocoder_width // 2 ** i for i in range(4)]
        self.vocoder_in = nn.Conv1d(self.MEL, channels[0], 7, padding=3)
        self.upsample = nn.ModuleList(nn.ConvTranspose1d(channels[i], channels[i + 1], k, u, padding=(k - u) // 2)
                                      for i, (u, k) in enumerate(((8, 16), (5, 11), (3, 7))))
        self.resblocks = nn.ModuleList(nn.ModuleList(_ResBlock(channels[i + 1], k) for k in (3, 7, 11))
                                       for i in range(3))
        self.vocoder_out = nn.Conv1d(channels[3], 2 * (self.N_FFT // 2 + 1), 7, padding=3)
        self.register_buffer("window", torch.hann_window(self.N_FFT), persistent=False)

    def mel(self, units: torch.Tensor) -> torch.Tensor:
        mu = self.to_mel(self.encoder(self.embed(units[None]))).repeat_interleave(self.TOKEN_MEL_RATIO, dim=1)
        mu = mu.transpose(1, 2)
        x = torch.randn_like(mu)
        condition = torch.zeros_like(mu).repeat(1, 2, 1)  # speaker embedding and prompt mel, broadcast
        for step in range(self.euler_steps):
            both = torch.cat([torch.cat([x, mu, condition], 1), torch.cat([x, torch.zeros_like(mu), condition], 1)])
            h = self.estimator_in(both)
            for stage in self.estimator:
                h = stage(h)
            velocity = self.estimator_out(h)
            guided = (1 + self.CFG) * velocity[:1] - self.CFG * velocity[1:]
            x = x + guided / self.euler_steps
        return x

    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        return self.istft(self.spectrum(mel))

    def istft(self, spectrum: torch.Tensor) -> torch.Tensor:
        """The iSTFT head's last step (apart: it checks its window on the host, so no graph holds it)."""
        return torch.istft(spectrum, self.N_FFT, self.HOP, self.N_FFT, window=self.window.float())

    def spectrum(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.vocoder_in(mel)
        for up, blocks in zip(self.upsample, self.resblocks):
            h = up(nn.functional.leaky_relu(h, 0.1))
            h = sum(block(h) for block in blocks) / len(blocks)
        spec = self.vocoder_out(nn.functional.leaky_relu(h)).float()
        half = spec.shape[1] // 2
        return torch.polar(spec[:, :half].exp().clamp(max=1e2), torch.sin(spec[:, half:]))

    @torch.no_grad()
    def forward(self, units: list[int]) -> torch.Tensor:
        return self.vocode(self.mel(torch.tensor(units, device=self.window.device)))
