"""Import units a user already has: CosyVoice 2 tokens in the layout of VocalNet's released sets.

The index is a JSON list of items such as

    {"id": "19090", "speech": "VoiceAssistant-430K-vocalnet/audios/19090.wav",
     "conversations": [{"from": "human", "value": "<speech>"}, {"from": "gpt", "value": "..."}],
     "units": "VoiceAssistant-430K-vocalnet/cosyvoice2_tokens/19090.npy"}

with paths relative to a root folder (VocalNet's `speech_folder`). `speech` and `units` may also be
lists: one wav per user turn and one token file per assistant turn, in order. A token file holds
an integer array (T or 1 x T), or the dict {"speech_token", "speech_token_len"} that VocalNet's
extraction script saves (a pickle, read only when `allow_pickle` is set).

Three versions come out: speech/NAME (the user turns' audio at the input rate and every turn's
text; the index points at no assistant audio, so those rows have none), tokenizer/NAME (the S3
tokenizer the tokens came from, described, not loaded) and units/NAME with lineage to both. An
item that cannot be read goes to the speech version's rejects table, naming the item and field.
"""

from __future__ import annotations

import io
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
from tqdm import tqdm

from omniforge.config.media import MediaConfig
from omniforge.config.units import UnitsConfig, VocalNetImportConfig
from omniforge.errors import InputError
from omniforge.hashing import sha256_bytes, stable_hash
from omniforge.model.mel import INPUT_SAMPLE_RATE
from omniforge.storage import ArtifactStore, Kind, Manifest
from omniforge.storage.audio import audio_cell, decode_audio, encode_audio
from omniforge.storage.schemas import REJECT_SCHEMA, UNIT_ROW_FIELDS, UNITS_SCHEMA, speech_schema
from omniforge.tasks.build.publish import SpeechTally
from omniforge.tasks.common.audio_ops import resample
from omniforge.tasks.common.records import MediaRefused, MediaRoots, RecordError, Reject, parse_record, read_media
from omniforge.tasks.units.tokenizers import S3UnitTokenizer, tokenizer_version, unit_stats

SPEECH_PLACEHOLDER = "<speech>"
BACKEND = "vocalnet-import"


@dataclass
class ImportResult:
    speech: Manifest
    units: Manifest
    published: bool


class VocalNetIndexError(InputError, ValueError):
    """The index as a whole cannot be read; the message names the setting and the file."""


def read_index(config: VocalNetImportConfig) -> tuple[list, bytes]:
    """The index's items (the first `limit`) and its bytes (their hash identifies the import)."""
    if not config.index:
        raise VocalNetIndexError("units.vocalnet.index: set it to the set's JSON index (a list of items)")
    with fsspec.open(config.index, "rb") as handle:
        data = handle.read()
    try:
        items = json.loads(data)
    except (ValueError, RecursionError) as err:  # not JSON, or not UTF-8
        raise VocalNetIndexError(f"units.vocalnet.index: {config.index} is not JSON ({err})") from err
    if not isinstance(items, list):
        raise VocalNetIndexError(f"units.vocalnet.index: {config.index} must hold a JSON list of items")
    return items[: config.limit], data


def _paths(item: dict, key: str, count: int) -> list[str]:
    value = item.get(key)
    paths = value if isinstance(value, list) else [value]
    if value is None or not all(isinstance(p, str) and p for p in paths):
        raise RecordError(key, "missing_field", f"expected a path or a list of {count} paths")
    if len(paths) != count:
        raise RecordError(key, "count_mismatch", f"{len(paths)} paths for {count} turns")
    return paths


def _read(root: str, path: str, field: str, media: MediaConfig) -> bytes:
    try:
        return read_media(path, MediaRoots((root,), media))
    except MediaRefused as err:
        raise RecordError(field, err.reason, err.detail) from err
    except (OSError, ValueError, ImportError) as err:  # missing, or a path fsspec cannot open
        raise RecordError(field, "missing_file", f"{path} under {root} ({err}); units.vocalnet.root must be the "
                                                 "folder the index's paths are relative to") from err


