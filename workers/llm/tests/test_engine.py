import dataclasses
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from workers.llm import AdapterNotFoundError, ContextOverflowError, SamplingParams, kernels, random_adapter
from workers.llm.engine import Engine, default_kv_dtype
from workers.llm.lora import dequantize_slot_arrays, merge_adapter, quantize_slot_arrays, slot_arrays
from workers.llm.model import full_logits as _full_logits

from .conftest import TINY_CONFIG, as_device

full_logits = jax.jit(_full_logits, static_argnums=0, static_argnames="cache_dtype")
# Engines keep their KV cache in float16 where the native attention kernel reads it; the
# reference then reads keys and values back from a cache of the same dtype.
KV_DTYPE = default_kv_dtype()
STOP_IDS = (0, 2)


def prompt_ids(length, seed=0):
    rng = np.random.default_rng(seed)
    return [int(t) for t in rng.integers(3, TINY_CONFIG.vocab_size, length)]


def reference_greedy(params, prompt, max_tokens, ignore_eos=False, kv_dtype=KV_DTYPE):
    """Greedy decoding by recomputing every position without cache reuse."""
    device_params = as_device(params)
    tokens = list(prompt)
    out = []
    for _ in range(max_tokens):
        # Right-padding to a fixed length keeps one compiled program; attention is causal.
        padded = np.zeros((1, TINY_CONFIG.context_length), np.int32)
        padded[0, : len(tokens)] = tokens
        logits = full_logits(TINY_CONFIG, device_params, jnp.asarray(padded), cache_dtype=jnp.dtype(kv_dtype))
        token = int(jnp.argmax(logits[0, len(tokens) - 1]))
        if token in STOP_IDS and not ignore_eos:
            break
        out.append(token)
        tokens.append(token)
    return out


def greedy(max_tokens=24, **kwargs):
    return SamplingParams(greedy=True, max_tokens=max_tokens, **kwargs)


@pytest.mark.parametrize("length", [5, 40, 100])
def test_cached_generation_matches_uncached_forward(tiny_engine, tiny_model, length):
    # 40 tokens spans two prefill chunks; 100 + 40 crosses the first decode length bucket.
    prompt = prompt_ids(length, seed=length)
    result = tiny_engine.submit(prompt, params=greedy(40, ignore_eos=True)).result()
    assert result.finish_reason == "length"
    assert result.token_ids == reference_greedy(tiny_model.params, prompt, 40, ignore_eos=True)


def test_adapter_generation_matches_merged_weights(tiny_engine, tiny_model):
    adapter = random_adapter(TINY_CONFIG, rank=4, seed=21, scale=0.2)
    tiny_engine.load_adapter("merged-check", adapter)
    prompt = prompt_ids(12, seed=3)
    result = tiny_engine.submit(prompt, params=greedy(16, ignore_eos=True), adapters=[("merged-check", 1.0)]).result()
    merged = merge_adapter(TINY_CONFIG, tiny_model.params, adapter)
    assert result.token_ids == reference_greedy(merged, prompt, 16, ignore_eos=True)
    assert result.token_ids != reference_greedy(tiny_model.params, prompt, 16, ignore_eos=True)


def stored_adapter(adapter, slots: dict):
    """The adapter that float32 slot tables (`slot_arrays`' layout) hold: A and B with the
    scaling folded back out of B."""
    weights = {}
    for target in adapter.weights:
        a = slots[target]["A"].transpose(0, 2, 1)[:, : adapter.rank]
        b = slots[target]["B"].transpose(0, 2, 1)[:, :, : adapter.rank] / adapter.scaling
        weights[target] = (a, b)
    return dataclasses.replace(adapter, weights=weights)


def off_grid_adapter(seed):
    """Values that neither bfloat16 nor int8 slots hold (and alpha / r = 3)."""
    adapter = random_adapter(TINY_CONFIG, rank=4, alpha=12.0, seed=seed, scale=0.2)
    adapter.weights = {t: (a * 1.001, b * 0.999) for t, (a, b) in adapter.weights.items()}
    return adapter


