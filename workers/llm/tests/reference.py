"""An independent numpy (float64) Llama forward pass, for checking the JAX model.

It reads tensors by their GGUF names and, in "gguf" layout, applies RoPE the way llama.cpp does
for this architecture: to adjacent pairs (x[2i], x[2i+1]) of the stored, permuted Q/K rows.
In "hf" layout it applies Hugging Face's half-split RoPE to unpermuted rows.
"""

from __future__ import annotations

import numpy as np


def read_gguf(path):
    """(tensors by GGUF name as float64 [out, in] arrays, hyper-parameters) straight from a file."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(path))
    arch = reader.fields["general.architecture"].contents()

    def field(key, default=None):
        f = reader.fields.get(f"{arch}.{key}")
        return f.contents() if f is not None else default

    hparams = {
        "n_layers": field("block_count"),
        "n_heads": field("attention.head_count"),
        "n_kv_heads": field("attention.head_count_kv"),
        "eps": field("attention.layer_norm_rms_epsilon"),
        "theta": field("rope.freq_base", 10000.0),
    }
    tensors = {t.name: dequantize(t.data, t.tensor_type).astype(np.float64) for t in reader.tensors}
    return tensors, hparams


def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x, theta, layout):
    # x: [T, H, d]
    T, _, d = x.shape
    freqs = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    angles = np.arange(T, dtype=np.float64)[:, None] * freqs[None, :]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    out = np.empty_like(x)
    if layout == "gguf":
        a, b = x[..., 0::2], x[..., 1::2]
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
    else:
        a, b = x[..., : d // 2], x[..., d // 2 :]
        out[..., : d // 2] = a * cos - b * sin
        out[..., d // 2 :] = a * sin + b * cos
    return out


def reference_logits(tensors, hparams, tokens, layout="gguf"):
    """Logits [T, V] for `tokens` (one sequence), full causal attention, float64."""
    h = tensors["token_embd.weight"][np.asarray(tokens)]
    T = h.shape[0]
    n_heads, n_kv = hparams["n_heads"], hparams["n_kv_heads"]
    eps, theta = hparams["eps"], hparams["theta"]
    causal = np.tril(np.ones((T, T), dtype=bool))
    for i in range(hparams["n_layers"]):
        p = f"blk.{i}."
        x = _rms(h, tensors[p + "attn_norm.weight"], eps)
        q = x @ tensors[p + "attn_q.weight"].T
        k = x @ tensors[p + "attn_k.weight"].T
        v = x @ tensors[p + "attn_v.weight"].T
        d = q.shape[-1] // n_heads
        q = _rope(q.reshape(T, n_heads, d), theta, layout)
        k = _rope(k.reshape(T, n_kv, d), theta, layout)
        v = v.reshape(T, n_kv, d)
        group = n_heads // n_kv
        out = np.empty((T, n_heads, d))
        for head in range(n_heads):
            kv = head // group
            scores = q[:, head] @ k[:, kv].T / np.sqrt(d)
            scores = np.where(causal, scores, -np.inf)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            out[:, head] = (scores / scores.sum(-1, keepdims=True)) @ v[:, kv]
        h = h + out.reshape(T, -1) @ tensors[p + "attn_output.weight"].T
        x = _rms(h, tensors[p + "ffn_norm.weight"], eps)
        gate = x @ tensors[p + "ffn_gate.weight"].T
        up = x @ tensors[p + "ffn_up.weight"].T
        h = h + (gate / (1 + np.exp(-gate)) * up) @ tensors[p + "ffn_down.weight"].T
    h = _rms(h, tensors["output_norm.weight"], eps)
    head = tensors.get("output.weight", tensors["token_embd.weight"])
    return h @ head.T
