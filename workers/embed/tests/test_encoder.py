import json
import math
from functools import lru_cache

import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from workers.embed import DEFAULT_MODEL_NAME, default_model_path, get_encoder, load_encoder

pytestmark = pytest.mark.slow  # loads the real all-MiniLM-L6-v2 weights


@pytest.fixture(scope="module")
def encoder():
    return get_encoder()


def _numpy_layer_norm(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * scale + bias


def _numpy_gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


@lru_cache(maxsize=1)
def _reference_model():
    model_dir = default_model_path()
    config = json.loads((model_dir / "config.json").read_text())
    tensors = load_file(str(model_dir / "model.safetensors"))
    weights = {name: value.astype(np.float64) for name, value in tensors.items()}
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    return config, weights, tokenizer


def numpy_sentence_embedding(text: str) -> np.ndarray:
    """all-MiniLM-L6-v2 for one unpadded text, straight from the Hugging Face weight names."""
    config, weights, tokenizer = _reference_model()
    ids = np.array(tokenizer.encode(text).ids)
    eps = config["layer_norm_eps"]
    heads = config["num_attention_heads"]

    def linear(x, name):
        return x @ weights[f"{name}.weight"].T + weights[f"{name}.bias"]

    hidden = (
        weights["embeddings.word_embeddings.weight"][ids]
        + weights["embeddings.position_embeddings.weight"][: len(ids)]
        + weights["embeddings.token_type_embeddings.weight"][0]
    )
    hidden = _numpy_layer_norm(
        hidden, weights["embeddings.LayerNorm.weight"], weights["embeddings.LayerNorm.bias"], eps
    )
    for index in range(config["num_hidden_layers"]):
        prefix = f"encoder.layer.{index}"
        length, width = hidden.shape
        head_dim = width // heads

        def split(x, length=length, head_dim=head_dim):
            return x.reshape(length, heads, head_dim).transpose(1, 0, 2)

        query = split(linear(hidden, f"{prefix}.attention.self.query"))
        key = split(linear(hidden, f"{prefix}.attention.self.key"))
        value = split(linear(hidden, f"{prefix}.attention.self.value"))
        scores = query @ key.transpose(0, 2, 1) / math.sqrt(head_dim)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probabilities = scores / scores.sum(-1, keepdims=True)
        context = (probabilities @ value).transpose(1, 0, 2).reshape(length, width)
        hidden = _numpy_layer_norm(
            linear(context, f"{prefix}.attention.output.dense") + hidden,
            weights[f"{prefix}.attention.output.LayerNorm.weight"],
            weights[f"{prefix}.attention.output.LayerNorm.bias"],
            eps,
        )
        intermediate = _numpy_gelu(linear(hidden, f"{prefix}.intermediate.dense"))
        hidden = _numpy_layer_norm(
            linear(intermediate, f"{prefix}.output.dense") + hidden,
            weights[f"{prefix}.output.LayerNorm.weight"],
            weights[f"{prefix}.output.LayerNorm.bias"],
            eps,
        )
    pooled = hidden.mean(0)
    return pooled / np.linalg.norm(pooled)


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_matches_numpy_reference_forward_pass(encoder):
    texts = [
        "The quick brown fox jumps over the lazy dog.",
        "Liminal grounds answers in the files a user uploads, and cites the page they came from.",
        "",
    ]
    vectors = encoder.encode(texts)
    for text, vector in zip(texts, vectors, strict=True):
        reference = numpy_sentence_embedding(text)
        np.testing.assert_allclose(vector, reference, atol=1e-5)


def test_vectors_are_unit_length_float32_of_model_dimension(encoder):
    vectors = encoder.encode(["one", "two words", "and a third sentence"])
    assert encoder.dim == 384
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_paraphrases_score_higher_than_unrelated_sentences(encoder):
    pairs = [
        ("A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."),
        (
            "How do I reset my password?",
            "What are the steps to change a forgotten password?",
            "The stock market closed higher on Friday.",
        ),
        (
            "The cat sat on the mat.",
            "A cat was sitting on a rug.",
            "Quantum computers use qubits to perform calculations.",
        ),
    ]
    for anchor, paraphrase, unrelated in pairs:
        a, p, u = encoder.encode([anchor, paraphrase, unrelated])
        assert cosine(a, p) > cosine(a, u) + 0.3, (anchor, cosine(a, p), cosine(a, u))


def test_batching_and_padding_do_not_change_a_sentence_vector(encoder):
    sentence = "Retrieval-augmented generation cites its sources."
    alone = encoder.encode([sentence])[0]
    long_neighbour = "This much longer neighbour forces a longer padded length bucket. " * 6
    in_batch = encoder.encode(["short", long_neighbour, sentence, "another one"], batch_size=3)
    np.testing.assert_allclose(in_batch[2], alone, atol=1e-5)
    assert not np.allclose(in_batch[0], in_batch[2], atol=1e-2)


def test_order_of_results_follows_input_order(encoder):
    texts = ["first text here", "a much longer second text with quite a few more words in it", "x"]
    forward = encoder.encode(texts)
    backward = encoder.encode(texts[::-1])
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)


def test_empty_inputs(encoder):
    empty_list = encoder.encode([])
    assert empty_list.shape == (0, 384)
    assert empty_list.dtype == np.float32
    empty_string = encoder.encode([""])
    assert np.isfinite(empty_string).all()
    assert np.linalg.norm(empty_string[0]) == pytest.approx(1.0, abs=1e-5)
    assert encoder.count_tokens("") == 0


def test_long_texts_are_truncated_to_max_sequence_length(encoder):
    words = [f"token{index % 50}" for index in range(600)]
    long_text = " ".join(words)
    assert encoder.count_tokens(long_text) > encoder.max_text_tokens
    ids = encoder.tokenizer.encode(long_text, add_special_tokens=False).ids[: encoder.max_text_tokens]
    prefix = encoder.tokenizer.decode(ids)
    assert encoder.count_tokens(prefix) == encoder.max_text_tokens
    long_vector, prefix_vector = encoder.encode([long_text, prefix])
    np.testing.assert_allclose(long_vector, prefix_vector, atol=1e-5)


def test_count_tokens_excludes_special_tokens(encoder):
    assert encoder.count_tokens("hello world") == 2
    assert encoder.max_text_tokens == encoder.max_seq_length - 2 == 254


def test_rejects_a_bare_string(encoder):
    with pytest.raises(TypeError):
        encoder.encode("not a list")


def test_encoder_id_names_model_and_weights_and_is_stable(encoder):
    name, _, digest = encoder.encoder_id.partition("@")
    assert name == DEFAULT_MODEL_NAME
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert get_encoder() is encoder
    assert load_encoder().encoder_id == encoder.encoder_id
