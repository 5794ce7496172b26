"""The demo's model, as the latency benchmarks use it: the demo config's sizes (pretrained tiny.en
encoder, the demo LLM and TTS LM freshly initialised: speed depends on sizes, not on training), its
units -> mel network and frame vocoder, and spoken questions in Piper's voice."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DemoChain:
    config: object
    model: object
    chat: object
    unit_to_mel: object
    frame_vocoder: object  # the demo config's `units.decoder.frame` sizes
    questions: list[np.ndarray]  # 16 kHz waves

    def vocoder(self, runtime) -> object:
        """The mel -> wave a `DecoderRuntimeConfig` speaks with: the HiFi-GAN it names, or the demo
        decoder's own (`units.decoder.vocoder`: its frame vocoder, or the HiFi-GAN named there)."""
        named = self.config.units.decoder.vocoder if runtime.vocoder == "own" else runtime.vocoder
        return self.frame_vocoder if named == "frame" else named


def demo_chain(questions: int) -> DemoChain:
    from omniforge.config import load_pipeline_config
    from omniforge.config.build import DemoSourceConfig, TTSConfig
    from omniforge.model.mel import INPUT_SAMPLE_RATE
    from omniforge.model.unit_vocoder import MelGrid, UnitToMel
    from omniforge.tasks.build.sources import demo_dialogues
    from omniforge.tasks.build.tts import EngineSet
    from omniforge.tasks.common.audio_ops import resample
    from omniforge.tasks.train.model_factory import build_model
    from omniforge.tasks.train.text_tokenizer import ChatFormat, train_bpe
    from omniforge.tasks.units.decoders.learned import unit_to_mel_settings
    from omniforge.tasks.units.frame_vocoder import new_frame_vocoder

    config = load_pipeline_config("configs/demo.yaml")
    dialogues = demo_dialogues(DemoSourceConfig(dialogues=90), seed=0)
    texts = [turn["value"] for d in dialogues for turn in d["conversations"]]
    chat = ChatFormat(train_bpe(texts, config.train.model.tokenizer.vocab_size), config.train.model.tokenizer.system_prompt)
    model = build_model(config.train.model, chat, config.units.kmeans.k).eval()
    d = config.units.decoder
    grid = MelGrid(unit_rate=config.units.frame_rate)
    unit_to_mel = UnitToMel(unit_to_mel_settings(d, config.units.kmeans.k), grid)
    frame_vocoder = new_frame_vocoder(d.frame, grid).eval().requires_grad_(False)
    piper = EngineSet(TTSConfig()).get("piper")
    said = [d["conversations"][0]["value"] for d in dialogues[:questions]]
    waves = [resample(*piper.synthesize(q, TTSConfig().assistant), INPUT_SAMPLE_RATE) for q in said]
    return DemoChain(config, model, chat, unit_to_mel, frame_vocoder, waves)
