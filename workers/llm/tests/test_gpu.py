"""The engine on an accelerator gives the CPU engine's greedy tokens on the same random weights
(float32 on both, 32 tokens). Skipped, with the reason, where JAX sees no accelerator; the
machinery it relies on (the same weights in every process, the CPU child) is checked here on
the CPU."""

import jax
import pytest

from workers.llm import shapes

ACCELERATOR = jax.default_backend() != "cpu"


@pytest.mark.skipif(not ACCELERATOR, reason="needs a GPU: JAX sees only the CPU here (bench/gpu.py runs this on one)")
@pytest.mark.parametrize("shape", ["tiny", "smollm2-135m"])
def test_the_accelerator_gives_the_cpu_engines_greedy_tokens(shape):
    on_accelerator = shapes.greedy_tokens(shape, seed=1, tokens=32)
    on_cpu = shapes.greedy_tokens_on_cpu(shape, seed=1, tokens=32)
    assert all(len(ids) == 32 for ids in on_accelerator)
    assert shapes.first_divergence(on_accelerator, on_cpu) is None, (on_accelerator, on_cpu)


def test_the_cpu_child_builds_the_same_model_and_tokens_as_this_process():
    here = shapes.greedy_tokens("tiny", seed=1, tokens=12)
    assert len(here) == len(shapes.PARITY_PROMPTS) and all(len(ids) == 12 for ids in here)
    assert len({tuple(ids) for ids in here}) > 1, "different prompts should not give one answer"
    assert max(len(set(ids)) for ids in here) >= 4, f"a run that repeats one token checks little: {here}"
    assert shapes.greedy_tokens_on_cpu("tiny", seed=1, tokens=12) == here
    assert shapes.first_divergence(here, shapes.greedy_tokens("tiny", seed=2, tokens=12)) is not None


def test_first_divergence_names_the_prompt_and_token():
    assert shapes.first_divergence([[1, 2], [3, 4]], [[1, 2], [3, 4]]) is None
    assert shapes.first_divergence([[1, 2], [3, 4]], [[1, 2], [3, 5]]) == (1, 1)
    assert shapes.first_divergence([[1, 2, 3]], [[1, 2]]) == (0, 2)


def test_named_shapes_build_and_their_tokenizer_decodes_every_id():
    model = shapes.random_model("tiny", seed=0)
    assert model.params["embed"].shape == (512, 128)
    text = model.tokenizer.decode([0, 300, 511])
    assert "<x" in text
    assert shapes.SHAPES["smollm2-135m"].q_size == 576 and shapes.SHAPES["llama-3.2-1b"].kv_size == 512
