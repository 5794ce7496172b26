"""Speech -> discrete units: get a tokenizer version (fit the k-means default, or describe the S3
tokenizer), tokenize the chosen turns on Ray workers, publish a `units` version whose lineage
points at the speech and tokenizer versions.

A tokenizer version is reused whenever one with the same settings exists, so a grown dataset keeps
its unit vocabulary; a units version reuses the shards of the previous one made with the same
tokenizer, so only new utterances are tokenized.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from omniforge.config.units import KMeansConfig, S3TokenizerConfig, UnitsConfig
from omniforge.errors import InputError
from omniforge.model.unit_tokenizer import (
    EncoderFrontend,
    FrontendSettings,
    KMeansUnitTokenizer,
    LogMelFrontend,
    fit_kmeans,
    unexplained_variance,
)
from omniforge.storage import ArtifactStore, Kind, Manifest
from omniforge.storage.audio import decode_audio
from omniforge.storage.schemas import ALIGNED_UNITS_SCHEMA, UNIT_ROW_FIELDS, UNITS_SCHEMA, WORD_FIELDS
from omniforge.tasks.common.ray_runtime import map_on_actors
from omniforge.tasks.common.threads import torch_threads
from omniforge.tasks.common.whisper_encoder import load_speech_encoder
from omniforge.tasks.units.alignment import WordAligner
from omniforge.tasks.units.supervision import train_projection

ROW_COLUMNS = [*UNIT_ROW_FIELDS, "text", "audio"]


class TokenizerUnavailable(InputError, RuntimeError):
    """The configured tokenizer cannot run here; the message says what is missing."""


def speech_rows(store: ArtifactStore, speech: Manifest, roles: list[str], columns: list[str] = ROW_COLUMNS
                ) -> Iterator[dict]:
    for batch in store.iter_batches(speech, columns=columns):
        for row in batch.to_pylist():
            if row["role"] in roles:
                yield row


def frontend_settings(config: UnitsConfig) -> FrontendSettings:
    return FrontendSettings(frame_rate=config.frame_rate, n_mels=config.kmeans.n_mels, n_fft=config.kmeans.n_fft)


def build_frontend(settings: FrontendSettings, kmeans: KMeansConfig, tensors: dict[str, torch.Tensor] | None = None
                   ) -> LogMelFrontend | EncoderFrontend:
    """The frames k-means clusters: log-mel, or the configured encoder's states (standardized by
    `tensors`' mean and std once fitted, and projected by its learnt projection where it has one)."""
    if kmeans.features == "log_mel":
        return LogMelFrontend(settings)
    tensors = tensors or {}
    projection = None
    if "projection.weight" in tensors:
        weight = tensors["projection.weight"]
        projection = nn.Linear(weight.shape[1], weight.shape[0]).requires_grad_(False)
        projection.load_state_dict({"weight": weight, "bias": tensors["projection.bias"]})
    return EncoderFrontend(settings, load_speech_encoder(kmeans.encoder.encoder), kmeans.encoder.depth,
                           tensors.get("mean"), tensors.get("std"), projection, tensors.get("position_mean"))


def speech_batches(store: ArtifactStore, speech: Manifest, config: UnitsConfig,
                   settings: FrontendSettings) -> Iterator[tuple[list[torch.Tensor], list[str]]]:
    """The tokenized roles' waves and texts, `config.batch_size` at a time."""
    waves, texts = [], []
    for row in speech_rows(store, speech, config.roles, ["role", "audio", "text"]):
        wave, rate = decode_audio(row["audio"]["bytes"])
        if rate != settings.sample_rate:
            raise ValueError(f"speech must be {settings.sample_rate} Hz for the tokenizer, got {rate} Hz")
        waves.append(torch.from_numpy(wave))
        texts.append(row["text"])
        if len(waves) == config.batch_size:
            yield waves, texts
            waves, texts = [], []
    if waves:
        yield waves, texts


def fit_tokenizer(store: ArtifactStore, speech: Manifest, config: UnitsConfig
                  ) -> tuple[KMeansUnitTokenizer, dict]:
    """Fit k-means on a seeded sample of the speech's frames (after learning their projection from the
    speech's text, where `kmeans.encoder.supervised` asks for one); returns it and what the fit measured."""
    settings = frontend_settings(config)
    frontend = build_frontend(settings, config.kmeans)
    stats: dict = {}
    encoder = config.kmeans.encoder
    if isinstance(frontend, EncoderFrontend) and encoder.center_positions:
        stats["centered_places"] = frontend.fit_positions(
            (waves for waves, _ in speech_batches(store, speech, config, settings)), encoder.position_min_waves)
    frames, texts = [], []
    for waves, batch_texts in speech_batches(store, speech, config, settings):
        frames += frontend.features(waves)
        texts += batch_texts
    points = torch.cat(frames)
    if len(points) > config.kmeans.max_fit_frames:
        chosen = torch.randperm(len(points), generator=torch.Generator().manual_seed(config.kmeans.seed))
        points = points[chosen[: config.kmeans.max_fit_frames]]
    if isinstance(frontend, EncoderFrontend):
        points = frontend.fit_scale(points)
        supervised = encoder.supervised
        if supervised.dim:
            standardized = [frontend.standardize(f) for f in frames]
            frontend.projection, learnt = train_projection(standardized, texts, supervised)
            stats.update(learnt)
            with torch.no_grad():
                points = frontend.projection(points)
    centroids = fit_kmeans(points, config.kmeans.k, config.kmeans.seed, config.kmeans.iterations)
    stats["unexplained_variance"] = round(unexplained_variance(points, centroids), 4)
    return KMeansUnitTokenizer(frontend, centroids), {"fit_frames": len(points), **stats}


