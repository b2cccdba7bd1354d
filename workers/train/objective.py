"""Losses (SFT and DPO in one batch), the AdamW step and log-probability scoring, all jitted.

The jitted programs take the model config, LoRA scaling, DPO beta and optimizer settings as
static arguments and the learning rate as a traced scalar, so every run and every call on the
same model shape shares compiled programs (one per length bucket), whatever its schedule.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from .forward import label_logprobs


class OptimizerSettings(NamedTuple):
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8


def make_optimizer(settings: OptimizerSettings, learning_rate) -> optax.GradientTransformation:
    """AdamW (optionally after global-norm clipping). `learning_rate` may be a traced scalar:
    the state's structure does not depend on it, so `make_optimizer(s, 0.0).init(...)` builds
    the state every step updates."""
    adamw = optax.adamw(
        learning_rate, b1=settings.b1, b2=settings.b2, eps=settings.eps, weight_decay=settings.weight_decay
    )
    if settings.max_grad_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(settings.max_grad_norm), adamw)


def learning_rate_schedule(peak: float, warmup_steps: int, steps: int):
    """Linear warm-up to `peak` over `warmup_steps`, then cosine decay towards 0 at the end.

    Update k (0-based) uses schedule(k + 1), so the first update already learns and the last
    one still moves a little."""
    warmup = min(warmup_steps, steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=steps + 1, end_value=0.0
    )


def batch_loss(lora, params, batch, *, config, scaling, dpo_beta):
    """SFT + DPO loss of one batch and its parts.

    SFT: weighted mean over target tokens of -log p, each token weighted by its example's
    weight. DPO: weighted mean over pairs of -log σ(β·((c - c_ref) - (r - r_ref))), with c and r
    the summed log-probabilities of the chosen and rejected answers. A part with no weight in
    the batch contributes 0."""
    logp = (
        label_logprobs(config, params, lora, scaling, batch["tokens"], batch["label_positions"], batch["labels"])
        * batch["label_mask"]
    )
    token_weight = batch["sft_weight"][:, None] * batch["label_mask"]
    sft_total = token_weight.sum()
    sft = -(logp * token_weight).sum() / jnp.maximum(sft_total, 1e-9)

    sequence_logp = logp.sum(axis=-1)
    chosen = sequence_logp[batch["pair_rows"][:, 0]] - batch["pair_reference"][:, 0]
    rejected = sequence_logp[batch["pair_rows"][:, 1]] - batch["pair_reference"][:, 1]
    margin = dpo_beta * (chosen - rejected)
    pair_weight = batch["pair_weight"]
    pair_total = pair_weight.sum()
    dpo = -(jax.nn.log_sigmoid(margin) * pair_weight).sum() / jnp.maximum(pair_total, 1e-9)
    accuracy = ((margin > 0) * pair_weight).sum() / jnp.maximum(pair_total, 1e-9)
    return sft + dpo, {"sft_loss": sft, "dpo_loss": dpo, "dpo_accuracy": accuracy}


@partial(jax.jit, static_argnames=("config", "scaling", "dpo_beta", "settings"), donate_argnames=("lora", "opt_state"))
def train_step(
    params, lora, opt_state, batch, learning_rate, *, config, scaling, dpo_beta, settings: OptimizerSettings
):
    """One AdamW update of the LoRA factors; the base `params` get no gradient."""
    (loss, parts), grads = jax.value_and_grad(batch_loss, has_aux=True)(
        lora, params, batch, config=config, scaling=scaling, dpo_beta=dpo_beta
    )
    updates, opt_state = make_optimizer(settings, learning_rate).update(grads, opt_state, lora)
    lora = optax.apply_updates(lora, updates)
    return lora, opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **parts}


@partial(jax.jit, static_argnames=("config", "scaling"))
def scored_logprobs(params, lora, tokens, label_positions, labels, *, config, scaling):
    """label_logprobs, jitted for scoring (evaluation and DPO references)."""
    return label_logprobs(config, params, lora, scaling, tokens, label_positions, labels)
