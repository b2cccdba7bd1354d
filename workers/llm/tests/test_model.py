import jax
import jax.numpy as jnp
import numpy as np
import pytest

from workers.llm import model as llama
from workers.llm.lora import LoraAdapter, merge_adapter, random_adapter, slot_arrays
from workers.llm.model import full_logits as _full_logits

from .conftest import TINY_CONFIG, as_device, gguf_named_tensors, hparams_of
from .reference import reference_logits

full_logits = jax.jit(_full_logits, static_argnums=0)

TOKENS = [1, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 2, 200, 17, 5]


def test_logits_match_numpy_reference(tiny_model):
    logits = np.asarray(full_logits(TINY_CONFIG, as_device(tiny_model.params), jnp.asarray([TOKENS])))[0]
    expected = reference_logits(
        gguf_named_tensors(TINY_CONFIG, tiny_model.params), hparams_of(TINY_CONFIG), TOKENS, layout="hf"
    )
    assert np.abs(expected).max() > 1.0  # the check below is not vacuous
    np.testing.assert_allclose(logits, expected, atol=2e-4 * np.abs(expected).max(), rtol=0)


def test_untied_and_tied_heads_differ(tiny_model):
    params = dict(tiny_model.params)
    tied = {k: v for k, v in params.items() if k != "lm_head"}
    a = full_logits(TINY_CONFIG, as_device(params), jnp.asarray([TOKENS]))
    b = full_logits(TINY_CONFIG, as_device(tied), jnp.asarray([TOKENS]))
    expected_tied = reference_logits(
        {k: v for k, v in gguf_named_tensors(TINY_CONFIG, tied).items()}, hparams_of(TINY_CONFIG), TOKENS, layout="hf"
    )
    assert not np.allclose(a, b)
    np.testing.assert_allclose(np.asarray(b)[0], expected_tied, atol=2e-4 * np.abs(expected_tied).max(), rtol=0)


def _lora_logits(params, adapters_with_weights, tokens, max_rank=8):
    """Logits with adapters placed in slots 1..n of a fresh slot state; one batch row."""
    lora = llama.init_lora_state(TINY_CONFIG, len(adapters_with_weights), max_rank)
    index, weight = [], []
    for slot, (adapter, w) in enumerate(adapters_with_weights, start=1):
        arrays = slot_arrays(adapter, TINY_CONFIG, max_rank)
        lora = {t: {p: lora[t][p].at[:, slot].set(arrays[t][p]) for p in ("A", "B")} for t in lora}
        index.append(slot)
        weight.append(w)
    while len(index) < llama.MAX_ADAPTERS_PER_ROW:
        index.append(0)
        weight.append(0.0)
    rows = (jnp.asarray([index], jnp.int32), jnp.asarray([weight], jnp.float32))
    return np.asarray(full_logits(TINY_CONFIG, as_device(params), jnp.asarray([tokens]), lora=lora, rows_lora=rows))[0]


def assert_base_logits(got, base):
    """A delta that adds exactly nothing leaves the base logits. The program with LoRA terms is a
    different XLA program, though, and on AVX2-only CPUs XLA:CPU rounds some of its other ops
    differently (by a float32 ulp or two; bit-identical on the AVX-512 machine where this was
    first written), so: equal within that rounding, and the same choices."""
    np.testing.assert_allclose(got, base, rtol=0, atol=4e-6 * np.abs(base).max())
    assert (got.argmax(-1) == base.argmax(-1)).all()


def test_zero_lora_gives_identical_logits(tiny_model):
    zero = random_adapter(TINY_CONFIG, rank=4, seed=1)
    zero.weights = {t: (a, np.zeros_like(b)) for t, (a, b) in zero.weights.items()}
    base = np.asarray(full_logits(TINY_CONFIG, as_device(tiny_model.params), jnp.asarray([TOKENS])))[0]
    assert_base_logits(_lora_logits(tiny_model.params, [(zero, 1.0)], TOKENS), base)


@pytest.mark.parametrize("rank", [1, 4, 8])
def test_lora_logits_equal_merged_weights(tiny_model, rank):
    adapter = random_adapter(TINY_CONFIG, rank=rank, alpha=2.0 * rank + 3, seed=rank)
    merged = merge_adapter(TINY_CONFIG, tiny_model.params, adapter)
    expected = np.asarray(full_logits(TINY_CONFIG, as_device(merged), jnp.asarray([TOKENS])))[0]
    base = np.asarray(full_logits(TINY_CONFIG, as_device(tiny_model.params), jnp.asarray([TOKENS])))[0]
    got = _lora_logits(tiny_model.params, [(adapter, 1.0)], TOKENS)
    assert np.abs(expected - base).max() > 0.05  # the adapter really changes the output
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max(), rtol=0)


def test_weighted_mix_of_adapters_equals_merged_sum(tiny_model):
    first = random_adapter(TINY_CONFIG, rank=4, seed=11)
    second = random_adapter(TINY_CONFIG, rank=8, seed=12, targets=("q_proj", "down_proj"))
    merged = merge_adapter(TINY_CONFIG, merge_adapter(TINY_CONFIG, tiny_model.params, first, 0.7), second, -0.4)
    expected = np.asarray(full_logits(TINY_CONFIG, as_device(merged), jnp.asarray([TOKENS])))[0]
    got = _lora_logits(tiny_model.params, [(first, 0.7), (second, -0.4)], TOKENS)
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max(), rtol=0)


def test_adapter_without_targets_is_a_no_op(tiny_model):
    empty = LoraAdapter(rank=2, alpha=4.0, weights={})
    base = np.asarray(full_logits(TINY_CONFIG, as_device(tiny_model.params), jnp.asarray([TOKENS])))[0]
    assert_base_logits(_lora_logits(tiny_model.params, [(empty, 1.0)], TOKENS), base)


def test_long_chunked_prefill_matches_reference(tiny_model):
    """Query runs longer than the attention block (block-causal attention), in two cache chunks
    whose second one starts at a traced offset, give the same logits as the numpy reference."""
    rng = np.random.default_rng(7)
    tokens = [int(t) for t in rng.integers(3, TINY_CONFIG.vocab_size, 400)]
    expected = reference_logits(
        gguf_named_tensors(TINY_CONFIG, tiny_model.params), hparams_of(TINY_CONFIG), tokens, layout="hf"
    )
    params = as_device(tiny_model.params)
    atol = 2e-4 * np.abs(expected).max()
    np.testing.assert_allclose(
        np.asarray(full_logits(TINY_CONFIG, params, jnp.asarray([tokens])))[0], expected, atol=atol, rtol=0
    )

    @jax.jit
    def chunk(cache, ids, start, slot, kv_len_marker):
        T = ids.shape[1]
        positions = (start + jnp.arange(T))[None, :]
        hidden, cache = llama.forward_hidden(
            TINY_CONFIG, params, None, ids, positions, cache, slot_ids=slot[None], kv_len=kv_len_marker.shape[0]
        )
        return llama.logits_from_hidden(params, hidden)[0], cache

    cache = llama.init_cache(TINY_CONFIG, 2, 512)
    first, cache = chunk(cache, jnp.asarray([tokens[:256]]), jnp.int32(0), jnp.int32(1), jnp.zeros(256))
    padded = np.zeros((1, 256), np.int32)
    padded[0, :144] = tokens[256:]
    second, cache = chunk(cache, jnp.asarray(padded), jnp.int32(256), jnp.int32(1), jnp.zeros(512))
    got = np.concatenate([np.asarray(first), np.asarray(second)[:144]])
    np.testing.assert_allclose(got, expected, atol=atol, rtol=0)
