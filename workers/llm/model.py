"""Llama-family decoder as pure JAX functions over parameter pytrees.

RMSNorm, half-split RoPE, grouped-query attention over a preallocated KV cache, SwiGLU, tied or
untied output head; layers run under `lax.scan`. Every projection can carry LoRA deltas from
fixed adapter slots: each batch row names up to `MAX_ADAPTERS_PER_ROW` slots with weights
(slot 0 is all zeros), applied as gathers + einsums so one compiled program serves any mix.

KV cache layout: k, v: [layers, batch_slots, kv_heads, max_seq_len, head_dim].
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from . import kernels
from .config import ModelConfig

MAX_ADAPTERS_PER_ROW = 3
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def init_params(config: ModelConfig, seed: int = 0, *, scale: float = 0.08) -> dict:
    """Random parameters (host numpy, float32) in the engine layout, for tests and benchmarks."""
    rng = np.random.default_rng(seed)
    c = config
    L, D, F = c.num_layers, c.hidden_size, c.intermediate_size

    def normal(*shape):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    params = {
        "embed": normal(c.vocab_size, D) * 10,
        "final_norm": (1.0 + 0.1 * rng.standard_normal(D)).astype(np.float32),
        "layers": {
            "attn_norm": (1.0 + 0.1 * rng.standard_normal((L, D))).astype(np.float32),
            "wqkv": normal(L, D, c.q_size + 2 * c.kv_size),
            "wo": normal(L, c.q_size, D),
            "ffn_norm": (1.0 + 0.1 * rng.standard_normal((L, D))).astype(np.float32),
            "w_gate_up": normal(L, D, 2 * F),
            "w_down": normal(L, F, D),
        },
    }
    if not c.tie_word_embeddings:
        params["lm_head"] = normal(D, c.vocab_size)
    return params


def init_lora_state(config: ModelConfig, num_slots: int, max_rank: int, dtype=jnp.float32) -> dict:
    """Zeroed adapter slots: per target A [L, slots+1, in, r], B [L, slots+1, r, out]; int8
    slots are in pairs, A [L, slots+1, in/2, r, 2] and B [L, slots+1, r/2, out, 2], with scale
    [L, slots+1, r] (float32): see lora.quantize_slot_arrays."""
    dims = config.target_dims()
    L, S = config.num_layers, num_slots + 1
    if jnp.dtype(dtype) == jnp.int8:
        return {
            t: {
                "A": jnp.zeros((L, S, dims[t][0] // 2, max_rank, 2), dtype),
                "B": jnp.zeros((L, S, max_rank // 2, dims[t][1], 2), dtype),
                "scale": jnp.zeros((L, S, max_rank), jnp.float32),
            }
            for t in LORA_TARGETS
        }
    return {
        t: {"A": jnp.zeros((L, S, dims[t][0], max_rank), dtype), "B": jnp.zeros((L, S, max_rank, dims[t][1]), dtype)}
        for t in LORA_TARGETS
    }


def serving_params(params: dict) -> dict:
    """Host params prepared for serving: the output head as an explicit [D, V] matrix, also for
    tied embeddings (XLA's CPU dot is several times slower on the transposed embedding)."""
    if "lm_head" in params:
        return params
    return {**params, "lm_head": np.ascontiguousarray(np.asarray(params["embed"]).T)}


def rms_norm(x, weight, eps):
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (normed * weight.astype(jnp.float32)).astype(x.dtype)


def rope(x, positions, theta):
    """Half-split rotary embedding (Hugging Face layout). x: [B, T, H, hd], positions: [B, T]."""
    half = x.shape[-1] // 2
    inv_freq = 1.0 / (theta ** (jnp.arange(0, 2 * half, 2, dtype=jnp.float32) / (2 * half)))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    x1, x2 = x32[..., :half], x32[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def unpair_slot_tables(a, b):
    """int8 tables in pairs, A [..., in/2, R, 2] and B [..., R/2, out, 2], as A [..., in, R] and
    B [..., R, out] (numpy or jax arrays, any leading axes)."""
    *lead, half_in, rank, _ = a.shape
    *_, half_rank, fan_out, _ = b.shape
    return (
        a.swapaxes(-1, -2).reshape(*lead, 2 * half_in, rank),
        b.swapaxes(-1, -2).reshape(*lead, 2 * half_rank, fan_out),
    )


def _lora_delta(x, slots, layer, rows_lora):
    """Sum over a row's adapters of w · (x A) B. x: [B, T, in]; result [B, T, out]."""
    index, weight = rows_lora
    a = slots["A"][layer, index]  # [B, k, in, r]
    b = slots["B"][layer, index]  # [B, k, r, out]
    factor = weight[:, :, None]  # [B, k, 1]
    if "scale" in slots:  # int8 slots, in pairs
        a, b = unpair_slot_tables(a.astype(x.dtype), b.astype(x.dtype))
        factor = factor * slots["scale"][layer, index]  # [B, k, r]
    h = jnp.einsum("bti,bkir->btkr", x, a) * factor[:, None].astype(x.dtype)
    return jnp.einsum("btkr,bkro->bto", h, b)


def _lora_delta_grouped(x, slots, layer, rows_lora):
    """`_lora_delta` computed per adapter slot instead of per row (the SGMV idea of S-LoRA and
    Punica): the (token, adapter) pairs are sorted by slot and each slot's A and B multiply its
    own group in one `jax.lax.ragged_dot`, so a slot's factors are read once per call however
    many rows use it, where the gather copies them for every row. Same result as
    `_lora_delta` up to the order of the additions."""
    index, weight = rows_lora  # [B, k]
    B, T, fan_in = x.shape
    k = index.shape[1]
    a, b = slots["A"][layer], slots["B"][layer]  # [S, in, r], [S, r, out] (int8: in pairs)
    if "scale" in slots:
        a, b = unpair_slot_tables(a.astype(x.dtype), b.astype(x.dtype))
    S = a.shape[0]
    pair_slot = jnp.broadcast_to(index[:, None, :], (B, T, k)).reshape(-1)  # [B*T*k]
    pair_weight = jnp.broadcast_to(weight[:, None, :], (B, T, k)).reshape(-1)
    pair_x = jnp.broadcast_to(x[:, :, None, :], (B, T, k, fan_in)).reshape(-1, fan_in)
    order = jnp.argsort(pair_slot, stable=True)
    sorted_slot = pair_slot[order]
    sizes = jnp.bincount(pair_slot, length=S).astype(jnp.int32)
    h = jax.lax.ragged_dot(pair_x[order], a.astype(x.dtype), sizes, preferred_element_type=jnp.float32)
    factor = pair_weight[order][:, None]
    if "scale" in slots:
        factor = factor * slots["scale"][layer][sorted_slot]  # [M, r]
    h = (h * factor).astype(x.dtype)
    y = jax.lax.ragged_dot(h, b.astype(x.dtype), sizes, preferred_element_type=jnp.float32)
    unsorted = jnp.zeros_like(y).at[order].set(y)
    return unsorted.reshape(B, T, k, -1).sum(axis=2).astype(x.dtype)


ATTENTION_BLOCK = 128


def _attention_block(q, keys, values, positions, scale, dtype):
    """Softmax attention of q [B, h, g, t, d] over keys/values [B, h, s, d] (cache positions
    [0, s)), masked causally on absolute positions [B, t]."""
    s = keys.shape[2]
    mask = jnp.arange(s)[None, None, None, None, :] <= positions[:, None, None, :, None]
    scores = jnp.einsum("bhgtd,bhsd->bhgts", q, keys).astype(jnp.float32)
    scores = jnp.where(mask, scores * scale, -1e30)
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
    return jnp.einsum("bhgts,bhsd->bhgtd", probs, values)


def _attention(q, keys, values, positions, kv_len, scale, dtype):
    """Causal attention over the cache window [0, kv_len).

    Long query runs (prefill) are split into blocks of ATTENTION_BLOCK queries; a block only
    reads the keys it can see. The queries are consecutive positions ending at most at kv_len,
    so block j (queries [j·n, (j+1)·n)) never sees a key beyond kv_len - T + (j+1)·n: a static
    length, whatever the (traced) start position. The mask is still applied on absolute
    positions, so the result equals full-window attention exactly (masked keys weigh 0)."""
    T = q.shape[3]
    n = ATTENTION_BLOCK
    if T <= n or T > kv_len:
        return _attention_block(q, keys, values, positions, scale, dtype)
    outs = []
    for begin in range(0, T, n):
        end = min(T, begin + n)
        visible = min(kv_len, kv_len - T + end)
        outs.append(
            _attention_block(
                q[:, :, :, begin:end],
                keys[:, :, :visible],
                values[:, :, :visible],
                positions[:, begin:end],
                scale,
                dtype,
            )
        )
    return jnp.concatenate(outs, axis=3)


def forward_hidden(
    config: ModelConfig,
    params,
    lora,
    tokens,
    positions,
    cache,
    *,
    slot_ids,
    kv_len: int,
    rows_lora=None,
    matmul_dtype=None,
    q4=None,
    native_lora=False,
    native_attention=False,
    grouped_lora=False,
):
    """Run the decoder on `tokens` [B, T] at `positions` [B, T], reading and writing `cache`.

    `slot_ids` [B] names each row's cache slot, or None when row b is slot b (full batch).
    Attention covers cache positions [0, kv_len) with a causal mask on absolute positions.
    `rows_lora` = (slot index [B, k], weight [B, k]) or None for no adapters.
    `matmul_dtype` (e.g. bfloat16; None = the parameters' dtype) runs the weight matmuls with
    inputs rounded to that dtype and float32 accumulation (opt-in: faster prefill on CPUs with
    bfloat16 dot units, at bfloat16 input precision); attention and norms stay as they are.
    `q4` (from `kernels.pack_layers`) runs the decoder's matrices through the 4-bit kernel when
    B·T ≤ kernels.fastest_rows(q4) (any number with the panel kernels; wider calls otherwise
    keep XLA's float32 matmuls); params["layers"] must then hold the same weights
    dequantized, so both paths compute with the same weights.
    `native_lora` computes the LoRA terms with `kernels.lora_delta` when B·T ≤ kernels.MAX_ROWS
    (many rows on different adapters; wider calls, i.e. prefill, keep XLA's gathers + einsums),
    within the 4-bit matmul's own call (`kernels.q4_matmul_lora`) when `q4` runs it.
    `native_attention` runs attention with `kernels.attention` (reading each row's cache in
    place, up to its own position) when B·T ≤ kernels.MAX_ROWS; the cache must then be float32
    or float16. The cache may hold a narrower dtype than the computation (keys and values are
    rounded when written and widened when read).
    `grouped_lora` computes XLA's LoRA terms (where the native kernel does not) per adapter slot
    with `jax.lax.ragged_dot` (`_lora_delta_grouped`) instead of gathering each row's factors.
    Returns final hidden states [B, T, D] (after the last norm) and the updated cache.
    """
    c = config
    B, T = tokens.shape
    if q4 is not None and B * T > kernels.fastest_rows(q4):
        q4 = None
    dtype = params["embed"].dtype
    h = params["embed"][tokens]
    batch_rows = jnp.arange(B) if slot_ids is None else slot_ids
    cache_rows = jnp.broadcast_to(batch_rows[:, None], (B, T))
    scale = 1.0 / math.sqrt(c.head_dim)
    use_lora = rows_lora is not None and lora is not None
    native_lora = native_lora and B * T <= kernels.MAX_ROWS
    native_attention = native_attention and B * T <= kernels.MAX_ROWS

    if use_lora and native_lora:  # the kernels take each token's (slots, weights) as a row
        token_adapters = tuple(jnp.repeat(a, T, axis=0) for a in rows_lora)

    def lora_delta(x, target, layer):
        if not native_lora:
            return (_lora_delta_grouped if grouped_lora else _lora_delta)(x, lora[target], layer, rows_lora)
        delta = kernels.lora_delta(x.reshape(B * T, -1), lora[target], layer, *token_adapters)
        return delta.reshape(B, T, -1).astype(x.dtype)

    def mm(x, w):
        if matmul_dtype is None:
            return x @ w
        return jnp.dot(x.astype(matmul_dtype), w.astype(matmul_dtype), preferred_element_type=jnp.float32).astype(
            x.dtype
        )

    def project(x, lp, name, layer):
        if q4 is None:
            return mm(x, lp[name])
        rows = x.reshape(B * T, x.shape[-1])
        return kernels.q4_matmul(rows, q4[name], layer).reshape(B, T, -1)

    def project_with_lora(x, lp, name, targets, layer):
        """x @ W plus the LoRA terms of the projections W holds side by side (`targets`)."""
        if not use_lora:
            return project(x, lp, name, layer)
        if q4 is not None and native_lora:  # one kernel call for the matmul and its terms
            rows = x.reshape(B * T, x.shape[-1])
            y = kernels.q4_matmul_lora(rows, q4[name], layer, [lora[t] for t in targets], *token_adapters)
            return y.reshape(B, T, -1).astype(x.dtype)
        deltas = [lora_delta(x, t, layer) for t in targets]
        return project(x, lp, name, layer) + jnp.concatenate(deltas, axis=-1)

    def layer_fn(carry, xs):
        h, cache_k, cache_v = carry
        lp, layer = xs
        x = rms_norm(h, lp["attn_norm"], c.rms_norm_eps)
        qkv = project_with_lora(x, lp, "wqkv", ("q_proj", "k_proj", "v_proj"), layer)
        q, k, v = jnp.split(qkv, [c.q_size, c.q_size + c.kv_size], axis=-1)
        q = rope(q.reshape(B, T, c.num_heads, c.head_dim), positions, c.rope_theta)
        k = rope(k.reshape(B, T, c.num_kv_heads, c.head_dim), positions, c.rope_theta)
        v = v.reshape(B, T, c.num_kv_heads, c.head_dim)
        cache_k = cache_k.at[layer, cache_rows, :, positions].set(k.astype(cache_k.dtype), mode="drop")
        cache_v = cache_v.at[layer, cache_rows, :, positions].set(v.astype(cache_v.dtype), mode="drop")
        if native_attention:
            attn = kernels.attention(q, cache_k, cache_v, batch_rows, positions, layer, scale)
            return finish_layer(h, attn.reshape(B, T, c.q_size).astype(dtype), layer, lp, cache_k, cache_v)
        if slot_ids is None:
            keys = jax.lax.dynamic_slice_in_dim(cache_k[layer], 0, kv_len, axis=2)
            values = jax.lax.dynamic_slice_in_dim(cache_v[layer], 0, kv_len, axis=2)
        else:
            keys = cache_k[layer, slot_ids, :, :kv_len]
            values = cache_v[layer, slot_ids, :, :kv_len]
        q = q.reshape(B, T, c.num_kv_heads, c.group_size, c.head_dim).transpose(0, 2, 3, 1, 4)
        attn = _attention(q, keys.astype(q.dtype), values.astype(dtype), positions, kv_len, scale, dtype)
        attn = attn.transpose(0, 3, 1, 2, 4).reshape(B, T, c.q_size)
        return finish_layer(h, attn, layer, lp, cache_k, cache_v)

    def finish_layer(h, attn, layer, lp, cache_k, cache_v):
        """Output projection and feed-forward block after attention."""
        h = h + project_with_lora(attn, lp, "wo", ("o_proj",), layer)
        x = rms_norm(h, lp["ffn_norm"], c.rms_norm_eps)
        gate_up = project_with_lora(x, lp, "w_gate_up", ("gate_proj", "up_proj"), layer)
        gate, up = jnp.split(gate_up, 2, axis=-1)
        act = jax.nn.silu(gate) * up
        h = h + project_with_lora(act, lp, "w_down", ("down_proj",), layer)
        return (h, cache_k, cache_v), None

    layer_params = params["layers"]
    if q4 is not None:  # the kernel reads the packed stack; do not slice unused float copies
        layer_params = {k: v for k, v in layer_params.items() if k not in q4}
    layers = (layer_params, jnp.arange(c.num_layers))
    (h, cache_k, cache_v), _ = jax.lax.scan(layer_fn, (h, cache["k"], cache["v"]), layers)
    h = rms_norm(h, params["final_norm"], c.rms_norm_eps)
    return h, {"k": cache_k, "v": cache_v}


def logits_from_hidden(params, hidden, q8_head=None):
    """Output head in float32. hidden: [..., D] → [..., V].

    q8_head (`kernels.quantize_q8` of params["lm_head"]) computes up to kernels.MAX_ROWS rows
    with the 8-bit kernel; params["lm_head"] must then hold the same weights dequantized."""
    rows = math.prod(hidden.shape[:-1])
    if q8_head is not None and rows <= kernels.MAX_ROWS:
        flat = kernels.q8_matmul(hidden.reshape(rows, hidden.shape[-1]), q8_head)
        return flat.reshape(*hidden.shape[:-1], -1)
    if "lm_head" in params:
        return (hidden @ params["lm_head"]).astype(jnp.float32)
    return jnp.einsum("...d,vd->...v", hidden, params["embed"]).astype(jnp.float32)


def init_cache(config: ModelConfig, batch_slots: int, max_seq_len: int, dtype=jnp.float32) -> dict:
    shape = (config.num_layers, batch_slots, config.num_kv_heads, max_seq_len, config.head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def full_logits(config: ModelConfig, params, tokens, *, lora=None, rows_lora=None, cache_dtype=None):
    """Logits for every position of `tokens` [B, T] (no cache reuse; for tests and scoring).
    Attention reads keys and values back from a cache of `cache_dtype` (default: the
    parameters' dtype), so this also shows what a float16 cache computes."""
    tokens = jnp.asarray(tokens, jnp.int32)
    B, T = tokens.shape
    cache = init_cache(config, B, T, cache_dtype or params["embed"].dtype)
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    hidden, _ = forward_hidden(
        config, params, lora, tokens, positions, cache, slot_ids=None, kv_len=T, rows_lora=rows_lora
    )
    return logits_from_hidden(params, hidden)
