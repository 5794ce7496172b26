"""Training the frame vocoder (`units.decoder.vocoder: frame`) on the speech its decoder speaks.

Each utterance gives two examples with the same target, its real audio: its real mel, and the mel
the units -> mel network makes from its units (smoother than a real one: what the vocoder hears
when the model speaks). There is no adversarial loss (a GAN needs far more steps than a CPU run
affords): the loss compares spectra, the predicted STFT with the real one (log magnitude, its
log mel, which weighs the low bins that carry the words as the mel does, and power-compressed
complex values so that loud bins also teach the phase), and the overlap-added wave's spectra at a
finer and a coarser resolution than the vocoder's own, which only a consistent phase matches.
Frames near a crop's edges are left out of the loss, as the convolutions and the inverse STFT see
padding there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from omniforge.config.units import FrameVocoderConfig
from omniforge.model.frame_vocoder import FrameVocoder, FrameVocoderSettings
from omniforge.model.unit_vocoder import HifiMel, MelGrid, UnitToMel

LOG_FLOOR = 1e-5            # below any audible STFT magnitude; keeps log() finite on silence
COMPRESSION = 0.3           # magnitude exponent of the complex loss (speech enhancement's usual choice)
EDGE_FRAMES = 4             # crop frames at each end left out of the loss (the inverse STFT's window overlap and more)
WAVE_RESOLUTIONS = ((512, 128), (2048, 512))  # (n_fft, hop) of the wave-level spectral losses
MEL_WEIGHT = 1.0            # of the log-mel distance (the demo's true units resynthesized: ASR-WER 0.22 without, 0.16 with)
ADAM_BETAS = (0.8, 0.99)    # as vocoders are usually trained (HiFi-GAN, Vocos)
MAX_GRAD_NORM = 1.0


@dataclass
class SpokenUnits:
    """One utterance of a decoder's training speech."""

    units: torch.Tensor  # (n,)
    mel: torch.Tensor    # (n_mels, frames) its real log mel
    wave: torch.Tensor   # (frames * hop,) its audio at the vocoder's rate


@dataclass
class VocoderExample:
    mel: torch.Tensor   # (n_mels, frames) log mel
    wave: torch.Tensor  # (frames * hop,) the audio it should become


def new_frame_vocoder(settings: FrameVocoderConfig, grid: MelGrid) -> FrameVocoder:
    """An untrained frame vocoder of the configured sizes."""
    return FrameVocoder(FrameVocoderSettings(dim=settings.dim, hidden=settings.hidden, layers=settings.layers,
                                             kernel=settings.kernel), grid)


@torch.no_grad()
def vocoder_examples(speech: list[SpokenUnits], unit_to_mel: UnitToMel) -> list[VocoderExample]:
    """Each utterance twice: from its real mel, and from the mel `unit_to_mel` makes of its units."""
    examples = []
    for item in speech:
        frames = item.mel.shape[1]
        made = unit_to_mel(unit_to_mel.frame_inputs(item.units, 0, frames)[None])[0]
        examples += [VocoderExample(item.mel, item.wave), VocoderExample(made, item.wave)]
    return examples


def _log_distance(magnitude: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (torch.log(magnitude + LOG_FLOOR) - torch.log(target + LOG_FLOOR)).abs().mean()


def spectral_loss(model: FrameVocoder, mel: torch.Tensor, wave: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """mel (B, n_mels, frames), wave (B, (frames + n_fft / hop - 1) * hop) reflect-padded by n_fft / 2
    each side, so that its uncentred STFT has exactly the mel's frames; filters (bins, n_mels), the
    mel's. The predicted spectrum is compared through its log magnitude and phase, in real arithmetic
    (complex values' backward is most of a step's time otherwise), and the targets are computed
    without gradients."""
    grid = model.grid
    inner = slice(EDGE_FRAMES, -EDGE_FRAMES)
    log_magnitude, phase = model.log_polar(mel)
    samples = slice(EDGE_FRAMES * grid.hop, -EDGE_FRAMES * grid.hop)
    made = model.waveform(torch.polar(torch.exp(log_magnitude), phase))[:, samples]
    with torch.no_grad():
        target = torch.stft(wave, grid.n_fft, grid.hop, window=model.window, center=False,
                            return_complex=True)[..., inner]
        target_magnitude = target.abs()
        target_log = torch.log(target_magnitude + LOG_FLOOR)
        target_mel = torch.log((filters.T @ target_magnitude).clamp(min=LOG_FLOOR))
        target_compressed = torch.view_as_real(target * (target_magnitude + LOG_FLOOR) ** (COMPRESSION - 1))
        real = wave[:, grid.n_fft // 2:][:, : mel.shape[-1] * grid.hop][:, samples]
    log_magnitude, phase = log_magnitude[..., inner], phase[..., inner]
    compressed = torch.exp(COMPRESSION * log_magnitude)
    loss = (log_magnitude - target_log).abs().mean()
    loss = loss + MEL_WEIGHT * (torch.log((filters.T @ torch.exp(log_magnitude)).clamp(min=LOG_FLOOR)) - target_mel).abs().mean()
    loss = loss + ((compressed * torch.cos(phase) - target_compressed[..., 0]).square()
                   + (compressed * torch.sin(phase) - target_compressed[..., 1]).square()).mean()
    for n_fft, hop in WAVE_RESOLUTIONS:
        window = torch.hann_window(n_fft)
        a = torch.stft(made, n_fft, hop, window=window, return_complex=True).abs()
        with torch.no_grad():
            b = torch.stft(real, n_fft, hop, window=window, return_complex=True).abs()
        loss = loss + _log_distance(a, b) + (a - b).norm() / b.norm().clamp(min=LOG_FLOOR)
    return loss


def train_frame_vocoder(examples: list[VocoderExample], settings: FrameVocoderConfig, grid: MelGrid,
                        log_every: int = 100) -> tuple[FrameVocoder, list[float]]:
    """Random crops of `settings.crop_frames` frames, AdamW with a one-cycle learning rate."""
    torch.manual_seed(settings.seed)
    model = new_frame_vocoder(settings, grid)
    half = grid.n_fft // 2
    usable = [(e.mel, F.pad(e.wave[None, None], (half, half), mode="reflect")[0, 0]) for e in examples
              if e.mel.shape[1] >= settings.crop_frames]
    if not usable:
        raise ValueError(f"units.decoder.frame.crop_frames: no utterance has {settings.crop_frames} mel frames")
    filters = HifiMel(grid).mel.filters
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=ADAM_BETAS)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=settings.steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(settings.seed)
    crop, hop = settings.crop_frames, grid.hop
    losses = []
    for step in range(settings.steps):
        mels, waves = [], []
        for index in torch.randint(len(usable), (settings.batch_size,), generator=generator).tolist():
            mel, padded = usable[index]
            start = int(torch.randint(mel.shape[1] - crop + 1, (1,), generator=generator))
            mels.append(mel[:, start:start + crop])
            waves.append(padded[start * hop: (start + crop - 1) * hop + grid.n_fft])
        loss = spectral_loss(model, torch.stack(mels), torch.stack(waves), filters)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if log_every and step % log_every == 0:
            print(f"frame vocoder step {step}/{settings.steps} loss {np.mean(losses[-log_every:]):.4f}", flush=True)
    return model.eval().requires_grad_(False), losses
