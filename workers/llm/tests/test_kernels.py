"""The native kernels: 4-bit packing, the FFI matmul and LoRA term against numpy, and engines
that use them."""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from workers.llm import SamplingParams, kernels, random_adapter
from workers.llm.engine import Engine

from .conftest import TINY_CONFIG
from .test_engine import prompt_ids, reference_greedy

needs_kernel = pytest.mark.skipif(not kernels.available(), reason="the q4 kernel did not build")
needs_panels = pytest.mark.skipif(not kernels.panels_available(), reason="the panel kernels need an AVX-512 build")


def four_bit_weights(shape, seed=0):
    """Weights as a Q4_1 file holds them: per 32 inputs of a column, float16 scale and minimum
    and codes 0..15 (both ends used, as llama.cpp's quantizer does)."""
    rng = np.random.default_rng(seed)
    *lead, K, N = shape
    codes = rng.integers(0, 16, (*lead, N, K // 32, 32))
    codes[..., 0], codes[..., 1] = 0, 15
    scale = rng.uniform(0.001, 0.02, (*lead, N, K // 32, 1)).astype(np.float16).astype(np.float32)
    low = rng.uniform(-0.15, 0.0, (*lead, N, K // 32, 1)).astype(np.float16).astype(np.float32)
    blocks = (codes * scale + low).astype(np.float32)
    return np.swapaxes(blocks.reshape(*lead, N, K), -1, -2)


def test_four_bit_weights_pack_without_loss():
    w = four_bit_weights((2, 64, 48))
    restored = kernels.dequantize_q4(kernels.quantize_q4(w))
    np.testing.assert_allclose(restored, w, rtol=0, atol=1e-6 * np.abs(w).max())
    layers = {name: four_bit_weights((2, 64, 32), seed=i) for i, name in enumerate(kernels.Q4_MATRICES)}
    assert kernels.is_four_bit(layers)
    gaussian = {**layers, "wo": np.random.default_rng(1).standard_normal((2, 64, 32))}
    assert not kernels.is_four_bit(gaussian)


def test_packing_rejects_inputs_not_in_blocks_of_32():
    with pytest.raises(ValueError, match="multiple of 32"):
        kernels.quantize_q4(np.zeros((40, 8), np.float32))


def assert_q4_matmul_matches_numpy_for_every_layer(x, packed, w):
    """q4_matmul inside a scan over the stacked layers of `packed` equals x @ w[layer]."""

    @jax.jit
    def every_layer(x, packed):
        return jax.lax.scan(lambda c, layer: (c, kernels.q4_matmul(x, packed, layer)), 0, jnp.arange(w.shape[0]))[1]

    got = np.asarray(every_layer(x, packed))
    expected = np.einsum("bk,lkn->lbn", x.astype(np.float64), w.astype(np.float64))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())


@needs_kernel
@pytest.mark.parametrize("rows", [1, 3, 8, 16])
def test_q4_matmul_matches_numpy_for_every_layer_of_a_scan(rows):
    layers, K, N = 3, 96, 160
    w = four_bit_weights((layers, K, N), seed=rows)
    packed = jax.tree.map(jnp.asarray, kernels.quantize_q4(w))
    x = np.random.default_rng(rows).standard_normal((rows, K)).astype(np.float32)
    assert_q4_matmul_matches_numpy_for_every_layer(x, packed, w)


@needs_panels
@pytest.mark.parametrize("rows", [2, 3, 7, 12, 16])
def test_batches_take_the_panels_and_match_numpy(rows):
    layers, K, N = 3, 96, 48
    w = four_bit_weights((layers, K, N), seed=rows)
    packed = kernels.with_panels(kernels.quantize_q4(w), kernels.q4_panels)
    assert "panels" in packed and packed["panels"]["qs"].shape == (layers, N // 16, K // 2, 16)
    packed = jax.tree.map(jnp.asarray, packed)
    x = np.random.default_rng(rows).standard_normal((rows, K)).astype(np.float32)
    lowered = jax.jit(kernels.q4_matmul).lower(x, packed, 0).as_text()
    assert "liminal_q4_panel_matmul" in lowered and 'liminal_q4_matmul"' not in lowered
    assert_q4_matmul_matches_numpy_for_every_layer(x, packed, w)


@needs_panels
@pytest.mark.parametrize("rows", [17, 29, 64])
def test_prompts_of_any_length_take_the_panels_and_match_numpy(rows):
    # 13 panels: two threads' shares of 7 and 6, each of passes of 3 panels and a shorter last
    # one; 17 and 29 rows end in a partial tile of 8.
    layers, K, N = 2, 96, 13 * 16
    w = four_bit_weights((layers, K, N), seed=rows)
    packed = jax.tree.map(jnp.asarray, kernels.with_panels(kernels.quantize_q4(w), kernels.q4_panels))
    x = np.random.default_rng(rows).standard_normal((rows, K)).astype(np.float32)
    assert "liminal_q4_panel_matmul" in jax.jit(kernels.q4_matmul).lower(x, packed, 0).as_text()
    assert_q4_matmul_matches_numpy_for_every_layer(x, packed, w)


@needs_panels
def test_a_matrix_without_panels_keeps_prompts_off_the_4_bit_kernels():
    whole = kernels.with_panels(kernels.quantize_q4(four_bit_weights((1, 32, 32))), kernels.q4_panels)
    partial = kernels.with_panels(kernels.quantize_q4(four_bit_weights((1, 32, 40))), kernels.q4_panels)
    assert kernels.fastest_rows({"wo": whole}) == sys.maxsize
    assert kernels.fastest_rows({"wo": whole, "w_down": partial}) == kernels.MAX_ROWS


@needs_panels
@pytest.mark.parametrize("rows", [1, 5, 16])
def test_q8_panels_match_numpy(rows):
    K, N = 96, 64
    w = eight_bit_weights((K, N), seed=rows)
    packed = kernels.with_panels(kernels.quantize_q8(w), kernels.q8_panels)
    packed = jax.tree.map(jnp.asarray, packed)
    x = np.random.default_rng(rows).standard_normal((rows, K)).astype(np.float32)
    assert "liminal_q8_panel_matmul" in jax.jit(kernels.q8_matmul).lower(x, packed).as_text()
    got = np.asarray(jax.jit(kernels.q8_matmul)(x, packed))
    expected = x.astype(np.float64) @ w.astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())


def test_outputs_not_in_whole_panels_keep_the_column_layout_only():
    packed = kernels.quantize_q4(four_bit_weights((1, 32, 40)))
    assert "panels" not in kernels.with_panels(packed, kernels.q4_panels)


@needs_kernel
def test_the_column_layout_refuses_more_than_16_rows():
    packed = jax.tree.map(jnp.asarray, kernels.quantize_q4(four_bit_weights((1, 32, 32))))
    with pytest.raises(ValueError, match="at most 16 rows"):
        kernels.q4_matmul(jnp.zeros((17, 32)), packed, 0)


def slot_table(rng, layers, slots, K, N, rank, dtype):
    """A LoRA slot table of random values that `dtype` holds exactly (so numpy computes with the
    same weights), slot 0 zero ("no adapter"), slot 1 holding an adapter of a smaller rank
    (zero-padded, as the engine stores one), and its float32 copy for numpy: (A, B, None), or
    for int8 tables, which hold integers and a random scale per rank (and need an even rank),
    (A, B, scale) unpaired."""
    if dtype == jnp.int8:
        a = rng.integers(-127, 128, (layers, slots, K, rank)).astype(np.float32)
        b = rng.integers(-127, 128, (layers, slots, rank, N)).astype(np.float32)
        scale = rng.uniform(1e-4, 1e-2, (layers, slots, rank)).astype(np.float32)
    else:
        a = np.array(jnp.asarray(rng.standard_normal((layers, slots, K, rank)), dtype), np.float32)
        b = np.array(jnp.asarray(rng.standard_normal((layers, slots, rank, N)), dtype), np.float32)
        scale = np.ones((layers, slots, rank), np.float32)
    a[:, 0], b[:, 0], scale[:, 0] = 0, 0, 0
    a[:, 1, :, rank // 2 :], b[:, 1, rank // 2 :], scale[:, 1, rank // 2 :] = 0, 0, 0
    if dtype == jnp.int8:  # in pairs: A [L, S, K/2, R, 2], B [L, S, R/2, N, 2]
        table = {
            "A": jnp.asarray(a.reshape(layers, slots, K // 2, 2, rank).swapaxes(-1, -2), dtype),
            "B": jnp.asarray(b.reshape(layers, slots, rank // 2, 2, N).swapaxes(-1, -2), dtype),
            "scale": jnp.asarray(scale),
        }
    else:
        table = {"A": jnp.asarray(a, dtype), "B": jnp.asarray(b, dtype)}
    return table, (a, b, scale if dtype == jnp.int8 else None)


def to_int16(v, limit):
    """v / step rounded to nearest (even on ties), |·| <= limit, and step: as the int8 kernels
    do."""
    largest = np.float32(np.abs(v).max())
    if largest == 0:
        return np.zeros(v.shape, np.int64), np.float32(0)
    scaled = v.astype(np.float32) * (np.float32(limit) / largest)
    return np.rint(scaled).astype(np.int64), largest / np.float32(limit)


def numpy_terms_in_pairs(x, a, b, scale, index, weight):
    """[L, M, N]: int8 tables' terms as lora_term.h computes them: x's row and each rank vector
    in 16-bit integers (a step each), the products summed exactly."""
    a, b = a.astype(np.int64), b.astype(np.int64)
    layers, (m, k) = a.shape[0], x.shape
    limit = min(32767, 2147483647 // (127 * k))
    out = np.zeros((layers, m, b.shape[-1]))
    for layer in range(layers):
        for row in range(m):
            xq, x_step = to_int16(x[row], limit)
            for s, w in zip(index[row], weight[row], strict=True):
                if s == 0 or w == 0 or x_step == 0:
                    continue
                acc = xq @ a[layer, s]
                h = (acc.astype(np.float32) * (x_step * np.float32(w))) * scale[layer, s]
                hq, h_step = to_int16(h, 32767)
                out[layer, row] += np.float32(h_step) * (hq @ b[layer, s]).astype(np.float32)
    return out


def numpy_lora_terms(x, tables, index, weight):
    """[L, M, sum N_t]: every layer's LoRA terms of the rows, the tables' outputs side by side."""
    terms = []
    for a, b, scale in tables:
        if scale is not None:
            terms.append(numpy_terms_in_pairs(x, a, b, scale, index, weight))
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        terms.append(
            np.einsum(
                "mj,mk,lmjkr,lmjrn->lmn", weight.astype(np.float64), x.astype(np.float64), a64[:, index], b64[:, index]
            )
        )
    return np.concatenate(terms, axis=-1)


@needs_kernel
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.int8])
@pytest.mark.parametrize("rank", [16, 5])  # the vectorised path and the generic one
def test_lora_delta_matches_numpy_for_rows_on_different_adapters(rank, dtype):
    if dtype == jnp.int8:
        rank += rank % 2  # int8 tables pair their ranks
    rng = np.random.default_rng(rank)
    layers, slots, K, N = 3, 5, 64, 43  # 43 outputs: vector loops and their scalar tails
    slots_table, copy = slot_table(rng, layers, slots, K, N, rank, dtype)
    x = rng.standard_normal((7, K)).astype(np.float32)
    # Rows with one, two, three, no adapters, a zero weight and a repeated slot.
    index = np.array([[1, 0, 0], [2, 3, 0], [4, 1, 2], [0, 0, 0], [3, 0, 0], [2, 2, 0], [4, 0, 0]], np.int32)
    weight = np.array([[1, 0, 0], [0.5, 0.25, 0], [1, -1, 2], [0, 0, 0], [0, 0, 0], [1, 1, 0], [0.3, 0, 0]], np.float32)

    @jax.jit
    def every_layer(x, slots_table):
        return jax.lax.scan(
            lambda c, layer: (c, kernels.lora_delta(x, slots_table, layer, index, weight)), 0, jnp.arange(layers)
        )[1]

    got = np.asarray(every_layer(x, slots_table))
    expected = numpy_lora_terms(x, [copy], index, weight)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert not got[:, 3].any() and not got[:, 4].any()


@needs_kernel
def test_lora_delta_refuses_mixed_slot_dtypes_and_int8_without_scale():
    def call(slots_table):
        return kernels.lora_delta(jnp.zeros((1, 32)), slots_table, 0, jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1)))

    mixed = {"A": jnp.zeros((1, 2, 32, 4), jnp.bfloat16), "B": jnp.zeros((1, 2, 4, 8))}
    with pytest.raises(TypeError, match="must all be float32, all bfloat16 or all int8"):
        call(mixed)
    unscaled = {"A": jnp.zeros((1, 2, 32, 4), jnp.int8), "B": jnp.zeros((1, 2, 4, 8), jnp.int8)}
    with pytest.raises(TypeError, match="need their float32 scale"):
        call(unscaled)
    paired = {"A": jnp.zeros((1, 2, 16, 4, 2), jnp.int8), "B": jnp.zeros((1, 2, 2, 8, 2), jnp.int8)}
    with pytest.raises(Exception, match=r"not \[L, S, R\]"):
        jax.block_until_ready(call({**paired, "scale": jnp.zeros((1, 2, 3))}))
    with pytest.raises(Exception, match=r"int8 tables are A \[L, S, K/2, R, 2\]"):
        jax.block_until_ready(call({**unscaled, "scale": jnp.zeros((1, 2, 4))}))


@needs_kernel
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.int8])
@pytest.mark.parametrize("rows", [1, 3, 7, 16])
# 4 panels: one thread's share; 8: two shares (where XLA's pool has two threads or more),
# whose rows (and terms) split unevenly
@pytest.mark.parametrize("widths", [(20, 12, 32), (80, 16, 32)])
def test_q4_matmul_lora_adds_each_projections_term_to_its_columns(rows, dtype, widths):
    """One call computes x @ W plus the terms of q, k, v-like projections side by side: widths
    that are not whole vectors, ranks of their own, rows on different adapters or none."""
    rng = np.random.default_rng(rows)
    layers, slots, K = 3, 6, 64
    ranks = (16, 6, 8) if dtype == jnp.int8 else (16, 5, 8)  # int8 tables pair their ranks
    w = four_bit_weights((layers, K, sum(widths)), seed=rows)
    packed = jax.tree.map(jnp.asarray, kernels.with_panels(kernels.quantize_q4(w), kernels.q4_panels))
    tables = [slot_table(rng, layers, slots, K, n, r, dtype) for n, r in zip(widths, ranks, strict=True)]
    x = rng.standard_normal((rows, K)).astype(np.float32)
    index = rng.integers(0, slots, (rows, 2)).astype(np.int32)
    weight = rng.uniform(-1, 2, (rows, 2)).astype(np.float32)
    index[0] = [1, 2]  # slot 1: a zero-padded smaller rank
    if rows > 1:
        index[1] = 0  # a row without adapters
    if rows > 2:
        weight[2, 1] = 0.0  # a zero weight, and a row repeating one slot
        index[-1] = [slots - 1, slots - 1]

    @jax.jit
    def every_layer(x, packed, tables):
        def one(carry, layer):
            return carry, kernels.q4_matmul_lora(x, packed, layer, tables, index, weight)

        return jax.lax.scan(one, 0, jnp.arange(layers))[1]

    got = np.asarray(every_layer(x, packed, [t for t, _ in tables]))
    expected = np.einsum("bk,lkn->lbn", x.astype(np.float64), w.astype(np.float64)) + numpy_lora_terms(
        x, [copy for _, copy in tables], index, weight
    )
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())
    lowered = jax.jit(kernels.q4_matmul_lora).lower(x, packed, 0, [t for t, _ in tables], index, weight).as_text()
    panels = rows > kernels.column_rows() and kernels.panels_available()
    assert ("liminal_q4_panel_matmul_lora" in lowered) == panels
    assert ("liminal_q4_matmul_lora" in lowered) != panels


@needs_kernel
def test_q4_matmul_lora_refuses_tables_that_do_not_fit():
    packed = jax.tree.map(jnp.asarray, kernels.quantize_q4(four_bit_weights((1, 32, 32))))
    index, weight = jnp.ones((2, 1), jnp.int32), jnp.ones((2, 1))
    rng = np.random.default_rng(0)
    narrow, _ = slot_table(rng, 1, 2, 32, 16, 4, jnp.float32)
    with pytest.raises(Exception, match="do not add up to N"):
        jax.block_until_ready(kernels.q4_matmul_lora(jnp.ones((2, 32)), packed, 0, [narrow], index, weight))
    half, _ = slot_table(rng, 1, 2, 32, 16, 4, jnp.bfloat16)
    with pytest.raises(TypeError, match="must all be float32, all bfloat16 or all int8"):
        kernels.q4_matmul_lora(jnp.ones((2, 32)), packed, 0, [narrow, half], index, weight)


@needs_panels
def test_q4_matmul_lora_refuses_more_than_16_rows_even_with_panels():
    w = four_bit_weights((1, 32, 32))
    packed = jax.tree.map(jnp.asarray, kernels.with_panels(kernels.quantize_q4(w), kernels.q4_panels))
    table, _ = slot_table(np.random.default_rng(0), 1, 2, 32, 32, 4, jnp.float32)
    index, weight = jnp.ones((17, 1), jnp.int32), jnp.ones((17, 1))
    with pytest.raises(ValueError, match="at most 16 rows"):
        kernels.q4_matmul_lora(jnp.ones((17, 32)), packed, 0, [table], index, weight)


def eight_bit_weights(shape, seed=0):
    """Weights as a Q8_0 file holds them: per 32 inputs of a column, a float16 scale and codes
    -127..127 (the largest magnitude at 127, as llama.cpp's quantizer leaves it)."""
    rng = np.random.default_rng(seed)
    K, N = shape
    codes = rng.integers(-127, 128, (N, K // 32, 32))
    codes[..., 0] = 127 * rng.choice([-1, 1], (N, K // 32))
    scale = rng.uniform(0.001, 0.02, (N, K // 32, 1)).astype(np.float16).astype(np.float32)
    return np.ascontiguousarray((codes * scale).astype(np.float32).reshape(N, K).T)


def test_eight_bit_weights_pack_without_loss():
    w = eight_bit_weights((96, 40))
    restored = kernels.dequantize_q8(kernels.quantize_q8(w))
    np.testing.assert_allclose(restored, w, rtol=0, atol=1e-6 * np.abs(w).max())
    assert kernels.is_eight_bit(w)
    assert not kernels.is_eight_bit(np.random.default_rng(1).standard_normal((96, 40)))
    assert not kernels.is_eight_bit(np.zeros((40, 8), np.float32))  # 40 inputs: no whole blocks


@needs_kernel
@pytest.mark.parametrize("rows", [1, 5, 16])
def test_q8_matmul_matches_numpy(rows):
    K, N = 96, 200
    w = eight_bit_weights((K, N), seed=rows)
    packed = jax.tree.map(jnp.asarray, kernels.quantize_q8(w))
    x = np.random.default_rng(rows).standard_normal((rows, K)).astype(np.float32)
    got = np.asarray(jax.jit(kernels.q8_matmul)(x, packed))
    expected = x.astype(np.float64) @ w.astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())
    with pytest.raises(ValueError, match="at most 16 rows"):
        kernels.q8_matmul(jnp.zeros((17, K)), packed)


@pytest.fixture(scope="module")
def q4_engine(tiny_model):
    # An 8-bit output head, as GGUF files store it, so that it takes the 8-bit kernel as well.
    params = dict(tiny_model.params)
    if "lm_head" in params:
        params["lm_head"] = kernels.dequantize_q8(kernels.quantize_q8(params["lm_head"]))
    else:
        params["embed"] = kernels.dequantize_q8(kernels.quantize_q8(params["embed"].T)).T
    model = dataclasses.replace(tiny_model, params=params)
    engine = Engine(
        model,
        max_batch_slots=12,
        max_seq_len=256,
        lora_slots=4,
        max_lora_rank=8,
        decode_steps=4,
        prefill_chunk=32,
        decode_weights="q4",
    )
    if engine.decode_weights != "q4":
        pytest.skip("the q4 kernel did not build")
    assert engine.q8_head is not None
    yield engine
    engine.shutdown()


@needs_panels
def test_engines_keep_no_float_copies_of_what_the_panels_compute(q4_engine, tiny_model):
    assert not set(kernels.Q4_MATRICES) & set(q4_engine.params["layers"])
    weights = q4_engine.host_weights()["layers"]
    for name in kernels.Q4_MATRICES:
        expected = kernels.dequantize_q4(kernels.quantize_q4(tiny_model.params["layers"][name]))
        np.testing.assert_array_equal(weights[name], expected)
    # The opt-in narrower prefill matmuls are XLA's: they need the float weights.
    narrow = Engine(
        tiny_model,
        max_batch_slots=2,
        max_seq_len=64,
        lora_slots=1,
        decode_weights="q4",
        prefill_matmul_dtype="bfloat16",
    )
    try:
        assert set(kernels.Q4_MATRICES) <= set(narrow.params["layers"])
    finally:
        narrow.shutdown()


def test_a_tied_eight_bit_head_keeps_no_float_copy_where_it_serves_every_call(tiny_model):
    """With tied embeddings stored as 8-bit blocks (SmolLM2's GGUF) and batches of at most
    MAX_ROWS rows, every call's logits come from the 8-bit kernel: the float head is dropped,
    and speculative verifies are held to as many tokens. Wider batches keep it."""
    embed = kernels.dequantize_q8(kernels.quantize_q8(tiny_model.params["embed"].T)).T
    params = {k: v for k, v in tiny_model.params.items() if k != "lm_head"}
    model = dataclasses.replace(
        tiny_model, config=dataclasses.replace(TINY_CONFIG, tie_word_embeddings=True), params={**params, "embed": embed}
    )
    narrow = Engine(
        model,
        max_batch_slots=4,
        max_seq_len=256,
        lora_slots=1,
        max_lora_rank=4,
        decode_weights="q4",
        speculative_tokens=40,
    )
    wide = Engine(
        model, max_batch_slots=kernels.MAX_ROWS + 1, max_seq_len=64, lora_slots=1, max_lora_rank=4, decode_weights="q4"
    )
    try:
        if narrow.q8_head is None:
            pytest.skip("the 8-bit kernel did not build")
        assert "lm_head" not in narrow.params
        assert "lm_head" in wide.params
        head = narrow.host_weights()["lm_head"]
        np.testing.assert_allclose(head, embed.T, rtol=0, atol=1e-6 * np.abs(embed).max())

        prompt = prompt_ids(12, seed=3) * 4  # repeats: the n-gram lookup has drafts to offer
        greedy = SamplingParams(greedy=True, max_tokens=24, ignore_eos=True)
        speculated = narrow.submit(prompt, params=greedy).result()
        assert narrow.speculation["proposed"] > 0
        verified = [key[1] for key in narrow.compiled if key[0] == "verify"]
        assert verified and max(verified) <= kernels.MAX_ROWS
        assert speculated.token_ids == reference_greedy(narrow.host_weights(), prompt, 24, ignore_eos=True)
    finally:
        narrow.shutdown()
        wide.shutdown()


def test_random_weights_stay_float_unless_asked(tiny_engine, tiny_model):
    assert tiny_engine.decode_weights == "float"  # packing them would lose precision
    with pytest.raises(ValueError, match="decode_weights"):
        Engine(tiny_model, decode_weights="int3")


@pytest.mark.parametrize("length", [5, 40])
def test_q4_decoding_matches_the_uncached_forward_on_the_same_weights(q4_engine, length):
    prompt = prompt_ids(length, seed=length)
    result = q4_engine.submit(prompt, params=SamplingParams(greedy=True, max_tokens=30, ignore_eos=True)).result()
    assert result.token_ids == reference_greedy(q4_engine.host_weights(), prompt, 30, ignore_eos=True)


def test_q4_batches_with_adapters_match_each_row_alone(q4_engine):
    for i in range(3):
        q4_engine.load_adapter(f"q4-{i}", random_adapter(TINY_CONFIG, rank=4, seed=300 + i, scale=0.2))
    # 12 rows: a decode batch of 12 (the panel layout on AVX-512 builds, the column one
    # elsewhere); alone, each runs a batch of 1 (the column layout).
    plans = [[("q4-0", 1.0)], [], [("q4-1", 1.0)], [("q4-2", 0.5)], [], [("q4-0", 0.5), ("q4-1", 0.5)]] * 2
    prompts = [prompt_ids(6 + 2 * i, seed=70 + i) for i in range(len(plans))]
    params = SamplingParams(greedy=True, max_tokens=20, ignore_eos=True)
    alone = [q4_engine.submit(p, params=params, adapters=a).result() for p, a in zip(prompts, plans, strict=True)]
    handles = [q4_engine.submit(p, params=params, adapters=a) for p, a in zip(prompts, plans, strict=True)]
    assert [h.result().token_ids for h in handles] == [r.token_ids for r in alone]
    assert len({tuple(r.token_ids) for r in alone}) == len(alone)


def numpy_attention(q, cache_k, cache_v, slot, position, layer, scale):
    """Reference: float64 causal grouped-query attention over the cache."""
    B, T, H, D = q.shape
    kv_heads = cache_k.shape[2]
    out = np.zeros((B, T, H, D))
    for b in range(B):
        for t in range(T):
            if position[b, t] < 0:
                continue
            keys = cache_k[layer, slot[b], :, : position[b, t] + 1].astype(np.float64)
            values = cache_v[layer, slot[b], :, : position[b, t] + 1].astype(np.float64)
            for h in range(H):
                kv = h // (H // kv_heads)
                scores = keys[kv] @ q[b, t, h] * scale
                weights = np.exp(scores - scores.max())
                out[b, t, h] = weights @ values[kv] / weights.sum()
    return out


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("dim", [64, 12])  # the vectorised path and the generic one
def test_attention_matches_numpy_for_rows_at_their_own_positions(dim, dtype):
    rng = np.random.default_rng(dim)
    layers, slots, kv_heads, heads, max_len = 2, 5, 2, 6, 300
    cache_k = rng.standard_normal((layers, slots, kv_heads, max_len, dim)).astype(dtype)
    cache_v = rng.standard_normal((layers, slots, kv_heads, max_len, dim)).astype(dtype)
    cache_k[0, 3, 0, 0, :2] = [6e-8, -3e-5]  # float16 subnormals: the scalar conversion's edge
    # Rows in other slots, at positions 0, 5, 299 (the cache's end), a padding row (-1), and a
    # row with three queries (a verify step).
    slot = np.array([3, 0, 4, 1], np.int32)
    position = np.array([[0, 0, 0], [5, 6, 7], [299, 299, 299], [-1, -1, -1]], np.int32)
    q = (rng.standard_normal((4, 3, heads, dim)) * 2).astype(np.float32)
    scale = 1 / np.sqrt(dim)

    @jax.jit
    def every_layer(q, cache_k, cache_v):
        return jax.lax.scan(
            lambda c, layer: (
                c,
                kernels.attention(q, cache_k, cache_v, jnp.asarray(slot), jnp.asarray(position), layer, scale),
            ),
            0,
            jnp.arange(layers),
        )[1]

    got = np.asarray(every_layer(q, cache_k, cache_v))
    for layer in range(layers):
        expected = numpy_attention(q, cache_k, cache_v, slot, position, layer, scale)
        np.testing.assert_allclose(got[layer], expected, rtol=0, atol=2e-6 * np.abs(expected).max())
    assert not got[:, 3].any()


@needs_kernel
def test_attention_refuses_other_cache_dtypes():
    cache = jnp.zeros((1, 1, 1, 4, 16), jnp.bfloat16)
    with pytest.raises(TypeError, match="float32 or float16"):
        kernels.attention(
            jnp.zeros((1, 1, 1, 16)), cache, cache, jnp.zeros(1, jnp.int32), jnp.zeros((1, 1), jnp.int32), 0, 0.25
        )
