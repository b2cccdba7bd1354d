"""BERT encoder (all-MiniLM-L6-v2 and same-shaped models) as pure JAX functions.

Parameters are a pytree of arrays; the transformer layers are stacked along a leading axis and
run with `lax.scan`, so compile time does not grow with the number of layers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    layer_norm_eps: float

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text())
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported activation {raw['hidden_act']!r} in {path}")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"unsupported position embeddings in {path}")
        return cls(
            vocab_size=raw["vocab_size"],
            hidden_size=raw["hidden_size"],
            num_hidden_layers=raw["num_hidden_layers"],
            num_attention_heads=raw["num_attention_heads"],
            intermediate_size=raw["intermediate_size"],
            max_position_embeddings=raw["max_position_embeddings"],
            layer_norm_eps=raw["layer_norm_eps"],
        )


def load_params(weights_path: Path, config: BertConfig) -> dict:
    """Read Hugging Face `BertModel` safetensors into the stacked pytree `encode_batch` expects.

    Linear weights are stored [out, in] by PyTorch; they are transposed here once so the forward
    pass is plain `x @ w + b`.
    """
    tensors = load_file(str(weights_path))
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""

    def tensor(name: str) -> np.ndarray:
        return tensors[prefix + name].astype(np.float32)

    def stacked(name: str, transpose: bool = False) -> np.ndarray:
        per_layer = [tensor(f"encoder.layer.{index}.{name}") for index in range(config.num_hidden_layers)]
        if transpose:
            per_layer = [array.T for array in per_layer]
        return np.ascontiguousarray(np.stack(per_layer))

    params = {
        "word_embeddings": tensor("embeddings.word_embeddings.weight"),
        "position_embeddings": tensor("embeddings.position_embeddings.weight"),
        "token_type_embedding": tensor("embeddings.token_type_embeddings.weight")[0],
        "embeddings_ln_scale": tensor("embeddings.LayerNorm.weight"),
        "embeddings_ln_bias": tensor("embeddings.LayerNorm.bias"),
        "layers": {
            "query_w": stacked("attention.self.query.weight", transpose=True),
            "query_b": stacked("attention.self.query.bias"),
            "key_w": stacked("attention.self.key.weight", transpose=True),
            "key_b": stacked("attention.self.key.bias"),
            "value_w": stacked("attention.self.value.weight", transpose=True),
            "value_b": stacked("attention.self.value.bias"),
            "attention_out_w": stacked("attention.output.dense.weight", transpose=True),
            "attention_out_b": stacked("attention.output.dense.bias"),
            "attention_ln_scale": stacked("attention.output.LayerNorm.weight"),
            "attention_ln_bias": stacked("attention.output.LayerNorm.bias"),
            "intermediate_w": stacked("intermediate.dense.weight", transpose=True),
            "intermediate_b": stacked("intermediate.dense.bias"),
            "output_w": stacked("output.dense.weight", transpose=True),
            "output_b": stacked("output.dense.bias"),
            "output_ln_scale": stacked("output.LayerNorm.weight"),
            "output_ln_bias": stacked("output.LayerNorm.bias"),
        },
    }
    return jax.tree_util.tree_map(jnp.asarray, params)


def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    mean = x.mean(axis=-1, keepdims=True)
    variance = jnp.square(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(variance + eps) * scale + bias


def _transformer_layer(hidden: jax.Array, layer: dict, attention_mask: jax.Array, config: BertConfig) -> jax.Array:
    batch, length, _ = hidden.shape
    heads, head_dim = config.num_attention_heads, config.head_dim

    def split_heads(x: jax.Array) -> jax.Array:
        return x.reshape(batch, length, heads, head_dim)

    query = split_heads(hidden @ layer["query_w"] + layer["query_b"])
    key = split_heads(hidden @ layer["key_w"] + layer["key_b"])
    value = split_heads(hidden @ layer["value_w"] + layer["value_b"])

    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) / np.sqrt(head_dim).astype(np.float32)
    # A large finite negative rather than -inf keeps fully padded rows (batch padding) finite.
    scores = jnp.where(attention_mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1)
    context = jnp.einsum("bhqk,bkhd->bqhd", weights, value).reshape(batch, length, -1)

    attended = context @ layer["attention_out_w"] + layer["attention_out_b"]
    hidden = _layer_norm(
        attended + hidden,
        layer["attention_ln_scale"],
        layer["attention_ln_bias"],
        config.layer_norm_eps,
    )
    intermediate = jax.nn.gelu(hidden @ layer["intermediate_w"] + layer["intermediate_b"], approximate=False)
    output = intermediate @ layer["output_w"] + layer["output_b"]
    return _layer_norm(output + hidden, layer["output_ln_scale"], layer["output_ln_bias"], config.layer_norm_eps)


def encode_batch(params: dict, input_ids: jax.Array, attention_mask: jax.Array, config: BertConfig) -> jax.Array:
    """Token ids [batch, length] → L2-normalised mean-pooled sentence vectors [batch, hidden].

    Rows whose mask is all zero (batch padding) come out as zero vectors.
    """
    length = input_ids.shape[1]
    mask = attention_mask.astype(bool)
    hidden = (
        params["word_embeddings"][input_ids]
        + params["position_embeddings"][:length][None, :, :]
        + params["token_type_embedding"]
    )
    hidden = _layer_norm(hidden, params["embeddings_ln_scale"], params["embeddings_ln_bias"], config.layer_norm_eps)

    def step(carry: jax.Array, layer: dict) -> tuple[jax.Array, None]:
        return _transformer_layer(carry, layer, mask, config), None

    hidden, _ = jax.lax.scan(step, hidden, params["layers"])

    weights = mask.astype(hidden.dtype)[:, :, None]
    pooled = (hidden * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1e-9)
    norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
    return pooled / jnp.maximum(norm, 1e-12)