def tokenizer_settings(config: UnitsConfig) -> dict:
    """What decides a tokenizer's units (its version is reused when these match)."""
    detail = config.kmeans.identity() if config.backend == "kmeans" else config.s3.model_dump(mode="json")
    return {"backend": config.backend, "frame_rate": config.frame_rate, "roles": config.roles, config.backend: detail}


def tokenizer_version(store: ArtifactStore, speech: Manifest, config: UnitsConfig, flow_run_id: str | None,
                      check_weights: bool = True) -> Manifest:
    """The tokenizer/NAME version with these settings: reused, or fitted (k-means) or described (S3;
    its weights are checked unless `check_weights` is off, as when describing imported tokens)."""
    from omniforge.hashing import stable_hash

    settings = tokenizer_settings(config)
    settings_hash = stable_hash(settings)
    existing = store.find_version(Kind.tokenizer, config.tokenizer_name, settings_hash)
    if existing is not None:
        return existing
    writer = store.writer(Kind.tokenizer, config.tokenizer_name, parents=[speech], config=settings,
                          config_hash=settings_hash, flow_run_id=flow_run_id)
    if config.backend == "kmeans":
        tokenizer, fit_stats = fit_tokenizer(store, speech, config)
        tensors = {"centroids": tokenizer.centroids}
        frontend = tokenizer.frontend
        if isinstance(frontend, EncoderFrontend):
            tensors.update(mean=frontend.mean, std=frontend.std)
            if frontend.position_mean is not None:
                tensors.update(position_mean=frontend.position_mean)
            if frontend.projection is not None:
                tensors.update({f"projection.{k}": v for k, v in frontend.projection.state_dict().items()})
        writer.add_file("centroids.safetensors", save_safetensors({k: v.contiguous() for k, v in tensors.items()}))
        writer.add_file("tokenizer.json", json.dumps({**tokenizer.describe(), **settings}, indent=2).encode())
        writer.stats.update(vocab_size=tokenizer.vocab_size, frame_rate=config.frame_rate, **fit_stats)
    else:  # only a description: the weights stay where the user keeps them
        if check_weights:
            S3UnitTokenizer(config.s3)  # fails here, clearly, if the weights are absent
        writer.add_file("tokenizer.json", json.dumps(settings, indent=2).encode())
        writer.stats.update(vocab_size=S3UnitTokenizer.VOCAB_SIZE, frame_rate=config.frame_rate)
    return writer.publish()


def tokenizer_state(store: ArtifactStore, manifest: Manifest) -> dict:
    """What a worker needs to rebuild the tokenizer (plain data, cheap to ship to Ray actors)."""
    description = json.loads(store.read_bytes(manifest.files["tokenizer.json"].path))
    state = {"description": description}
    if "centroids.safetensors" in manifest.files:
        state["tensors"] = load_safetensors(store.read_bytes(manifest.files["centroids.safetensors"].path))
    return state


def build_tokenizer(state: dict):
    description = state["description"]
    if description["backend"] == "kmeans":
        fields = {k: description[k] for k in ("sample_rate", "frame_rate", "n_mels", "n_fft", "fmax")}
        # a version fitted before encoder features existed describes no kmeans section: log-mel
        kmeans = KMeansConfig.model_validate(description.get("kmeans", {}))
        tensors = state["tensors"]
        return KMeansUnitTokenizer(build_frontend(FrontendSettings(**fields), kmeans, tensors), tensors["centroids"])
    return S3UnitTokenizer(S3TokenizerConfig.model_validate(description["s3"]))