def load_tokens(data: bytes, field: str, allow_pickle: bool) -> np.ndarray:
    """A token file's units as a 1-D int32 array, checked against the S3 vocabulary."""
    try:
        tokens = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as err:  # an object array: VocalNet's dict of speech_token / speech_token_len
        if not allow_pickle:
            raise RecordError(field, "pickled_tokens", "the file is a pickled dict; set units.vocalnet.allow_pickle"
                                                       "=true if you trust it") from err
        saved = np.load(io.BytesIO(data), allow_pickle=True).item()
        if not isinstance(saved, dict) or "speech_token" not in saved:
            raise RecordError(field, "bad_units", "a pickled file must hold a dict with 'speech_token'") from err
        tokens = np.asarray(saved["speech_token"])
    except OSError as err:
        raise RecordError(field, "bad_units", f"not a .npy file ({err})") from err
    tokens = np.squeeze(tokens)
    if tokens.ndim != 1 or tokens.size == 0 or not np.issubdtype(tokens.dtype, np.integer):
        raise RecordError(field, "bad_units", f"expected a non-empty integer sequence, got {tokens.dtype} {tokens.shape}")
    if tokens.min() < 0 or tokens.max() >= S3UnitTokenizer.VOCAB_SIZE:
        raise RecordError(field, "units_out_of_range", f"values {tokens.min()}..{tokens.max()}, "
                                                       f"the S3 vocabulary is 0..{S3UnitTokenizer.VOCAB_SIZE - 1}")
    return tokens.astype(np.int32)


def item_rows(item: object, root: str, config: VocalNetImportConfig, frame_rate: int) -> tuple[str, list[dict], list[dict]]:
    """One index item -> its id, speech rows and units rows; raises RecordError naming the field."""
    if not isinstance(item, dict):
        raise RecordError("<item>", "malformed_record", f"expected an object, got {type(item).__name__}")
    if item.get("id") in (None, ""):
        raise RecordError("id", "missing_field")
    dialogue = parse_record(item, str(item["id"]))
    dialogue_id, roles = dialogue.id, [turn.role for turn in dialogue.turns]
    wavs = iter(_paths(item, "speech", roles.count("user")))
    token_files = iter(_paths(item, "units", roles.count("assistant")))
    speech, units = [], []
    for i, turn in enumerate(dialogue.turns):
        role, text = turn.role, turn.text.replace(SPEECH_PLACEHOLDER, "").strip()
        row = {"utterance_id": f"{dialogue_id}/{i}", "dialogue_id": dialogue_id, "turn_index": i, "role": role,
               "text": text, "backend": BACKEND, "sampling_rate": INPUT_SAMPLE_RATE}
        if role == "user":
            original = _read(root, next(wavs), "speech", config.media)
            try:
                wave, rate = decode_audio(original)
            except Exception as err:  # noqa: BLE001 - soundfile raises several types
                raise RecordError("speech", "bad_audio", str(err)) from err
            row.update(speaker=f"{dialogue_id}-user", duration=len(wave) / rate, key=sha256_bytes(original)[:32],
                       audio=audio_cell(encode_audio(resample(wave, rate, INPUT_SAMPLE_RATE), INPUT_SAMPLE_RATE), f"{row['utterance_id']}.flac"),
                       audio_native=audio_cell(original, f"{row['utterance_id']}.native"), native_sampling_rate=rate)
        else:
            if not text:
                raise RecordError(f"conversations[{i}].value", "empty_turn")
            tokens = load_tokens(_read(root, next(token_files), "units", config.media), "units", config.allow_pickle)
            row.update(speaker="assistant", duration=len(tokens) / frame_rate, audio=None, audio_native=None,
                       native_sampling_rate=None, key=stable_hash({"text": text, "units": sha256_bytes(tokens.tobytes())}, 32))
            units.append({k: row[k] for k in UNIT_ROW_FIELDS}
                         | {"units": tokens.tolist(), "n_units": len(tokens)})
        speech.append(row)
    return dialogue_id, speech, units


