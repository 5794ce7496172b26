"""Supervised phonetic units: learn the projection k-means clusters by recognizing the speech's own text.

k-means of a small ASR encoder's standardized states spends its clusters on whatever varies most,
much of it how a sound is said, and the units lose what was said (the true units of unseen sentences
come back at ASR-WER ~0.23-0.29 through our decoder, against 0.05 for the audio). CosyVoice 2's S3
tokenizer is trained inside an ASR model for this reason. Here a small CTC recognizer of the text's
characters learns a per-frame linear projection of the states; k-means then clusters the projection.
"""

from __future__ import annotations

import torch
from torch import nn

from omniforge.config.units import SupervisedProjectionConfig
from omniforge.errors import InputError
from omniforge.model.unit_tokenizer import CtcRecognizer
from omniforge.tasks.common.asr import normalize_words

HELD_OUT_SHARE = 0.05  # utterances kept out of training to report the recognizer's character error rate


def character_targets(texts: list[str]) -> tuple[list[str], list[str]]:
    """Each text as the characters of its normalized words (spaces dropped: they are not sounds), and
    the symbol inventory they use (symbol i + 1; 0 is CTC's blank)."""
    targets = [normalize_words(text).replace(" ", "") for text in texts]
    return targets, sorted(set("".join(targets)))


def _batch(features: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    lengths = torch.tensor([len(f) for f in features])
    frames = nn.utils.rnn.pad_sequence(features, batch_first=True)
    return frames, lengths, torch.cat(targets), torch.tensor([len(t) for t in targets])


def greedy_text(log_probs: torch.Tensor, symbols: list[str]) -> str:
    """Best path of one utterance's (frames, symbols + 1) log-probabilities: repeats merged, blanks dropped."""
    best = torch.unique_consecutive(log_probs.argmax(-1)).tolist()
    return "".join(symbols[i - 1] for i in best if i)


def train_projection(features: list[torch.Tensor], texts: list[str], config: SupervisedProjectionConfig
                     ) -> tuple[nn.Linear, dict]:
    """features: each utterance's (frames, dim) standardized states; texts: what each says. Returns the
    learnt projection and what the training measured (losses, held-out character error rate)."""
    import jiwer

    targets, symbols = character_targets(texts)
    fits = [i for i, (f, t) in enumerate(zip(features, targets)) if t and len(f) >= len(t)]
    if len(fits) < 2:
        raise InputError(f"a supervised tokenizer needs utterances with text that are longer in frames than in "
                         f"characters; {len(fits)} of {len(texts)} are")
    generator = torch.Generator().manual_seed(config.seed)
    order = [fits[i] for i in torch.randperm(len(fits), generator=generator).tolist()]
    held = order[: max(1, int(len(order) * HELD_OUT_SHARE))]
    train = order[len(held):] or held
    ids = {c: i + 1 for i, c in enumerate(symbols)}
    encoded = {i: torch.tensor([ids[c] for c in targets[i]]) for i in fits}

    torch.manual_seed(config.seed)
    model = CtcRecognizer(features[0].shape[-1], config.dim, config.channels, config.layers, config.kernel,
                          len(symbols))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps, pct_start=0.05)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    losses = []
    for step in range(1, config.steps + 1):
        chosen = [train[i] for i in torch.randint(len(train), (config.batch_size,), generator=generator).tolist()]
        frames, lengths, flat, target_lengths = _batch([features[i] for i in chosen], [encoded[i] for i in chosen])
        loss = ctc(model(frames).transpose(0, 1), flat, lengths, target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % config.log_every == 0 or step == config.steps:
            print(f"supervised units: recognizer step {step}/{config.steps} CTC loss {loss.item():.3f}", flush=True)
    model.eval()
    with torch.no_grad():
        heard = [greedy_text(model(features[i].unsqueeze(0))[0], symbols) for i in held]
    error = float(jiwer.cer([targets[i] for i in held], heard))
    print(f"supervised units: held-out character error rate {error:.3f} ({len(held)} utterances)", flush=True)
    stats = {"recognizer_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4), "recognizer_cer": round(error, 4),
             "recognizer_utterances": len(train), "recognizer_symbols": len(symbols)}
    return model.projection.requires_grad_(False), stats
