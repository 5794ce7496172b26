"""Round-trip quality of a units version and its decoder: speech -> units -> speech, scored by ASR
word error rate against the text and DNSMOS."""

from __future__ import annotations

import numpy as np
import torch

from omniforge.model.mel import INPUT_SAMPLE_RATE
from omniforge.storage import ArtifactStore, Kind, Manifest
from omniforge.storage.audio import decode_audio
from omniforge.tasks.common.audio_ops import resample
from omniforge.tasks.common.mos import UNAVAILABLE as MOS_UNAVAILABLE
from omniforge.tasks.common.mos import dnsmos
from omniforge.tasks.units.decoders.interface import UnitDecoder
from omniforge.tasks.units.decoder_data import paired_rows


def encoded_rows(store: ArtifactStore, units: Manifest, speech: Manifest, limit: int) -> list[dict]:
    """The first `limit` assistant turns of `speech`, encoded by `units`' tokenizer: held-out audio
    for a decoder trained on `units`."""
    from omniforge.tasks.units.tokenizers import build_tokenizer, speech_rows, tokenizer_state

    tokenizer = build_tokenizer(tokenizer_state(store, store.manifest(units.parent_of(Kind.tokenizer))))
    rows = []
    for row in speech_rows(store, speech, ["assistant"], ["role", "text", "audio"]):
        if len(rows) == limit:
            break
        [encoded] = tokenizer.encode([torch.from_numpy(decode_audio(row["audio"]["bytes"])[0])])
        rows.append({**row, "units": encoded.tolist()})
    return rows


def roundtrip(store: ArtifactStore, units: Manifest, decoder: UnitDecoder, limit: int, asr_model: str = "tiny.en",
              speech: Manifest | None = None, mos: bool = True) -> dict:
    """Scores `speech`'s assistant turns (default: the units' own) against their resynthesis (DNSMOS
    too, unless `mos` is False: it costs seconds per utterance)."""
    from omniforge.tasks.common.asr import Transcriber, word_error_rate

    asr = Transcriber(asr_model)
    rows = paired_rows(store, units)[:limit] if speech is None else encoded_rows(store, units, speech, limit)
    scores = {"original_wer": [], "resynthesis_wer": [], "original_dnsmos": [], "resynthesis_dnsmos": []}
    for row in rows:
        original, _ = decode_audio(row["audio"]["bytes"])
        rebuilt = resample(decoder.decode(row["units"]), decoder.sample_rate, INPUT_SAMPLE_RATE)
        scores["original_wer"].append(word_error_rate(row["text"], asr.transcribe(original)))
        scores["resynthesis_wer"].append(word_error_rate(row["text"], asr.transcribe(rebuilt)))
        if mos:
            scores["original_dnsmos"].append(dnsmos(original))
            scores["resynthesis_dnsmos"].append(dnsmos(rebuilt))
    report = {"utterances": len(rows), "asr_model": asr_model,
              "speech": str(speech.ref()) if speech is not None else str(units.parent_of(Kind.speech))}
    for name, values in scores.items():
        known = [v for v in values if v is not None]
        report[name] = round(float(np.mean(known)), 4) if known else None
    if mos and report["original_dnsmos"] is None:
        report["dnsmos_note"] = MOS_UNAVAILABLE
    return report
