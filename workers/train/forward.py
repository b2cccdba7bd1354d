"""The decoder with trainable LoRA factors: the engine's math, differentiable in the factors only.

The layers are those of `workers.llm.model.forward_hidden` (same parameter pytree, RMSNorm, RoPE,
attention block and output head, under one `lax.scan`), written without the KV cache and the
adapter slot gathers, which a training step does not need: that saves ~15% of a step on CPU
and keeps the backward pass free of cache scatters. The tests check that the logits equal
`full_logits` on the base and with an adapter in the engine's slot layout.

LoRA factors live in PEFT orientation, {target: {"A": [L, r, in], "B": [L, out, r]}}, so they
become a `LoraAdapter` without reshuffling; a projection computes x W + scaling · (x Aᵀ) Bᵀ.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from workers.llm.config import ModelConfig
from workers.llm.lora import LoraAdapter
from workers.llm.model import LORA_TARGETS, _attention_block, logits_from_hidden, rms_norm, rope

# Projection matrices of the engine layout and the LoRA targets whose outputs they hold side
# by side.
FUSED_TARGETS = {
    "wqkv": ("q_proj", "k_proj", "v_proj"),
    "wo": ("o_proj",),
    "w_gate_up": ("gate_proj", "up_proj"),
    "w_down": ("down_proj",),
}

# Above this many tokens per batch the layers are recomputed in the backward pass instead of
# keeping their activations: about (6·D + 4·F + 4·H·T) floats per token and layer, which for
# SmolLM2-135M at 2048 tokens of length 256 is already ~3 GB, for a third more compute.
REMAT_TOKENS = 2048


def init_lora_params(config: ModelConfig, *, rank: int, targets, seed: int) -> dict:
    """A fresh adapter: A small normal (std 1/sqrt(in), so x Aᵀ keeps the scale of x), B zero,
    so the adapted model starts exactly equal to the base."""
    rng = np.random.default_rng(seed)
    dims = config.target_dims()
    params = {}
    for target in LORA_TARGETS:
        if target not in targets:
            continue
        fan_in, fan_out = dims[target]
        a = rng.standard_normal((config.num_layers, rank, fan_in)) / math.sqrt(fan_in)
        params[target] = {"A": a.astype(np.float32), "B": np.zeros((config.num_layers, fan_out, rank), np.float32)}
    return params


def lora_params_from_adapter(adapter: LoraAdapter) -> dict:
    return {
        target: {"A": np.array(a, np.float32), "B": np.array(b, np.float32)}
        for target, (a, b) in adapter.weights.items()
    }


def adapter_from_lora_params(
    params: dict, *, rank: int, alpha: float, use_rslora: bool = False, metadata: dict | None = None
) -> LoraAdapter:
    weights = {
        target: (np.asarray(params[target]["A"], np.float32), np.asarray(params[target]["B"], np.float32))
        for target in LORA_TARGETS
        if target in params
    }
    return LoraAdapter(
        rank=rank, alpha=float(alpha), weights=weights, use_rslora=use_rslora, metadata=dict(metadata or {})
    )


def forward_hidden(
    config: ModelConfig, params: dict, lora: dict | None, scaling: float, tokens: jax.Array
) -> jax.Array:
    """Final hidden states [B, T, D] of `tokens` [B, T], every row starting at position 0.

    Rows are right-padded: causal attention keeps padding out of every real position, so no
    padding mask is needed. `lora` None (or {}) is the base model."""
    c = config
    B, T = tokens.shape
    lora = lora or {}
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    attention_scale = 1.0 / math.sqrt(c.head_dim)
    dims = c.target_dims()

    def project(x, layer_params, layer_lora, name):
        y = x @ layer_params[name]
        targets = FUSED_TARGETS[name]
        if not any(t in layer_lora for t in targets):
            return y
        deltas = []
        for t in targets:
            if t in layer_lora:
                a, b = layer_lora[t]["A"], layer_lora[t]["B"]
                deltas.append(jnp.einsum("btr,or->bto", jnp.einsum("bti,ri->btr", x, a), b) * scaling)
            else:
                deltas.append(jnp.zeros((B, T, dims[t][1]), x.dtype))
        return y + jnp.concatenate(deltas, axis=-1)

    def layer(h, xs):
        lp, ll = xs
        x = rms_norm(h, lp["attn_norm"], c.rms_norm_eps)
        qkv = project(x, lp, ll, "wqkv")
        q, k, v = jnp.split(qkv, [c.q_size, c.q_size + c.kv_size], axis=-1)
        q = rope(q.reshape(B, T, c.num_heads, c.head_dim), positions, c.rope_theta)
        k = rope(k.reshape(B, T, c.num_kv_heads, c.head_dim), positions, c.rope_theta)
        v = v.reshape(B, T, c.num_kv_heads, c.head_dim)
        q = q.reshape(B, T, c.num_kv_heads, c.group_size, c.head_dim).transpose(0, 2, 3, 1, 4)
        attn = _attention_block(
            q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), positions, attention_scale, h.dtype
        )
        attn = attn.transpose(0, 3, 1, 2, 4).reshape(B, T, c.q_size)
        h = h + project(attn, lp, ll, "wo")
        x = rms_norm(h, lp["ffn_norm"], c.rms_norm_eps)
        gate, up = jnp.split(project(x, lp, ll, "w_gate_up"), 2, axis=-1)
        h = h + project(jax.nn.silu(gate) * up, lp, ll, "w_down")
        return h, None

    if B * T > REMAT_TOKENS:
        layer = jax.checkpoint(layer)
    h, _ = jax.lax.scan(layer, params["embed"][tokens], (params["layers"], lora))
    return rms_norm(h, params["final_norm"], c.rms_norm_eps)


def label_logprobs(
    config: ModelConfig, params: dict, lora: dict | None, scaling: float, tokens, label_positions, labels
) -> jax.Array:
    """log p(labels[b, j] | tokens[b, :label_positions[b, j] + 1]) as [B, N].

    The output head runs only on the N scored positions per row: with a 49k vocabulary it
    would otherwise cost as much as a third of the decoder for a typical batch."""
    hidden = forward_hidden(config, params, lora, scaling, tokens)
    picked = jnp.take_along_axis(hidden, label_positions[..., None], axis=1)
    logits = logits_from_hidden(params, picked)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


def full_logits(config: ModelConfig, params: dict, lora: dict | None, scaling: float, tokens):
    """Logits at every position [B, T, V]; for tests that compare with the engine's."""
    return logits_from_hidden(params, forward_hidden(config, params, lora, scaling, tokens))
