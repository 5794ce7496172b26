"""Units back to audio, offline default: learned units -> mel, then the pretrained HiFi-GAN.

`UnitAudioDecoder.stream` takes unit chunks as the TTS LM writes them and yields audio as soon as
it is exact: a sample is emitted once every mel frame within the vocoder's receptive field, and
every unit within the mel network's, is known. So the chunks concatenate to the one-shot decode,
and the look-ahead (latency) is those two receptive fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch.nn import functional as F

from model.unit_vocoder import MelGrid, UnitToMel, UnitToMelSettings
from tasks.vocoder import load_hifigan

VOCODER_CONTEXT_FRAMES = 13  # HiFi-GAN V1 (universal): one mel frame reaches 12.5 frames each way


class UnitDecoder(Protocol):
    """Units back to audio, whichever the backend: this one, or CosyVoice 2's (tasks.cosyvoice)."""

    @property
    def sample_rate(self) -> int: ...

    def lookahead_units(self) -> int:
        """Units that must be known before a sample can be emitted (the streaming latency)."""

    def decode(self, units: list[int]) -> np.ndarray:
        """All the audio at once."""

    def stream(self, chunks: Iterable[list[int]]) -> Iterator[np.ndarray]:
        """Audio chunks as the unit chunks arrive."""


class UnitAudioDecoder:
    def __init__(self, unit_to_mel: UnitToMel, vocoder: torch.nn.Module, vocoder_context: int = VOCODER_CONTEXT_FRAMES):
        self.unit_to_mel = unit_to_mel.eval()
        self.vocoder = vocoder
        self.grid = unit_to_mel.grid
        self.mel_context = unit_to_mel.settings.receptive_field
        self.vocoder_context = vocoder_context

    @property
    def sample_rate(self) -> int:
        return self.grid.sample_rate

    def lookahead_units(self) -> int:
        """Units that must follow a sample before it can be emitted (the streaming latency)."""
        frames = self.mel_context + self.vocoder_context + 1
        return -(-frames * self.grid.hop // self.grid.samples_per_unit)

    @torch.no_grad()
    def _samples(self, units: torch.Tensor, start: int, stop: int, final: bool) -> np.ndarray:
        """Samples [start, stop) given the units known so far (all of them when final)."""
        hop, grid = self.grid.hop, self.grid
        known_frames = grid.frames_for_samples(grid.samples(len(units)))
        first, last = start // hop, -(-stop // hop)
        voc0, voc1 = max(0, first - self.vocoder_context), min(known_frames, last + self.vocoder_context)
        mel0, mel1 = max(0, voc0 - self.mel_context), min(known_frames, voc1 + self.mel_context)
        mel = self.unit_to_mel(self.unit_to_mel.frame_inputs(units, mel0, mel1)[None])[0]
        wave = self.vocoder(mel[None, :, voc0 - mel0: voc1 - mel0])[0, 0]
        return wave[start - voc0 * hop: stop - voc0 * hop].numpy()

    def decode(self, units: list[int]) -> np.ndarray:
        """One-shot: exactly len(units) / unit_rate seconds of audio."""
        return self._samples(torch.tensor(units), 0, self.grid.samples(len(units)), final=True)

    def stream(self, chunks: Iterable[list[int]]) -> Iterator[np.ndarray]:
        units: list[int] = []
        emitted = 0
        for chunk in chunks:
            units.extend(chunk)
            ready = self._exact_until(len(units))
            if ready > emitted:
                yield self._samples(torch.tensor(units), emitted, ready, final=False)
                emitted = ready
        total = self.grid.samples(len(units))
        if total > emitted:
            yield self._samples(torch.tensor(units), emitted, total, final=True)

    def _exact_until(self, n_units: int) -> int:
        """First sample not yet exact when only `n_units` units are known."""
        grid = self.grid
        frames_known = grid.frames_for_samples(grid.samples(n_units))
        # a mel frame is exact if the frames within mel_context of it have known units
        exact_frames = frames_known - self.mel_context - self.vocoder_context - 1
        return max(0, min(exact_frames * grid.hop, grid.samples(n_units)))


def train_unit_to_mel(pairs: list[tuple[torch.Tensor, torch.Tensor]], settings: UnitToMelSettings, grid: MelGrid,
                      steps: int, batch_size: int, crop_frames: int, lr: float, seed: int,
                      log_every: int = 100) -> tuple[UnitToMel, list[float]]:
    """pairs: (units, target mel (n_mels, frames)). Random crops, L1 loss, Adam."""
    torch.manual_seed(seed)
    model = UnitToMel(settings, grid)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        inputs, targets = [], []
        for index in torch.randint(len(pairs), (batch_size,), generator=generator).tolist():
            units, mel = pairs[index]
            length = min(crop_frames, mel.shape[1])
            start = int(torch.randint(mel.shape[1] - length + 1, (1,), generator=generator))
            x = model.frame_inputs(units, start, start + length)
            y = mel[:, start:start + length]
            pad = crop_frames - length
            inputs.append(F.pad(x, (0, pad)))
            targets.append(F.pad(y, (0, pad), value=float("nan")))
        target = torch.stack(targets)
        predicted = model(torch.stack(inputs))
        valid = ~torch.isnan(target)
        loss = (predicted[valid] - target[valid]).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if log_every and step % log_every == 0:
            print(f"unit-to-mel step {step}/{steps} loss {loss:.4f}", flush=True)
    return model.eval(), losses


def save_decoder(model: UnitToMel) -> dict[str, bytes]:
    return {"unit_to_mel.safetensors": save_safetensors(dict(model.state_dict())),
            "decoder.json": json.dumps(model.describe(), indent=2).encode()}


def load_decoder(files: dict[str, bytes], vocoder: str = "universal") -> UnitAudioDecoder:
    description = json.loads(files["decoder.json"])
    model = UnitToMel(UnitToMelSettings(**description["unit_to_mel"]), MelGrid(**description["grid"]))
    model.load_state_dict(load_safetensors(files["unit_to_mel.safetensors"]))
    return UnitAudioDecoder(model, load_hifigan(vocoder))

