"""Units -> audio decoders as versioned artifacts: a `decoder` version pairs a decoder with a units
version's tokenizer, the learned backend (`decoders/learned.py`, trained once and reused after, or
fine-tuned as a version of its own on a later units version's speech) or
CosyVoice 2's (`decoders/cosyvoice2.py`, whose weights stay in the user's directory); `open_decoder`
opens either behind the `UnitDecoder` interface (`decoders/interface.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from omniforge.config.units import CosyVoice2DecoderConfig, DecoderRuntimeConfig, UnitsConfig
from omniforge.errors import InputError
from omniforge.hashing import sha256_bytes, stable_hash
from omniforge.model.unit_vocoder import MelGrid
from omniforge.storage import ArtifactStore, Kind, Manifest
from omniforge.tasks.common.cosyvoice import CosyVoiceUnavailable, load_cosyvoice2, prompt_16k, require_model_dir
from omniforge.tasks.common.threads import torch_threads
from omniforge.tasks.units.decoders.cosyvoice2 import CosyVoice2UnitDecoder
from omniforge.tasks.units.decoders.interface import UnitDecoder
from omniforge.tasks.units.decoders.learned import (
    EXACT_TORCH,
    fit_unit_to_mel,
    load_decoder,
    load_networks,
    save_decoder,
    train_unit_to_mel,
    unit_to_mel_settings,
)
from omniforge.tasks.units.decoder_data import other_voices, paired_rows, training_speech
from omniforge.tasks.units.frame_vocoder import train_frame_vocoder, vocoder_examples

MODEL_DIR_SETTING = "units.decoder.cosyvoice2.model_dir"
LOSS_TAIL = 50  # steps averaged for a training's reported final loss


def require_cosyvoice2_files(settings: CosyVoice2DecoderConfig) -> None:
    """Fail early, naming the setting, when the decoder's weights or prompt are not where they are said to be."""
    require_model_dir(settings.model_dir, MODEL_DIR_SETTING)
    if not settings.prompt_wav or not Path(settings.prompt_wav).is_file():
        raise CosyVoiceUnavailable("set units.decoder.cosyvoice2.prompt_wav to a wav of the voice to speak with "
                                   f"(got {settings.prompt_wav!r})")


def open_cosyvoice2(settings: CosyVoice2DecoderConfig) -> CosyVoice2UnitDecoder:
    """CosyVoice 2's decoder from a CosyVoice2-0.5B directory, speaking in the voice of `settings.prompt_wav`."""
    require_cosyvoice2_files(settings)
    cosyvoice = load_cosyvoice2(settings.model_dir, MODEL_DIR_SETTING, settings.fp16)
    embedding = cosyvoice.frontend._extract_spk_embedding(prompt_16k(settings.prompt_wav))
    return CosyVoice2UnitDecoder(cosyvoice.model, embedding, settings.hop_units, cosyvoice.sample_rate)


class MissingDecoder(InputError):
    """A command that speaks found no trained decoder for its units (it never trains one itself)."""


def decoder_version(store: ArtifactStore, units: Manifest, config: UnitsConfig, flow_run_id: str | None = None,
                    train: bool = True) -> Manifest:
    """The decoder for `units`' tokenizer with these settings, named after the tokenizer (every
    units version of that tokenizer shares it): reused if one exists, else trained on `units`
    (learned) or described (cosyvoice2, whose weights stay in the user's directory). With
    `units.decoder.adapt.steps`, a units version the learned decoder was not trained on gets it fine-tuned
    on its speech (`adapted_version`). `train` False (evaluate, serve, speak): a missing learned decoder
    is an error naming the command that trains it."""
    tokenizer = units.parent_of(Kind.tokenizer)
    d = config.decoder
    if d.backend == "cosyvoice2":
        return _cosyvoice2_version(store, units, store.manifest(tokenizer), config, flow_run_id)
    settings = {"decoder": d.identity(), "tokenizer": str(tokenizer)}
    settings_hash = stable_hash(settings)
    base = store.find_version(Kind.decoder, tokenizer.name, settings_hash)
    if base is None:
        if not train:
            raise _missing(units)
        with torch_threads(d.threads or torch.get_num_threads()):
            base = _train_decoder(store, units, config, settings, settings_hash, flow_run_id)
    if d.adapt.steps == 0 or base.parent_of(Kind.units) == units.ref():
        return base
    return adapted_version(store, base, units, config, flow_run_id, train)


def _missing(units: Manifest, which: str = "") -> MissingDecoder:
    tokenizer = units.parent_of(Kind.tokenizer)
    speech = units.parent_of(Kind.speech)
    return MissingDecoder(f"no units -> audio decoder for {tokenizer}{which} with these units.decoder settings; train "
                          f"it with `omniforge tokenize-units -c CONFIG --set units.speech={speech} "
                          f"units.name={units.name} units.tokenizer={tokenizer.name}` (same units.decoder settings)")


