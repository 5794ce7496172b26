"""Table 3 of the paper at our scale: how well a TTS LM speaks sentences it never trained on, from
scratch and after streaming TTS pretraining on the corpus for longer and longer.

One pretraining of `--steps` steps (the config's TTS LM, corpus, schedule and unit noise) saves a
checkpoint every steps/`--rows` steps; each row is one of them, labelled with the CPU-minutes the
run had spent when it was saved (the shorter rows are the same run part-way, before its cosine
schedule ended: they understate a pretraining planned for that budget). "Scratch" is the fresh
TTS LM. Every row says the sentences of `benchmarks/data/unseen_sentences.jsonl` (new names,
everyday sentences; in no training text; the first `--said` of its 40) text-only through the
read-write streaming generator, greedy, with the length guard; the decoder of the units' tokenizer
makes audio and tiny.en hears it.
Two ceilings from the same run: Piper's own audio of those sentences, and their true units through
the decoder.

Rows: ASR-WER (ours = the row, baseline = scratch, ratio = goal / ours: meets when ours <= 0.3) and
the share of sentences whose key word is heard (ratio = ours / goal: meets when ours >= 0.6).

    python benchmarks/tts_pretraining.py      # ~8 min: 80 corpus sentences, 40 steps, a 50-step decoder
    python benchmarks/tts_pretraining.py --config configs/demo-pretrained.yaml --store omniforge-data/store \
        --sentences 6000 --steps 3200 --rows 4 --said 40 --decoder-steps 0 --set units.decoder.vocoder=universal
        # the committed rows: demo-pretrained's corpus (6000 sentences), centered phonetic units and ~40-minute
        # pretraining (with pronunciations) on 2 cores, the decoder with HiFi-GAN
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from omniforge.offline_env import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

from benchmarks.common import report  # noqa: E402
from omniforge.config import PipelineConfig, load_pipeline_config  # noqa: E402
from omniforge.storage import ArtifactRef, ArtifactStore, Kind, Manifest, store_from_config  # noqa: E402

SENTENCES = Path(__file__).resolve().parent / "data" / "unseen_sentences.jsonl"
WER_GOAL, KEY_WORD_GOAL = 0.3, 0.6


def configure(args: argparse.Namespace, store_url: str) -> PipelineConfig:
    return load_pipeline_config(args.config, [
        f"store.url={store_url}", f"corpus.source.sentences={args.sentences}", f"corpus.pretrain.steps={args.steps}",
        f"corpus.pretrain.checkpoint_every={max(1, args.steps // args.rows)}", "evaluate.asr_model=tiny.en",
        *([f"units.decoder.steps={args.decoder_steps}", f"units.decoder.frame.steps={args.decoder_steps}"]
          if args.decoder_steps else []),
        *args.set])


def unseen_ceilings(store: ArtifactStore, config: PipelineConfig, units: Manifest, said: int) -> dict:
    """Piper's audio of the unseen sentences (as a corpus of their own), and its true units decoded."""
    from omniforge.flows.build_corpus import build_corpus
    from omniforge.tasks.units.roundtrip import roundtrip
    from omniforge.tasks.units.steps import decoder_for, open_decoder

    source = config.corpus.source.model_copy(update={"kind": "jsonl", "path": str(SENTENCES), "limit": said})
    corpus = config.corpus.model_copy(update={"name": "unseen-sentences", "source": source, "dialogues": None})
    speech = store.manifest(build_corpus(config.model_copy(update={"corpus": corpus}))["speech_version"])
    decoder = open_decoder(store, decoder_for(store, units, config, None, train=False))
    return roundtrip(store, units, decoder, limit=said, speech=speech, mos=False)


