"""Native CPU kernels for the engine, called from jitted JAX code through XLA's FFI.

`q4_matmul` multiplies a few rows by a weight matrix stored in 4-bit blocks (the layout of
llama.cpp's Q4_1: 32 inputs share a float scale and minimum). It exists because decoding is
bound by the bytes of the weights and XLA's CPU backend has no fast low-precision matrix-vector
product. The source (q4_matmul.cc) is compiled on first use with the machine's C++ compiler for
the machine's CPU and cached under $LIMINAL_KERNEL_CACHE (default ~/.cache/liminal/kernels);
`available()` says whether that worked, and callers fall back to plain float32 when it did not.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BLOCK = 32
MAX_ROWS = 16
# Up to this many rows the kernel beats XLA's float32 matmul; wider calls are bound by arithmetic
# rather than weight bytes, where XLA's GEMM is faster (bench/engine.py measures both).
FASTEST_ROWS = 8
_SOURCE = Path(__file__).with_name("q4_matmul.cc")
_TARGET = "liminal_q4_matmul"
_lock = threading.Lock()
_state: dict = {}


def _cache_dir() -> Path:
    default = Path.home() / ".cache" / "liminal" / "kernels"
    return Path(os.environ.get("LIMINAL_KERNEL_CACHE", default))


def _cpu_signature() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    return flags


def _build() -> Path:
    import jax

    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++) found")
    include = jax.ffi.include_dir()
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(source + include.encode() + _cpu_signature().encode()
                         + jax.__version__.encode()).hexdigest()[:16]
    target = _cache_dir() / f"q4_matmul-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    command = [compiler, "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w",
               "-I", include, str(_SOURCE), "-o", str(partial)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"compiling {_SOURCE.name} failed:\n{completed.stderr[-2000:]}")
    partial.replace(target)  # atomic: concurrent builders never load a half-written file
    return target


def available() -> bool:
    """Build and register the kernel once per process; False (logged) when that fails."""
    with _lock:
        if "ok" not in _state:
            try:
                import jax

                library = ctypes.cdll.LoadLibrary(str(_build()))
                jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(library.LiminalQ4Matmul),
                                            platform="cpu")
                _state["ok"] = True
            except Exception as exc:  # no compiler, unsupported platform...
                # Without configured logging, Python's last-resort handler prints this.
                log.warning("q4 kernel unavailable, decoding in float32: %s", exc)
                _state["ok"] = False
        return _state["ok"]


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
    return {"qs": np.ascontiguousarray(packed), "scales": scale.astype(np.float32),
            "mins": low.astype(np.float32)}


def dequantize_q4(packed: dict[str, np.ndarray]) -> np.ndarray:
    """The float32 W [..., K, N] that `packed` stands for."""
    qs = packed["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)
    blocks = q * packed["scales"][..., None] + packed["mins"][..., None]
    *lead, N, nb, _ = blocks.shape
    return np.swapaxes(blocks.reshape(*lead, N, nb * BLOCK), -1, -2)


def q4_matmul(x, packed: dict, layer):
    """x [B, K] float32 @ the `layer`-th matrix of `packed` (stacked [L, ...]) → [B, N]."""
    import jax
    import jax.numpy as jnp

    rows = x.shape[0]
    if rows > MAX_ROWS:
        raise ValueError(f"q4_matmul takes at most {MAX_ROWS} rows, got {rows}")
    padded = 1 << (rows - 1).bit_length()  # the kernel is vectorised for 1, 2, 4, 8, 16 rows
    x = jnp.pad(x.astype(jnp.float32), ((0, padded - rows), (0, 0)))
    n = packed["qs"].shape[1]
    call = jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct((padded, n), jnp.float32))
    return call(x, packed["qs"], packed["scales"], packed["mins"],
                jnp.asarray(layer, jnp.int32))[:rows]


Q4_MATRICES = ("wqkv", "wo", "w_gate_up", "w_down")


def pack_layers(layers: dict) -> dict[str, dict[str, np.ndarray]]:
    """The decoder's stacked weight matrices [L, K, N] packed for `q4_matmul`."""
    return {name: quantize_q4(layers[name]) for name in Q4_MATRICES}


def is_four_bit(layers: dict, tolerance: float = 1e-5) -> bool:
    """Whether the weights already are 4-bit blocks (e.g. dequantized from a Q4_1 GGUF), so that
    packing them loses nothing beyond float32 rounding."""
    for name in Q4_MATRICES:
        w = np.asarray(layers[name][0], np.float32)
        error = np.abs(dequantize_q4(quantize_q4(w)) - w).max()
        if error > tolerance * max(np.abs(w).max(), 1e-30):
            return False
    return True
