"""LoRA adapters: PEFT-compatible files, host-side representation and the slot table.

File format (what Hugging Face PEFT writes and reads):
    adapter_config.json          {"peft_type": "LORA", "r": 16, "lora_alpha": 32,
                                  "target_modules": ["q_proj", ...], ...}
    adapter_model.safetensors    base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight
                                 [r, in] and ...lora_B.weight [out, r] (mlp.* for gate/up/down)
The effective update of a projection is W + scaling · B·A with scaling = lora_alpha / r
(lora_alpha / sqrt(r) when "use_rslora" is true).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .model import LORA_TARGETS, unpair_slot_tables

ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
_MODULE_PARENT = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}
_PEFT_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([AB])(?:\.[A-Za-z0-9_]+)?\.weight$")


class AdapterError(ValueError):
    """An adapter file or array set that does not fit the base model."""


@dataclass
class LoraAdapter:
    """One adapter on the host. weights[target] = (A [L, r, in], B [L, out, r]), PEFT orientation.

    Layers an adapter does not touch hold zeros.
    """

    rank: int
    alpha: float
    weights: dict[str, tuple[np.ndarray, np.ndarray]]
    use_rslora: bool = False
    metadata: dict = field(default_factory=dict)

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)

    @property
    def target_modules(self) -> list[str]:
        return [t for t in LORA_TARGETS if t in self.weights]

    def validate(self, config: ModelConfig) -> None:
        dims = config.target_dims()
        for target, (a, b) in self.weights.items():
            if target not in dims:
                raise AdapterError(f"unsupported LoRA target {target!r}")
            fan_in, fan_out = dims[target]
            expected_a = (config.num_layers, self.rank, fan_in)
            expected_b = (config.num_layers, fan_out, self.rank)
            if a.shape != expected_a or b.shape != expected_b:
                raise AdapterError(f"{target}: shapes {a.shape}/{b.shape}, expected {expected_a}/{expected_b}")

    def delta(self, target: str, layer: int) -> np.ndarray:
        """scaling · B·A for one projection of one layer, [out, in] (zeros if not targeted)."""
        a, b = self.weights[target]
        return self.scaling * (b[layer].astype(np.float64) @ a[layer].astype(np.float64))

    def state_dict(self) -> dict[str, np.ndarray]:
        tensors = {}
        for target, (a, b) in self.weights.items():
            parent = _MODULE_PARENT[target]
            for layer in range(a.shape[0]):
                prefix = f"base_model.model.model.layers.{layer}.{parent}.{target}"
                tensors[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a[layer], np.float32)
                tensors[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(b[layer], np.float32)
        return tensors

    def peft_config(self, base_model_name_or_path: str | None = None) -> dict:
        return {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model_name_or_path,
            "r": self.rank,
            "lora_alpha": self.alpha,
            "lora_dropout": 0.0,
            "target_modules": self.target_modules,
            "bias": "none",
            "fan_in_fan_out": False,
            "use_rslora": self.use_rslora,
            "inference_mode": True,
            "modules_to_save": None,
        }

    @classmethod
    def from_state_dict(
        cls,
        tensors: dict[str, np.ndarray],
        config: ModelConfig,
        *,
        alpha: float | None = None,
        rank: int | None = None,
        use_rslora: bool = False,
    ) -> LoraAdapter:
        """Build from PEFT-named tensors; rank from the tensors, alpha defaults to the rank."""
        found: dict[str, dict[str, dict[int, np.ndarray]]] = {}
        for key, array in tensors.items():
            match = _PEFT_KEY.search(key)
            if match is None:
                raise AdapterError(f"unsupported adapter tensor {key!r}")
            layer, target, which = int(match.group(1)), match.group(2), match.group(3)
            if target not in _MODULE_PARENT:
                raise AdapterError(f"unsupported LoRA target {target!r}")
            if layer >= config.num_layers:
                raise AdapterError(f"{key!r}: the base model has {config.num_layers} layers")
            found.setdefault(target, {}).setdefault(which, {})[layer] = np.asarray(array, np.float32)
        if not found:
            raise AdapterError("the adapter has no LoRA tensors")
        ranks = {a.shape[0] for parts in found.values() for a in parts.get("A", {}).values()}
        if rank is None:
            if len(ranks) != 1:
                raise AdapterError(f"inconsistent LoRA ranks {sorted(ranks)}")
            rank = ranks.pop()
        dims = config.target_dims()
        weights = {}
        for target, parts in found.items():
            fan_in, fan_out = dims[target]
            a = np.zeros((config.num_layers, rank, fan_in), np.float32)
            b = np.zeros((config.num_layers, fan_out, rank), np.float32)
            if set(parts.get("A", {})) != set(parts.get("B", {})):
                raise AdapterError(f"{target}: lora_A and lora_B cover different layers")
            for layer, array in parts["A"].items():
                if array.shape != (rank, fan_in):
                    raise AdapterError(f"{target}.{layer}.lora_A has shape {array.shape}, expected {(rank, fan_in)}")
                a[layer] = array
            for layer, array in parts["B"].items():
                if array.shape != (fan_out, rank):
                    raise AdapterError(f"{target}.{layer}.lora_B has shape {array.shape}, expected {(fan_out, rank)}")
                b[layer] = array
            weights[target] = (a, b)
        return cls(rank=rank, alpha=float(rank if alpha is None else alpha), weights=weights, use_rslora=use_rslora)


def load_peft_adapter(path: str | os.PathLike, config: ModelConfig) -> LoraAdapter:
    """Read a PEFT adapter directory (or its adapter_model.safetensors file)."""
    from safetensors.numpy import load_file

    path = Path(path)
    directory = path if path.is_dir() else path.parent
    weights_file = path / ADAPTER_WEIGHTS_FILE if path.is_dir() else path
    peft = json.loads((directory / ADAPTER_CONFIG_FILE).read_text())
    if peft.get("peft_type", "LORA").upper() != "LORA":
        raise AdapterError(f"not a LoRA adapter: peft_type={peft.get('peft_type')!r}")
    if peft.get("bias", "none") != "none":
        raise AdapterError("LoRA bias terms are not supported")
    if peft.get("fan_in_fan_out"):
        raise AdapterError("fan_in_fan_out adapters are not supported")
    adapter = LoraAdapter.from_state_dict(
        load_file(str(weights_file)),
        config,
        alpha=peft.get("lora_alpha"),
        rank=peft.get("r"),
        use_rslora=bool(peft.get("use_rslora", False)),
    )
    adapter.metadata = peft
    return adapter


def save_peft_adapter(
    path: str | os.PathLike, adapter: LoraAdapter, *, base_model_name_or_path: str | None = None
) -> Path:
    """Write `adapter` as a PEFT directory (adapter_model.safetensors + adapter_config.json)."""
    from safetensors.numpy import save_file

    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(adapter.state_dict(), str(directory / ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / ADAPTER_CONFIG_FILE).write_text(json.dumps(adapter.peft_config(base_model_name_or_path), indent=2))
    return directory


def _on_eight_bit_grid(values: np.ndarray, axis: int) -> np.ndarray:
    """values rounded onto a power-of-two step per slice along `axis`, with some value of each
    slice at ±127 steps: each is then held exactly by bfloat16 (7 significant bits) and by
    `quantize_slot_arrays` (whose step for the slice comes out as that power of two)."""
    values = np.asarray(values, np.float32)
    largest = np.abs(values).max(axis=axis, keepdims=True)
    step = np.exp2(np.ceil(np.log2(np.where(largest > 0, largest, 1.0) / 127.0)))
    q = np.clip(np.rint(values / step), -127, 127)
    top = np.expand_dims(np.abs(q).argmax(axis=axis), axis)
    peak = np.take_along_axis(q, top, axis)
    np.put_along_axis(q, top, np.where(peak < 0, -127.0, 127.0), axis)
    return (q * step).astype(np.float32)


def random_adapter(
    config: ModelConfig,
    *,
    rank: int = 8,
    alpha: float | None = None,
    targets=LORA_TARGETS,
    seed: int = 0,
    scale: float = 0.05,
) -> LoraAdapter:
    """An adapter with random A and B (both non-zero), for tests and benchmarks.

    A's rows and B's columns (one per rank) are 8-bit multiples of a power-of-two step, so that
    an engine holding its slots in bfloat16 or int8 holds them exactly (with a power-of-two
    alpha / r, the default 2) and compares with merged weights."""
    rng = np.random.default_rng(seed)
    dims = config.target_dims()
    weights = {}
    for target in targets:
        fan_in, fan_out = dims[target]
        a = _on_eight_bit_grid(rng.standard_normal((config.num_layers, rank, fan_in)) * scale, 2)
        b = _on_eight_bit_grid(rng.standard_normal((config.num_layers, fan_out, rank)) * scale, 1)
        weights[target] = (a, b)
    return LoraAdapter(rank=rank, alpha=float(alpha if alpha is not None else 2 * rank), weights=weights)


def slot_arrays(adapter: LoraAdapter, config: ModelConfig, max_rank: int):
    """Device-slot layout: per target A [L, in, R] and B [L, R, out] with scaling folded into B."""
    if adapter.rank > max_rank:
        raise AdapterError(f"adapter rank {adapter.rank} exceeds the engine's max_lora_rank {max_rank}")
    dims = config.target_dims()
    arrays = {}
    for target in LORA_TARGETS:
        fan_in, fan_out = dims[target]
        a_slot = np.zeros((config.num_layers, fan_in, max_rank), np.float32)
        b_slot = np.zeros((config.num_layers, max_rank, fan_out), np.float32)
        if target in adapter.weights:
            a, b = adapter.weights[target]
            a_slot[:, :, : adapter.rank] = a.transpose(0, 2, 1)
            b_slot[:, : adapter.rank, :] = b.transpose(0, 2, 1) * adapter.scaling
        arrays[target] = {"A": a_slot, "B": b_slot}
    return arrays


def quantize_slot_arrays(arrays: dict) -> dict:
    """`slot_arrays`' float tables in 8 bits, per target: A int8 [L, in/2, R, 2] (inputs 2i and
    2i + 1 of a rank side by side), B int8 [L, R/2, out, 2] (ranks 2c and 2c + 1 of an output
    side by side) and scale [L, R] float32; `in` and R must be even.

    Rank c's A column and B row each get their own step (max |value| / 127, as llama.cpp's Q8_0
    scales its blocks), and scale[c] is the product of the two steps, so the term
    (x A) B = Σ_c (x A_q[:, c]) · scale[c] · B_q[c] needs R multiplies for the scales. Each
    value is off by at most half its rank's step (~0.4% of the rank's largest value), and a
    LoRA term comes out within ~1% (L2) of float32's, against the ~5% by which 4-bit base
    weights already move a projection. The pairs are the layout of the kernels' 16-bit
    multiply-adds (kernels/lora_term.h), which take two terms of a sum per 32-bit lane."""
    quantized = {}
    for target, slot in arrays.items():
        a, b = np.asarray(slot["A"], np.float32), np.asarray(slot["B"], np.float32)
        (layers, fan_in, rank), fan_out = a.shape, b.shape[2]
        if fan_in % 2 or rank % 2:
            raise ValueError(f"int8 slots need an even input size and rank, not {fan_in} and {rank} ({target})")
        a_step = np.abs(a).max(axis=1) / 127.0  # [L, R], over the inputs
        b_step = np.abs(b).max(axis=2) / 127.0  # [L, R], over the outputs
        a_safe = np.where(a_step > 0, a_step, 1.0)
        b_safe = np.where(b_step > 0, b_step, 1.0)
        a_q = np.clip(np.rint(a / a_safe[:, None, :]), -127, 127).astype(np.int8)
        b_q = np.clip(np.rint(b / b_safe[:, :, None]), -127, 127).astype(np.int8)
        quantized[target] = {
            "A": np.ascontiguousarray(a_q.reshape(layers, fan_in // 2, 2, rank).transpose(0, 1, 3, 2)),
            "B": np.ascontiguousarray(b_q.reshape(layers, rank // 2, 2, fan_out).transpose(0, 1, 3, 2)),
            "scale": (a_step * b_step).astype(np.float32),
        }
    return quantized


def dequantize_slot_arrays(quantized: dict) -> dict:
    """Float32 tables [L, in, R] and [L, R, out] whose term equals that of
    `quantize_slot_arrays`' output: A its integers, B its integers times the scale (each rank's
    A column and B row are off by inverse factors from the tables that were quantized, which
    the term does not see)."""
    tables = {}
    for target, slot in quantized.items():
        a, b = unpair_slot_tables(slot["A"], slot["B"])
        tables[target] = {"A": a.astype(np.float32), "B": b.astype(np.float32) * slot["scale"][:, :, None]}
    return tables


def merge_adapter(config: ModelConfig, params: dict, adapter: LoraAdapter, weight: float = 1.0) -> dict:
    """Host params with W + weight · scaling · B·A folded in (engine layout)."""
    q, k, f = config.q_size, config.kv_size, config.intermediate_size
    columns = {
        "q_proj": ("wqkv", 0, q),
        "k_proj": ("wqkv", q, q + k),
        "v_proj": ("wqkv", q + k, q + 2 * k),
        "o_proj": ("wo", 0, config.hidden_size),
        "gate_proj": ("w_gate_up", 0, f),
        "up_proj": ("w_gate_up", f, 2 * f),
        "down_proj": ("w_down", 0, config.hidden_size),
    }
    layers = {name: np.array(value, dtype=np.float32) for name, value in params["layers"].items()}
    for target in adapter.weights:
        name, start, stop = columns[target]
        for layer in range(config.num_layers):
            layers[name][layer, :, start:stop] += (weight * adapter.delta(target, layer)).T
    merged = dict(params)
    merged["layers"] = layers
    return merged


class AdapterSlotsFullError(RuntimeError):
    """Every adapter slot is pinned or used by a running request."""


class AdapterNotFoundError(KeyError):
    """A request names an adapter that is not loaded."""


@dataclass
class _Slot:
    name: str | None = None
    version: object = None
    refcount: int = 0
    pinned: bool = False
    last_used: float = 0.0
    loading: bool = False


class AdapterSlotTable:
    """Host bookkeeping of device adapter slots 1..n (slot 0 means "no adapter").

    A name maps to one slot. Loading a new version writes a free slot and then flips the map, so
    requests that already resolved the old slot keep it (refcounted) until they finish.
    When no slot is free, the least recently used unpinned, idle adapter is evicted.
    """

    def __init__(self, num_slots: int):
        self._lock = threading.Lock()
        self._slots = {i: _Slot() for i in range(1, num_slots + 1)}
        self._by_name: dict[str, int] = {}

    def versions(self) -> dict[str, object]:
        with self._lock:
            return {name: self._slots[slot].version for name, slot in self._by_name.items()}

    def slot_of(self, name: str) -> int | None:
        with self._lock:
            return self._by_name.get(name)

    def acquire(self, requested) -> list[tuple[int, float, str, object]]:
        """Resolve (name, weight) pairs to slots and hold them until `release`."""
        with self._lock:
            resolved = []
            for name, weight in requested:
                slot = self._by_name.get(name)
                if slot is None:
                    raise AdapterNotFoundError(name)
                resolved.append((slot, float(weight), name, self._slots[slot].version))
            now = time.monotonic()
            for slot, *_ in resolved:
                self._slots[slot].refcount += 1
                self._slots[slot].last_used = now
            return resolved

    def release(self, slots) -> None:
        with self._lock:
            for slot in slots:
                self._slots[slot].refcount -= 1

    def reserve(self, name: str) -> int:
        """A slot to write `name`'s new version into (free, or freed by LRU eviction)."""
        with self._lock:
            mapped = set(self._by_name.values())
            free = [i for i, s in self._slots.items() if i not in mapped and s.refcount == 0 and not s.loading]
            if not free:
                victims = [
                    i
                    for i, s in self._slots.items()
                    if i in mapped and s.name != name and not s.pinned and s.refcount == 0 and not s.loading
                ]
                if not victims:
                    raise AdapterSlotsFullError("no adapter slot is free: all are pinned or serving requests")
                victim = min(victims, key=lambda i: self._slots[i].last_used)
                del self._by_name[self._slots[victim].name]
                free = [victim]
            slot = free[0]
            self._slots[slot] = _Slot(loading=True)
            return slot

    def commit(self, name: str, slot: int, version, pinned: bool) -> None:
        with self._lock:
            self._slots[slot] = _Slot(name=name, version=version, pinned=pinned, last_used=time.monotonic())
            self._by_name[name] = slot

    def abort(self, slot: int) -> None:
        with self._lock:
            self._slots[slot] = _Slot()

    def evict(self, name: str) -> bool:
        with self._lock:
            return self._by_name.pop(name, None) is not None

    def current_version(self, name: str):
        with self._lock:
            slot = self._by_name.get(name)
            return None if slot is None else self._slots[slot].version