def adapted_version(store: ArtifactStore, base: Manifest, units: Manifest, config: UnitsConfig,
                    flow_run_id: str | None = None, train: bool = True) -> Manifest:
    """`base` fine-tuned on `units`' speech, its own training speech rehearsed (`units.decoder.adapt`): a
    decoder version of its own whose parents are both, so the base stays shared and this is found again."""
    settings = {**base.config, "adapt": config.decoder.adapt.model_dump(mode="json"), "base": str(base.ref()),
                "units": str(units.ref())}
    settings_hash = stable_hash(settings)
    existing = store.find_version(Kind.decoder, base.name, settings_hash)
    if existing is not None:
        return existing
    if not train:
        raise _missing(units, f" fine-tuned on {units.ref()}")
    with torch_threads(config.decoder.threads or torch.get_num_threads()):
        return _train_adapted(store, base, units, config, settings, settings_hash, flow_run_id)


def _train_adapted(store: ArtifactStore, base: Manifest, units: Manifest, config: UnitsConfig, settings: dict,
                   settings_hash: str, flow_run_id: str | None) -> Manifest:
    a, d = config.decoder.adapt, config.decoder
    model, vocoder = load_networks(_files(store, base))
    new = training_speech(paired_rows(store, units), model.grid)
    own_rows = paired_rows(store, store.manifest(base.parent_of(Kind.units))) if a.rehearsed else []
    own = training_speech(own_rows[:: -(-len(own_rows) // a.rehearsed)] if own_rows else [], model.grid)
    weights = [a.share / len(new)] * len(new) + [(1 - a.share) / len(own)] * len(own) if own else None
    model, losses = fit_unit_to_mel(model, [(s.units, s.mel) for s in new + own], a.steps, d.batch_size,
                                    d.crop_frames, a.lr, a.seed, weights, decay=d.schedule == "cosine")
    writer = store.writer(Kind.decoder, base.name, parents=[base, units], config=settings, config_hash=settings_hash,
                          flow_run_id=flow_run_id)
    writer.stats.update(**_training_stats(losses), vocoder=base.config["decoder"]["vocoder"],
                        adapted_from=str(base.ref()), utterances=len(new), rehearsed=len(own))
    for name, data in save_decoder(model, vocoder).items():
        writer.add_file(name, data)
    return writer.publish()


def _training_stats(losses: list[float]) -> dict:
    return {"first_loss": round(losses[0], 4), "final_loss": round(float(np.mean(losses[-LOSS_TAIL:])), 4),
            "steps": len(losses)}


def _train_decoder(store: ArtifactStore, units: Manifest, config: UnitsConfig, settings: dict, settings_hash: str,
                   flow_run_id: str | None) -> Manifest:
    """The learned decoder's units -> mel network, and its frame vocoder where it has one, trained on
    `units` and published as a `decoder` version."""
    tokenizer, d = units.parent_of(Kind.tokenizer), config.decoder
    vocab = store.manifest(tokenizer).stats["vocab_size"]
    grid = MelGrid(unit_rate=config.frame_rate)
    speech = training_speech(paired_rows(store, units), grid)
    model, losses = train_unit_to_mel([(s.units, s.mel) for s in speech], unit_to_mel_settings(d, vocab), grid,
                                      d.steps, d.batch_size, d.crop_frames, d.lr, d.seed, d.schedule == "cosine")
    writer = store.writer(Kind.decoder, tokenizer.name, parents=[units, store.manifest(tokenizer)], config=settings,
                          config_hash=settings_hash, flow_run_id=flow_run_id)
    writer.stats.update(**_training_stats(losses), vocoder=d.vocoder)
    vocoder = None
    if d.vocoder == "frame":
        examples = vocoder_examples(speech, model) + (other_voices(store, units, grid) if d.frame.every_voice else [])
        vocoder, vocoder_losses = train_frame_vocoder(examples, d.frame, grid)
        writer.stats.update(frame_vocoder_final_loss=round(float(np.mean(vocoder_losses[-LOSS_TAIL:])), 4),
                            frame_vocoder_examples=len(examples))
    for name, data in save_decoder(model, vocoder).items():
        writer.add_file(name, data)
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
    existing = store.find_version(Kind.decoder, tokenizer.name, described_hash)
    if existing is not None:
        return existing
    writer = store.writer(Kind.decoder, tokenizer.name, parents=[units, tokenizer], config=described,
                          config_hash=described_hash, flow_run_id=flow_run_id)
    writer.add_file("decoder.json", json.dumps(described, indent=2).encode())
    return writer.publish()


def open_decoder(store: ArtifactStore, manifest: Manifest, runtime: DecoderRuntimeConfig = EXACT_TORCH) -> UnitDecoder:
    """The decoder a `decoder` version describes, run as `runtime` says (the learned one's)."""
    settings = manifest.config["decoder"]
    if settings.get("backend") == "cosyvoice2":
        return open_cosyvoice2(CosyVoice2DecoderConfig.model_validate(
            {k: v for k, v in settings.items() if k != "backend"}))
    return load_decoder(_files(store, manifest), settings["vocoder"], runtime)


def _files(store: ArtifactStore, manifest: Manifest) -> dict[str, bytes]:
    return {name: store.read_bytes(entry.path) for name, entry in manifest.files.items()}
