import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from workers.llm import (
    AdapterError,
    AdapterSlotsFullError,
    LoraAdapter,
    SamplingParams,
    load_peft_adapter,
    random_adapter,
    save_peft_adapter,
)
from workers.llm.engine import Engine
from workers.llm.lora import AdapterSlotTable, dequantize_slot_arrays, quantize_slot_arrays, slot_arrays

from .conftest import TINY_CONFIG


def test_peft_files_round_trip(tmp_path):
    adapter = random_adapter(TINY_CONFIG, rank=4, alpha=16, seed=1, targets=("q_proj", "v_proj", "down_proj"))
    directory = save_peft_adapter(tmp_path / "a", adapter, base_model_name_or_path="tiny")
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 16
    assert config["target_modules"] == ["q_proj", "v_proj", "down_proj"]
    tensors = load_file(str(directory / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"
    assert tensors[key].shape == (4, TINY_CONFIG.hidden_size)
    assert tensors["base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"].shape == (TINY_CONFIG.hidden_size, 4)
    loaded = load_peft_adapter(directory, TINY_CONFIG)
    assert loaded.scaling == pytest.approx(4.0)
    for target, (a, b) in adapter.weights.items():
        np.testing.assert_array_equal(loaded.weights[target][0], a)
        np.testing.assert_array_equal(loaded.weights[target][1], b)


def test_peft_names_with_adapter_suffix_and_partial_layers(tmp_path):
    rank, d, kv = 2, TINY_CONFIG.hidden_size, TINY_CONFIG.kv_size
    tensors = {
        "base_model.model.model.layers.1.self_attn.k_proj.lora_A.default.weight": np.ones((rank, d), np.float32),
        "base_model.model.model.layers.1.self_attn.k_proj.lora_B.default.weight": np.ones((kv, rank), np.float32),
    }
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": 1, "use_rslora": True, "target_modules": ["k_proj"]})
    )
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    adapter = load_peft_adapter(tmp_path, TINY_CONFIG)
    a, b = adapter.weights["k_proj"]
    assert not a[0].any() and a[1].all()
    assert adapter.scaling == pytest.approx(1 / np.sqrt(2))


def test_bad_adapters_are_rejected(tmp_path):
    with pytest.raises(AdapterError):
        LoraAdapter.from_state_dict(
            {
                "model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((2, 3), np.float32),
                "model.layers.0.self_attn.q_proj.lora_B.weight": np.zeros((64, 2), np.float32),
            },
            TINY_CONFIG,
        )
    with pytest.raises(AdapterError):
        LoraAdapter.from_state_dict({"model.embed_tokens.lora_embedding_A": np.zeros((2, 3))}, TINY_CONFIG)


def test_engine_loads_peft_directory_and_rejects_too_high_rank(tiny_engine, tmp_path):
    adapter = random_adapter(TINY_CONFIG, rank=3, seed=5)
    directory = save_peft_adapter(tmp_path / "ok", adapter)
    assert tiny_engine.load_adapter("from-disk", directory, version=7) == 7
    assert tiny_engine.adapter_versions()["from-disk"] == 7
    too_big = save_peft_adapter(tmp_path / "big", random_adapter(TINY_CONFIG, rank=16))
    with pytest.raises(AdapterError):
        tiny_engine.load_adapter("too-big", too_big)
    assert "too-big" not in tiny_engine.adapter_versions()


def test_adapter_from_file_matches_adapter_object(tiny_engine, tmp_path):
    adapter = random_adapter(TINY_CONFIG, rank=5, seed=8, scale=0.2)
    tiny_engine.load_adapter("object", adapter)
    tiny_engine.load_adapter("file", save_peft_adapter(tmp_path / "f", adapter))
    params = SamplingParams(greedy=True, max_tokens=10, ignore_eos=True)
    a = tiny_engine.submit([5, 6, 7, 8], params=params, adapters=[("object", 1.0)]).result()
    b = tiny_engine.submit([5, 6, 7, 8], params=params, adapters=[("file", 1.0)]).result()
    assert a.token_ids == b.token_ids


def test_slot_table_lru_eviction_and_pinning():
    table = AdapterSlotTable(2)
    for name in ("a", "b"):
        table.commit(name, table.reserve(name), 1, pinned=False)
    table.acquire([("a", 1.0)])  # "a" is now busy and most recently used
    slot_c = table.reserve("c")  # evicts idle "b"
    table.commit("c", slot_c, 1, pinned=True)
    assert set(table.versions()) == {"a", "c"}
    with pytest.raises(AdapterSlotsFullError):
        table.reserve("d")  # "a" is serving a request, "c" is pinned
    table.release([table.slot_of("a")])
    table.commit("d", table.reserve("d"), 1, pinned=False)
    assert set(table.versions()) == {"c", "d"}


def test_replaced_version_keeps_its_slot_until_released():
    table = AdapterSlotTable(2)
    table.commit("a", table.reserve("a"), 1, pinned=False)
    ((old_slot, _, _, version),) = table.acquire([("a", 1.0)])
    new_slot = table.reserve("a")
    table.commit("a", new_slot, 2, pinned=True)
    assert old_slot != new_slot and version == 1
    with pytest.raises(AdapterSlotsFullError):
        table.reserve("b")  # the old version still serves a request, the new one is pinned
    table.release([old_slot])
    assert table.reserve("b") == old_slot


def test_engine_lru_eviction(tiny_model):
    engine = Engine(tiny_model, max_batch_slots=2, max_seq_len=64, lora_slots=2, max_lora_rank=4)
    try:
        for i, name in enumerate(("first", "second", "third")):
            engine.load_adapter(name, random_adapter(TINY_CONFIG, rank=2, seed=i))
        assert set(engine.adapter_versions()) == {"second", "third"}
        engine.load_adapter("second", random_adapter(TINY_CONFIG, rank=2, seed=9), pin=True)
        engine.load_adapter("fourth", random_adapter(TINY_CONFIG, rank=2, seed=10))
        assert set(engine.adapter_versions()) == {"second", "fourth"}
        assert engine.adapter_versions()["second"] == 2
    finally:
        engine.shutdown()


def lora_term(slots: dict, x: np.ndarray) -> np.ndarray:
    """Every layer's x A B for each target's float32 tables, targets side by side."""
    return np.concatenate(
        [np.einsum("mk,lkr,lrn->lmn", x, t["A"], t["B"], dtype=np.float64) for t in slots.values()], axis=-1
    )


@pytest.mark.parametrize("outliers", [False, True])
def test_eight_bit_slots_keep_the_lora_term_within_a_percent(outliers):
    """Per-rank 8-bit steps move a LoRA term by ~1% (L2) of its size, also where a few
    outputs' weights are ten times the rest (which coarsens their rank's step)."""
    rng = np.random.default_rng(7)
    adapter = random_adapter(TINY_CONFIG, rank=8, seed=3)
    # Off the 8-bit grid that random_adapter uses: values quantizing really rounds.
    adapter.weights = {
        t: (
            a + rng.standard_normal(a.shape).astype(np.float32) * 0.01,
            b + rng.standard_normal(b.shape).astype(np.float32) * 0.01,
        )
        for t, (a, b) in adapter.weights.items()
    }
    if outliers:
        for _, b in adapter.weights.values():
            b[:, :2] *= 10.0
    slots = slot_arrays(adapter, TINY_CONFIG, 16)
    quantized = quantize_slot_arrays(slots)
    assert all(t["A"].dtype == np.int8 and t["B"].dtype == np.int8 for t in quantized.values())
    x = rng.standard_normal((32, TINY_CONFIG.hidden_size)).astype(np.float32)
    exact = lora_term({t: slots[t] for t in ("q_proj", "o_proj", "gate_proj")}, x)
    stored = dequantize_slot_arrays({t: quantized[t] for t in ("q_proj", "o_proj", "gate_proj")})
    error = np.linalg.norm(lora_term(stored, x) - exact) / np.linalg.norm(exact)
    assert 1e-4 < error < 0.02  # rounded, but by little


def test_eight_bit_slots_hold_grid_adapters_exactly_and_zero_ranks_as_zero():
    """random_adapter's values are 8-bit multiples of a power-of-two step per rank: quantizing
    them loses nothing. The padding ranks beyond an adapter's rank get a zero scale."""
    adapter = random_adapter(TINY_CONFIG, rank=4, seed=5)
    slots = slot_arrays(adapter, TINY_CONFIG, 8)
    quantized = quantize_slot_arrays(slots)
    restored = dequantize_slot_arrays(quantized)
    for target, table in slots.items():
        # Each rank's A column and B row come back up to powers of two that cancel.
        a, b = restored[target]["A"], restored[target]["B"]
        np.testing.assert_array_equal(
            np.einsum("lkr,lrn->lkrn", a, b), np.einsum("lkr,lrn->lkrn", table["A"], table["B"])
        )
        assert not quantized[target]["scale"][:, 4:].any()
        assert quantized[target]["scale"][:, :4].all()
