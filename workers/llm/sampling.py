"""Sampling parameters and the in-graph, per-row sampler.

Every row of a batch carries its own temperature, top-k, top-p, repetition penalty and PRNG key;
the key for the n-th generated token is `fold_in(key(seed), n)`, so a request's text depends on
its seed and prompt only, never on what else shares the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

# top-k / top-p choose among this many highest-scoring tokens (top_k is capped at it; top-p with
# top_k=0 renormalises within it). Plain temperature sampling uses the whole vocabulary.
TOP_CANDIDATES = 256


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one request.

    temperature <= 0 or greedy=True picks the most likely token. top_k=0 and top_p=1.0 disable
    those filters. repetition_penalty (>1 discourages) applies to every token already in the
    prompt or the output (Hugging Face semantics). stop: strings that end generation; they are
    not included in the text. seed None draws a fresh seed. ignore_eos keeps generating through
    end-of-turn tokens (benchmarks).
    """

    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] | list[str] = field(default_factory=tuple)
    seed: int | None = None
    greedy: bool = False
    ignore_eos: bool = False

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature <= 0.0


def sample(logits, seen, temperature, top_k, top_p, repetition_penalty, greedy, keys, steps):
    """Pick one token per row.

    logits [B, V] float32; seen [B, V] bool (tokens in prompt or output so far);
    temperature/top_p/repetition_penalty [B] float32; top_k [B] int32; greedy [B] bool;
    keys [B, 2] uint32 raw PRNG keys; steps [B] int32 (index of the token being generated).
    Returns (tokens [B] int32, logprobs [B] float32) where logprobs come from the model's
    unmodified distribution.
    """
    vocab = logits.shape[-1]
    B = logits.shape[0]
    penalty = repetition_penalty[:, None]
    penalised = jnp.where(seen, jnp.where(logits > 0, logits / penalty, logits * penalty), logits)
    greedy_tokens = jnp.argmax(penalised, axis=-1).astype(jnp.int32)
    scaled = penalised / jnp.maximum(temperature, 1e-5)[:, None]
    uniforms = jax.vmap(_uniform)(keys, steps)
    unfiltered = (top_k <= 0) & (top_p >= 1.0)
    candidates = min(TOP_CANDIDATES, vocab)

    def filtered_sample():
        values, indices = jax.lax.top_k(scaled, candidates)
        ranks = jnp.arange(candidates)[None, :]
        k_limit = jnp.where(top_k > 0, jnp.minimum(top_k, candidates), candidates)[:, None]
        values = jnp.where(ranks < k_limit, values, -jnp.inf)
        probs = jax.nn.softmax(values, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs
        probs = jnp.where((before < top_p[:, None]) | (ranks == 0), probs, 0.0)
        cdf = jnp.cumsum(probs, axis=-1)
        choice = jnp.sum(cdf < (uniforms * cdf[:, -1])[:, None], axis=-1)
        choice = jnp.minimum(choice, candidates - 1)
        return jnp.take_along_axis(indices, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)

    def full_sample():
        cdf = jnp.cumsum(jax.nn.softmax(scaled, axis=-1), axis=-1)
        choice = jnp.sum(cdf < (uniforms * cdf[:, -1])[:, None], axis=-1)
        return jnp.minimum(choice, vocab - 1).astype(jnp.int32)

    # Each path runs only when some row of the batch needs it.
    none = jnp.zeros((B,), jnp.int32)
    filtered_tokens = jax.lax.cond(jnp.any(~greedy & ~unfiltered), filtered_sample, lambda: none)
    full_tokens = jax.lax.cond(jnp.any(~greedy & unfiltered), full_sample, lambda: none)
    tokens = jnp.where(greedy, greedy_tokens, jnp.where(unfiltered, full_tokens, filtered_tokens))
    chosen = jnp.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0]
    logprobs = chosen - jax.nn.logsumexp(logits, axis=-1)
    return tokens, logprobs


def _uniform(key, step):
    key = jax.random.fold_in(jax.random.wrap_key_data(key, impl="threefry2x32"), step)
    return jax.random.uniform(key, (), jnp.float32)


def seed_key(seed: int) -> np.ndarray:
    """Raw threefry key data (uint32[2]) for a request seed (any Python int)."""
    seed %= 2**64
    return np.array([seed >> 32, seed & 0xFFFFFFFF], dtype=np.uint32)
