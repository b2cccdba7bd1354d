"""LoRA terms per adapter slot (`lora_kernel="grouped"`, jax.lax.ragged_dot) give what the
per-row gather gives: the term itself, for float and int8 slots, and an engine's greedy tokens
on a batch that mixes adapters, with nothing recompiled when the adapters change. This is the
XLA path a GPU runs; here the native CPU kernels are turned off so that XLA runs every call."""

import jax.numpy as jnp
import numpy as np
import pytest

from workers.llm import SamplingParams, random_adapter
from workers.llm import engine as engine_module
from workers.llm.engine import Engine
from workers.llm.model import _lora_delta, _lora_delta_grouped

from .conftest import TINY_CONFIG


def _rows(rng, batch, k, slots):
    index = rng.integers(0, slots, (batch, k)).astype(np.int32)
    index[0] = 0  # a row with no adapter (slot 0 is all zeros)
    weight = rng.uniform(-1.0, 1.0, (batch, k)).astype(np.float32)
    return jnp.asarray(index), jnp.asarray(weight)


@pytest.mark.parametrize("tokens", [1, 5])
def test_the_grouped_term_equals_the_gathered_one_for_float_slots(tokens):
    rng = np.random.default_rng(0)
    layers, slots, fan_in, rank, fan_out, batch, k = 2, 6, 24, 4, 40, 7, 3
    a = rng.standard_normal((layers, slots, fan_in, rank)).astype(np.float32)
    b = rng.standard_normal((layers, slots, rank, fan_out)).astype(np.float32)
    a[:, 0], b[:, 0] = 0, 0
    table = {"A": jnp.asarray(a), "B": jnp.asarray(b)}
    x = jnp.asarray(rng.standard_normal((batch, tokens, fan_in)).astype(np.float32))
    rows = _rows(rng, batch, k, slots)
    for layer in range(layers):
        gathered = np.asarray(_lora_delta(x, table, layer, rows))
        grouped = np.asarray(_lora_delta_grouped(x, table, layer, rows))
        np.testing.assert_allclose(grouped, gathered, rtol=1e-5, atol=1e-4)
        assert np.abs(gathered[1:]).max() > 1.0 and np.abs(gathered[0]).max() == 0.0


def test_in_bfloat16_as_on_a_gpu_both_terms_stay_within_rounding_of_float32():
    rng = np.random.default_rng(2)
    layers, slots, fan_in, rank, fan_out, batch, k = 1, 6, 64, 8, 48, 9, 2
    a = rng.standard_normal((layers, slots, fan_in, rank)).astype(np.float32) / 8
    b = rng.standard_normal((layers, slots, rank, fan_out)).astype(np.float32) / 8
    a[:, 0], b[:, 0] = 0, 0
    x = rng.standard_normal((batch, 1, fan_in)).astype(np.float32)
    rows = _rows(rng, batch, k, slots)
    exact = np.asarray(_lora_delta(jnp.asarray(x), {"A": jnp.asarray(a), "B": jnp.asarray(b)}, 0, rows))
    half = {"A": jnp.asarray(a, jnp.bfloat16), "B": jnp.asarray(b, jnp.bfloat16)}
    x_half = jnp.asarray(x, jnp.bfloat16)
    for term in (_lora_delta, _lora_delta_grouped):
        got = term(x_half, half, 0, rows)
        assert got.shape == exact.shape
        error = np.abs(np.asarray(got, np.float32) - exact).max()
        assert error < 0.02 * np.abs(exact).max(), (term.__name__, error, np.abs(exact).max())


def test_the_grouped_term_equals_the_gathered_one_for_int8_slots():
    rng = np.random.default_rng(1)
    layers, slots, fan_in, rank, fan_out, batch, k = 1, 5, 16, 4, 12, 6, 2
    table = {
        "A": jnp.asarray(rng.integers(-127, 128, (layers, slots, fan_in // 2, rank, 2)).astype(np.int8)),
        "B": jnp.asarray(rng.integers(-127, 128, (layers, slots, rank // 2, fan_out, 2)).astype(np.int8)),
        "scale": jnp.asarray(rng.uniform(1e-4, 1e-3, (layers, slots, rank)).astype(np.float32)),
    }
    x = jnp.asarray(rng.standard_normal((batch, 3, fan_in)).astype(np.float32))
    rows = _rows(rng, batch, k, slots)
    gathered = np.asarray(_lora_delta(x, table, 0, rows))
    grouped = np.asarray(_lora_delta_grouped(x, table, 0, rows))
    np.testing.assert_allclose(grouped, gathered, rtol=1e-4, atol=1e-3)
    assert np.abs(gathered).max() > 1.0


def test_an_engine_on_grouped_terms_gives_the_gather_engines_tokens_and_never_recompiles(tiny_model, monkeypatch):
    monkeypatch.setattr(engine_module, "native_kernels_apply", lambda dtype: False)
    params = SamplingParams(greedy=True, max_tokens=16, ignore_eos=True)
    plans = [[("g-0", 1.0)], [], [("g-1", 0.7)], [("g-2", 1.0)], [("g-0", 0.5), ("g-2", 0.5)], [("g-1", 1.0)]]
    rng = np.random.default_rng(7)
    prompts = [[int(t) for t in rng.integers(3, TINY_CONFIG.vocab_size, 6 + 2 * i)] for i in range(len(plans))]
    tokens = {}
    for kernel in ("gather", "grouped"):
        engine = Engine(
            tiny_model, max_batch_slots=8, max_seq_len=128, lora_slots=4, max_lora_rank=8, lora_kernel=kernel
        )
        try:
            assert not engine.native_lora
            for i in range(3):
                engine.load_adapter(f"g-{i}", random_adapter(TINY_CONFIG, rank=4 + 2 * i, seed=10 + i, scale=0.3))
            handles = [engine.submit(p, params=params, adapters=a) for p, a in zip(prompts, plans, strict=True)]
            tokens[kernel] = [h.result().token_ids for h in handles]
            if kernel == "grouped":
                compiled = engine.compile_count
                for i in range(3):  # other adapters in the same slots
                    engine.evict_adapter(f"g-{i}")
                    engine.load_adapter(f"g-{i}", random_adapter(TINY_CONFIG, rank=4, seed=90 + i, scale=0.3))
                handles = [engine.submit(p, params=params, adapters=a) for p, a in zip(prompts, plans, strict=True)]
                swapped = [h.result().token_ids for h in handles]
                assert engine.compile_count == compiled
                assert swapped != tokens[kernel], "new adapters should change some answer"
        finally:
            engine.shutdown()
    assert tokens["grouped"] == tokens["gather"]
    assert len({tuple(t) for t in tokens["gather"]}) > 1


def test_an_unknown_lora_kernel_is_refused(tiny_model):
    with pytest.raises(ValueError, match="lora_kernel"):
        Engine(tiny_model, max_batch_slots=2, max_seq_len=64, lora_kernel="fast")
