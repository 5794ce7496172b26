"""The user's speech encoded at one fixed shape, so that on a GPU every turn replays one CUDA graph
(an eager Whisper encoder is hundreds of small kernels a turn, bound by their launches)."""

from __future__ import annotations

import torch
from torch import nn

from omniforge.model.cuda_graph import Replayed
from omniforge.model.modeling_omni import OmniModel
from omniforge.model.speech_encoder import encode_speech, encoder_lengths, max_input_frames


class PaddedSpeech:
    """Speech -> LLM inputs for one utterance at a time, padded to the encoder's longest input (30 s
    for Whisper): every call has one shape and, on a GPU, replays one graph captured at the first.
    Padding is masked, so each utterance encodes as it would alone (elsewhere it runs eagerly)."""

    @torch.no_grad()
    def __init__(self, model: OmniModel) -> None:
        self.model = model
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.frames = max_input_frames(model.speech_encoder)
        example = torch.zeros(1, model.config.encoder_config.num_mel_bins, self.frames, device=self.device,
                              dtype=self.dtype)
        self.encode = self._projected
        if self.device.type == "cuda":
            self.encode = Replayed(self._projected, example, torch.full((1,), self.frames, device=self.device))

    def _projected(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model.speech_projector(encode_speech(self.model.speech_encoder, features, lengths))

    @torch.no_grad()
    def __call__(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """features (1, n_mels, T) and lengths (1,), as `WhisperLogMel.batch` gives them for one wave ->
        its adapter outputs (n, H_llm), a tensor of its own."""
        padded = nn.functional.pad(features, (0, self.frames - features.shape[-1]))
        projected = self.encode(padded.to(self.device, self.dtype), lengths.to(self.device))
        kept = int(self.model.speech_projector.output_lengths(encoder_lengths(lengths))[0])
        return projected[0, :kept].clone()
