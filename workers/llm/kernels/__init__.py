"""Native CPU kernels for the engine, called from jitted JAX code through XLA's FFI.

`q4_matmul` multiplies a few rows by a weight matrix stored in 4-bit blocks (the layout of
llama.cpp's Q4_1: 32 inputs share a float scale and minimum). It exists because decoding is
bound by the bytes of the weights and XLA's CPU backend has no fast low-precision matrix-vector
product. `q8_matmul` does the same for the output head in 8-bit blocks (llama.cpp's Q8_0, as
GGUF files usually store the token embedding). On AVX-512 builds both also keep the weights in
panels of 16 interleaved output columns (`q4_panels`, `q8_panels`), which a batch of rows
multiplies as a GEMM micro-kernel does: a decode batch of 16 is bound by arithmetic, not bytes.
A prompt's many rows take the panels too, dequantized once per call into a per-thread buffer
(XLA's float32 GEMM is slower on them and repacks its float weights on every call).
`lora_delta` computes the LoRA term of rows that each use their own adapters, reading
the adapter slots (float32, bfloat16, or int8 with a scale per rank) in place (XLA copies every
gathered slot first);
`q4_matmul_lora` is `q4_matmul` plus the terms of the projections its matrix holds side by side,
in one call whose panel version prefetches the rows' slots while it multiplies (a batch on many
adapters is otherwise stalled reading them after the arithmetic, with memory idle before).
`attention` is the decode/verify attention: each query reads its row's cache window (float32 or
float16) in place, up to its own position. The sources (*.cc here) are compiled on first use
with the machine's C++ compiler for the machine's CPU and cached under $LIMINAL_KERNEL_CACHE
(default ~/.cache/liminal/kernels);
`available()` says whether that worked, and callers fall back to plain float32 when it did not.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BLOCK = 32
MAX_ROWS = 16
_SOURCES = tuple(Path(__file__).with_name(name) for name in ("quantized_matmul.cc", "lora_delta.cc", "attention.cc"))
# Included by the sources: part of the cache key.
_HEADERS = tuple(Path(__file__).with_name(name) for name in ("parallel.h", "simd.h", "lora_term.h"))
_TARGETS = {
    "liminal_q4_matmul": "LiminalQ4Matmul",
    "liminal_q8_matmul": "LiminalQ8Matmul",
    "liminal_q4_panel_matmul": "LiminalQ4PanelMatmul",
    "liminal_q8_panel_matmul": "LiminalQ8PanelMatmul",
    "liminal_q4_matmul_lora": "LiminalQ4MatmulLora",
    "liminal_q4_panel_matmul_lora": "LiminalQ4PanelMatmulLora",
    "liminal_lora_delta": "LiminalLoraDelta",
    "liminal_attention": "LiminalAttention",
    "liminal_attention_f16": "LiminalAttentionF16",
}
PANEL = 16  # output columns per panel (the layout for all but single-row calls on AVX-512)
_lock = threading.Lock()
_state: dict = {}


def _cache_dir() -> Path:
    default = Path.home() / ".cache" / "liminal" / "kernels"
    return Path(os.environ.get("LIMINAL_KERNEL_CACHE", default))


def _cpu_signature() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    return flags


def _build() -> Path:
    import jax

    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++) found")
    include = jax.ffi.include_dir()
    source = b"".join(path.read_bytes() for path in (*_SOURCES, *_HEADERS))
    key = hashlib.sha256(source + include.encode() + _cpu_signature().encode() + jax.__version__.encode()).hexdigest()[
        :16
    ]
    target = _cache_dir() / f"liminal-kernels-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    command = [
        compiler,
        "-O3",
        "-march=native",
        "-std=c++17",
        "-shared",
        "-fPIC",
        "-w",
        "-I",
        include,
        *map(str, _SOURCES),
        "-o",
        str(partial),
    ]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"compiling the kernels failed:\n{completed.stderr[-2000:]}")
    partial.replace(target)  # atomic: concurrent builders never load a half-written file
    return target


def available() -> bool:
    """Build and register the kernel once per process; False (logged) when that fails."""
    with _lock:
        if "ok" not in _state:
            try:
                import jax

                library = ctypes.cdll.LoadLibrary(str(_build()))
                for target, symbol in _TARGETS.items():
                    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
                _state["vector_bits"] = int(library.LiminalQ4VectorBits())
                _state["ok"] = True
            except Exception as exc:  # no compiler, unsupported platform...
                # Without configured logging, Python's last-resort handler prints this.
                log.warning("native kernels unavailable, using XLA's float32 ops: %s", exc)
                _state["ok"] = False
        return _state["ok"]


def column_rows() -> int:
    """Up to how many rows `q4_matmul` takes the column layout (`quantize_q4`) when the panel
    layout is there too.

    Measured on a 2-core AVX-512 machine (one layer stack's gate/up matmul, 30 x [576, 3072]):
    columns 1.95 / 2.8 / 4.9 / 8.3 / 24 ms for 1 / 2 / 4 / 8 / 16 rows, panels 2.1 / 2.6 / 3.5 /
    4.9 / 8.6 ms, XLA's float32 GEMM 12 ms at 8 rows and 16.8 ms at 16. On an AVX2-only CPU
    there are no panels, and the column kernel beats XLA's GEMM (about a third of OpenBLAS's
    speed there) for every decode batch."""
    if not available():
        return 0
    return 1 if panels_available() else MAX_ROWS


def fastest_rows(packed: dict) -> int:
    """Up to how many rows `q4_matmul` beats XLA's float32 matmul on this machine for every
    matrix of `packed` (`pack_layers`' output).

    Any number where all of them have panels: over 16 rows (a prompt) a thread dequantizes a
    few panels once and passes every row over them at close to the FMA units' peak. Measured
    on a 2-core AVX-512 machine (the four decoder matmuls of 30 layers; peak 230 GFLOP/s): 179 /
    180 / 177 / 175 GFLOP/s at 32 / 112 / 256 / 512 rows against XLA's 110 / 139 / 148 / 172,
    which also repacks the weights every call. A matrix without panels (outputs not in whole
    panels) limits them all to what the column layout takes."""
    if panels_available() and all("panels" in matrix for matrix in packed.values()):
        return sys.maxsize
    return MAX_ROWS if panels_available() else column_rows()


def quantize_q4(weight: np.ndarray) -> dict[str, np.ndarray]:
    """Pack W [..., K, N] (used as x @ W) into 4-bit blocks of 32 inputs per output column.

    Each block keeps its minimum and (max - min) / 15 as scale, as llama.cpp's Q4_1 does, so
    weights that came from a Q4_1 file are reproduced to float32 rounding."""
    w = np.asarray(weight, np.float32)
    *lead, K, N = w.shape
    if K % BLOCK:
        raise ValueError(f"input size {K} is not a multiple of {BLOCK}")
    blocks = np.swapaxes(w, -1, -2).reshape(*lead, N, K // BLOCK, BLOCK)
    low = blocks.min(axis=-1)
    scale = (blocks.max(axis=-1) - low) / 15.0
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint((blocks - low[..., None]) / safe[..., None]), 0, 15).astype(np.uint8)
    packed = q[..., :16] | (q[..., 16:] << 4)
    return {"qs": np.ascontiguousarray(packed), "scales": scale.astype(np.float32), "mins": low.astype(np.float32)}


def dequantize_q4(packed: dict[str, np.ndarray]) -> np.ndarray:
    """The float32 W [..., K, N] that `packed` stands for."""
    qs = packed["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)
    blocks = q * packed["scales"][..., None] + packed["mins"][..., None]
    *lead, N, nb, _ = blocks.shape
    return np.swapaxes(blocks.reshape(*lead, N, nb * BLOCK), -1, -2)


def _q4_kernel(name: str, x, packed: dict, layer, row_args=(), tables=()):
    """Calls the 4-bit kernel `name` ("q4_matmul" or "q4_matmul_lora") on x [B, K] and the
    `layer`-th matrix of `packed`: B ≤ column_rows() takes the column layout, wider batches the
    panels that `pack_layers` adds on machines with the panel kernel. `row_args` are per-row
    arrays [B, ...] (padded like x where the column kernel pads), `tables` further operands."""
    import jax
    import jax.numpy as jnp

    rows = x.shape[0]
    use_panels = rows > column_rows() and "panels" in packed
    if rows > MAX_ROWS and not (use_panels and name == "q4_matmul"):
        raise ValueError(f"{name} takes at most {MAX_ROWS} rows here, got {rows}")
    x = x.astype(jnp.float32)
    layer = jnp.asarray(layer, jnp.int32)
    if use_panels:
        panels = packed["panels"]
        n = panels["qs"].shape[1] * PANEL
        call = jax.ffi.ffi_call(
            f"liminal_{name.replace('q4_', 'q4_panel_')}", jax.ShapeDtypeStruct((rows, n), jnp.float32)
        )
        return call(x, panels["qs"], panels["scales"], panels["mins"], layer, *row_args, *tables)
    padded = 1 << (rows - 1).bit_length()  # the kernel is vectorised for 1, 2, 4, 8, 16 rows
    pad = ((0, padded - rows), (0, 0))  # padding rows name no adapter (slot 0, weight 0)
    n = packed["qs"].shape[1]
    call = jax.ffi.ffi_call(f"liminal_{name}", jax.ShapeDtypeStruct((padded, n), jnp.float32))
    return call(
        jnp.pad(x, pad),
        packed["qs"],
        packed["scales"],
        packed["mins"],
        layer,
        *(jnp.pad(a, pad) for a in row_args),
        *tables,
    )[:rows]


def q4_matmul(x, packed: dict, layer):
    """x [B, K] float32 @ the `layer`-th matrix of `packed` (stacked [L, ...]) → [B, N].

    B ≤ column_rows() takes the column layout (at most MAX_ROWS rows); wider batches, of any
    size, the panels that `pack_layers` adds on machines with the panel kernel."""
    return _q4_kernel("q4_matmul", x, packed, layer)


def slot_operands(tables: list[dict], caller: str) -> list:
    """The kernels' operands for slot tables (`model.init_lora_state`'s layout): A and B of each,
    all float32 or all bfloat16, or A, B and scale of each when all are int8."""
    import jax.numpy as jnp

    dtypes = {table[part].dtype for table in tables for part in ("A", "B")}
    allowed = {jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.int8)}
    if len(dtypes) > 1 or not dtypes <= allowed:
        raise TypeError(
            f"{caller}: slot tables must all be float32, all bfloat16 or all int8, not {sorted(map(str, dtypes))}"
        )
    if dtypes == {jnp.dtype(jnp.int8)}:
        if not all("scale" in table and table["scale"].dtype == jnp.float32 for table in tables):
            raise TypeError(f"{caller}: int8 slot tables need their float32 scale [L, S, R]")
        return [table[part] for table in tables for part in ("A", "B", "scale")]
    return [table[part] for table in tables for part in ("A", "B")]


def q4_matmul_lora(x, packed: dict, layer, tables: list[dict], index, weight):
    """`q4_matmul(x, packed, layer)` plus the LoRA terms of the projections whose outputs the
    matrix holds side by side (e.g. q, k, v), in one call: `tables` are their slot tables
    ({"A": [L, S, K, R], "B": [L, S, R, N_t]}, all float32 or all bfloat16, or all int8 in
    pairs with "scale" [L, S, R], see `model.init_lora_state`; the N_t adding up to N) and
    index, weight [B, J] each row's adapter slots (0 = none) and weights, as for `lora_delta`.
    The panel version prefetches the slots the rows use while it multiplies, a row at a time,
    and computes each row's term soon after its slots arrive, so a batch on many adapters reads
    them from cache."""
    import jax.numpy as jnp

    slots = slot_operands(tables, "q4_matmul_lora")
    return _q4_kernel("q4_matmul_lora", x, packed, layer, (index.astype(jnp.int32), weight.astype(jnp.float32)), slots)


def panels_available() -> bool:
    """Whether this build has the panel kernels (AVX-512 builds)."""
    return available() and _state["vector_bits"] >= 512


def _interleave(values: np.ndarray) -> np.ndarray:
    """[..., N, X] per output column → [..., N/16, X, 16]: 16 columns side by side."""
    *lead, N, X = values.shape
    panels = values.reshape(*lead, N // PANEL, PANEL, X)
    return np.ascontiguousarray(np.swapaxes(panels, -1, -2))


def q4_panels(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same 4-bit weights (from `quantize_q4`) in the panel layout of the panel kernels:
    qs [..., N/16, K/2, 16] (inputs 2i, 2i + 1 of a column in one byte), scales and mins
    [..., N/16, K/32, 16]."""
    qs = packed["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # [..., N, K/32, 32]
    *lead, N, nb, _ = q.shape
    q = _interleave(q.reshape(*lead, N, nb * BLOCK))  # [..., N/16, K, 16]
    pairs = q[..., 0::2, :] | (q[..., 1::2, :] << 4)
    return {
        "qs": np.ascontiguousarray(pairs),
        "scales": _interleave(packed["scales"]),
        "mins": _interleave(packed["mins"]),
    }


def q8_panels(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same 8-bit weights (from `quantize_q8`) in the panel layout of `q8_panel_matmul`:
    qs [N/16, K, 16], scales [N/16, K/32, 16]."""
    N, nb, _ = packed["qs"].shape
    return {"qs": _interleave(packed["qs"].reshape(N, nb * BLOCK)), "scales": _interleave(packed["scales"])}


def q8_panel_matmul(x, panels: dict):
    """x [B, K] float32 (B ≤ 16) @ the 8-bit matrix `panels` (from `q8_panels`) → [B, N]."""
    import jax
    import jax.numpy as jnp

    n = panels["qs"].shape[0] * PANEL
    call = jax.ffi.ffi_call("liminal_q8_panel_matmul", jax.ShapeDtypeStruct((x.shape[0], n), jnp.float32))
    return call(x.astype(jnp.float32), panels["qs"], panels["scales"])


def quantize_q8(weight: np.ndarray) -> dict[str, np.ndarray]:
    """Pack W [K, N] (used as x @ W) into 8-bit blocks of 32 inputs per output column, with
    max|w| / 127 as scale, as llama.cpp's Q8_0 does: weights from a Q8_0 file come back to float32
    rounding."""
    w = np.asarray(weight, np.float32)
    K, N = w.shape
    if K % BLOCK:
        raise ValueError(f"input size {K} is not a multiple of {BLOCK}")
    blocks = w.T.reshape(N, K // BLOCK, BLOCK)
    scale = np.abs(blocks).max(axis=-1) / 127.0
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(blocks / safe[..., None]), -127, 127).astype(np.int8)
    return {"qs": np.ascontiguousarray(q), "scales": scale.astype(np.float32)}


def dequantize_q8(packed: dict[str, np.ndarray]) -> np.ndarray:
    """The float32 W [K, N] that `packed` stands for."""
    blocks = packed["qs"].astype(np.float32) * packed["scales"][..., None]
    N, nb, _ = blocks.shape
    return np.ascontiguousarray(blocks.reshape(N, nb * BLOCK).T)


def q8_matmul(x, packed: dict):
    """x [B, K] float32 (B ≤ MAX_ROWS) @ the 8-bit matrix `packed` → [B, N]."""
    import jax
    import jax.numpy as jnp

    rows = x.shape[0]
    if rows > MAX_ROWS:
        raise ValueError(f"q8_matmul takes at most {MAX_ROWS} rows, got {rows}")
    if "panels" in packed:  # faster at every row count (1 row: 1.0 against 2.0 ms for SmolLM2's)
        return q8_panel_matmul(x, packed["panels"])
    n = packed["qs"].shape[0]
    call = jax.ffi.ffi_call("liminal_q8_matmul", jax.ShapeDtypeStruct((rows, n), jnp.float32))
    return call(x.astype(jnp.float32), packed["qs"], packed["scales"])


def lora_delta(x, slots: dict, layer, index, weight):
    """Σ_j weight[m, j] · x[m] @ A[slot j] @ B[slot j] for rows x [M, K] (float32), reading the
    `layer`-th entry of the slot table {"A": [L, S, K, R], "B": [L, S, R, N]} (float32 or
    bfloat16, or int8 in pairs with "scale" [L, S, R]: see `model.init_lora_state`) in place.
    index, weight: [M, J] each row's adapter slots (0 = none) and their weights → [M, N],
    computed in float32 (int8 tables: in integers over 16-bit x and rank vectors)."""
    import jax
    import jax.numpy as jnp

    operands = slot_operands([slots], "lora_delta")
    paired = slots["B"].dtype == jnp.int8  # B [L, S, R/2, N, 2]
    n = slots["B"].shape[-2] if paired else slots["B"].shape[-1]
    call = jax.ffi.ffi_call("liminal_lora_delta", jax.ShapeDtypeStruct((x.shape[0], n), jnp.float32))
    return call(
        x.astype(jnp.float32),
        index.astype(jnp.int32),
        weight.astype(jnp.float32),
        jnp.asarray(layer, jnp.int32),
        *operands,
    )


def attention(q, cache_k, cache_v, slot, position, layer, scale: float):
    """Causal attention of queries q [B, T, H, D] (float32, after RoPE) over the `layer`-th
    entry of the cache [L, S, KVH, M, D] (float32 or float16; it already holds this step's keys
    and values): row b reads cache slot slot[b], and query (b, t) sees positions
    [0, position[b, t]]; a negative position gives zeros. → [B, T, H, D], in float32."""
    import jax
    import jax.numpy as jnp

    if cache_k.dtype != cache_v.dtype or cache_k.dtype not in (jnp.float32, jnp.float16):
        raise TypeError(f"attention: the cache must be float32 or float16, not {cache_k.dtype} and {cache_v.dtype}")
    target = "liminal_attention_f16" if cache_k.dtype == jnp.float16 else "liminal_attention"
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(q.shape, jnp.float32))
    return call(
        q.astype(jnp.float32),
        cache_k,
        cache_v,
        slot.astype(jnp.int32),
        position.astype(jnp.int32),
        jnp.asarray(layer, jnp.int32),
        scale=np.float32(scale),
    )


Q4_MATRICES = ("wqkv", "wo", "w_gate_up", "w_down")


def with_panels(packed: dict, to_panels) -> dict:
    """`packed` plus the same weights in the panel layout (under "panels") when this machine
    has the panel kernel and the output size is whole panels."""
    columns = packed["qs"].shape[-3]
    if not panels_available() or columns % PANEL:
        return packed
    return {**packed, "panels": to_panels(packed)}


def pack_layers(layers: dict) -> dict[str, dict[str, np.ndarray]]:
    """The decoder's stacked weight matrices [L, K, N] packed for `q4_matmul`."""
    return {name: with_panels(quantize_q4(layers[name]), q4_panels) for name in Q4_MATRICES}


def _lossless_packing(w: np.ndarray, quantize, dequantize, tolerance: float):
    """(packed, the float32 weights it stands for) when packing `w` loses nothing beyond float32
    rounding, else None."""
    if w.shape[-2] % BLOCK:  # inputs not in whole blocks: not a blocked format at all
        return None
    packed = quantize(w)
    restored = dequantize(packed)
    if np.abs(restored - w).max() > tolerance * max(np.abs(w).max(), 1e-30):
        return None
    return packed, restored


def pack_q8_losslessly(weight: np.ndarray, tolerance: float = 1e-5):
    """`quantize_q8(W)` and its dequantized W when W [K, N] already is 8-bit blocks (e.g. a Q8_0
    GGUF tensor), else None."""
    return _lossless_packing(np.asarray(weight, np.float32), quantize_q8, dequantize_q8, tolerance)


def is_eight_bit(weight: np.ndarray, tolerance: float = 1e-5) -> bool:
    """Whether W [K, N] already is 8-bit blocks (e.g. a Q8_0 GGUF tensor)."""
    return pack_q8_losslessly(weight, tolerance) is not None


def is_four_bit(layers: dict, tolerance: float = 1e-5) -> bool:
    """Whether the weights already are 4-bit blocks (e.g. dequantized from a Q4_1 GGUF), so that
    packing them loses nothing beyond float32 rounding."""
    return all(
        _lossless_packing(np.asarray(layers[name][0], np.float32), quantize_q4, dequantize_q4, tolerance) is not None
        for name in Q4_MATRICES
    )
