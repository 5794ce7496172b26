"""Train (or reuse) the units -> audio decoder for a units version, and measure round-trip
quality: speech -> units -> speech, scored by ASR word error rate against the text and DNSMOS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from model.unit_vocoder import HifiMel, MelGrid, UnitToMelSettings
from omniforge.config.units import CosyVoice2DecoderConfig, UnitsConfig
from omniforge.hashing import sha256_bytes, stable_hash
from storage import ArtifactStore, Kind, Manifest
from storage.audio import decode_audio
from tasks.audio_ops import resample
from tasks.cosyvoice import CosyVoice2UnitDecoder, require_cosyvoice2_files
from tasks.units_audio import UnitDecoder, load_decoder, save_decoder, train_unit_to_mel


def _parent(manifest: Manifest, kind: Kind) -> str:
    return str(manifest.parents_of(kind)[0])


def paired_rows(store: ArtifactStore, units: Manifest) -> list[dict]:
    """Units rows joined with their speech rows (text, 16 kHz audio, native audio)."""
    speech = store.manifest(_parent(units, Kind.speech))
    by_id = {r["utterance_id"]: r for r in store.read_table(units).to_pylist()}
    rows = []
    for batch in store.iter_batches(speech, columns=["utterance_id", "text", "audio", "audio_native"]):
        for row in batch.to_pylist():
            if row["utterance_id"] in by_id:
                rows.append({**row, "units": by_id[row["utterance_id"]]["units"]})
    return rows


def training_pairs(rows: list[dict], grid: MelGrid) -> list[tuple[torch.Tensor, torch.Tensor]]:
    mel = HifiMel(grid)
    pairs = []
    for row in rows:
        wave, rate = decode_audio(row["audio_native"]["bytes"])
        target = mel(torch.from_numpy(resample(wave, rate, grid.sample_rate)))
        frames = min(target.shape[1], grid.frames_for_samples(grid.samples(len(row["units"]))))
        pairs.append((torch.tensor(row["units"]), target[:, :frames]))
    return pairs


def decoder_version(store: ArtifactStore, units: Manifest, config: UnitsConfig, flow_run_id: str | None = None) -> Manifest:
    """The decoder for `units`' tokenizer with these settings: reused if one exists, else trained
    (learned) or described (cosyvoice2, whose weights stay in the user's directory)."""
    tokenizer = _parent(units, Kind.tokenizer)
    d = config.decoder
    if d.backend == "cosyvoice2":
        return _cosyvoice2_version(store, units, store.manifest(tokenizer), config, flow_run_id)
    settings = {"decoder": d.model_dump(mode="json", exclude={"cosyvoice2"}), "tokenizer": tokenizer}
    settings_hash = stable_hash(settings)
    existing = store.find_version(Kind.decoder, config.name, settings_hash)
    if existing is not None:
        return existing
    vocab = store.manifest(tokenizer).stats["vocab_size"]
    grid = MelGrid(unit_rate=config.frame_rate)
    net = UnitToMelSettings(vocab_size=vocab, embed_dim=d.embed_dim, channels=d.channels, layers=d.layers, kernel=d.kernel)
    model, losses = train_unit_to_mel(training_pairs(paired_rows(store, units), grid), net, grid, d.steps,
                                      d.batch_size, d.crop_frames, d.lr, d.seed)
    writer = store.writer(Kind.decoder, config.name, parents=[units, store.manifest(tokenizer)], config=settings,
                          config_hash=settings_hash, flow_run_id=flow_run_id)
    for name, data in save_decoder(model).items():
        writer.add_file(name, data)
    writer.stats.update(first_loss=round(losses[0], 4), final_loss=round(float(np.mean(losses[-50:])), 4),
                        steps=len(losses), vocoder=d.vocoder)
    return writer.publish()


def _cosyvoice2_version(store: ArtifactStore, units: Manifest, tokenizer: Manifest, config: UnitsConfig,
                        flow_run_id: str | None) -> Manifest:
    if tokenizer.config.get("backend") != "s3":
        raise ValueError(f"units.decoder.backend: cosyvoice2 decodes CosyVoice 2's S3 units, but {units.ref()} holds "
                         f"{tokenizer.config.get('backend')} units ({tokenizer.ref()}); use the learned decoder")
    settings = config.decoder.cosyvoice2
    require_cosyvoice2_files(settings)
    described = {"decoder": {"backend": "cosyvoice2", **settings.model_dump(mode="json")}, "tokenizer": str(tokenizer.ref()),
                 "prompt_sha256": sha256_bytes(Path(settings.prompt_wav).read_bytes())}
    described_hash = stable_hash(described)
    existing = store.find_version(Kind.decoder, config.name, described_hash)
    if existing is not None:
        return existing
    writer = store.writer(Kind.decoder, config.name, parents=[units, tokenizer], config=described,
                          config_hash=described_hash, flow_run_id=flow_run_id)
    writer.add_file("decoder.json", json.dumps(described, indent=2).encode())
    return writer.publish()


def open_decoder(store: ArtifactStore, manifest: Manifest) -> UnitDecoder:
    settings = manifest.config["decoder"]
    if settings.get("backend") == "cosyvoice2":
        return CosyVoice2UnitDecoder(CosyVoice2DecoderConfig.model_validate(
            {k: v for k, v in settings.items() if k != "backend"}))
    files = {name: store.read_bytes(entry.path) for name, entry in manifest.files.items()}
    return load_decoder(files, settings["vocoder"])


def dnsmos(wave16k: np.ndarray) -> float | None:
    """DNSMOS overall quality (the ONNX models ship in `speechmos`); None if it cannot run here."""
    try:
        from speechmos import dnsmos as scorer
    except ImportError:
        return None
    # DNSMOS rejects samples outside [-1, 1]; what a listener would hear is clipped anyway
    return float(scorer.run(np.clip(wave16k, -1.0, 1.0).astype(np.float32), sr=16000)["ovrl_mos"])


def encoded_rows(store: ArtifactStore, units: Manifest, speech: Manifest, limit: int) -> list[dict]:
    """The first `limit` assistant turns of `speech`, encoded by `units`' tokenizer: held-out audio
    for a decoder trained on `units`."""
    from tasks.speech_units import build_tokenizer, speech_rows, tokenizer_state

    tokenizer = build_tokenizer(tokenizer_state(store, store.manifest(_parent(units, Kind.tokenizer))))
    rows = []
    for row in speech_rows(store, speech, ["assistant"], ["role", "text", "audio"]):
        if len(rows) == limit:
            break
        [encoded] = tokenizer.encode([torch.from_numpy(decode_audio(row["audio"]["bytes"])[0])])
        rows.append({**row, "units": encoded.tolist()})
    return rows


def roundtrip(store: ArtifactStore, units: Manifest, decoder: UnitDecoder, limit: int, asr_model: str = "tiny.en",
              speech: Manifest | None = None) -> dict:
    """Scores `speech`'s assistant turns (default: the units' own) against their resynthesis."""
    from tasks.asr import Transcriber, word_error_rate

    asr = Transcriber(asr_model)
    rows = paired_rows(store, units)[:limit] if speech is None else encoded_rows(store, units, speech, limit)
    scores = {"original_wer": [], "resynthesis_wer": [], "original_dnsmos": [], "resynthesis_dnsmos": []}
    for row in rows:
        original, _ = decode_audio(row["audio"]["bytes"])
        rebuilt = resample(decoder.decode(row["units"]), decoder.sample_rate, 16000)
        scores["original_wer"].append(word_error_rate(row["text"], asr.transcribe(original)))
        scores["resynthesis_wer"].append(word_error_rate(row["text"], asr.transcribe(rebuilt)))
        scores["original_dnsmos"].append(dnsmos(original))
        scores["resynthesis_dnsmos"].append(dnsmos(rebuilt))
    report = {"utterances": len(rows), "asr_model": asr_model,
              "speech": str(speech.ref()) if speech is not None else _parent(units, Kind.speech)}
    for name, values in scores.items():
        known = [v for v in values if v is not None]
        report[name] = round(float(np.mean(known)), 4) if known else None
    if report["original_dnsmos"] is None:
        report["dnsmos_note"] = "DNSMOS unavailable: the speechmos package (and librosa) cannot be imported"
    return report
