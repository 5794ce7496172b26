"""CosyVoice 2's own flow and HiFT code (FunAudioLLM's, packaged as cosyvoice-minicpmo) behind our
units -> audio interface: a tiny CosyVoice 2 built from its classes with random weights, written as a
model directory (its yaml, flow.pt, hift.pt), loaded back by its own loading code, streamed."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch

from omniforge.tasks.units.decoders.cosyvoice2 import (SPEAKER_EMBEDDING_SIZE, CosyVoice2UnitDecoder, build_flow_hift,
                                                       flow_hift_yaml, load_token2wav)

# small where the code lets it be (the flow's width is fixed at 512); HiFT's random excitation off, so
# that outputs repeat exactly
TINY = dict(flow_heads=2, flow_linear_units=128, flow_blocks=1, estimator_channels=32, estimator_blocks=1,
            estimator_mid_blocks=1, estimator_heads=2, hift_channels=32, nsf_alpha=0, nsf_sigma=0)
HIFT_GAIN = 1.6  # at init HiFT's audio hardly follows its mel; raised gains make it (2x is chaotic)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    flow, hift = build_flow_hift(**TINY)
    with torch.no_grad():
        for name, parameter in hift.named_parameters():
            if name.endswith("original0"):  # weight norm's gains
                parameter.mul_(HIFT_GAIN)
    folder = tmp_path_factory.mktemp("cosyvoice2")
    (folder / "cosyvoice2.yaml").write_text(flow_hift_yaml(**TINY))
    torch.save(flow.state_dict(), folder / "flow.pt")
    torch.save(hift.state_dict(), folder / "hift.pt")
    return folder, flow.state_dict(), hift.state_dict()


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@torch.no_grad()
def test_streamed_chunks_concatenate_to_the_one_shot_audio(model_dir):
    folder, flow_state, hift_state = model_dir
    model = load_token2wav(folder)
    for loaded, saved in ((model.flow.state_dict(), flow_state), (model.hift.state_dict(), hift_state)):
        assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    decoder = CosyVoice2UnitDecoder(model, torch.randn(1, SPEAKER_EMBEDDING_SIZE, generator=torch.Generator()
                                                       .manual_seed(2)))
    generator = torch.Generator().manual_seed(1)
    units = torch.randint(0, 6561, (90,), generator=generator).tolist()
    other = torch.randint(0, 6561, (90,), generator=generator).tolist()

    session, chunks = decoder.session(), []
    for start in range(0, len(units), 7):  # units arrive 7 at a time, as a TTS LM writes them
        chunks += session.push(units[start:start + 7])
    chunks += session.finish()
    streamed = np.concatenate(chunks)

    def one_shot(said: list[int]) -> np.ndarray:
        """The whole answer at once, through the same causal flow (its streaming masks)."""
        key = str(uuid.uuid4())
        model.hift_cache_dict[key] = None
        return model.token2wav(token=torch.tensor([said], dtype=torch.int32), prompt_token=torch.zeros(
            1, 0, dtype=torch.int32), prompt_feat=torch.zeros(1, 0, 80), embedding=decoder.embedding, token_offset=0,
            uuid=key, stream=True, finalize=True)[0].numpy()

    whole = one_shot(units)
    first = len(chunks[0])
    assert len(chunks) == 4 and first == (decoder.lookahead_units() - 3) * 2 * 480 - model.source_cache_len
    assert len(streamed) == len(whole) == len(units) * 2 * 480  # 25 Hz units, 50 Hz mel, 480 samples a frame
    assert relative(streamed[:first], whole[:first]) < 0.02  # the causal flow: the first chunk is the same
    # later chunks are cross-faded over HiFT's cache: close, and far closer than other units' audio is
    assert relative(streamed, whole) < 0.15 < relative(one_shot(other), whole)
    # and one-shot `decode` (full attention in the flow) says the same units in the same length
    assert len(decoder.decode(units)) == len(whole)