def test_adapter_slots_are_eight_bit_where_the_kernel_reads_them(tiny_engine, tiny_model):
    if not tiny_engine.native_lora:
        pytest.skip("float32 slots without the native LoRA kernel")
    assert tiny_engine.lora_dtype == jnp.int8
    assert tiny_engine.lora["q_proj"]["A"].dtype == jnp.int8
    assert tiny_engine.lora["q_proj"]["scale"].dtype == jnp.float32
    # The slots keep the adapter quantized, so the engine generates what the merged weights of
    # the quantized adapter generate, with and without a prefill on the adapter.
    adapter = off_grid_adapter(22)
    tiny_engine.load_adapter("rounded", adapter)
    quantized = quantize_slot_arrays(slot_arrays(adapter, TINY_CONFIG, tiny_engine.max_lora_rank))
    stored = stored_adapter(adapter, dequantize_slot_arrays(quantized))
    merged = merge_adapter(TINY_CONFIG, tiny_model.params, stored)
    for seed in (4, 5):
        prompt = prompt_ids(12, seed=seed)
        result = tiny_engine.submit(prompt, params=greedy(16, ignore_eos=True), adapters=[("rounded", 1.0)]).result()
        assert result.token_ids == reference_greedy(merged, prompt, 16, ignore_eos=True)


def test_adapter_slots_in_bfloat16_on_request(tiny_model):
    if not kernels.available():
        pytest.skip("bfloat16 slots on a float32 engine need the native LoRA kernel")
    engine = Engine(tiny_model, max_batch_slots=2, max_seq_len=128, lora_dtype="bfloat16")
    try:
        assert engine.lora["q_proj"]["A"].dtype == jnp.bfloat16 and "scale" not in engine.lora["q_proj"]
        adapter = off_grid_adapter(23)
        engine.load_adapter("rounded", adapter)
        slots = slot_arrays(adapter, TINY_CONFIG, engine.max_lora_rank)
        rounded = jax.tree.map(lambda v: np.asarray(v).astype(jnp.bfloat16).astype(np.float32), slots)
        merged = merge_adapter(TINY_CONFIG, tiny_model.params, stored_adapter(adapter, rounded))
        prompt = prompt_ids(12, seed=4)
        result = engine.submit(prompt, params=greedy(16, ignore_eos=True), adapters=[("rounded", 1.0)]).result()
        assert result.token_ids == reference_greedy(merged, prompt, 16, ignore_eos=True)
    finally:
        engine.shutdown()


def test_kv_cache_is_float16_where_the_attention_kernel_reads_it(tiny_engine, tiny_model):
    if not tiny_engine.native_attention:
        pytest.skip("no native attention kernel: the cache keeps the engine's dtype")
    assert tiny_engine.kv_dtype == jnp.float16 and tiny_engine.cache["k"].dtype == jnp.float16
    with pytest.raises(ValueError, match="float32 or float16"):
        Engine(tiny_model, kv_dtype="bfloat16")
    # float32 on request: then generation matches a float32 cache's reference.
    engine = Engine(tiny_model, max_batch_slots=2, max_seq_len=128, kv_dtype="float32")
    try:
        prompt = prompt_ids(9, seed=5)
        result = engine.submit(prompt, params=greedy(12, ignore_eos=True)).result()
        assert result.token_ids == reference_greedy(
            tiny_model.params, prompt, 12, ignore_eos=True, kv_dtype=jnp.float32
        )
    finally:
        engine.shutdown()


def test_lora_dtype_is_checked(tiny_model):
    with pytest.raises(ValueError, match="lora_dtype"):
        Engine(tiny_model, lora_dtype="float16")


def test_batch_mixing_adapters_matches_each_row_alone(tiny_engine):
    for i in range(4):
        tiny_engine.load_adapter(f"mix-{i}", random_adapter(TINY_CONFIG, rank=2 + 2 * i, seed=100 + i, scale=0.2))
    plans = [
        [("mix-0", 1.0)],
        [("mix-1", 1.0)],
        [],
        [("mix-2", 0.5)],
        [("mix-3", 1.0)],
        [],
        [("mix-0", 0.6), ("mix-3", 0.4)],
        [("mix-1", 1.0), ("mix-2", 1.0), ("mix-3", -1.0)],
    ]
    prompts = [prompt_ids(8 + 3 * i, seed=50 + i) for i in range(len(plans))]
    alone = [
        tiny_engine.submit(p, params=greedy(20, ignore_eos=True), adapters=a).result()
        for p, a in zip(prompts, plans, strict=True)
    ]
    handles = [
        tiny_engine.submit(p, params=greedy(20, ignore_eos=True), adapters=a)
        for p, a in zip(prompts, plans, strict=True)
    ]
    together = [h.result() for h in handles]
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert len({tuple(r.token_ids) for r in alone}) == len(alone)  # the rows really differ
    assert together[0].adapters == {"mix-0": 1}
    assert together[2].adapters == {}


