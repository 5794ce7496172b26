"""The CosyVoice 2 backend: S3 units -> 24 kHz audio by CosyVoice 2's own causal flow matching and
HiFT vocoder (FunAudioLLM's code, packaged as `cosyvoice-minicpmo`), driven on its own streaming
schedule. Its parts are built and loaded by that code: from a CosyVoice2-0.5B directory, or from
scratch at any size (its published sizes by default) for tests and benchmarks.

It is driven the way LLaMA-Omni 2's released decoder drives it: no prompt tokens, only a prompt
wav's speaker embedding. A chunk is decoded once `hop` new units plus the flow's look-ahead are
known, and the vocoder's cache cross-fades the chunk edges, so (unlike the learned backend's) its
chunks do not add up exactly to the one-shot decode.

The package imports, at import time, modules the decoder never calls: torchaudio (wav loading, which
does not load on the CPU build of torch) and Matcha-TTS's training utilities (Lightning, Hydra).
Where those are missing, `import_cosyvoice` registers stand-ins that fail if anything touches them,
so the flow and HiFT run here as they do on a GPU machine. It imports nothing of omniforge's beyond the
decoder interface, so the GPU benchmark can use it from a bare checkout.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import logging
import re
import sys
import types
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from omniforge.tasks.units.decoders.interface import stream_through

SAMPLE_RATE = 24000             # of HiFT's audio
SPEAKER_EMBEDDING_SIZE = 192    # CAM++'s, which conditions the flow

# The flow and HiFT sections of CosyVoice 2's cosyvoice2.yaml (examples/libritts/cosyvoice2/conf), with
# their sizes as top-level keys so that `build_flow_hift` can override them (the flow's width stays 512:
# its encoder's look-ahead and upsampling layers are built at 512 whatever the config says).
FLOW_HIFT_YAML = f"""
sample_rate: {SAMPLE_RATE}
spk_embed_dim: {SPEAKER_EMBEDDING_SIZE}
token_frame_rate: 25
token_mel_ratio: 2
chunk_size: 25
num_decoding_left_chunks: -1
flow_heads: 8
flow_linear_units: 2048
flow_blocks: 6
estimator_channels: 256
estimator_blocks: 4
estimator_mid_blocks: 12
estimator_heads: 8
hift_channels: 512
nsf_alpha: 0.1
nsf_sigma: 0.003

flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: 512
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 6561
    input_frame_rate: !ref <token_frame_rate>
    only_mask_loss: True
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: 3
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        output_size: 512
        attention_heads: !ref <flow_heads>
        linear_units: !ref <flow_linear_units>
        num_blocks: !ref <flow_blocks>
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: 512
        use_cnn_module: False
        macaron_style: False
        static_chunk_size: !ref <chunk_size>
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [!ref <estimator_channels>]
            dropout: 0.0
            attention_head_dim: 64
            n_blocks: !ref <estimator_blocks>
            num_mid_blocks: !ref <estimator_mid_blocks>
            num_heads: !ref <estimator_heads>
            act_fn: 'gelu'
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>

hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: !ref <hift_channels>
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: !ref <nsf_alpha>
    nsf_sigma: !ref <nsf_sigma>
    nsf_voiced_threshold: 10
    upsample_rates: [8, 5, 3]
    upsample_kernel_sizes: [16, 11, 7]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: !ref <hift_channels>
"""


class _Absent(types.ModuleType):
    """A module the package imports but the decoder never uses: touching it says so."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__spec__ = importlib.machinery.ModuleSpec(name, None)  # libraries probing it with find_spec

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(f"{self.__name__}.{name} is not installed here; omniforge's CosyVoice 2 decoder does not "
                          "use it (install it to use the rest of the CosyVoice package)")


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except Exception:  # noqa: BLE001 - a module that fails to load (torchaudio on CPU torch) counts as missing
        return False


# the package's modules the flow, HiFT and their token -> wave driver live in
MODULES = ("cosyvoice.flow.flow", "cosyvoice.flow.flow_matching", "cosyvoice.flow.decoder",
           "cosyvoice.transformer.upsample_encoder", "cosyvoice.hifigan.generator", "cosyvoice.hifigan.f0_predictor",
           "cosyvoice.cli.model")


def import_cosyvoice() -> None:
    """Import the package's decoder modules, with stand-ins for the import-time-only modules that
    are missing (torchaudio; Matcha-TTS's `matcha.utils`, which pulls in Lightning and Hydra). The
    stand-ins leave `sys.modules` afterwards, so nothing else in the process mistakes them for the
    real ones."""
    if all(name in sys.modules for name in MODULES):
        return
    added = []
    if not _importable("torchaudio"):
        sys.modules["torchaudio"] = _Absent("torchaudio")
        added.append("torchaudio")
    if not _importable("matcha.utils"):
        utils = _Absent("matcha.utils")
        utils.__path__ = []  # a package, so `matcha.utils.pylogger` resolves to the stand-in below
        pylogger = types.ModuleType("matcha.utils.pylogger")
        pylogger.get_pylogger = logging.getLogger  # all that the flow-matching module takes from it
        sys.modules["matcha.utils"], sys.modules["matcha.utils.pylogger"] = utils, pylogger
        added += ["matcha.utils", "matcha.utils.pylogger"]
    try:
        for name in MODULES:
            importlib.import_module(name)
    finally:
        for name in added:
            sys.modules.pop(name, None)