def spoken(store: ArtifactStore, config: PipelineConfig, checkpoint: Manifest, said: int) -> dict:
    """The checkpoint's TTS LM says the unseen sentences text-only; ASR-WER and key words heard."""
    from omniforge.tasks.evaluate.speak import read_sentences, sentence_metrics
    from omniforge.tasks.evaluate.steps import say_sentences

    sentences = read_sentences(str(SENTENCES))[:said]
    part_way = not checkpoint.stats["complete"]  # a row saved before the run's end: its weights at that step
    return sentence_metrics(say_sentences(store, config, checkpoint, sentences, llm_states=False, part_way=part_way))


def goal_row(case: str, ours: float, scratch: float, unit: str, ratio: float) -> dict:
    """A row measured against the issue's goal (ratio >= 1 meets it), with scratch as the baseline."""
    return {"case": case, "ours": round(ours, 4), "baseline": round(scratch, 4), "unit": unit,
            "ratio": round(ratio, 4), "target": 1.0, "meets": ratio >= 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--store", default=None, help="store URL (default: a fresh temporary one)")
    parser.add_argument("--sentences", type=int, default=80, help="corpus.source.sentences")
    parser.add_argument("--steps", type=int, default=40, help="pretraining steps (the longest row)")
    parser.add_argument("--rows", type=int, default=1, help="pretrained rows: checkpoints every steps/rows steps")
    parser.add_argument("--said", type=int, default=6, help="unseen sentences said per row (the first N of 40)")
    parser.add_argument("--decoder-steps", type=int, default=50,
                        help="train the units decoder (both networks) this many steps; 0: as the config says")
    parser.add_argument("--set", action="append", default=[], help="more config overrides (section.field=value)")
    args = parser.parse_args()
    from omniforge.flows.pretrain_tts import pretrain_tts
    from omniforge.tasks.train.steps import initial_checkpoint, resolve_inputs, tts_pretraining

    store_url = args.store or str(Path(tempfile.mkdtemp(prefix="tts-bench-")) / "store")
    config = configure(args, store_url)
    store = store_from_config(config.store)
    final = store.manifest(pretrain_tts(config)["checkpoint"])
    pretraining = tts_pretraining(config, str(final.parent_of(Kind.speech)), str(final.parent_of(Kind.units)))
    speech, units = resolve_inputs(store, pretraining)
    scratch = initial_checkpoint(store, pretraining, speech, units, None)
    ceilings = unseen_ceilings(store, config, units, args.said)
    versions = [store.manifest(ArtifactRef(Kind.checkpoint, final.name, v))
                for v in store.versions(Kind.checkpoint, final.name)]
    run = [m for m in versions if m.config_hash == final.config_hash]  # this pretraining's checkpoints, in order
    rows, scratch_said = [], spoken(store, config, scratch, args.said)
    print(f"scratch: {scratch_said}; ceilings: {ceilings}", flush=True)
    for checkpoint in [scratch] + run:
        said = scratch_said if checkpoint is scratch else spoken(store, config, checkpoint, args.said)
        label = ("scratch (0 min)" if checkpoint is scratch else
                 f"pretrained {checkpoint.stats['seconds'] / 60:.0f} min ({checkpoint.stats['step']} steps)")
        print(f"{label}: {said}", flush=True)
        rows.append(goal_row(f"{label}: unseen ASR-WER", said["sentence_asr_wer"], scratch_said["sentence_asr_wer"],
                             "WER", WER_GOAL / said["sentence_asr_wer"]))
        rows.append(goal_row(f"{label}: key word heard", said["sentence_key_word_heard"],
                             scratch_said["sentence_key_word_heard"], "share",
                             said["sentence_key_word_heard"] / KEY_WORD_GOAL))
    for name, wer in (("ceiling: Piper's audio", ceilings["original_wer"]),
                      ("ceiling: true units -> decoder", ceilings["resynthesis_wer"])):
        rows.append(goal_row(f"{name}: unseen ASR-WER", wer, scratch_said["sentence_asr_wer"], "WER",
                             WER_GOAL / max(wer, 1e-4)))
    report("tts_pretraining", rows)


if __name__ == "__main__":
    main()