def test_same_seed_gives_same_text_whatever_the_batch(tiny_engine):
    params = SamplingParams(temperature=1.0, top_k=50, top_p=0.95, seed=1234, max_tokens=30, ignore_eos=True)
    prompt = prompt_ids(10, seed=9)
    alone = tiny_engine.submit(prompt, params=params).result()
    others = [
        tiny_engine.submit(
            prompt_ids(6 + i, seed=i), params=SamplingParams(temperature=0.9, seed=i, max_tokens=40, ignore_eos=True)
        )
        for i in range(5)
    ]
    in_batch = tiny_engine.submit(prompt, params=params).result()
    for handle in others:
        handle.result()
    other_seed = tiny_engine.submit(
        prompt, params=SamplingParams(temperature=1.0, top_k=50, top_p=0.95, seed=4321, max_tokens=30, ignore_eos=True)
    ).result()
    assert in_batch.token_ids == alone.token_ids
    assert other_seed.token_ids != alone.token_ids


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=1.0),
        dict(temperature=0.5, top_k=5),
        dict(temperature=1.5, top_p=0.5),
        dict(temperature=1.0, repetition_penalty=1.3),
    ],
)
def test_sampling_settings_are_reproducible(tiny_engine, settings):
    params = SamplingParams(seed=7, max_tokens=12, ignore_eos=True, **settings)
    first = tiny_engine.submit(prompt_ids(9, seed=1), params=params).result()
    second = tiny_engine.submit(prompt_ids(9, seed=1), params=params).result()
    assert first.token_ids == second.token_ids
    assert len(first.token_ids) == 12


def test_top_k_one_is_greedy(tiny_engine):
    prompt = prompt_ids(11, seed=4)
    sampled = tiny_engine.submit(
        prompt, params=SamplingParams(temperature=2.0, top_k=1, seed=3, max_tokens=15, ignore_eos=True)
    ).result()
    greedy_result = tiny_engine.submit(prompt, params=greedy(15, ignore_eos=True)).result()
    assert sampled.token_ids == greedy_result.token_ids


def test_repetition_penalty_changes_greedy_output(tiny_engine):
    prompt = prompt_ids(6, seed=5)
    plain = tiny_engine.submit(prompt, params=greedy(40, ignore_eos=True)).result()
    penalised = tiny_engine.submit(prompt, params=greedy(40, ignore_eos=True, repetition_penalty=5.0)).result()
    assert len(set(penalised.token_ids)) > len(set(plain.token_ids))


def test_streamed_events_concatenate_to_result(tiny_engine):
    events = []
    handle = tiny_engine.submit(prompt_ids(7, seed=6), params=greedy(30, ignore_eos=True), on_token=events.append)
    iterated = list(handle)
    result = handle.result()
    assert iterated == events
    assert "".join(e.text for e in events) == result.text
    assert [e.token_id for e in events] == result.token_ids
    assert result.mean_logprob == pytest.approx(np.mean([e.logprob for e in events]), abs=1e-5)
    assert all(e.logprob <= 0 for e in events)
    assert result.time_to_first_token <= result.total_time


def test_logprob_is_the_model_log_probability(tiny_engine, tiny_model):
    prompt = prompt_ids(8, seed=12)
    result = tiny_engine.submit(prompt, params=greedy(1, ignore_eos=True)).result()
    logits = full_logits(TINY_CONFIG, as_device(tiny_model.params), jnp.asarray([prompt]))[0, -1]
    expected = float(jax.nn.log_softmax(logits)[result.token_ids[0]])
    assert result.mean_logprob == pytest.approx(expected, abs=1e-4)


def test_stop_string_ends_generation_and_is_not_emitted(tiny_engine):
    prompt = prompt_ids(9, seed=8)
    full = tiny_engine.submit(prompt, params=greedy(40, ignore_eos=True)).result()
    text = full.text
    start = next(i for i in range(8, len(text) - 2) if "\ufffd" not in text[i : i + 2])
    stop = text[start : start + 2]
    events = []
    stopped = tiny_engine.submit(
        prompt, params=greedy(40, ignore_eos=True, stop=[stop, "zzzz"]), on_token=events.append
    ).result()
    assert stopped.finish_reason == "stop"
    assert stopped.text == text[: text.index(stop)]
    assert "".join(e.text for e in events) == stopped.text


