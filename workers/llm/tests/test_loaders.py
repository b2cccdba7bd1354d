from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize

from workers.llm.model import full_logits as _full_logits
from workers.llm.tokenizer import DEFAULT_CHAT_TEMPLATE
from workers.llm.weights import load_model, permute_qk, save_hf_directory, unpermute_qk

from .conftest import TINY_CONFIG, as_device, gguf_named_tensors, tiny_tokenizer_metadata
from .reference import read_gguf, reference_logits

full_logits = jax.jit(_full_logits, static_argnums=0)
TOKENS = [1, 40, 50, 60, 70, 80, 90, 100, 2, 33]


def write_tiny_gguf(path, loaded, qtype=GGMLQuantizationType.F32):
    """Write the tiny model the way llama.cpp's converter does (Q/K rows permuted)."""
    c = loaded.config
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny-gguf")
    writer.add_block_count(c.num_layers)
    writer.add_context_length(c.context_length)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_heads)
    writer.add_head_count_kv(c.num_kv_heads)
    writer.add_rope_freq_base(c.rope_theta)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_dimension_count(c.head_dim)
    meta = tiny_tokenizer_metadata()
    writer.add_tokenizer_model(meta["model"])
    writer.add_tokenizer_pre(meta["pre"])
    writer.add_token_list(meta["tokens"])
    writer.add_token_types(meta["token_types"])
    writer.add_bos_token_id(meta["bos_token_id"])
    writer.add_eos_token_id(meta["eos_token_id"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(DEFAULT_CHAT_TEMPLATE)
    for name, array in gguf_named_tensors(c, loaded.params).items():
        array = array.astype(np.float32)
        if ".attn_q." in name:
            array = permute_qk(array, c.num_heads)
        elif ".attn_k." in name:
            array = permute_qk(array, c.num_kv_heads)
        if array.ndim == 2 and qtype != GGMLQuantizationType.F32:
            if qtype == GGMLQuantizationType.F16:
                writer.add_tensor(name, array.astype(np.float16))
            else:
                writer.add_tensor(name, quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_permutation_round_trip():
    w = np.arange(4 * 8 * 3, dtype=np.float32).reshape(4 * 8, 3)
    assert not np.array_equal(permute_qk(w, 4), w)
    np.testing.assert_array_equal(unpermute_qk(permute_qk(w, 4), 4), w)


@pytest.mark.parametrize(
    "qtype,tolerance",
    [
        (GGMLQuantizationType.F32, 1e-6),
        (GGMLQuantizationType.F16, 2e-3),
        (GGMLQuantizationType.Q8_0, 2e-2),
        (GGMLQuantizationType.Q4_1, 0.2),
    ],
)
def test_gguf_loader(tmp_path, tiny_model, qtype, tolerance):
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, tiny_model, qtype)
    loaded = load_model(path, cache_dir=False)
    assert loaded.config.rms_norm_eps == pytest.approx(TINY_CONFIG.rms_norm_eps)
    assert replace(loaded.config, rms_norm_eps=TINY_CONFIG.rms_norm_eps) == TINY_CONFIG
    assert loaded.model_id.startswith("tiny-gguf")
    for key in ("embed", "lm_head", "final_norm"):
        np.testing.assert_allclose(
            loaded.params[key], tiny_model.params[key], atol=tolerance * np.abs(tiny_model.params[key]).max()
        )
    for key, value in tiny_model.params["layers"].items():
        np.testing.assert_allclose(loaded.params["layers"][key], value, atol=tolerance * np.abs(value).max())
    # The file read independently, with llama.cpp's adjacent-pair RoPE on permuted rows.
    tensors, hparams = read_gguf(path)
    expected = reference_logits(tensors, hparams, TOKENS, layout="gguf")
    got = np.asarray(full_logits(loaded.config, as_device(loaded.params), jnp.asarray([TOKENS])))[0]
    np.testing.assert_allclose(got, expected, atol=2e-4 * np.abs(expected).max(), rtol=0)
    assert loaded.tokenizer.encode("Hi 42") == tiny_model.tokenizer.encode("Hi 42")


def test_gguf_cache_is_used_on_second_load(tmp_path, tiny_model):
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, tiny_model)
    first = load_model(path, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").glob("*/weights.safetensors"))
    path.write_bytes(b"")  # a stale cache entry would be keyed by the old size and mtime
    with pytest.raises(ValueError):
        load_model(path, cache_dir=tmp_path / "cache")
    write_tiny_gguf(path, tiny_model)
    second = load_model(path, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(second.params["layers"]["wqkv"], first.params["layers"]["wqkv"])
    assert second.tokenizer.encode("abc 123") == first.tokenizer.encode("abc 123")
    assert second.chat_template == first.chat_template


def test_hugging_face_directory_round_trip(tmp_path, tiny_model):
    save_hf_directory(tmp_path / "hf", tiny_model)
    loaded = load_model(tmp_path / "hf")
    assert loaded.config == TINY_CONFIG
    for key, value in tiny_model.params["layers"].items():
        np.testing.assert_array_equal(loaded.params["layers"][key], value)
    np.testing.assert_array_equal(loaded.params["lm_head"], tiny_model.params["lm_head"])
    assert loaded.tokenizer.encode("Hello <|im_end|> 2024") == tiny_model.tokenizer.encode("Hello <|im_end|> 2024")
    assert loaded.tokenizer.eos_token_id == 2
    assert loaded.chat_template == DEFAULT_CHAT_TEMPLATE
