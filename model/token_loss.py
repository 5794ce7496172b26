"""A causal LM's cross-entropy computed only where a label is, a chunk of logits at a time.

At the production vocabularies (Qwen2.5's 151,936 text ids; the TTS LM's, those plus 6,561 units)
the logits of a training batch outweigh the model's activations: 16 dialogues of 700 positions are
1.7e9 logits, 7 GB in fp32 before their gradient. Most positions carry no loss (the system prompt,
the spliced speech, the user's turns, the TTS LM's text positions), so the output head runs only at
the labelled ones; with `chunk_tokens`, only that many positions' logits live at once: each chunk's
gradients are taken as it is computed (the fused linear cross-entropy of Liger and others), so
nothing is kept and nothing recomputed. Value and gradients are those of the full loss.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel

IGNORE_INDEX = -100  # a label that carries no loss (transformers' convention)
LOGIT_SCALING = ("final_logit_softcapping", "logit_scale", "logits_scaling")  # heads that are more than a matmul


def labelled_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, head: nn.Module,
                           chunk_tokens: int) -> torch.Tensor:
    """Mean cross-entropy of `head(hidden)` (B, L, V) against `targets` (B, L) over the positions whose
    target is not IGNORE_INDEX. `chunk_tokens` > 0: at most that many positions' logits at once (the
    head must be an nn.Linear); 0: all labelled positions at once, through autograd."""
    labelled = targets != IGNORE_INDEX
    states, labels = hidden[labelled], targets[labelled]
    if len(labels) == 0:
        raise ValueError("no position of the batch has a label: there is no loss to learn from")
    if chunk_tokens == 0:
        return F.cross_entropy(head(states).float(), labels, reduction="sum") / len(labels)
    if type(head) is not nn.Linear:
        raise ValueError(f"a chunked loss needs a plain nn.Linear output head, not {type(head).__name__}; "
                         "set train.loss_chunk_tokens=0")
    return ChunkedLinearCrossEntropy.apply(states, head.weight, head.bias, labels, chunk_tokens) / len(labels)


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """The summed cross-entropy of `states @ weight.T + bias` against `labels`, `chunk` rows at a time,
    each chunk's gradients taken in the forward pass (softmax minus one-hot) and its logits dropped."""

    @staticmethod
    def forward(ctx, states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
                chunk: int) -> torch.Tensor:
        wants_states, wants_weight, wants_bias = ctx.needs_input_grad[:3]
        grad_states = torch.zeros_like(states) if wants_states else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if wants_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if wants_bias else None
        total = torch.zeros((), dtype=torch.float32, device=states.device)
        for start in range(0, len(labels), chunk):
            rows, targets = states[start:start + chunk], labels[start:start + chunk]
            logits = F.linear(rows, weight, bias)  # autocast's dtype where it is on
            log_probs = logits.float().log_softmax(-1)
            picked = torch.arange(len(targets), device=targets.device)
            total -= log_probs[picked, targets].sum()
            if not (wants_states or wants_weight or wants_bias):
                continue
            grad_logits = log_probs.exp_()
            grad_logits[picked, targets] -= 1
            grad_logits = grad_logits.to(logits.dtype)
            if wants_states:
                grad_states[start:start + chunk] = grad_logits @ weight.to(logits.dtype)
            if wants_weight:
                grad_weight += (grad_logits.T @ rows.to(logits.dtype)).float()
            if wants_bias:
                grad_bias += grad_logits.float().sum(0)
        ctx.save_for_backward(grad_states, grad_weight, grad_bias)  # None where no gradient is wanted
        ctx.dtypes = (states.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        grads = [None if grad is None else (grad * grad_total).to(dtype)
                 for grad, dtype in zip(ctx.saved_tensors, ctx.dtypes)]
        return *grads, None, None


def causal_lm_loss(lm: PreTrainedModel, embeds: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor,
                   chunk_tokens: int) -> torch.Tensor:
    """`lm`'s loss on `targets`, each aligned with the position that predicts it, from its body's last
    hidden state through its output embedding (what its own forward does, without the full logits)."""
    scaled = [name for name in LOGIT_SCALING if getattr(lm.config, name, None)]
    if scaled:
        raise ValueError(f"{type(lm).__name__} scales its logits ({', '.join(scaled)}): its loss is not its "
                         "output embedding's cross-entropy")
    hidden = lm.get_decoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    return labelled_cross_entropy(hidden, targets, lm.get_output_embeddings(), chunk_tokens)