def test_max_tokens_and_context_end_give_length(tiny_engine):
    result = tiny_engine.submit(prompt_ids(5), params=greedy(7, ignore_eos=True)).result()
    assert (result.finish_reason, result.completion_tokens) == ("length", 7)
    near_end = tiny_engine.submit(prompt_ids(250), params=greedy(50, ignore_eos=True)).result()
    assert near_end.finish_reason == "length"
    assert near_end.prompt_tokens + near_end.completion_tokens == tiny_engine.context_length


def test_context_overflow_is_a_clear_error_or_truncated(tiny_engine):
    with pytest.raises(ContextOverflowError) as info:
        tiny_engine.submit(prompt_ids(300), params=greedy(5))
    assert info.value.prompt_tokens == 300
    result = tiny_engine.submit(prompt_ids(300), params=greedy(5, ignore_eos=True), truncate=True).result()
    assert result.finish_reason == "length"
    assert result.prompt_tokens + 5 <= tiny_engine.context_length


def test_cancel_frees_the_slot(tiny_engine):
    started = threading.Event()
    handle = tiny_engine.submit(
        prompt_ids(6), params=greedy(200, ignore_eos=True), on_token=lambda event: started.set()
    )
    assert started.wait(60)
    handle.cancel()
    result = handle.result(timeout=60)
    assert result.finish_reason == "cancelled"
    assert result.completion_tokens < 200
    assert tiny_engine.free_slots == tiny_engine.max_batch_slots


def test_should_cancel_is_polled(tiny_engine):
    polls = []

    def should_cancel():
        polls.append(1)
        return len(polls) > 3

    result = tiny_engine.submit(prompt_ids(6), params=greedy(200, ignore_eos=True), should_cancel=should_cancel).result(
        timeout=60
    )
    assert result.finish_reason == "cancelled"
    assert 0 < result.completion_tokens < 200
    assert tiny_engine.free_slots == tiny_engine.max_batch_slots


def test_failing_callback_fails_only_its_request(tiny_engine):
    def explode(event):
        raise RuntimeError("boom")

    bad = tiny_engine.submit(prompt_ids(6), params=greedy(10, ignore_eos=True), on_token=explode)
    good = tiny_engine.submit(prompt_ids(6), params=greedy(10, ignore_eos=True))
    assert bad.result().finish_reason == "error"
    assert "boom" in bad.result().error
    assert good.result().finish_reason == "length"


def test_more_requests_than_slots_from_many_threads(tiny_engine):
    prompts = [prompt_ids(5 + i % 7, seed=200 + i) for i in range(20)]
    expected = [tiny_engine.submit(p, params=greedy(6, ignore_eos=True)).result().token_ids for p in prompts[:4]]
    results = [None] * len(prompts)

    def worker(i):
        results[i] = tiny_engine.submit(prompts[i], params=greedy(6, ignore_eos=True)).result()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(r is not None and r.finish_reason == "length" for r in results)
    assert [r.token_ids for r in results[:4]] == expected


def test_unknown_adapter_is_rejected(tiny_engine):
    with pytest.raises(AdapterNotFoundError):
        tiny_engine.submit(prompt_ids(4), params=greedy(2), adapters=[("no-such-adapter", 1.0)])
    with pytest.raises(ValueError):
        tiny_engine.submit(prompt_ids(4), params=greedy(2), adapters=[(f"mix-{i}", 1.0) for i in range(4)])


def test_hot_swap_during_generation_keeps_version_and_never_recompiles(tiny_engine):
    v1 = random_adapter(TINY_CONFIG, rank=4, seed=300, scale=0.2)
    v2 = random_adapter(TINY_CONFIG, rank=8, seed=301, scale=0.2)
    tiny_engine.load_adapter("swap", v1, version="v1")
    tiny_engine.load_adapter("swap-other", random_adapter(TINY_CONFIG, rank=2, seed=302))
    prompt = prompt_ids(10, seed=30)
    params = greedy(60, ignore_eos=True)
    on_v1 = tiny_engine.submit(prompt, params=params, adapters=[("swap", 1.0)]).result()
    compiles = tiny_engine.compile_count

    progress = threading.Event()
    events = []

    def on_token(event):
        events.append(event)
        if len(events) == 5:
            progress.set()

    running = tiny_engine.submit(prompt, params=params, adapters=[("swap", 1.0)], on_token=on_token)
    assert progress.wait(60)
    tiny_engine.load_adapter("swap", v2, version="v2")
    tiny_engine.evict_adapter("swap-other")
    tiny_engine.load_adapter("swap-new", random_adapter(TINY_CONFIG, rank=3, seed=303))
    assert not running.done  # the swap really happened mid-generation
    result = running.result(timeout=60)
    on_v2 = tiny_engine.submit(prompt, params=params, adapters=[("swap", 1.0)]).result()

    assert result.finish_reason == "length"
    assert result.adapters == {"swap": "v1"}
    assert result.token_ids == on_v1.token_ids
    assert on_v2.adapters == {"swap": "v2"}
    assert on_v2.token_ids != on_v1.token_ids
    assert tiny_engine.adapter_versions()["swap"] == "v2"
    assert "swap-other" not in tiny_engine.adapter_versions()
    assert tiny_engine.compile_count == compiles


