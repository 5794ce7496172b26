"""What a learned units -> audio decoder trains on: each units row joined with its speech row, the
real mel and audio of each utterance at the vocoder's rate, and the other voices' speech for the
frame vocoder."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from omniforge.errors import InputError
from omniforge.model.unit_vocoder import HifiMel, MelGrid
from omniforge.storage import ArtifactStore, Kind, Manifest
from omniforge.storage.audio import decode_audio
from omniforge.tasks.common.audio_ops import resample
from omniforge.tasks.units.frame_vocoder import SpokenUnits, VocoderExample


class DecoderNeedsAudio(InputError):
    """A learned decoder was asked to train on a speech version that holds no audio for its units."""


def paired_rows(store: ArtifactStore, units: Manifest) -> list[dict]:
    """Units rows joined with their speech rows (text, 16 kHz audio, native audio); rows without any
    audio (a VocalNet import's answers: tokens only) are left out, and none left is an error."""
    speech = store.manifest(units.parent_of(Kind.speech))
    by_id = {r["utterance_id"]: r for r in store.read_table(units).to_pylist()}
    rows = []
    for batch in store.iter_batches(speech, columns=["utterance_id", "text", "audio", "audio_native"]):
        for row in batch.to_pylist():
            if row["utterance_id"] in by_id and training_audio(row) is not None:
                rows.append({**row, "units": by_id[row["utterance_id"]]["units"]})
    if by_id and not rows:
        raise DecoderNeedsAudio(f"{speech.ref()} holds no audio for the utterances of {units.ref()}: a learned "
                                "units -> audio decoder trains on their audio (tokens alone, as a VocalNet import "
                                "stores them, need units.decoder.backend=cosyvoice2 with its weights)")
    return rows


def training_audio(row: dict) -> bytes | None:
    """A speech row's audio at its native rate, else its 16 kHz audio (versions made without native
    audio), else None."""
    for column in ("audio_native", "audio"):
        if row.get(column) and row[column].get("bytes"):
            return row[column]["bytes"]
    return None


def _mel_and_wave(audio: bytes, mel: HifiMel, units: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """An utterance's real mel and its audio at the vocoder's rate, as many frames as `units` units
    cover (all of them when None)."""
    grid = mel.grid
    wave, rate = decode_audio(audio)
    wave = torch.from_numpy(resample(wave, rate, grid.sample_rate)).float()
    target = mel(wave)
    frames = target.shape[1] - 1 if units is None else min(target.shape[1], grid.frames_for_samples(grid.samples(units)))
    return target[:, :frames], F.pad(wave[: frames * grid.hop], (0, max(0, frames * grid.hop - len(wave))))


def training_speech(rows: list[dict], grid: MelGrid) -> list[SpokenUnits]:
    """Each row's units with its real mel and audio at the vocoder's rate, cut to the units' frames."""
    mel = HifiMel(grid)
    return [SpokenUnits(torch.tensor(row["units"]), *_mel_and_wave(training_audio(row), mel, len(row["units"])))
            for row in rows]


def other_voices(store: ArtifactStore, units: Manifest, grid: MelGrid) -> list[VocoderExample]:
    """The turns of `units`' speech version that it has no units for (the users' voices): real mels
    and their audio, more for a vocoder to learn from."""
    tokenized = set(store.read_table(units, columns=["utterance_id"]).column("utterance_id").to_pylist())
    mel = HifiMel(grid)
    return [VocoderExample(*_mel_and_wave(training_audio(row), mel))
            for batch in store.iter_batches(store.manifest(units.parent_of(Kind.speech)),
                                            columns=["utterance_id", "audio", "audio_native"])
            for row in batch.to_pylist() if row["utterance_id"] not in tokenized and training_audio(row) is not None]