class S3UnitTokenizer:
    """CosyVoice 2's S3 tokenizer v2 (25 Hz, 6561 FSQ codes) run by the `s3tokenizer` package,
    with weights from a local folder (never downloaded at run time)."""

    VOCAB_SIZE = 6561
    frame_rate = 25

    def __init__(self, config: S3TokenizerConfig) -> None:
        from pathlib import Path

        if not config.model_dir or not Path(config.model_dir).is_dir():
            raise TokenizerUnavailable(f"S3 tokenizer weights not found: set units.s3.model_dir to a folder holding "
                                       f"{config.model_name} (got {config.model_dir!r})")
        try:
            import s3tokenizer
        except Exception as err:  # noqa: BLE001 - it imports torchaudio, which may not load
            raise TokenizerUnavailable(f"the s3tokenizer package cannot be imported here ({err})") from err
        self.s3 = s3tokenizer
        self.model = s3tokenizer.load_model(config.model_name, download_root=config.model_dir).eval()
        self.vocab_size = self.VOCAB_SIZE

    @torch.no_grad()
    def encode(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        mels, lengths = self.s3.padding([self.s3.log_mel_spectrogram(w) for w in waves])
        codes, code_lengths = self.model.quantize(mels, lengths)
        return [codes[i, : int(n)] for i, n in enumerate(code_lengths)]


class UnitWorker:
    """Runs in a Ray actor (or inline): reads its utterances from the store's shards itself, so
    audio never travels through the driver, and returns units tables."""

    def __init__(self, state: dict, store_url: str, store_options: dict, align_model: str | None = None,
                 threads: int = 1) -> None:
        """`align_model`: also align each turn's words to its speech with this Whisper model."""
        self.threads = threads
        self.tokenizer = build_tokenizer(state)
        self.store = ArtifactStore(store_url, store_options)
        self._shard: tuple[str, dict] | None = None
        self.aligner = None if align_model is None else WordAligner(align_model, threads)

    def _rows(self, shard: str) -> dict[str, dict]:
        if self._shard is None or self._shard[0] != shard:
            table = self.store.read_shard(shard, ROW_COLUMNS)
            self._shard = (shard, {r["utterance_id"]: r for r in table.to_pylist()})
        return self._shard[1]

    def run(self, tasks: list[dict]) -> pa.Table:
        """tasks: [{"shard": path in the store, "ids": [utterance ids]}]. Returns a units table
        (Arrow travels between Ray processes as buffers, not as millions of Python ints)."""
        rows = [self._rows(task["shard"])[uid] for task in tasks for uid in task["ids"]]
        waves = [torch.from_numpy(decode_audio(r["audio"]["bytes"])[0]) for r in rows]
        with torch_threads(self.threads):
            units = [u.to(torch.int32).numpy() for u in self.tokenizer.encode(waves)]
        columns = {k: [r[k] for r in rows] for k in UNIT_ROW_FIELDS}
        lengths = [len(u) for u in units]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        values = np.concatenate(units) if units else np.zeros(0, np.int32)
        columns["units"] = pa.ListArray.from_arrays(offsets, values)
        columns["n_units"] = lengths
        if self.aligner is None:
            return pa.table(columns, schema=UNITS_SCHEMA)
        words = self.aligner.align([w.numpy() for w in waves], [r["text"] for r in rows])
        for (name, _), field in zip(WORD_FIELDS, ("chars", "starts", "ends"), strict=True):
            columns[name] = [getattr(w, field) for w in words]
        return pa.table(columns, schema=ALIGNED_UNITS_SCHEMA)


def shard_index(store: ArtifactStore, speech: Manifest, roles: list[str]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Per shard, the (utterance id, content key) of its rows in `roles` (small columns only)."""
    index = []
    for shard in speech.tables["data"].shards:
        table = store.read_shard(shard.path, ["utterance_id", "role", "key"])
        rows = zip(*(table.column(c).to_pylist() for c in ("utterance_id", "role", "key")))
        index.append((shard.path, [(uid, key) for uid, role, key in rows if role in roles]))
    return index


def shard_tasks(index: list[tuple[str, list[tuple[str, str]]]], skip: set[str], batch_size: int) -> list[dict]:
    """The utterances to tokenize, as (shard, ids) tasks of at most `batch_size` utterances."""
    tasks = []
    for shard, rows in index:
        ids = [uid for uid, _ in rows if uid not in skip]
        tasks += [{"shard": shard, "ids": ids[i:i + batch_size]} for i in range(0, len(ids), batch_size)]
    return tasks


def tokenize_tasks(tasks: list[dict], state: dict, store: ArtifactStore, config: UnitsConfig,
                   on_result: Callable[[pa.Table], None]) -> None:
    """Tokenize on `config.workers` Ray actors (needs a Ray session). A memory:// store lives in
    this process only, so there the work runs inline."""
    args = (state, store.url, store.options, config.align_model if config.align else None)
    if store.url.startswith("memory://"):
        worker = UnitWorker(*args)
        for task in tasks:
            on_result(worker.run([task]))
        return
    map_on_actors(UnitWorker, args, tasks, 1, config.workers, on_result)


def units_table(parts: list[pa.Table], aligned: bool = False) -> pa.Table:
    """The workers' tables as one, in dialogue and turn order."""
    empty = (ALIGNED_UNITS_SCHEMA if aligned else UNITS_SCHEMA).empty_table()
    return pa.concat_tables(parts or [empty]).sort_by([("dialogue_id", "ascending"),
                                                                          ("turn_index", "ascending")])


def unit_stats(table: pa.Table, vocab_size: int) -> dict:
    units = int(pc.sum(table.column("n_units")).as_py() or 0)
    seconds = float(pc.sum(table.column("duration")).as_py() or 0.0)
    used = len(pc.unique(pc.list_flatten(table.column("units"))))
    return {"utterances": table.num_rows, "units": units, "seconds": round(seconds, 2),
            "units_per_second": round(units / seconds, 3) if seconds else 0.0,
            "vocab_size": vocab_size, "vocab_used": used}