def test_compiles_stay_bounded(tiny_engine):
    before = tiny_engine.compile_count
    for length in range(1, 120, 7):
        tiny_engine.submit(prompt_ids(length, seed=length), params=greedy(3)).result()
    # prefill buckets x chunk positions and decode length buckets, not one per prompt length
    assert tiny_engine.compile_count - before <= 12
    assert tiny_engine.compile_count <= 40


def test_cancelling_a_queued_request(tiny_engine):
    running = [
        tiny_engine.submit(prompt_ids(5, seed=i), params=greedy(250, ignore_eos=True))
        for i in range(tiny_engine.max_batch_slots)
    ]
    queued = tiny_engine.submit(prompt_ids(5), params=greedy(5, ignore_eos=True))
    queued.cancel()
    result = queued.result(timeout=60)
    assert (result.finish_reason, result.completion_tokens) == ("cancelled", 0)
    assert result.time_to_first_token is None
    for handle in running:
        handle.cancel()
    assert all(h.result(timeout=60).finish_reason == "cancelled" for h in running)
    assert tiny_engine.free_slots == tiny_engine.max_batch_slots


def test_ngram_draft():
    from workers.llm.engine import ngram_draft

    assert ngram_draft([1, 2, 3, 9, 9, 1, 2, 3], 3) == [9, 9, 1]
    assert ngram_draft([5, 6, 7, 5, 6, 8, 5, 6], 2) == [8, 5]  # the latest occurrence wins
    assert ngram_draft([1, 2, 3, 4], 3) == []
    assert ngram_draft([4, 1, 7, 1], 2) == [7, 1]  # falls back to shorter n-grams


def test_speculative_decoding_gives_plain_greedy_tokens(tiny_model):
    engine = Engine(
        tiny_model,
        max_batch_slots=2,
        max_seq_len=256,
        lora_slots=2,
        max_lora_rank=8,
        speculative_tokens=4,
        prefill_chunk=64,
    )
    try:
        adapter = random_adapter(TINY_CONFIG, rank=4, seed=77, scale=0.2)
        engine.load_adapter("spec", adapter)
        pattern = prompt_ids(7, seed=70)
        prompt = pattern * 4 + pattern[:3]
        result = engine.submit(prompt, params=greedy(40, ignore_eos=True)).result()
        assert result.token_ids == reference_greedy(tiny_model.params, prompt, 40, ignore_eos=True)
        assert engine.speculation["rounds"] > 0
        with_adapter = engine.submit(prompt, params=greedy(20, ignore_eos=True), adapters=[("spec", 1.0)]).result()
        merged = merge_adapter(TINY_CONFIG, tiny_model.params, adapter)
        assert with_adapter.token_ids == reference_greedy(merged, prompt, 20, ignore_eos=True)
    finally:
        engine.shutdown()


def test_requests_whose_drafts_fail_stop_speculating(tiny_model):
    from workers.llm.engine import SPECULATION_PROBATION

    engine = Engine(
        tiny_model,
        max_batch_slots=2,
        max_seq_len=256,
        lora_slots=2,
        max_lora_rank=8,
        speculative_tokens=4,
        prefill_chunk=64,
    )
    try:
        # Every token of this prompt repeats, so every step has a draft; the random model does
        # not continue the pattern, so the drafts fail.
        prompt = prompt_ids(60, seed=5) * 3
        result = engine.submit(prompt, params=greedy(60, ignore_eos=True)).result()
        assert result.token_ids == reference_greedy(tiny_model.params, prompt, 60, ignore_eos=True)
        proposed, accepted = engine.speculation["proposed"], engine.speculation["accepted"]
        assert accepted < proposed / 2
        assert SPECULATION_PROBATION <= proposed < SPECULATION_PROBATION + 2 * 4
    finally:
        engine.shutdown()