def flow_hift_yaml(**sizes: float) -> str:
    """The flow and HiFT sections of a cosyvoice2.yaml at its published sizes or the ones given (keys
    of FLOW_HIFT_YAML's top level, e.g. flow_blocks=1; nsf_alpha=0 and nsf_sigma=0 silence HiFT's
    random excitation, for outputs that repeat exactly)."""
    settable = {match[1]: match for match in re.finditer(r"^(\w+): [-\d.e]+$", FLOW_HIFT_YAML, re.MULTILINE)}
    unknown = set(sizes) - set(settable)
    if unknown:
        raise ValueError(f"not sizes of CosyVoice 2's flow or HiFT: {sorted(unknown)} (sizes: {sorted(settable)})")
    return re.sub(r"^(\w+): [-\d.e]+$", lambda line: f"{line[1]}: {sizes.get(line[1], line[0].split(': ')[1])}",
                  FLOW_HIFT_YAML, flags=re.MULTILINE)


def build_flow_hift(**sizes: float):
    """CosyVoice 2's flow and HiFT from its own classes, freshly initialised (see `flow_hift_yaml`)."""
    import_cosyvoice()
    from hyperpyyaml import load_hyperpyyaml

    parts = load_hyperpyyaml(flow_hift_yaml(**sizes))
    return parts["flow"], parts["hift"]


def load_token2wav(model_dir: str | Path):
    """FunAudioLLM's `CosyVoice2Model` holding the flow and HiFT of a CosyVoice 2 directory (its
    cosyvoice2.yaml, flow.pt and hift.pt, loaded by its own code, as `CosyVoice2` does; its LLM is
    built from the yaml but not loaded). A directory whose yaml has only the flow and HiFT (as the
    tests write, from `flow_hift_yaml`) loads the same way."""
    import_cosyvoice()
    from cosyvoice.cli.model import CosyVoice2Model
    from hyperpyyaml import load_hyperpyyaml

    model_dir = Path(model_dir)
    text = (model_dir / "cosyvoice2.yaml").read_text()
    overrides = {"qwen_pretrain_path": str(model_dir / "CosyVoice-BlankEN")} if "qwen_pretrain_path" in text else {}
    parts = load_hyperpyyaml(text, overrides=overrides)
    model = CosyVoice2Model(None, parts["flow"], parts["hift"])
    model.load(None, str(model_dir / "flow.pt"), str(model_dir / "hift.pt"))
    return model


class CosyVoice2UnitDecoder:
    """S3 units -> 24 kHz audio, one-shot or streamed (the `UnitDecoder` interface), by FunAudioLLM's
    `CosyVoice2Model` (flow, HiFT, token2wav and its per-session caches) in one speaker's voice."""

    def __init__(self, model, embedding: torch.Tensor, hop_units: int | None = None,
                 sample_rate: int = SAMPLE_RATE) -> None:
        """`embedding`: the speaker's (1, 192) CAM++ embedding."""
        self.model, self.embedding, self.sample_rate = model, embedding, sample_rate
        self.hop = hop_units or model.token_hop_len

    def lookahead_units(self) -> int:
        """Units needed before the first chunk can be decoded."""
        return self.hop + self.model.flow.pre_lookahead_len

    @torch.no_grad()
    def _token2wav(self, units: list[int], offset: int, session: str, finalize: bool) -> np.ndarray:
        speech = self.model.token2wav(token=torch.tensor([units], dtype=torch.int32),
                                      prompt_token=torch.zeros(1, 0, dtype=torch.int32),
                                      prompt_feat=torch.zeros(1, 0, 80),
                                      embedding=self.embedding, token_offset=offset, uuid=session,
                                      stream=not finalize, finalize=finalize)
        return speech[0].float().cpu().numpy()

    def decode(self, units: list[int]) -> np.ndarray:
        """One-shot: the session's final decode over every unit."""
        session = self.session()
        session.units = list(units)
        return np.concatenate(session.finish() or [np.zeros(0, np.float32)])

    def stream(self, chunks: Iterable[list[int]]) -> Iterator[np.ndarray]:
        return stream_through(self.session(), chunks)

    def session(self) -> "_CosyVoice2Session":
        return _CosyVoice2Session(self)


class _CosyVoice2Session:
    """CosyVoice 2's own schedule: a chunk once `hop` new tokens plus the flow's look-ahead are known."""

    def __init__(self, decoder: CosyVoice2UnitDecoder) -> None:
        self.decoder = decoder
        self.id = str(uuid.uuid4())
        decoder.model.hift_cache_dict[self.id] = None  # the vocoder's cross-fade cache, per session
        self.units: list[int] = []
        self.offset = 0

    def push(self, units: list[int]) -> list[np.ndarray]:
        self.units.extend(units)
        out, ahead = [], self.decoder.lookahead_units()
        while len(self.units) - self.offset >= ahead:
            out.append(self.decoder._token2wav(self.units[: self.offset + ahead], self.offset, self.id, finalize=False))
            self.offset += self.decoder.hop
        return out

    def finish(self) -> list[np.ndarray]:
        try:
            return [self.decoder._token2wav(self.units, self.offset, self.id, finalize=True)] if self.units else []
        finally:
            self.close()

    def close(self) -> None:
        """Drop the session's vocoder cache without decoding the rest (its listener left)."""
        self.decoder.model.hift_cache_dict.pop(self.id, None)
