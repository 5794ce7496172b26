"""The training loss at a production vocabulary: our labelled, chunked cross-entropy vs transformers' own
loss over every position's logits (what the stage losses computed before `train.loss_chunk_tokens`).

A causal LM with Qwen2.5's 151,936-word vocabulary and a small body (the head is what differs), one
batch of dialogues whose answers carry the labels; each case runs forward and backward in a process of
its own, so the peak memory it adds is its own. Rows: memory added by a step, seconds per step.

    python benchmarks/token_loss.py                       # ~2 minutes on 2 cores
    python benchmarks/token_loss.py --positions 2048 --hidden 512 --chunk 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import report, result_row  # noqa: E402

QWEN25_VOCAB = 151936
CASES = ("full logits", "labelled", "labelled, chunked")


def build(args: argparse.Namespace):
    """The LM and a batch: `labelled` of each row's positions (its end: the answer) carry a label."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from omniforge.model.token_loss import IGNORE_INDEX

    torch.manual_seed(0)
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=QWEN25_VOCAB, hidden_size=args.hidden,
                                      intermediate_size=2 * args.hidden, num_hidden_layers=args.layers,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))
    embeds = torch.randn(args.batch, args.positions, args.hidden)
    mask = torch.ones(args.batch, args.positions, dtype=torch.long)
    targets = torch.randint(0, QWEN25_VOCAB, (args.batch, args.positions))
    targets[:, :args.positions - int(args.labelled * args.positions)] = IGNORE_INDEX
    targets[:, -1] = IGNORE_INDEX
    return lm, embeds, mask, targets


def run_case(args: argparse.Namespace) -> dict:
    """Steps of one case in this process: seconds per step (after the first) and the memory they added."""
    import psutil

    from omniforge.model.token_loss import IGNORE_INDEX, causal_lm_loss

    lm, embeds, mask, targets = build(args)
    if args.case == "full logits":  # transformers' loss: labels shifted inside, every position's logits
        labels = torch.cat([targets.new_full((len(targets), 1), IGNORE_INDEX), targets[:, :-1]], dim=1)

        def loss() -> torch.Tensor:
            return lm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
    else:
        chunk = args.chunk if args.case == "labelled, chunked" else 0

        def loss() -> torch.Tensor:
            return causal_lm_loss(lm, embeds, mask, targets, chunk)
    before = psutil.Process().memory_info().rss
    seconds, values = [], []
    for _ in range(args.steps):
        began = time.perf_counter()
        value = loss()
        value.backward()
        seconds.append(time.perf_counter() - began)
        values.append(float(value))
        lm.zero_grad(set_to_none=True)
    added = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before  # ru_maxrss: KiB on Linux
    return {"seconds": statistics.median(seconds[1:]), "peak_mib": added / 2**20, "loss": values[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--positions", type=int, default=512, help="positions per dialogue")
    parser.add_argument("--labelled", type=float, default=0.5, help="share of the positions that carry a label")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=128, help="labelled positions whose logits live at once")
    parser.add_argument("--steps", type=int, default=3, help="steps per case (the first is not timed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # one case, in a process of its own
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.case:
        print(json.dumps(run_case(args)))
        return
    forwarded = sys.argv[1:]
    measured = {}
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, *forwarded, "--case", case], check=True, capture_output=True,
                             text=True).stdout
        measured[case] = json.loads(out.strip().splitlines()[-1])
        print(f"{case}: {measured[case]}", flush=True)
    if abs(measured["labelled, chunked"]["loss"] - measured["full logits"]["loss"]) > 1e-4:
        raise SystemExit(f"the losses differ: {measured}")
    shape = (f"{args.batch} x {args.positions} positions, {args.labelled:.0%} labelled, vocabulary {QWEN25_VOCAB}, "
             f"chunk {args.chunk}")
    full, ours = measured["full logits"], measured["labelled, chunked"]
    rows = [result_row(f"loss step memory added, labelled chunks vs full logits ({shape})", ours["peak_mib"],
                       full["peak_mib"], "MiB", 3.0, higher_is_better=False),
            result_row(f"loss step time, labelled chunks vs full logits ({shape})", ours["seconds"], full["seconds"],
                       "s/step", 1.0, higher_is_better=False),
            result_row(f"loss step memory added, labelled (one chunk) vs full logits ({shape})",
                       measured["labelled"]["peak_mib"], full["peak_mib"], "MiB", 1.5, higher_is_better=False)]
    report("token_loss", rows)


if __name__ == "__main__":
    main()