def parsed_items(items: list, root: str, config: VocalNetImportConfig, frame_rate: int,
                 rejects: list[Reject]) -> Iterator[tuple[list[dict], list[dict]]]:
    """Rows of every readable item; the others (and repeated ids) go to `rejects`."""
    seen: set[str] = set()
    for n, item in enumerate(tqdm(items, desc="importing", unit="item")):
        try:
            dialogue_id, speech, units = item_rows(item, root, config, frame_rate)
        except RecordError as err:
            name = str(item.get("id")) if isinstance(item, dict) and item.get("id") else f"items[{n}]"
            rejects.append(Reject(name, err.field, err.reason, err.detail))
            continue
        if dialogue_id in seen:
            rejects.append(Reject(dialogue_id, "id", "duplicate_id", f"items[{n}]"))
            continue
        seen.add(dialogue_id)
        yield speech, units


def import_vocalnet(store: ArtifactStore, config: UnitsConfig,
                    flow_run_id: str | None = None) -> ImportResult:
    """Make (or find, when this index was imported with these settings) the three versions."""
    settings = config.vocalnet
    items, index_bytes = read_index(settings)
    root = settings.root or posixpath.dirname(settings.index)
    recipe = {"import": settings.model_dump(mode="json", exclude={"shard_dialogues"}), "root": root,
              "index_sha256": sha256_bytes(index_bytes), "sample_rate": INPUT_SAMPLE_RATE}
    recipe_hash = stable_hash(recipe)
    done = store.find_version(Kind.units, settings.name, recipe_hash)
    if done is not None:
        return ImportResult(store.manifest(done.parent_of(Kind.speech)), done, published=False)

    rejects: list[Reject] = []
    speech_writer = store.writer(Kind.speech, settings.name, config=recipe, config_hash=recipe_hash, flow_run_id=flow_run_id)
    unit_parts, tally, pending = [], SpeechTally(), ([], [])
    dialogues = parsed_items(items, root, settings, S3UnitTokenizer.frame_rate, rejects)
    for count, (speech, units) in enumerate(dialogues, start=1):
        pending[0].extend(speech)
        pending[1].extend(units)
        if count % settings.shard_dialogues == 0:
            tally.add(_flush(speech_writer, pending, unit_parts))
            pending = ([], [])
    if pending[0]:
        tally.add(_flush(speech_writer, pending, unit_parts))
    if not unit_parts:
        first = rejects[0] if rejects else None
        raise ValueError(f"nothing imported from {settings.index}: all {len(items)} items were rejected"
                         + (f" (first: item {first.record}, field {first.field}: {first.reason} {first.detail})" if first else ""))
    speech_writer.write_table("rejects", pa.Table.from_pylist([r.as_row() for r in rejects], schema=REJECT_SCHEMA))
    summary = tally.summary(rejects, synthesized=0)
    speech_writer.stats.update(summary, source={"kind": "vocalnet", "index": settings.index},
                               note="imported: user audio from the set; assistant turns have tokens, no audio")
    speech_version = speech_writer.publish()

    s3 = config.model_copy(update={"name": settings.name, "backend": "s3", "frame_rate": S3UnitTokenizer.frame_rate,
                                   "roles": ["assistant"]})
    tokenizer = tokenizer_version(store, speech_version, s3, flow_run_id, check_weights=False)
    units_writer = store.writer(Kind.units, settings.name, parents=[speech_version, tokenizer], config=recipe,
                                config_hash=recipe_hash, flow_run_id=flow_run_id)
    units_table = pa.concat_tables(unit_parts)
    units_writer.write_table("data", units_table)
    units_writer.stats.update(unit_stats(units_table, S3UnitTokenizer.VOCAB_SIZE), tokenized_this_run=0, reused_rows=0,
                              imported_from=settings.index)
    return ImportResult(speech_version, units_writer.publish(), published=True)


def _flush(writer, pending: tuple[list[dict], list[dict]], unit_parts: list[pa.Table]) -> pa.Table:
    """Write one shard of speech rows; keep the units (small) for the units version."""
    speech = pa.Table.from_pylist(pending[0], schema=speech_schema())
    writer.write_table("data", speech)
    unit_parts.append(pa.Table.from_pylist(pending[1], schema=UNITS_SCHEMA))
    return speech.select(["dialogue_id", "role", "duration", "speaker"])

