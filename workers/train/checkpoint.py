"""Training checkpoints: LoRA factors + optimizer state (safetensors) and progress (JSON).

Layout: <dir>/step-000040/{state.safetensors, state.json}. A checkpoint is written under a
temporary name and renamed into place, so a worker dying mid-write leaves the previous one
intact; older checkpoints are removed once a newer one is in place. Arrays are named by their
pytree path (jax.tree_util.keystr), so a checkpoint only loads into a state of the same shape.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

FORMAT = 1
STATE_ARRAYS = "state.safetensors"
STATE_JSON = "state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointMismatchError(ValueError):
    """The checkpoint directory holds a run of other data, policy, parent or model."""


@dataclass
class Checkpoint:
    step: int
    lora: dict
    opt_state: object
    progress: dict  # dataset_hash, seed, history, tokens_seen, elapsed_s, ...


def _named_leaves(tree) -> dict[str, np.ndarray]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def _fill(template, arrays: dict[str, np.ndarray], prefix: str):
    """`template`'s pytree with each leaf replaced by the array saved under its path."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    filled = []
    for path, leaf in leaves:
        name = prefix + jax.tree_util.keystr(path)
        if name not in arrays:
            raise CheckpointMismatchError(f"checkpoint lacks {name}")
        array = arrays[name]
        if array.shape != np.shape(leaf) or array.dtype != np.asarray(leaf).dtype:
            raise CheckpointMismatchError(
                f"{name}: checkpoint has {array.dtype}{list(array.shape)},"
                f" the run needs {np.asarray(leaf).dtype}{list(np.shape(leaf))}"
            )
        filled.append(array)
    return jax.tree_util.tree_unflatten(treedef, filled)


def save_checkpoint(directory: str | os.PathLike, *, step: int, lora, opt_state, progress: dict) -> Path:
    from safetensors.numpy import save_file

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    staging = root / f".step-{step:06d}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    arrays = {f"lora{name}": array for name, array in _named_leaves(jax.device_get(lora)).items()}
    arrays.update({f"opt{name}": array for name, array in _named_leaves(jax.device_get(opt_state)).items()})
    save_file(
        {name: np.array(array, order="C") for name, array in arrays.items()},  # keeps 0-d shapes
        str(staging / STATE_ARRAYS),
    )
    (staging / STATE_JSON).write_text(json.dumps({"format": FORMAT, "step": step, **progress}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    for older in root.iterdir():
        match = _STEP_DIR.match(older.name)
        if match and int(match.group(1)) < step:
            shutil.rmtree(older, ignore_errors=True)
    return final


def latest_checkpoint_dir(directory: str | os.PathLike) -> Path | None:
    root = Path(directory)
    if not root.is_dir():
        return None
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_JSON).exists() and (child / STATE_ARRAYS).exists():
            found.append((int(match.group(1)), child))
    return max(found)[1] if found else None


def load_checkpoint(directory: str | os.PathLike, *, lora_template, opt_template) -> Checkpoint | None:
    """The latest checkpoint under `directory`, shaped like the templates; None when there is
    none."""
    from safetensors.numpy import load_file

    path = latest_checkpoint_dir(directory)
    if path is None:
        return None
    progress = json.loads((path / STATE_JSON).read_text())
    if progress.get("format") != FORMAT:
        raise CheckpointMismatchError(f"{path}: unsupported checkpoint format {progress.get('format')!r}")
    arrays = load_file(str(path / STATE_ARRAYS))
    return Checkpoint(
        step=int(progress.pop("step")),
        lora=_fill(lora_template, arrays, "lora"),
        opt_state=_fill(opt_template, arrays, "opt"),
        progress=progress,
    )
