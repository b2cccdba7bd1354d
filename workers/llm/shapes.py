"""Random-weight models of named shapes, and the greedy tokens an engine gives on them.

For what must run where no weights can be downloaded (a GPU node) or where the real model is
beside the point (engine speed and CPU/GPU agreement depend on the shape, not on the values).
The weights come from numpy's generator (`model.init_params`), so every process and backend
builds the same ones from a seed. The tokenizer is byte-level (every byte is a token, with
ChatML control tokens) padded with placeholder tokens up to the shape's vocabulary, so every
id the model can sample decodes.

    python -m workers.llm.shapes greedy --shape tiny --seed 0 --tokens 32   # prints JSON

prints the greedy tokens of the parity prompts on whatever backend JAX picks (JAX_PLATFORMS=cpu
forces the CPU); `greedy_tokens_on_cpu` runs that in a child process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from workers.llm.config import ModelConfig

SHAPES = {
    # A few-layer shape for quick checks (CPU tests, a dry run of bench/gpu.py).
    "tiny": ModelConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_layers=3,
        num_heads=4,
        num_kv_heads=2,
        head_dim=32,
        context_length=512,
    ),
    # Hugging Face's SmolLM2-135M-Instruct and Llama-3.2-1B configurations.
    "smollm2-135m": ModelConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        head_dim=64,
        rope_theta=100000.0,
        context_length=8192,
    ),
    "llama-3.2-1b": ModelConfig(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        head_dim=64,
        rope_theta=500000.0,
        context_length=131072,
    ),
}

PARITY_PROMPTS = [
    "The river rose slowly through the night.",
    "What is the capital of France?",
    "def add(a, b):\n    return",
    "1, 2, 3, 4,",
]
_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def random_model(shape: str | ModelConfig, seed: int = 0):
    """A LoadedModel of the shape with random weights (float32 host arrays)."""
    from tokenizers import pre_tokenizers

    from workers.llm.model import init_params
    from workers.llm.tokenizer import DEFAULT_CHAT_TEMPLATE, Tokenizer
    from workers.llm.weights import LoadedModel

    config = SHAPES[shape] if isinstance(shape, str) else shape
    base = _SPECIAL_TOKENS + sorted(pre_tokenizers.ByteLevel.alphabet())
    if config.vocab_size < len(base):
        raise ValueError(f"a vocabulary of {config.vocab_size} cannot hold the {len(base)} byte tokens")
    tokens = base + [f"<x{i}>" for i in range(config.vocab_size - len(base))]
    tokenizer = Tokenizer.from_gguf_metadata(
        model="gpt2",
        pre="smollm",
        tokens=tokens,
        token_types=[3] * len(_SPECIAL_TOKENS) + [1] * (len(tokens) - len(_SPECIAL_TOKENS)),
        merges=[],
        bos_token_id=1,
        eos_token_id=2,
        add_bos=False,
    )
    name = shape if isinstance(shape, str) else "custom"
    params = init_params(config, seed)
    # init_params' token embeddings are 10x the other weights; tied to the output head, they
    # make every position predict its own token again, and a greedy run that only repeats the
    # prompt's last token checks little of the network.
    params["embed"] = params["embed"] / 10
    return LoadedModel(
        config=config,
        params=params,
        tokenizer=tokenizer,
        chat_template=DEFAULT_CHAT_TEMPLATE,
        model_id=f"random-{name}-{seed}",
    )


def greedy_tokens(shape: str, *, seed: int = 0, tokens: int = 32, prompts=PARITY_PROMPTS, dtype="float32") -> list:
    """The greedy token ids of each prompt on an engine over `random_model(shape, seed)`, on the
    backend JAX picks here. float32 matrix products run at full precision (on a GPU JAX would
    otherwise use TF32, whose rounding alone can flip a near-tie)."""
    import jax
    import jax.numpy as jnp

    from workers.llm import SamplingParams
    from workers.llm.engine import Engine

    # Set for the process (the engine computes on its own thread), and put back afterwards so
    # that the caller's other engines keep their precision.
    previous = jax.config.jax_default_matmul_precision
    jax.config.update("jax_default_matmul_precision", "highest")
    config = SHAPES[shape]
    engine = None
    try:
        engine = Engine(
            random_model(shape, seed),
            max_batch_slots=1,
            max_seq_len=min(config.context_length, 256),
            lora_slots=1,
            max_lora_rank=8,
            dtype=jnp.dtype(dtype),
            speculative_tokens=0,
        )
        params = SamplingParams(greedy=True, max_tokens=tokens, ignore_eos=True)
        return [engine.generate(prompt, params).token_ids for prompt in prompts]
    finally:
        if engine is not None:
            engine.shutdown()
        jax.config.update("jax_default_matmul_precision", previous)


def greedy_tokens_on_cpu(shape: str, *, seed: int = 0, tokens: int = 32, timeout: float = 1800) -> list:
    """`greedy_tokens` in a child process whose JAX sees only the CPU (float32)."""
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, "-m", "workers.llm.shapes", "greedy", "--shape", shape, "--seed", str(seed)]
        + ["--tokens", str(tokens)],
        cwd=root,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the CPU engine failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def first_divergence(left: list, right: list) -> tuple[int, int] | None:
    """(prompt index, token index) of the first token where two runs differ, or None."""
    for p, (a, b) in enumerate(zip(left, right, strict=True)):
        for t, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                return p, t
        if len(a) != len(b):
            return p, min(len(a), len(b))
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["greedy"])
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args(argv)
    print(json.dumps(greedy_tokens(args.shape, seed=args.seed, tokens=args.tokens)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
